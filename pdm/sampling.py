"""Samplers as plain functions over a `denoise(x_t, t) -> eps` callable, with one seed per image (as in EDM).

Image i depends only on seeds[i]: its initial noise, its conditioning draw and every stochastic sampler step come
from its own torch.Generator (diffusers' `randn_tensor` takes a list of generators, one per batch row), so results
never depend on the batch size or on how the seeds are split across jobs.
"""

from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import torch
from diffusers.utils.torch_utils import randn_tensor

Denoise = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def image_generators(seeds: Sequence[int], device: torch.device | str = "cpu") -> list[torch.Generator]:
    """One generator per image. CPU generators keep images identical across devices (diffusers' convention)."""
    return [torch.Generator("cpu").manual_seed(int(seed)) for seed in seeds]


def initial_noise(shape: tuple[int, ...], generators: list[torch.Generator], device, dtype=torch.float32) -> torch.Tensor:
    """x_T ~ N(0, I), row i drawn from generators[i]; shape excludes the batch dimension."""
    return randn_tensor((len(generators), *shape), generator=generators, device=torch.device(device), dtype=dtype)


@torch.no_grad()
def run_sampler(
    denoise: Denoise,
    scheduler,
    x_T: torch.Tensor,
    num_steps: int,
    generators: list[torch.Generator],
    eta: float = 0.0,
) -> torch.Tensor:
    """Integrate the reverse process from x_T with a diffusers scheduler; returns x_0 (unclipped model range)."""
    scheduler.set_timesteps(num_steps, device=x_T.device)
    x = x_T * scheduler.init_noise_sigma
    step_kwargs = {"eta": eta} if "eta" in scheduler.step.__code__.co_varnames else {}
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(x, t)
        eps = denoise(model_input, t.expand(x.shape[0]))
        x = scheduler.step(eps, t, x, generator=generators, **step_kwargs).prev_sample
    return x


def to_uint8_images(x: torch.Tensor) -> np.ndarray:
    """Model range [-1, 1] (B, C, H, W) -> uint8 (B, H, W, C), as the reference's `(x / 2 + 0.5).clamp(0, 1)`."""
    x = ((x.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
    return x.permute(0, 2, 3, 1).cpu().numpy()


def batched(seeds: Sequence[int], batch_size: int):
    for start in range(0, len(seeds), batch_size):
        yield list(seeds[start : start + batch_size])
