"""Latent diffusion (Rombach et al. 2022): the shared U-Net on the latents of a KL-regularised autoencoder.

Stage 1 (`run_stage1`, its own workflow job) trains diffusers' AutoencoderKL on the training split:
    q(z | x) = N(mu(x), sigma(x)^2)  (DownEncoderBlock2D per entry of autoencoder_channels; f = 2^(blocks - 1))
    L = sum_pixels |x - D(z)| + kl_weight * KL(q(z | x) || N(0, I)),   z ~ q(z | x),   both summed per image
as the pixel and KL terms of LDM's `LPIPSWithDiscriminator` (per-image sums, so kl_weight means what it means there),
without the LPIPS and adversarial terms: those need pretrained VGG weights and a discriminator schedule, which this
offline harness does not have. L1 rather than MSE because it is LDM's pixel loss (sharper edges, less blur).
The latent scale factor is then measured as in LDM: 1 / std of posterior samples, here over the whole training
split rather than LDM's first batch. Finally the autoencoder reconstructs the held-out images (never trained on)
for PSNR and rFID, which bound LDM's FID.

Stage 2 is the shared U-Net on scale_factor * z, trained by the shared trainer. The autoencoder stays frozen: it is
a submodule (so .to(device) moves it) whose parameters do not require gradients, so the trainer never optimises it,
and it is not a component: its weights live in the stage-1 folder (decoder.safetensors counts as sampling weights,
encoder.safetensors as training-only).
"""

from __future__ import annotations

import dataclasses
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from diffusers import AutoencoderKL
from safetensors.torch import load_file, save_file
from tqdm.auto import tqdm

from pdm.config import ConfigError, ExperimentConfig
from pdm.io import atomic_path, read_json
from pdm.diffusion import make_train_scheduler
from pdm.methods.base import DataInfo, Method, options_from_yaml
from pdm.shards import draw_for_batch, share_of

ENCODER_FILE, DECODER_FILE = "encoder.safetensors", "decoder.safetensors"
RECONSTRUCTION_GRID = "reconstructions.png"
ENCODER_PARTS, DECODER_PARTS = ("encoder", "quant_conv"), ("post_quant_conv", "decoder")
NORM_GROUP_CHOICES = (32, 16, 8, 4, 2, 1)


def norm_groups(channels) -> int:
    """The largest of 32, 16, 8, ... that divides every autoencoder channel count (AutoencoderKL's GroupNorm)."""
    return next(g for g in NORM_GROUP_CHOICES if all(c % g == 0 for c in channels))


def build_autoencoder(image_channels: int, resolution: int, options: Mapping[str, Any]) -> AutoencoderKL:
    """diffusers' AutoencoderKL: one down / up block per autoencoder channel entry; f = 2^(entries - 1)."""
    channels = tuple(options["autoencoder_channels"])
    return AutoencoderKL(
        in_channels=image_channels,
        out_channels=image_channels,
        down_block_types=("DownEncoderBlock2D",) * len(channels),
        up_block_types=("UpDecoderBlock2D",) * len(channels),
        block_out_channels=channels,
        layers_per_block=1,
        latent_channels=options["latent_channels"],
        norm_num_groups=norm_groups(channels),
        sample_size=resolution,
    )


def autoencoder_loss(autoencoder: AutoencoderKL, x: torch.Tensor, kl_weight: float, generator) -> tuple[torch.Tensor, dict]:
    """LDM's pixel + KL objective, each summed over an image and averaged over the batch; z drawn from `generator`."""
    posterior = autoencoder.encode(x).latent_dist
    reconstruction = autoencoder.decode(posterior.sample(generator)).sample
    l1 = (reconstruction - x).abs()
    rec = l1.flatten(1).sum(1).mean()
    kl = posterior.kl().mean()
    logs = {"rec_l1_per_pixel": l1.mean().detach(), "kl": kl.detach(),
            "mse_per_pixel": ((reconstruction.detach() - x) ** 2).mean()}
    return rec + kl_weight * kl, logs


