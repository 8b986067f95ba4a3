"""The workflow's steps as plain functions: the CLI and the Snakemake scripts both call these.

Each step reads its inputs, does one thing and writes its outputs atomically, so an interrupted job leaves nothing
half-written and Snakemake simply re-runs it.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from pdm.config import ExperimentConfig
from pdm.io import atomic_path, read_json, write_json


def sample_seeds(cfg: ExperimentConfig) -> list[int]:
    """Evaluation seeds, identical for every method and training seed: a paired comparison."""
    return list(range(cfg.sample.num_samples))


def save_images(path: Path, images: np.ndarray) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, images=images)


def load_images(path: str | Path) -> np.ndarray:
    try:
        with np.load(path) as archive:
            return archive["images"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; run the sample step first") from None
    except (KeyError, ValueError, OSError) as err:
        raise ValueError(f"{path} is not a samples archive ({err}); delete it and re-run the sample step") from None


def save_grid(path: Path, images: np.ndarray, nrow: int = 8) -> None:
    """A PNG grid of uint8 (N, H, W, C) images, upscaled for viewing, with 2-pixel gutters."""
    from PIL import Image

    n, h, w, c = images.shape
    rows = -(-n // nrow)
    canvas = np.full((rows * (h + 2) + 2, nrow * (w + 2) + 2, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, nrow)
        canvas[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w] = image
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    scale = max(1, 512 // (nrow * (w + 2) + 2))  # upscale small images so a person can judge them
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")


def stage1_step(cfg: ExperimentConfig, method: str, seed: int, out_dir: str | Path) -> dict:
    """Run a method's stage 1 (LDM autoencoder, RDM database + index) and write out_dir/stage1.json."""
    import torch

    from pdm.methods.registry import get_method_class
    from pdm.trainer import resolve_device, versions

    method_class = get_method_class(method)
    if not method_class.has_stage1:
        raise ValueError(f"method '{method}' has no stage 1; only methods with one (e.g. ldm, rdm) need this step")
    if resolve_device(cfg) == "cpu":
        torch.set_num_threads(cfg.threads_per_job)
    torch.manual_seed(seed)
    record = method_class.run_stage1(cfg, seed, Path(out_dir))
    record = {"method": method, "seed": seed, "config_hash": cfg.hash, **record, "versions": versions()}
    write_json(Path(out_dir) / "stage1.json", record)
    return record


def train_step(cfg: ExperimentConfig, method: str, seed: int, model_dir: str | Path, stage1_dir=None) -> dict:
    from pdm.trainer import train

    return train(cfg, method, seed, model_dir, stage1_dir=stage1_dir)


def sample_step(cfg: ExperimentConfig, method: str, seed: int, model_dir: str | Path, out_dir: str | Path) -> dict:
    import torch

    from pdm.checkpoint import load_trained
    from pdm.trainer import resolve_device

    device = resolve_device(cfg)
    if device == "cpu":
        torch.set_num_threads(cfg.threads_per_job)
    model, _ = load_trained(cfg, method, model_dir, device)
    out_dir = Path(out_dir)
    s = cfg.sample
    started = time.perf_counter()
    images = model.sample(sample_seeds(cfg), s.sampler, s.steps, s.eta, s.batch_size, device)
    seconds = time.perf_counter() - started
    save_images(out_dir / "samples.npz", images)
    save_grid(out_dir / "grid.png", images[: cfg.eval.grid_size])
    record = {"sampler": s.sampler, "sampling_steps": s.steps, "eta": s.eta, "num_samples": len(images),
              "sampling_seconds": seconds, "sampling_images_per_second": len(images) / seconds,
              "sampling_batch_size": s.batch_size, "sampling_device": device, "sample_record": model.record()}
    write_json(out_dir / "sample.json", record)
    return record


def reference_images(cfg: ExperimentConfig) -> np.ndarray:
    """The real images of the reference statistics: num_real training images in a fixed (seed 0) order."""
    import torch

    from pdm.data import load_dataset

    dataset = load_dataset(cfg.data)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: cfg.eval.num_real]
    return dataset.images[order].permute(0, 2, 3, 1).numpy()  # (N, H, W, C) uint8


def refstats_step(cfg: ExperimentConfig, out_path: str | Path) -> dict:
    from pdm.metrics import compute_reference_stats

    return compute_reference_stats(reference_images(cfg), out_path)


def storage(model_dir: Path, train_record: dict) -> dict:
    """Bytes on disk: weights needed to generate, training-only weights, and external memory (RDM's database).

    Stage-1 files count as weights when generation needs them (LDM's autoencoder) and as external memory when they
    are a database, an index or a frozen encoder (RDM).
    """
    sampling = set(train_record["method_record"].get("sampling_components", ()))
    sizes = {p.stem: p.stat().st_size for p in Path(model_dir).glob("*.safetensors")}
    stage1, stage1_dir = train_record.get("stage1") or {}, Path(train_record.get("stage1_dir") or ".")
    stage1_weights = sum((stage1_dir / f).stat().st_size for f in stage1.get("sampling_files", []))
    external_bytes = sum((stage1_dir / f).stat().st_size for f in stage1.get("external_files", []))
    return {
        "weights_bytes": sum(v for k, v in sizes.items() if not sampling or k in sampling) + stage1_weights,
        "stage1_weights_bytes": stage1_weights,
        "training_only_bytes": sum(v for k, v in sizes.items() if sampling and k not in sampling),
        "prototype_bank_bytes": sizes.get("prototypes", 0),
        "external_memory_bytes": external_bytes,
        "component_bytes": sizes,
    }


def evaluate_step(cfg: ExperimentConfig, method: str, seed: int, model_dir: str | Path, samples_dir: str | Path,
                  refstats: str | Path, out_path: str | Path) -> dict:
    """One flat result record: scores, costs, storage, and what the method did differently (its record)."""
    from pdm.metrics import score_samples

    train_record = read_json(Path(model_dir) / "train.json")
    sample_record = read_json(Path(samples_dir) / "sample.json")
    scores = score_samples(load_images(Path(samples_dir) / "samples.npz"), refstats,
                           kid_subset_size=cfg.eval.kid_subset_size, allow_download=cfg.eval.allow_is_download)
    keep = ("steps_done", "stop_reason", "batch_size", "images_seen", "device", "num_processes", "mixed_precision",
            "stage1_seconds", "train_seconds", "train_images_per_second", "device_hours", "parameters_total",
            "parameters_sampling", "peak_memory_bytes", "peak_memory_kind", "config_hash")
    record = {
        "experiment": cfg.experiment, "method": method, "seed": seed, "dataset": cfg.data.dataset,
        "resolution": cfg.data.resolution,
        **{k: train_record[k] for k in keep},
        **{k: v for k, v in train_record["method_record"].items() if not isinstance(v, (list, dict))},
        **{k: v for k, v in sample_record.items() if k != "sample_record"},
        **{k: v for k, v in storage(Path(model_dir), train_record).items() if k != "component_bytes"},
        **scores,
        "versions": train_record["versions"],
    }
    write_json(out_path, record)
    return record
