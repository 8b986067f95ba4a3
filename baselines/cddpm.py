"""Class-conditional DDPM (cddpm), the control for s-PDM: it has the labels and no prototypes.

The shared U-Net is conditioned through the same bottleneck cross-attention token as s-PDM (pdm/methods/pdm.py):
    token = e_y + sinusoidal(t)[:d]                     (B, 1, d)
where e_y is a learned class embedding, initialised as s-PDM's prototypes (kaiming_uniform_, a = 0.1) and trained by
L_simple alone: no f_phi, no prototype loss. So s-PDM against cddpm isolates what prototype learning adds beyond the
labels, and cddpm against ddpm what the labels add. Generation draws one label per image from that image's own
generator: uniformly (as s-PDM's default) or from the training set's label frequencies.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pdm.config import ConfigError
from pdm.guidance import TOKEN_GUIDANCE_OPTIONS, TokenGuidance
from pdm.methods.base import DataInfo, Method, options_from_yaml
from pdm.prototypes import sinusoidal_table


class ClassEmbedding(nn.Module):
    """(num_classes, d) learned embeddings, plus the training set's label counts (the `frequency` generation prior)."""

    def __init__(self, num_classes: int, dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.empty(num_classes, dim))
        nn.init.kaiming_uniform_(self.weight, a=0.1)  # as PrototypeBank, so the token path starts as s-PDM's
        self.register_buffer("label_counts", torch.zeros(num_classes))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.weight[labels]  # (B, d)


class ClassConditionalDDPM(TokenGuidance, Method):  # TokenGuidance: opt-in classifier-free guidance
    name = "cddpm"
    description = "class-conditional DDPM: a learned class embedding as the bottleneck token (s-PDM without prototypes)"
    conditioning = "class-embedding"
    cross_attention = True
    needs_labels = True
    sampling_components = ("unet", "class_embedding")
    sampling_options = ("label_sampling", "guidance_weight")
    options_schema = {**options_from_yaml(TOKEN_GUIDANCE_OPTIONS), **options_from_yaml("""
    label_sampling: {type: string, enum: [uniform, frequency], default: uniform, description: "the label of each generated image: uniform (as s-PDM) or the training label frequencies"}
    time_embed_dim: {type: [integer, "null"], minimum: 1, default: null, description: "sinusoidal table width, truncated to d (as s-PDM)"}
    """)}

    def __init__(self, cfg, data: DataInfo):
        super().__init__(cfg, data)
        if data.num_classes < 1:
            raise ConfigError("cddpm needs class labels, and this dataset has none: use class sub-folders, or drop cddpm")
        dim = cfg.model.bottleneck_channels
        self.embedding = ClassEmbedding(data.num_classes, dim)
        table = sinusoidal_table(self.diffusion_cfg.num_train_timesteps, self.options.get("time_embed_dim") or dim)
        self.register_buffer("time_table", table[:, :dim].contiguous(), persistent=False)

    def token(self, embedding: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (embedding + self.time_table[t]).unsqueeze(1)  # (B, 1, d)

    def context(self, x0, labels, t, generator, index=None):
        if labels is None:
            raise ValueError("cddpm trains on class labels, and this batch has none")
        embedding, logs = self.drop_class_part(self.embedding(labels), generator)
        return self.token(embedding, t), None, logs

    @torch.no_grad()
    def finalize(self, dataset) -> None:
        counts = torch.bincount(dataset.labels.long(), minlength=self.data.num_classes).to(self.embedding.label_counts)
        self.embedding.label_counts.copy_(counts)

    def sampling_context(self, generators, device):
        if self.options["label_sampling"] == "frequency":
            if self.embedding.label_counts.sum() <= 0:
                raise RuntimeError("label frequencies are missing from this checkpoint (finalize() never ran); "
                                   "re-train, or set label_sampling: uniform")
            probs = self.embedding.label_counts.float().cpu()
        else:
            probs = torch.ones(self.data.num_classes)
        labels = torch.cat([torch.multinomial(probs, 1, generator=g) for g in generators]).to(device)  # one per image
        embedding = self.embedding(labels)  # independent of t: once per batch, not at every sampler step
        return lambda t: self.token(embedding, t)

    def components(self):
        return {"unet": self.unet, "class_embedding": self.embedding}

    def record(self) -> dict[str, Any]:
        return {**super().record(), "num_classes": self.data.num_classes,
                "label_sampling": self.options["label_sampling"]}