@torch.no_grad()
def sample_latents(autoencoder: AutoencoderKL, x: torch.Tensor, generator) -> torch.Tensor:
    posterior = autoencoder.encode(x).latent_dist
    if generator is None or share_of(generator)[1] == 1:
        return posterior.sample(generator)
    # one of several processes (pdm.shards): z = mean + std * eps as diffusers' sample, eps drawn for the global batch
    mean = posterior.mean
    eps = draw_for_batch(lambda n: torch.randn((n, *mean.shape[1:]), generator=generator, device=generator.device,
                                               dtype=mean.dtype).to(mean.device), len(mean), generator)
    return mean + posterior.std * eps


@torch.no_grad()
def latent_channel_stats(autoencoder: AutoencoderKL, dataset, generator, device, batch_size: int = 256):
    """Per-channel mean and std (C,) of posterior samples over every position of every image (float64 sums)."""
    total = total_sq = None
    count = 0
    for start in range(0, len(dataset), batch_size):
        x = dataset.to_model_range(torch.arange(start, min(start + batch_size, len(dataset)))).to(device)
        z = sample_latents(autoencoder, x, generator).double().transpose(0, 1).flatten(1)  # (C, B*h*w)
        s, sq = z.sum(1).cpu(), (z * z).sum(1).cpu()
        total, total_sq = (s, sq) if total is None else (total + s, total_sq + sq)
        count += z.shape[1]
    mean = total / count
    var = (total_sq / count - mean * mean).clamp_min(0) * count / max(count - 1, 1)
    return mean.tolist(), var.sqrt().tolist()


@torch.no_grad()
def latent_std(autoencoder: AutoencoderKL, dataset, generator, device, batch_size: int = 256) -> float:
    """Std of posterior samples over every element of every image of `dataset` (float64 accumulation)."""
    total = total_sq = count = 0.0
    for start in range(0, len(dataset), batch_size):
        x = dataset.to_model_range(torch.arange(start, min(start + batch_size, len(dataset)))).to(device)
        z = sample_latents(autoencoder, x, generator).double()
        total, total_sq, count = total + z.sum().item(), total_sq + (z * z).sum().item(), count + z.numel()
    mean = total / count
    return math.sqrt(max(total_sq / count - mean * mean, 0.0) * count / max(count - 1, 1))


@torch.no_grad()
def reconstruct_uint8(autoencoder: AutoencoderKL, dataset, generator, device, batch_size: int = 256) -> np.ndarray:
    """uint8 (N, H, W, C) reconstructions, decoded from posterior samples (what the diffusion model is trained on)."""
    from pdm.sampling import to_uint8_images

    out = []
    for start in range(0, len(dataset), batch_size):
        x = dataset.to_model_range(torch.arange(start, min(start + batch_size, len(dataset)))).to(device)
        out.append(to_uint8_images(autoencoder.decode(sample_latents(autoencoder, x, generator)).sample.clamp(-1, 1)))
    return np.concatenate(out)


