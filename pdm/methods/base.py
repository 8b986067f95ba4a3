"""The protocol every method implements; the trainer, sampler driver and evaluation only talk to this.

A new method is one file: a Method subclass with its `name`, its `options_schema` (JSON schema of its options, merged
into the config schema at load time, so configs are validated against it), its networks and its conditioning:

    context(x0, labels, t, generator, index) -> (tokens, aux_loss, logs)   training-time conditioning
    sampling_context(generators, device) -> tokens_for(t)                 generation-time conditioning, per image
    denoiser(generators, device) -> denoise(x_t, t)   only to change the denoiser (classifier-free guidance)
    run_stage1(cfg, seed, out_dir)  stage 1 as its own workflow job (an autoencoder, a retrieval database + index)
    prepare(stage1_dir)        load the frozen stage-1 outputs, before training and before sampling
    finalize(dataset)          after training, e.g. prototype usage frequencies on the training set
    components()               the named parts saved as safetensors; storage is measured from those files
plus one line in pdm/methods/registry.py. The shared parts below are not overridden: `loss` (L_simple + the method's
auxiliary loss; the step's first draws are t and the noise, so every method gets the same ones at a given step) and
`sample` (the sampler loop; image i a function of seeds[i] alone).
"""

from __future__ import annotations

import textwrap
from dataclasses import dataclass
from typing import Any, Callable, ClassVar, Mapping

import numpy as np
import torch
import yaml
from torch import nn

from pdm.config import ExperimentConfig
from pdm.diffusion import make_sampler, make_train_scheduler, training_draws
from pdm.sampling import batched, image_generators, initial_noise, run_sampler, to_uint8_images
from pdm.unet import ConditionedUNet


def options_from_yaml(text: str) -> dict[str, dict]:
    """A method's options schema written as YAML (the style of pdm/config.schema.yaml): {option: JSON schema}."""
    options = yaml.safe_load(textwrap.dedent(text)) or {}
    for name, schema in options.items():
        if not isinstance(schema, dict) or "default" not in schema:
            raise TypeError(f"option '{name}' needs a JSON schema with a default (the schema is the only source of defaults)")
    return options


# Options every method has.
COMMON_OPTIONS: dict[str, dict] = {
    "num_train_timesteps": {"type": ["integer", "null"], "minimum": 2, "default": None,
                            "description": "overrides diffusion.num_train_timesteps for this method (null: keep it)"},
    "lr": {"type": ["number", "null"], "exclusiveMinimum": 0, "default": None,
           "description": "overrides train.lr for this method's denoiser (null: the shared one); a reference's own "
                          "setting (ProtoDiffusion 2e-4 in the paper configs), recorded in its result rows"},
    "dropout": {"type": ["number", "null"], "minimum": 0, "maximum": 1, "default": None,
                "description": "overrides model.dropout for this method's U-Net (null: the shared one), recorded as lr"},
}
# The common options that act on the denoiser's training only: they never change a stage 1 (autoencoder, index).
DENOISER_ONLY_OPTIONS = frozenset(COMMON_OPTIONS)


@dataclass(frozen=True)
class DataInfo:
    """What a method may know about the data when it is built (enough to rebuild it from a checkpoint)."""

    channels: int
    resolution: int
    num_classes: int

    @classmethod
    def of(cls, dataset) -> "DataInfo":
        return cls(int(dataset.images.shape[1]), int(dataset.images.shape[-1]), dataset.num_classes)


