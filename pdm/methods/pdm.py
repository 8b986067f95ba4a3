"""PDM and s-PDM (arXiv 2508.09922): the U-Net conditioned on one prototype token through bottleneck cross-attention.

Training (reference `PrototypeDiffusionModel.forward` + `train_loop`):
    z = f_phi(x_0);  k* = argmin_k ||z - p_k|| (PDM) or k* = y (s-PDM)
    token = p_k* + sinusoidal(t)[:d]                    (B, 1, d): one key/value for the cross-attention
    L = ||eps - eps_theta(x_t, t, token)||^2 + L_proto  (weight 1)
Gradients: the prototypes get them from both losses (through the token and through L_proto); f_phi only from L_proto,
because the token is an index into the bank (argmin / label), never a function of z.

Generation: the reference draws a new uniformly random prototype at every denoising step (`per_step_uniform`). The
default here draws one prototype per image for the whole trajectory, from the prototypes' usage frequencies on the
training set (`frequency`), or uniformly (`uniform`). s-PDM draws one label per image (uniform as the reference).
"""

from __future__ import annotations

from typing import Any, Mapping

import torch

from pdm.config import ConfigError, ExperimentConfig
from pdm.guidance import TOKEN_GUIDANCE_OPTIONS, TokenGuidance
from pdm.methods.base import DataInfo, Method, options_from_yaml
from pdm.prototypes import (
    FeatureEncoder,
    assignment_entropy,
    PrototypeBank,
    nearest_prototype,
    sinusoidal_table,
    supervised_prototype_loss,
    unsupervised_prototype_loss,
)

FEATURE_ENCODER_MIN_RESOLUTION = 16  # f_phi halves four times