def reconstruction_grid(originals: np.ndarray, reconstructions: np.ndarray, nrow: int = 8, pairs: int = 4):
    """(uint8 (N, H, W, C), columns) for `save_grid`: up to `pairs` rows of held-out originals, each above the row of
    their reconstructions."""
    nrow = min(nrow, len(originals))
    rows = []
    for start in range(0, min(len(originals) // nrow, pairs) * nrow, nrow):
        rows += [originals[start:start + nrow], reconstructions[start:start + nrow]]
    return np.concatenate(rows), nrow


def psnr_uint8(originals: np.ndarray, reconstructions: np.ndarray) -> float:
    """Mean over images of 10 log10(255^2 / MSE), on uint8 pixels (data range 255)."""
    err = (originals.astype(np.float64) - reconstructions.astype(np.float64)) ** 2
    mse = np.maximum(err.reshape(len(err), -1).mean(1), 1e-10)
    return float(np.mean(10 * np.log10(255.0**2 / mse)))


def _save_parts(autoencoder: AutoencoderKL, parts: tuple[str, ...], path: Path) -> None:
    state = {f"{part}.{k}": v.detach().contiguous().cpu()
             for part in parts for k, v in getattr(autoencoder, part).state_dict().items()}
    with atomic_path(path) as tmp:
        save_file(state, str(tmp))


def _load_parts(autoencoder: AutoencoderKL, parts: tuple[str, ...], path: Path) -> None:
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing; re-run LDM's stage 1 (`pdm-bench stage1 --method ldm`)")
    try:
        state = load_file(str(path))
    except Exception as err:  # safetensors raises its own error types for truncated or foreign files
        raise ValueError(f"{path} is not a readable safetensors file ({err}); delete the stage-1 folder and re-run "
                         "LDM's stage 1") from None
    for part in parts:
        prefix = f"{part}."
        sub = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        try:
            getattr(autoencoder, part).load_state_dict(sub, strict=True)
        except RuntimeError as err:
            raise ValueError(f"{path} does not match this config's autoencoder ({str(err).splitlines()[0]}); it was "
                             "made with other methods.ldm options: re-run LDM's stage 1") from None


class LDM(Method):
    name = "ldm"
    conditioning = "none"
    cross_attention = False
    has_stage1 = True
    stage1_options = ("downsample_factor", "latent_channels", "autoencoder_channels", "autoencoder_steps",
                      "autoencoder_batch_size", "autoencoder_lr", "kl_weight", "rfid_images")  # latent_normalization: stage 1 records both
    description = "latent diffusion: stage 1 trains a KL autoencoder (diffusers AutoencoderKL), stage 2 the shared U-Net on its latents"
    options_schema = options_from_yaml("""
    downsample_factor: {type: integer, enum: [1, 2, 4, 8], default: 2, description: "f: latent side = resolution / f"}
    latent_channels: {type: integer, minimum: 1, default: 4}
    autoencoder_channels: {type: array, items: {type: integer, minimum: 1}, minItems: 1, default: [32, 64], description: "one block per entry; log2(f) + 1 entries; GroupNorm groups = the largest of 32, 16, 8, ... dividing them all"}
    autoencoder_steps: {type: integer, minimum: 1, default: 1000}
    autoencoder_batch_size: {type: integer, minimum: 1, default: 64}
    autoencoder_lr: {type: number, exclusiveMinimum: 0, default: 0.001, description: "Adam, constant (as LDM)"}
    kl_weight: {type: number, minimum: 0, default: 0.000001, description: "weight of the per-image KL sum against the per-image L1 sum (LDM's pixel + KL loss)"}
    rfid_images: {type: [integer, "null"], minimum: 2, default: null, description: "held-out images the autoencoder's rFID / PSNR score (the first N of the fixed held-out split; null: all); a measurement, never LDM's cost"}
    latent_normalization: {type: string, enum: [channel, global], default: channel, description: "channel: diffusion runs on (z - mean_c) / std_c with each latent channel's mean and std over the training latents (stage 1 measures both); global: LDM's single scale factor 1 / std, no shift"}
    beta_schedule: {type: [string, "null"], enum: [linear, scaled_linear, squaredcos_cap_v2, null], default: scaled_linear, description: "LDM's own noise schedule (null: diffusion.beta_schedule). LDM samples unclipped latents, so it uses its paper's schedule, whose last step keeps sqrt(abar_T) = 0.068 of the signal (the shared linear 1e-4..0.02 keeps 0.0064 and amplifies eps errors 156x in x0)"}
    beta_start: {type: [number, "null"], exclusiveMinimum: 0, default: 0.00085, description: "null: diffusion.beta_start"}
    beta_end: {type: [number, "null"], exclusiveMinimum: 0, maximum: 1, default: 0.012, description: "null: diffusion.beta_end"}
    """)

    @classmethod
    def check_config(cls, cfg: ExperimentConfig, options: Mapping[str, Any]) -> None:
        f, channels = options["downsample_factor"], list(options["autoencoder_channels"])
        blocks = int(math.log2(f)) + 1
        if len(channels) != blocks:
            raise ConfigError(
                f"methods.ldm.autoencoder_channels={channels} has {len(channels)} entries, but downsample_factor={f} "
                f"needs log2({f}) + 1 = {blocks} (the autoencoder halves in every block but the last): give {blocks} "
                f"channel counts or change downsample_factor"
            )
        resolution = cfg.data.resolution
        if resolution % f:
            raise ConfigError(f"methods.ldm.downsample_factor={f} does not divide data.resolution={resolution}; "
                              "pick a factor that divides the resolution")
        side, levels = resolution // f, len(cfg.model.block_out_channels)
        if side % 2 ** (levels - 1):
            raise ConfigError(
                f"methods.ldm.downsample_factor={f}: the latent side {resolution}/{f} = {side} is not divisible by "
                f"2**{levels - 1}, and the shared U-Net (model.block_out_channels, {levels} levels) halves it "
                f"{levels - 1} times; lower downsample_factor or use fewer U-Net levels"
            )

    def __init__(self, cfg: ExperimentConfig, data: DataInfo):
        super().__init__(cfg, data)
        # x0 clipping in the samplers is for images in [-1, 1]; scaled latents have std 1, so clipping them to [-1, 1]
        # would cut a third of their values. LDM (and diffusers' latent pipelines) sample latents unclipped.
        self.diffusion_cfg = dataclasses.replace(self.diffusion_cfg, clip_sample=False)
        # LDM's own noise schedule (null keeps the shared one). Unclipped latents need a schedule whose last step keeps
        # some signal: the shared linear 1e-4..0.02 schedule ends at sqrt(abar_T) = 0.0064, so an eps error e becomes an
        # x0 error of 156 e there; LDM's scaled_linear 0.00085..0.012 ends at 0.068 (15 e).
        schedule = {k: self.options[k] for k in ("beta_schedule", "beta_start", "beta_end") if self.options[k] is not None}
        if schedule:
            self.diffusion_cfg = dataclasses.replace(self.diffusion_cfg, **schedule)
            self.train_scheduler = make_train_scheduler(self.diffusion_cfg)
        self.autoencoder = build_autoencoder(data.channels, data.resolution, self.options)
        self.autoencoder.requires_grad_(False).eval()
        self.scale_factor: float | None = None
        self.latent_shift = self.latent_scale = None
        self.stage1_record: dict[str, Any] = {}

    def train(self, mode: bool = True):
        super().train(mode)
        self.autoencoder.eval()  # frozen: always in eval mode
        return self

    @property
    def downsample_factor(self) -> int:
        return int(self.options["downsample_factor"])

    @property
    def latent_channels(self) -> int:
        return int(self.options["latent_channels"])

    @property
    def latent_size(self) -> int:
        return self.data.resolution // self.downsample_factor

    # --- stage 1 ---------------------------------------------------------------------------------------------------
    @classmethod
    def run_stage1(cls, cfg: ExperimentConfig, seed: int, out_dir) -> dict[str, Any]:
        from pdm.data import BatchStream, load_dataset, subset
        from pdm.metrics import compute_reference_stats, score_samples
        from pdm.runtime import resolve_device

        started = time.perf_counter()
        out_dir = Path(out_dir)
        out_dir.mkdir(parents=True, exist_ok=True)
        options = cfg.method_options(cls.name)
        device = resolve_device(cfg)
        train_set, holdout = load_dataset(cfg.data, split="train"), load_dataset(cfg.data, split="holdout")
        if len(holdout) < 2:
            raise ConfigError(
                f"data.holdout_fraction={cfg.data.holdout_fraction} holds out {len(holdout)} of "
                f"{len(train_set) + len(holdout)} images; LDM's rFID needs at least 2: raise data.holdout_fraction"
            )
        batch_size, steps = options["autoencoder_batch_size"], options["autoencoder_steps"]
        if batch_size > len(train_set):
            raise ConfigError(f"methods.ldm.autoencoder_batch_size={batch_size} exceeds the {len(train_set)} training "
                              "images; lower it")

        torch.manual_seed(seed)
        info = DataInfo.of(train_set)
        autoencoder = build_autoencoder(info.channels, info.resolution, options).to(device)
        optimizer = torch.optim.Adam(autoencoder.parameters(), lr=options["autoencoder_lr"])
        stream = BatchStream(train_set, batch_size, seed, hflip=cfg.data.hflip)
        generator = torch.Generator(device).manual_seed(seed * 1_000_003 + 17)  # posterior samples while training
        autoencoder.train()
        window, last = [], {}
        bar = tqdm(range(steps), desc=f"ldm autoencoder seed{seed}", mininterval=2.0, file=sys.stderr)
        for step in bar:
            x, _, _ = stream.batch(step)
            loss, logs = autoencoder_loss(autoencoder, x.to(device), options["kl_weight"], generator)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"ldm stage 1: autoencoder loss became {loss.item()} at step {step}; "
                                         "lower methods.ldm.autoencoder_lr")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            window.append({k: float(v) for k, v in logs.items()})
            if len(window) == 25 or step == steps - 1:  # the final losses: mean of the last (up to) 25 steps
                last, window = {k: sum(w[k] for w in window) / len(window) for k in window[0]}, []
                bar.set_postfix({"l1": f"{last['rec_l1_per_pixel']:.4f}", "kl": f"{last['kl']:.1f}"})
        bar.close()
        autoencoder.eval()
        train_seconds = time.perf_counter() - started

        # LDM's scale factor: 1 / std of posterior samples, measured on the training split; and per-channel statistics
        std = latent_std(autoencoder, train_set, torch.Generator(device).manual_seed(seed * 1_000_003 + 29), device)
        channel_mean, channel_std = latent_channel_stats(
            autoencoder, train_set, torch.Generator(device).manual_seed(seed * 1_000_003 + 29), device)
        if not (std > 0 and min(channel_std) > 0):
            raise FloatingPointError(f"ldm stage 1: the latents have std {std} (per channel {channel_std}); the "
                                     "autoencoder collapsed, lower methods.ldm.autoencoder_lr or raise autoencoder_steps")
        scale_factor = 1.0 / std
        _save_parts(autoencoder, ENCODER_PARTS, out_dir / ENCODER_FILE)
        _save_parts(autoencoder, DECODER_PARTS, out_dir / DECODER_FILE)
        seconds = time.perf_counter() - started  # what LDM needs before stage 2: training + the scale factor

        # Reconstruction quality on held-out images: a measurement, not part of LDM's cost
        eval_started = time.perf_counter()
        if options["rfid_images"] is not None:  # two Inception passes per image: the default scores 100 of 180
            holdout = subset(holdout, torch.arange(min(options["rfid_images"], len(holdout))))
        originals = holdout.images.permute(0, 2, 3, 1).numpy()
        reconstructions = reconstruct_uint8(autoencoder, holdout, torch.Generator(device).manual_seed(seed * 1_000_003 + 31), device)
        scratch = Path(tempfile.mkdtemp(prefix=".holdout-", dir=out_dir))
        try:
            compute_reference_stats(originals, scratch / "holdout_refstats.npz", device=device,
                                    clean_fid=cfg.eval.clean_fid)
            scores = score_samples(reconstructions, scratch / "holdout_refstats.npz", device=device,
                                   kid_subset_size=cfg.eval.kid_subset_size, clean_fid=cfg.eval.clean_fid)
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        evaluation_seconds = time.perf_counter() - eval_started
        from pdm.steps import save_grid

        grid, columns = reconstruction_grid(originals, reconstructions)
        save_grid(out_dir / RECONSTRUCTION_GRID, grid, nrow=columns)

        side = info.resolution // options["downsample_factor"]
        return {
            "seconds": seconds,
            "train_seconds": train_seconds,
            "evaluation_seconds": evaluation_seconds,
            "device": device,
            "sampling_files": [DECODER_FILE],
            "training_only_files": [ENCODER_FILE],
            "external_files": [],
            "training_only_files": [ENCODER_FILE],
            "scale_factor": scale_factor,
            "latent_std": std,
            "latent_normalization": options["latent_normalization"],
            "latent_channel_mean": channel_mean,
            "latent_channel_std": channel_std,
            "reconstruction_grid": RECONSTRUCTION_GRID,
            "rfid": scores["fid"],
            "rkid": scores["kid_mean"],
            "rclean_fid": scores["clean_fid"],
            "psnr": psnr_uint8(originals, reconstructions),
            "holdout_images": len(holdout),
            "train_images": len(train_set),
            "reconstruction": "posterior sample",
            "autoencoder_parameters": sum(p.numel() for p in autoencoder.parameters()),
            "autoencoder_channels": list(options["autoencoder_channels"]),
            "autoencoder_norm_groups": norm_groups(options["autoencoder_channels"]),
            "autoencoder_steps": steps,
            "autoencoder_batch_size": batch_size,
            "autoencoder_lr": options["autoencoder_lr"],
            "kl_weight": options["kl_weight"],
            "reconstruction_loss": "l1",
            "downsample_factor": options["downsample_factor"],
            "latent_channels": options["latent_channels"],
            "latent_shape": [options["latent_channels"], side, side],
            "final_losses": {k: round(v, 6) for k, v in last.items()},
            "final_reconstruction_l1": last.get("rec_l1_per_pixel"),
            "train_images_per_second": steps * batch_size / max(train_seconds, 1e-9),
        }

    def prepare(self, stage1_dir) -> None:
        stage1_dir = Path(stage1_dir)
        record = read_json(stage1_dir / "stage1.json")
        if not record.get("scale_factor", 0) > 0:
            raise ValueError(f"{stage1_dir / 'stage1.json'} has no positive scale_factor; re-run LDM's stage 1")
        _load_parts(self.autoencoder, ENCODER_PARTS, stage1_dir / ENCODER_FILE)
        _load_parts(self.autoencoder, DECODER_PARTS, stage1_dir / DECODER_FILE)
        self.autoencoder.requires_grad_(False).eval()
        self.scale_factor = float(record["scale_factor"])
        self.stage1_record = record
        channels = self.latent_channels
        if self.options["latent_normalization"] == "channel":
            if len(record.get("latent_channel_std") or ()) != channels:
                raise ValueError(f"{stage1_dir / 'stage1.json'} has no per-channel latent statistics for {channels} "
                                 "channels (made by an older stage 1?); re-run LDM's stage 1")
            mean, std = record["latent_channel_mean"], record["latent_channel_std"]
        else:  # LDM's single scale factor, no shift
            mean, std = [0.0] * channels, [1.0 / self.scale_factor] * channels
        self.latent_shift = torch.tensor(mean, dtype=torch.float32).view(1, channels, 1, 1)
        self.latent_scale = torch.tensor(std, dtype=torch.float32).view(1, channels, 1, 1)

    def prepare_for_probe(self, database_size: int) -> dict[str, Any]:
        """The autoencoder as built (random weights: the same encode / decode work), identity normalisation."""
        channels = self.latent_channels
        self.scale_factor = 1.0
        self.latent_shift = torch.zeros(1, channels, 1, 1)
        self.latent_scale = torch.ones(1, channels, 1, 1)
        return {"stand_in": True}

    def _normalization(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(shift, scale) with shape (1, C, 1, 1): diffusion runs on (z - shift) / scale."""
        if self.scale_factor is None:
            raise RuntimeError("ldm: the autoencoder is not loaded; call prepare(stage1_dir) (load_stage1) first")
        return self.latent_shift.to(like.device), self.latent_scale.to(like.device)

    # --- the latent space ------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x0: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(z - shift) / scale, z ~ q(z | x0) drawn from `generator` (the global RNG when None); shift and scale are
        per channel (latent_normalization: channel) or 0 and 1 / scale_factor (global, LDM's scale factor)."""
        shift, scale = self._normalization(x0)
        return (sample_latents(self.autoencoder, x0.float(), generator).float() - shift) / scale

    def decode(self, latents: torch.Tensor) -> torch.Tensor:
        shift, scale = self._normalization(latents)
        return self.autoencoder.decode(latents.float() * scale + shift).sample.clamp(-1, 1)

    def sampling_modules(self):
        """The U-Net and the frozen decoder (post_quant_conv + decoder): what generation runs."""
        return [*super().sampling_modules(), self.autoencoder.post_quant_conv, self.autoencoder.decoder]

    def record(self) -> dict[str, Any]:
        s = self.stage1_record
        return {
            **super().record(),
            "downsample_factor": self.downsample_factor,
            "latent_channels": self.latent_channels,
            "latent_shape": f"{self.latent_channels}x{self.latent_size}x{self.latent_size}",
            "scale_factor": self.scale_factor,
            "latent_normalization": self.options["latent_normalization"],
            "clip_sample": self.diffusion_cfg.clip_sample,
            "beta_schedule": f"{self.diffusion_cfg.beta_schedule} {self.diffusion_cfg.beta_start:g}..{self.diffusion_cfg.beta_end:g}",
            "autoencoder_rfid": s.get("rfid"),
            "autoencoder_psnr": s.get("psnr"),
            "autoencoder_parameters": sum(p.numel() for p in self.autoencoder.parameters()),
        }
