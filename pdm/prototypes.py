"""Prototype learning (PDM, arXiv 2508.09922, Sec. 3): f_phi, the prototype bank and the losses. Tensors in, tensors out.

Mirrors `FeatureExtractor` and `PrototypeModule` of the reference code (CIFAR-10/PDM/main.py, s-PDM/main.py).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FeatureEncoder(nn.Module):
    """f_phi: four stride-2 4x4 convolutions and global average pooling, x_0 (B, C, H, W) -> z (B, d).

    Reference `FeatureExtractor`: widths 64-128-256-d, BatchNorm after the 2nd and 3rd convolutions.
    """

    def __init__(self, in_channels: int, dim: int, widths: tuple[int, int, int] = (64, 128, 256)):
        super().__init__()
        w1, w2, w3 = widths
        self.encoder = nn.Sequential(
            nn.Conv2d(in_channels, w1, 4, 2, 1), nn.ReLU(),
            nn.Conv2d(w1, w2, 4, 2, 1), nn.BatchNorm2d(w2), nn.ReLU(),
            nn.Conv2d(w2, w3, 4, 2, 1), nn.BatchNorm2d(w3), nn.ReLU(),
            nn.Conv2d(w3, dim, 4, 2, 1), nn.AdaptiveAvgPool2d((1, 1)),
        )  # fmt: skip

    def forward(self, x0: torch.Tensor) -> torch.Tensor:
        return self.encoder(x0).flatten(1)  # (B, d)


class PrototypeBank(nn.Module):
    """K learnable prototypes P (K, d), initialised with kaiming_uniform_(a=0.1) as in the reference.

    `usage_counts` (K,) records how often each prototype (or class) was chosen on the training set after training:
    the generation prior, saved with the bank.
    """

    def __init__(self, num_prototypes: int, dim: int):
        super().__init__()
        self.prototypes = nn.Parameter(torch.empty(num_prototypes, dim))
        nn.init.kaiming_uniform_(self.prototypes, a=0.1)
        self.register_buffer("usage_counts", torch.zeros(num_prototypes))

    def forward(self, index: torch.Tensor) -> torch.Tensor:
        return self.prototypes[index]  # (B, d)


def nearest_prototype(z: torch.Tensor, prototypes: torch.Tensor) -> torch.Tensor:
    """k*(z) = argmin_k ||z - p_k||_2 (reference `select_prototype`); not differentiable, as in the paper."""
    return torch.cdist(z, prototypes).argmin(dim=1)  # (B,)


def unsupervised_prototype_loss(
    z: torch.Tensor, prototypes: torch.Tensor, tau: float = 1.0, alpha: float = 1.0, beta: float = 1.0,
    targets: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """L_con + alpha L_align + beta L_compact (reference `PrototypeModule.compute_loss`).

    L_con     = CE(-tau * ||z - p_k||, k*)                 pulls z to its nearest prototype, away from the others
    L_align   = MSE(z, p_k*)
    L_compact = sum_ij (cos(p_i, p_j) - delta_ij)^2         keeps prototypes mutually orthogonal (diagonal is 0)
    k* is the nearest prototype (the paper) unless `targets` (B,) gives another assignment (an ablation's).
    """
    distances = torch.cdist(z, prototypes)  # (B, K)
    nearest = distances.argmin(dim=1) if targets is None else targets  # (B,)
    contrastive = F.cross_entropy(-tau * distances, nearest)
    align = F.mse_loss(z, prototypes[nearest])
    unit = F.normalize(prototypes, dim=1)
    compact = ((unit @ unit.T - torch.eye(len(prototypes), device=prototypes.device, dtype=prototypes.dtype)) ** 2).sum()
    total = contrastive + alpha * align + beta * compact
    return total, {"contrastive": contrastive, "align": align, "compact": compact}


def assignment_entropy(assigned: torch.Tensor, num_prototypes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Entropy (nats) of a batch's assignment histogram over K prototypes, and how many distinct prototypes it uses.

    0 when every image goes to one prototype (collapse), log K when the batch is spread evenly over all K. Detached:
    a diagnostic, never part of a loss.
    """
    counts = torch.bincount(assigned.detach().flatten(), minlength=num_prototypes).float()  # (K,)
    p = counts / counts.sum().clamp_min(1)
    entropy = -(p * torch.where(p > 0, p.log(), torch.zeros_like(p))).sum()  # 0 log 0 = 0
    return entropy, (counts > 0).sum().float()


def sinkhorn_assignment(distances: torch.Tensor, epsilon: float = 0.05, iterations: int = 3) -> torch.Tensor:
    """Equal-partition assignment of a batch to K prototypes by Sinkhorn-Knopp (SwAV, Caron et al. 2020, Alg. 1).

    Q = exp(-c / epsilon) with c the distances divided by their batch mean (scale-free, so epsilon means the same
    whatever the feature norm), then `iterations` rounds of normalising the prototype sums to 1/K and the image sums
    to 1/B; returns argmax_k Q (B,). Done in the log domain (SwAV's exp overflows or underflows once costs are not
    in [-1, 1]); no gradient flows through it. Extension beyond the paper (not in arXiv 2508.09922).
    """
    d = distances.detach().float()  # (B, K)
    batch, k = d.shape
    log_q = -(d / d.mean().clamp_min(1e-12)) / epsilon  # (B, K)
    log_q = log_q - torch.logsumexp(log_q.flatten(), 0)  # Q /= sum(Q)
    for _ in range(iterations):
        log_q = log_q - torch.logsumexp(log_q, dim=0, keepdim=True) - math.log(k)  # each prototype gets 1/K
        log_q = log_q - torch.logsumexp(log_q, dim=1, keepdim=True) - math.log(batch)  # each image has 1/B
    return log_q.argmax(dim=1)  # (B,)


def supervised_prototype_loss(
    z: torch.Tensor, prototypes: torch.Tensor, labels: torch.Tensor, tau: float = 1.0, alpha: float = 1.0
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """s-PDM: CE(-tau * ||z - p_k||, y) + alpha MSE(z, p_y); no compactness term (reference s-PDM `compute_loss`)."""
    contrastive = F.cross_entropy(-tau * torch.cdist(z, prototypes), labels)
    align = F.mse_loss(z, prototypes[labels])
    return contrastive + alpha * align, {"contrastive": contrastive, "align": align}


def sinusoidal_table(num_timesteps: int, dim: int) -> torch.Tensor:
    """(T, dim) table, sin at even and cos at odd columns, base 10000 (reference `SinusoidalEmbeddings`)."""
    position = torch.arange(num_timesteps, dtype=torch.float32)[:, None]  # (T, 1)
    div = torch.exp(torch.arange(0, dim, 2, dtype=torch.float32) * -(math.log(10000.0) / dim))  # (ceil(dim/2),)
    table = torch.zeros(num_timesteps, dim)
    table[:, 0::2] = torch.sin(position * div)
    table[:, 1::2] = torch.cos(position * div[: dim // 2])
    return table
