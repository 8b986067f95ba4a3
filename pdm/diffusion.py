"""Diffusion math, kept apart from the networks (as in DiT's `diffusion/`): schedules, q(x_t | x_0), training targets.

Every method trains on the same epsilon-prediction objective (Ho et al. 2020, Eq. 14):
    L_simple = E_{t, x_0, eps} || eps - eps_theta(x_t, t) ||^2,   x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps.
The schedules themselves are diffusers' (DDPMScheduler, as in the reference code), not re-derived here.
"""

from __future__ import annotations

import torch
from diffusers import DDIMScheduler, DDPMScheduler, DPMSolverMultistepScheduler

from pdm.config import DiffusionConfig

SAMPLERS = {"ddpm": DDPMScheduler, "ddim": DDIMScheduler, "dpmpp": DPMSolverMultistepScheduler}


def _schedule_kwargs(cfg: DiffusionConfig) -> dict:
    return dict(
        num_train_timesteps=cfg.num_train_timesteps,
        beta_schedule=cfg.beta_schedule,
        beta_start=cfg.beta_start,
        beta_end=cfg.beta_end,
        prediction_type="epsilon",
    )


def make_train_scheduler(cfg: DiffusionConfig) -> DDPMScheduler:
    return DDPMScheduler(**_schedule_kwargs(cfg), clip_sample=cfg.clip_sample)


def make_sampler(name: str, cfg: DiffusionConfig):
    """A fresh diffusers scheduler over the training schedule: 'ddpm' (ancestral), 'ddim', or 'dpmpp' (DPM-Solver++)."""
    if name not in SAMPLERS:
        raise ValueError(f"unknown sampler '{name}'; choose one of {', '.join(SAMPLERS)}")
    kwargs = _schedule_kwargs(cfg)
    if name == "dpmpp":
        return DPMSolverMultistepScheduler(**kwargs, algorithm_type="dpmsolver++", solver_order=2)
    return SAMPLERS[name](**kwargs, clip_sample=cfg.clip_sample)


def training_targets(
    scheduler: DDPMScheduler, x0: torch.Tensor, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Draw t ~ U{0..T-1} and eps ~ N(0, I) and return (x_t, t, eps), the inputs of L_simple."""
    batch = x0.shape[0]
    t = torch.randint(0, scheduler.config.num_train_timesteps, (batch,), generator=generator, device=generator.device)
    noise = torch.randn(x0.shape, generator=generator, device=generator.device, dtype=x0.dtype)
    t, noise = t.to(x0.device), noise.to(x0.device)
    x_t = scheduler.add_noise(x0, noise, t)  # q(x_t | x_0)
    return x_t, t, noise