class PDM(Method):
    name = "pdm"
    description = "Prototype Diffusion Model (arXiv 2508.09922): one learned prototype token, nearest-prototype assignment"
    has_prototypes = True  # f_phi + a prototype bank: the workflow runs the prototype diagnostics (pdm.diagnostics)
    conditioning = "prototype"
    cross_attention = True
    sampling_components = ("unet", "prototypes")
    sampling_options = ("prototype_sampling",)
    options_schema = options_from_yaml("""
    num_prototypes: {type: integer, minimum: 1, default: 10, description: "K"}
    prototype_dim: {type: [integer, "null"], minimum: 1, default: null, description: "d; must equal the bottleneck channels"}
    tau: {type: number, exclusiveMinimum: 0, default: 1.0}
    alpha: {type: number, minimum: 0, default: 1.0}
    beta: {type: number, minimum: 0, default: 1.0}
    time_embed_dim: {type: [integer, "null"], minimum: 1, default: null, description: "sinusoidal table width, truncated to d (reference: 256)"}
    prototype_sampling:
      type: string
      enum: [frequency, uniform, per_step_uniform]
      default: frequency
      description: "per_step_uniform reproduces the reference code (a new random prototype at every step)"
    """)

    @classmethod
    def check_config(cls, cfg: ExperimentConfig, options: Mapping[str, Any]) -> None:
        bottleneck = cfg.model.bottleneck_channels
        dim = options.get("prototype_dim")
        if dim is not None and dim != bottleneck:
            raise ConfigError(
                f"methods.{cls.name}.prototype_dim={dim} differs from the bottleneck channels {bottleneck} "
                f"(model.block_out_channels[-1]); the prototype token is the cross-attention's key and value, so set "
                f"prototype_dim to {bottleneck} or leave it out"
            )
        table = options.get("time_embed_dim")
        if table is not None and table < bottleneck:
            raise ConfigError(f"methods.{cls.name}.time_embed_dim={table} must be >= the prototype dimension {bottleneck}")
        if cfg.data.resolution < FEATURE_ENCODER_MIN_RESOLUTION:
            raise ConfigError(f"data.resolution={cfg.data.resolution}: f_phi needs at least {FEATURE_ENCODER_MIN_RESOLUTION}")

    def __init__(self, cfg: ExperimentConfig, data: DataInfo):
        super().__init__(cfg, data)
        dim = cfg.model.bottleneck_channels
        self.f_phi = FeatureEncoder(data.channels, dim)
        self.bank = PrototypeBank(self.num_prototypes(data), dim)
        # Sinusoidal embedding of t added to the prototype, table width truncated to d (reference `time_embed_dim`).
        table = sinusoidal_table(self.diffusion_cfg.num_train_timesteps, self.options.get("time_embed_dim") or dim)
        self.register_buffer("time_table", table[:, :dim].contiguous(), persistent=False)

    def num_prototypes(self, data: DataInfo) -> int:
        return self.options["num_prototypes"]

    def token(self, prototype: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return (prototype + self.time_table[t]).unsqueeze(1)  # (B, 1, d)

    def assign(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        return nearest_prototype(z, self.bank.prototypes)

    def train_assign(self, z: torch.Tensor, labels: torch.Tensor | None) -> torch.Tensor:
        """The training batch's assignment (token and L_con / L_align targets): `assign` itself, as in the paper.
        A hook for ablations (pdm_balanced) that train on another assignment."""
        return self.assign(z, labels)

    def prototype_loss(self, z: torch.Tensor, labels: torch.Tensor | None, targets: torch.Tensor | None = None):
        o = self.options
        return unsupervised_prototype_loss(z, self.bank.prototypes, o["tau"], o["alpha"], o["beta"], targets=targets)

    def context(self, x0, labels, t, generator, index=None):
        z = self.f_phi(x0)  # (B, d)
        chosen = self.train_assign(z.detach(), labels)  # (B,) prototype per image
        aux, parts = self.prototype_loss(z, labels, chosen)
        # diagnostics (issue 7): how spread the batch's assignment is over the K prototypes; detached, logged only
        entropy, distinct = assignment_entropy(chosen, self.bank.prototypes.shape[0])
        prototype, drop_logs = self.drop_class_part(self.bank(chosen), generator)  # s-PDM's opt-in guidance
        return self.token(prototype, t), aux, {
            "loss_prototype": aux, **{f"loss_{k}": v for k, v in parts.items()},
            "assignment_entropy": entropy, "prototypes_in_batch": distinct, **drop_logs}

    def drop_class_part(self, prototype: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, dict]:
        """PDM has no labels to guide with: the token's prototype part is kept (s-PDM: pdm.guidance.TokenGuidance)."""
        return prototype, {}

    def training_set_features(self, dataset, batch_size: int):
        """(f_phi(x_0), labels) of the training set in dataset order, `batch_size` images at a time (call in eval mode,
        under no_grad)."""
        device = self.bank.usage_counts.device
        for start in range(0, len(dataset), batch_size):
            index = torch.arange(start, min(start + batch_size, len(dataset)))
            labels = dataset.labels[index].to(device) if dataset.labels is not None else None
            yield self.f_phi(dataset.to_model_range(index).to(device)), labels

    @torch.no_grad()
    def finalize(self, dataset) -> None:
        """Count prototype usage on the training set with the final weights (f_phi in eval mode)."""
        was_training = self.training
        self.eval()
        counts = torch.zeros_like(self.bank.usage_counts)
        for z, labels in self.training_set_features(dataset, 256):
            counts += torch.bincount(self.assign(z, labels), minlength=len(counts)).to(counts.dtype)
        self.bank.usage_counts.copy_(counts)
        self.train(was_training)

    def _sampling_mode(self) -> str:
        return self.options["prototype_sampling"]

    def sampling_context(self, generators, device):
        mode = self._sampling_mode()
        if mode == "frequency":
            if self.bank.usage_counts.sum() <= 0:
                raise RuntimeError(
                    "prototype usage frequencies are missing from this checkpoint (finalize() never ran); "
                    "re-train, or set prototype_sampling: uniform"
                )
            probs = self.bank.usage_counts.float().cpu() / self.bank.usage_counts.sum().cpu()
        else:
            probs = torch.ones(len(self.bank.usage_counts))

        def draw() -> torch.Tensor:  # one draw per image, from that image's own generator
            return torch.cat([torch.multinomial(probs, 1, generator=g) for g in generators]).to(device)

        if mode == "per_step_uniform":  # reference quirk: a fresh random prototype at every denoising step
            return lambda t: self.token(self.bank(draw()), t)
        prototype = self.bank(draw())
        return lambda t: self.token(prototype, t)

    def components(self):
        return {"unet": self.unet, "prototypes": self.bank, "f_phi": self.f_phi}

    def record(self) -> dict[str, Any]:
        used = int((self.bank.usage_counts > 0).sum())
        return {
            **super().record(),
            "num_prototypes": int(self.bank.prototypes.shape[0]),
            "prototype_dim": int(self.bank.prototypes.shape[1]),
            "prototypes_used": used,
            "prototype_sampling": self._sampling_mode(),
        }


class SupervisedPDM(TokenGuidance, PDM):
    name = "spdm"
    description = "s-PDM (arXiv 2508.09922): one prototype per class, the label is the assignment"
    conditioning = "class-prototype"
    needs_labels = True
    sampling_options = ("label_sampling", "guidance_weight")
    options_schema = {**options_from_yaml(TOKEN_GUIDANCE_OPTIONS), **options_from_yaml("""
    num_prototypes: {type: [integer, "null"], minimum: 1, default: null, description: "K; null = number of classes"}
    prototype_dim: {type: [integer, "null"], minimum: 1, default: null}
    tau: {type: number, exclusiveMinimum: 0, default: 1.0}
    alpha: {type: number, minimum: 0, default: 1.0}
    time_embed_dim: {type: [integer, "null"], minimum: 1, default: null}
    label_sampling: {type: string, enum: [uniform, frequency], default: uniform, description: "uniform as in the reference"}
    """)}

    def num_prototypes(self, data: DataInfo) -> int:
        if data.num_classes < 1:
            raise ConfigError("s-PDM needs class labels, and this dataset has none: use class sub-folders, or drop spdm")
        k = self.options.get("num_prototypes") or data.num_classes
        if k != data.num_classes:
            raise ConfigError(f"methods.spdm.num_prototypes={k} must equal the number of classes ({data.num_classes})")
        return k

    def assign(self, z, labels):
        return labels

    def prototype_loss(self, z, labels, targets=None):  # the targets are the labels
        return supervised_prototype_loss(z, self.bank.prototypes, labels, self.options["tau"], self.options["alpha"])

    def _sampling_mode(self) -> str:
        return {"uniform": "uniform", "frequency": "frequency"}[self.options["label_sampling"]]

    def record(self):
        return {**super().record(), "prototype_sampling": f"label-{self.options['label_sampling']}"}

