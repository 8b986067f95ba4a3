"""Classifier-free guidance (Ho & Salimans 2022) as pieces a labelled method composes; the sampling loop never knows.

Training drops each image's label with probability p (to a null class), so one network learns eps(x_t, t, y) and
eps(x_t, t, null). Generation combines both predictions with weight w, in the convention of ProtoDiffusion's
reference code (github.com/ituvisionlab/ProtoDiffusion, `diffusion.py`) and of Ho & Salimans' Eq. 6:
    eps_guided = (1 + w) * eps(x_t, t, y) - w * eps(x_t, t, null)
so w = 0 is the plain conditional model (then the null pass is skipped: one network evaluation per step, not two).
"""

from __future__ import annotations

from typing import Callable

import torch

from pdm.shards import draw_for_batch

Context = Callable[[torch.Tensor], torch.Tensor]  # t -> conditioning (tokens or class embedding) for the batch


def guided_epsilon(eps_conditional: torch.Tensor, eps_null: torch.Tensor, weight: float) -> torch.Tensor:
    """(1 + w) eps_c - w eps_null (Ho & Salimans 2022, Eq. 6)."""
    return (1.0 + weight) * eps_conditional - weight * eps_null


def evaluations_per_step(weight: float) -> int:
    """Network evaluations per sampler step: 2 with guidance (conditional and null pass), 1 at w = 0."""
    return 1 if float(weight) == 0.0 else 2


def guided_denoiser(network: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor],
                    conditional: Context, null: Context, weight: float):
    """denoise(x_t, t) for a sampler: `network(x_t, t, context)` under guidance weight w.

    Both passes go through the network as one doubled batch (rows are independent: each image still depends only on
    its own seed), so guidance costs two network evaluations per image per step.
    """
    if evaluations_per_step(weight) == 1:
        return lambda x_t, t: network(x_t, t, conditional(t))

    def denoise(x_t: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        eps = network(torch.cat([x_t, x_t]), torch.cat([t, t]), torch.cat([conditional(t), null(t)]))
        eps_conditional, eps_null = eps.chunk(2)
        return guided_epsilon(eps_conditional, eps_null, weight)

    return denoise


def null_mask(batch_size: int, probability: float, generator: torch.Generator) -> torch.Tensor:
    """(B,) bool: which images train on the null condition, one uniform draw per image from `generator` (the
    training step's, after its t and noise), so a resumed or repeated run drops the same ones (reference train.py:
    np.random.rand(b) < threshold)."""
    draw = lambda n: torch.rand(n, generator=generator, device=generator.device)  # noqa: E731  (pdm.shards)
    return draw_for_batch(draw, batch_size, generator) < probability


# Opt-in guidance for the methods whose bottleneck token is `class part + sinusoidal(t)` (s-PDM, cddpm): off by
# default, so their defaults stay the paper's / the control's. The null condition zeroes the class part and keeps
# the time, as ProtoDiffusion's null condition zeroes its class embedding and keeps the time embedding.
TOKEN_GUIDANCE_OPTIONS = """
label_drop: {type: number, minimum: 0, maximum: 1, default: 0.0, description: "classifier-free guidance: probability of the null token (class part zeroed, time kept) in training; ProtoDiffusion's reference uses 0.1. 0 = off"}
guidance_weight: {type: number, minimum: 0, default: 0.0, description: "w in (1 + w) eps(y) - w eps(null) at sampling; needs label_drop > 0"}
"""


class TokenGuidance:
    """Mixin for a Method with `time_table` whose training token is class part + time: label drop in training and a
    guided denoiser at sampling, both driven by the options above."""

    @classmethod
    def check_config(cls, cfg, options) -> None:
        """Guidance needs a network that learned the null condition."""
        from pdm.config import ConfigError

        super().check_config(cfg, options)
        if options.get("guidance_weight", 0.0) > 0 and options.get("label_drop", 0.0) == 0:
            raise ConfigError(f"methods.{cls.name}.guidance_weight={options['guidance_weight']} needs a model trained "
                              f"with the null condition: set methods.{cls.name}.label_drop > 0 (the reference's 0.1), "
                              "or guidance_weight: 0")

    @classmethod
    def evaluations_per_step(cls, options) -> int:
        return evaluations_per_step(options.get("guidance_weight", 0.0))

    def drop_class_part(self, class_part: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """(B, d) class embeddings / prototypes with the dropped rows zeroed. Draws nothing when label_drop is 0, so
        the unguided default keeps its random stream (and results) unchanged."""
        probability = self.options.get("label_drop", 0.0)
        if probability == 0:
            return class_part, {}
        dropped = null_mask(class_part.shape[0], probability, generator).to(class_part.device)
        return class_part * (~dropped).to(class_part.dtype)[:, None], {"label_drop_fraction": dropped.float().mean()}

    def record(self):
        return {**super().record(), "label_drop": self.options["label_drop"],
                "guidance_weight": self.options["guidance_weight"]}

    def denoiser(self, generators, device):
        conditional = self.sampling_context(generators, device)
        null = lambda t: self.time_table[t].unsqueeze(1)  # noqa: E731  (B, 1, d): the token with its class part zeroed
        return guided_denoiser(self.unet, conditional, null, self.options.get("guidance_weight", 0.0))