class Method(nn.Module):
    name: ClassVar[str]
    conditioning: ClassVar[str] = "none"
    cross_attention: ClassVar[bool] = False
    # Conditions through the U-Net's class-embedding input (a (B, E) vector added to the time embedding) instead.
    class_embedding: ClassVar[bool] = False
    has_stage1: ClassVar[bool] = False
    # run_stage1 returns its own `stage1_flops` (e.g. one counted step x steps) instead of running under the
    # whole-stage counter, whose per-op overhead (~25% for a small network) would count in its seconds
    counts_own_stage1_flops: ClassVar[bool] = False
    # Trains on class labels (s-PDM): the preflight refuses a dataset without them before any job starts.
    needs_labels: ClassVar[bool] = False
    # Options that only change generation (left out of the training identity, so editing them never retrains).
    sampling_options: ClassVar[tuple[str, ...]] = ()
    # Options that determine stage 1 (None: every option but num_train_timesteps); see pdm.identity.
    stage1_options: ClassVar[tuple[str, ...] | None] = None
    # JSON schema of the method's own options (`methods.<name>:` in a config), each with its default; merged with
    # COMMON_OPTIONS into pdm/config.schema.yaml when a config is loaded (pdm.config.method_schemas).
    options_schema: ClassVar[dict[str, dict]] = {}
    description: ClassVar[str] = ""
    # Has f_phi and a prototype bank (`f_phi`, `bank`, `assign`): the workflow runs the prototype diagnostics
    # (pdm.diagnostics: usage, assignment entropy, PCA of the features) for it.
    has_prototypes: ClassVar[bool] = False
    # None for the methods of the paper and its baselines; for a method that is not (an ablation of ours) a short
    # note beginning "extension beyond the paper": it goes into every result record and the report marks the method.
    extension: ClassVar[str | None] = None

    def __init__(self, cfg: ExperimentConfig, data: DataInfo):
        super().__init__()
        self.cfg, self.data = cfg, data
        self.options: Mapping[str, Any] = cfg.method_options(self.name)
        self.diffusion_cfg = cfg.diffusion_for(self.name)
        self.train_scheduler = make_train_scheduler(self.diffusion_cfg)
        self.unet = ConditionedUNet(cfg.model_for(self.name), self.latent_channels, self.latent_size, self.cross_attention,
                                    self.class_embedding)

    # --- things a subclass may override -----------------------------------------------------------------------
    @classmethod
    def check_config(cls, cfg: ExperimentConfig, options: Mapping[str, Any]) -> None:
        """Raise ConfigError for option combinations this method cannot run; called before any job starts."""

    @property
    def latent_channels(self) -> int:
        return self.data.channels

    @property
    def latent_size(self) -> int:
        return self.data.resolution

    @classmethod
    def run_stage1(cls, cfg: ExperimentConfig, seed: int, out_dir) -> dict[str, Any]:
        """Stage 1, run by its own workflow job before training: fit what the method needs and write it to out_dir.

        Returns the stage-1 record (written as out_dir/stage1.json by the caller), with at least
          "seconds": wall time of the stage (it counts in the method's device-hours),
          "sampling_files": files (relative to out_dir, or absolute) needed to generate, counted as weights,
          "external_files": files that are external memory (database, index, frozen encoder weights).
        """
        raise NotImplementedError(f"{cls.name} has no stage 1")

    def prepare(self, stage1_dir) -> None:
        """Load the frozen stage-1 outputs from stage1_dir (only for methods with has_stage1)."""

    def prepare_for_probe(self, database_size: int) -> dict[str, Any]:
        """Random stage-1 outputs of the real shapes (a database of `database_size` training images), so that pdm.plan
        can time training and sampling before stage 1 or the data exist: the same work, meaningless values. Returns
        the stand-in's stage-1 record ({} without a stage 1)."""
        return {}

    def finalize(self, dataset) -> None:
        pass

    def context(self, x0: torch.Tensor, labels: torch.Tensor | None, t: torch.Tensor, generator: torch.Generator,
                index: torch.Tensor | None = None):
        """Training-time conditioning tokens (B, N, C) and an auxiliary loss with its logs; none by default.

        generator is the step's generator (after t and the noise were drawn): any random choice of the conditioning
        (label dropout, a random neighbour) draws from it, so a resumed or repeated run makes the same choices.
        index holds the batch images' positions in the training split (RDM looks up their precomputed neighbours).
        """
        return None, None, {}

    def sampling_context(self, generators: list[torch.Generator], device) -> Callable[[torch.Tensor], torch.Tensor | None]:
        """Per-image conditioning for generation: returns tokens_for(t). Draws only from each image's generator."""
        return lambda t: None

    def denoiser(self, generators: list[torch.Generator], device) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        """denoise(x_t, t) -> eps for the samplers: the U-Net under this method's sampling conditioning. A method
        with classifier-free guidance returns pdm.guidance.guided_denoiser here; the sampling loop never knows."""
        tokens_for = self.sampling_context(generators, device)
        return lambda x_t, t: self.unet(x_t, t, tokens_for(t))

    def training_timesteps(self, t: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """The step's t after the shared draw: unchanged, except for a reference quirk behind a flag."""
        return t

    @classmethod
    def evaluations_per_step(cls, options: Mapping[str, Any]) -> int:
        """U-Net evaluations per image in one denoiser call (2 under classifier-free guidance), for NFE."""
        return 1

    def encode(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """Image -> the space diffusion runs in (identity; LDM's autoencoder latents, drawn with `generator`)."""
        return x0

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        """The inverse of encode, back to images in [-1, 1]."""
        return latents

    def components(self) -> dict[str, nn.Module]:
        """Named parts saved as separate files; those in `sampling_components` are needed to generate."""
        return {"unet": self.unet}

    sampling_components: ClassVar[tuple[str, ...]] = ("unet",)

    def sampling_modules(self) -> list[nn.Module]:
        """Every network generation runs (its parameters are the 'params' column): the sampling components, plus
        frozen stage-1 networks a subclass uses to generate (LDM's decoder)."""
        parts = self.components()
        return [parts[name] for name in self.sampling_components]

    def record(self) -> dict[str, Any]:
        """Method-specific fields for every result row (conditioning choices, encoders, ...)."""
        return {
            "conditioning": self.conditioning,
            "num_train_timesteps": self.diffusion_cfg.num_train_timesteps,
            "lr": self.cfg.train_for(self.name).lr,
            "dropout": self.cfg.model_for(self.name).dropout,
            "sampling_components": list(self.sampling_components),
            "extension": self.extension,
        }

    # --- shared by every method ----------------------------------------------------------------------------------
    def loss(self, x0: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator, index=None):
        """L_simple on the (latent) image, plus the method's auxiliary loss with weight 1 (reference `train_loop`)."""
        shape = (x0.shape[0], self.latent_channels, self.latent_size, self.latent_size)
        t, noise = training_draws(self.train_scheduler, shape, generator)  # the step's first draws, for every method
        z0 = self.encode(x0, generator)  # then the method's own draws (LDM's posterior sample)
        t = self.training_timesteps(t, generator)
        t, noise = t.to(z0.device), noise.to(device=z0.device, dtype=z0.dtype)
        z_t = self.train_scheduler.add_noise(z0, noise, t)  # q(z_t | z_0)
        tokens, aux_loss, logs = self.context(x0, labels, t, generator, index)
        eps = self.unet(z_t, t, tokens)
        diffusion_loss = torch.nn.functional.mse_loss(eps.float(), noise.float())
        total = diffusion_loss if aux_loss is None else diffusion_loss + aux_loss
        logs = {"loss": total.detach(), "loss_diffusion": diffusion_loss.detach(), **{k: v.detach() for k, v in logs.items()}}
        return total, logs

    def forward(self, x0: torch.Tensor, labels: torch.Tensor | None, generator: torch.Generator, index=None):
        """The training loss, as forward so that DistributedDataParallel (accelerate) can wrap the method."""
        return self.loss(x0, labels, generator, index)

    @torch.no_grad()
    def sample(self, seeds, sampler: str, steps: int, eta: float = 0.0, batch_size: int = 64, device="cpu") -> np.ndarray:
        self.eval()
        shape = (self.latent_channels, self.latent_size, self.latent_size)
        chunks = []
        for chunk in batched(list(seeds), batch_size):
            generators = image_generators(chunk)
            x_T = initial_noise(shape, generators, device)  # first draw of every image's generator
            denoise = self.denoiser(generators, device)  # then its conditioning draws
            scheduler = make_sampler(sampler, self.diffusion_cfg)
            latents = run_sampler(denoise, scheduler, x_T, steps, generators, eta)
            chunks.append(to_uint8_images(self.decode(latents)))
        return np.concatenate(chunks)
