"""Speed options of training that compute the same thing faster: channels-last layout and torch.compile.

`train.channels_last` puts every 4-D weight of the method (U-Net, f_phi, LDM's autoencoder) and every input batch in
torch.channels_last (NHWC): cuDNN's and oneDNN's fast convolution kernels (tensor cores with bf16) want that layout.
`train.compile` compiles the denoiser, `method.unet` (the ConditionedUNet every method shares, with PDM's bottleneck
cross-attention or ProtoDiffusion's class embedding inside it): it is where nearly all of a step's FLOPs are for
every method (pdm.flops), and compiling only it keeps each method's own Python (prototype assignment, label drop,
RDM's table look-ups) eager. `nn.Module.compile` compiles in place, so the state dict keeps its keys (no
`_orig_mod.` prefix) and checkpoints and saved weights are the same files as without it. `dynamic=False`: the batch
shape never changes within a run (BatchStream drops the last partial batch), so one static graph is compiled.

Both change the order of floating-point reductions only (fp32 stays fp32): results agree to float noise, as they do
across devices and CPU types. Like the device, they are recorded in train.json and not part of the training identity
(pdm.identity); train.mixed_precision changes the arithmetic itself (bf16 / fp16) and is.
"""

from __future__ import annotations

import torch
from torch import nn


def apply_speed_options(method: nn.Module, channels_last: bool, compile: bool) -> None:
    """Put `method` in channels-last layout and/or compile its denoiser, in place."""
    if channels_last:
        method.to(memory_format=torch.channels_last)  # only 4-D tensors change layout; the rest are left as they are
    if compile:
        unet = getattr(method, "unet", None)
        if not isinstance(unet, nn.Module):
            raise TypeError(f"train.compile compiles a method's denoiser `unet`; {type(method).__name__} has none")
        unet.compile(dynamic=False)


def to_layout(batch: torch.Tensor, channels_last: bool) -> torch.Tensor:
    """An image batch (B, C, H, W) in the layout the network was put in."""
    return batch.contiguous(memory_format=torch.channels_last) if channels_last and batch.ndim == 4 else batch
