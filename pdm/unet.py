"""The one denoiser every method shares: diffusers' UNet2DModel, optionally with the paper's bottleneck cross-attention.

Reference (CIFAR-10/PDM/main.py, class `Unet`): after the last down block and before the mid block, the flattened
feature map attends to the conditioning tokens with one 8-head `nn.MultiheadAttention`, and the result is added back:
    h <- h + MHA(query = h.flatten (B, HW, C), key = value = tokens (B, N, C)).
Instead of copying diffusers' forward (as the reference does), a forward pre-hook on the mid block injects exactly
that step, so the backbone stays diffusers' own code. Without conditioning the attention is absent, not zero-fed.

The second conditioning path is diffusers' own class-embedding input (`class_embed_type="identity"`): a (B, E) vector,
E = the time-embedding width (4 x the first block's channels), added to the time embedding, which every residual
block projects and adds to its features. ProtoDiffusion conditions this way (baselines/protodiffusion.py).
"""

from __future__ import annotations

import torch
from diffusers import UNet2DModel
from torch import nn

from pdm.config import ModelConfig


class ConditionedUNet(nn.Module):
    def __init__(self, cfg: ModelConfig, in_channels: int, sample_size: int, cross_attention: bool,
                 class_embedding: bool = False):
        super().__init__()
        self.unet = UNet2DModel(
            sample_size=sample_size,
            in_channels=in_channels,
            out_channels=in_channels,
            layers_per_block=cfg.layers_per_block,
            block_out_channels=tuple(cfg.block_out_channels),
            down_block_types=tuple(cfg.down_block_types),
            up_block_types=tuple(cfg.up_block_types),
            norm_num_groups=cfg.norm_num_groups,
            attention_head_dim=cfg.attention_head_dim,
            dropout=cfg.dropout,
            class_embed_type="identity" if class_embedding else None,
        )
        # the time-embedding width a class embedding must have (diffusers: 4 x block_out_channels[0])
        self.class_embedding_dim = 4 * cfg.block_out_channels[0] if class_embedding else None
        self.context_dim = cfg.bottleneck_channels
        self.bottleneck_attn = None
        self._context: torch.Tensor | None = None
        if cross_attention:
            self.bottleneck_attn = nn.MultiheadAttention(cfg.bottleneck_channels, cfg.cross_attention_heads, batch_first=True)
            self.unet.mid_block.register_forward_pre_hook(self._cross_attend)

    def _cross_attend(self, module: nn.Module, args: tuple) -> tuple:
        sample, *rest = args
        if self._context is None:
            raise RuntimeError("the bottleneck cross-attention needs context: call ConditionedUNet(x_t, t, context)")
        b, c, h, w = sample.shape
        query = sample.flatten(2).transpose(1, 2)  # (B, HW, C)
        context = self._context.to(sample.dtype)  # (B, N, C)
        attended, _ = self.bottleneck_attn(query, context, context, need_weights=False)  # (B, HW, C)
        return (sample + attended.transpose(1, 2).reshape(b, c, h, w), *rest)  # residual add, as the reference

    def forward(self, x_t: torch.Tensor, t: torch.Tensor, context: torch.Tensor | None = None) -> torch.Tensor:
        """eps_theta(x_t, t, context). context: (B, N, C) tokens, required exactly when cross-attention exists; or a
        (B, E) class embedding, required exactly when the U-Net was built with class_embedding=True."""
        if self.class_embedding_dim is not None:
            if context is None or context.ndim != 2 or context.shape[-1] != self.class_embedding_dim:
                got = None if context is None else tuple(context.shape)
                raise ValueError(f"this U-Net adds a class embedding to its time embedding: context must be "
                                 f"(batch, {self.class_embedding_dim}); got {got}")
            return self.unet(x_t, t, class_labels=context).sample
        if self.bottleneck_attn is None:
            if context is not None:
                raise ValueError("this U-Net has no cross-attention; pass context=None")
            return self.unet(x_t, t).sample
        if context is None or context.ndim != 3 or context.shape[-1] != self.context_dim:
            got = None if context is None else tuple(context.shape)
            raise ValueError(f"context must be (batch, tokens, {self.context_dim}); got {got}")
        self._context = context
        try:
            return self.unet(x_t, t).sample
        finally:
            self._context = None
