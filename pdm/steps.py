"""The workflow's steps as plain functions: the CLI and the Snakemake scripts both call these.

Each step reads its inputs, checks their identities (pdm.identity), does one thing and writes its outputs atomically.
Long steps keep their progress in a work folder beside their outputs (training: checkpoint/, sampling and evaluation:
chunk files), so a killed job resumes where it stopped and gives the same result as an uninterrupted one.
"""

from __future__ import annotations

import contextlib
import shutil
import time
from pathlib import Path

import numpy as np

from pdm.config import ExperimentConfig
from pdm.identity import (
    all_identities,
    refstats_identity,
    sampling_identity,
    stage1_identity,
)
from pdm.io import atomic_path, read_json, write_json
from pdm.runtime import provenance, setup_job, versions


def sample_seeds(cfg: ExperimentConfig) -> list[int]:
    """Evaluation seeds, identical for every method and training seed: a paired comparison."""
    return list(range(cfg.sample.num_samples))


def save_images(path: Path, images: np.ndarray, **extra) -> None:
    with atomic_path(path, suffix=".npz") as tmp:
        np.savez_compressed(tmp, images=images, **extra)


def load_images(path: str | Path) -> np.ndarray:
    try:
        with np.load(path, allow_pickle=False) as archive:
            return archive["images"]
    except FileNotFoundError:
        raise FileNotFoundError(f"{path} does not exist; run the sample step first") from None
    except (KeyError, ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a samples archive ({err}); delete it and re-run the sample step") from None


def save_grid(path: Path, images: np.ndarray, nrow: int = 8) -> None:
    """A PNG grid of uint8 (N, H, W, C) images, upscaled for viewing, with 2-pixel gutters."""
    from PIL import Image

    n, h, w, c = images.shape
    rows = max(1, -(-n // nrow))
    canvas = np.full((rows * (h + 2) + 2, nrow * (w + 2) + 2, c), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        r, col = divmod(i, nrow)
        canvas[2 + r * (h + 2) : 2 + r * (h + 2) + h, 2 + col * (w + 2) : 2 + col * (w + 2) + w] = image
    picture = Image.fromarray(canvas[..., 0] if c == 1 else canvas)
    scale = max(1, 512 // (nrow * (w + 2) + 2))  # upscale small images so a person can judge them
    picture = picture.resize((picture.width * scale, picture.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        picture.save(tmp, format="PNG")


# --- stage 1 and training ----------------------------------------------------------------------------------------
def stage1_step(cfg: ExperimentConfig, method: str, seed: int, out_dir: str | Path) -> dict:
    """Run a method's stage 1 (LDM autoencoder, RDM database + index) and write out_dir/stage1.json."""
    import torch

    from pdm.methods.registry import get_method_class

    method_class = get_method_class(method)
    if not method_class.has_stage1:
        raise ValueError(f"method '{method}' has no stage 1; only methods with one (e.g. ldm, rdm) need this step")
    from pdm.flops import Stage1FlopCounter

    setup_job(cfg)
    torch.manual_seed(seed)
    # Stage-1 FLOPs, reported beside the training FLOPs: every torch op of the job (training and, e.g., LDM's scale
    # factor or RDM's embeddings), measurements in pdm.metrics left out; FAISS work is not torch and is not counted.
    # Outputs are bitwise those of an uncounted run; the counting slows the job (~1.2x on CPU, see results/README), so
    # a method whose stage 1 is one repeated step (ProtoDiffusion's classifier) counts one step and multiplies.
    counter = None if method_class.counts_own_stage1_flops else Stage1FlopCounter()
    with counter or contextlib.nullcontext():
        record = method_class.run_stage1(cfg, seed, Path(out_dir))
    flops = int(record["stage1_flops"]) if counter is None else int(counter.get_total_flops())
    record = {**provenance(), "method": method, "seed": seed, "stage1_id": stage1_identity(cfg, method, seed),
              "config_hash": cfg.hash, **record, "stage1_flops": flops, "versions": versions()}
    write_json(Path(out_dir) / "stage1.json", record)
    return record


def train_step(cfg: ExperimentConfig, method: str, seed: int, model_dir: str | Path, stage1_dir=None) -> dict:
    from pdm.trainer import train

    if stage1_dir is not None:
        stage1 = read_json(Path(stage1_dir) / "stage1.json")
        expected = stage1_identity(cfg, method, seed)
        if stage1.get("stage1_id") != expected:
            raise ValueError(f"{stage1_dir} holds stage-1 identity {stage1.get('stage1_id')}, this config gives "
                             f"{expected}; re-run stage 1 (`pdm-bench stage1`, or snakemake does it)")
    return train(cfg, method, seed, model_dir, stage1_dir=stage1_dir)


# --- sampling ----------------------------------------------------------------------------------------------------
def _chunk_path(work: Path, seeds: list[int]) -> Path:
    return work / f"seeds{seeds[0]:08d}-{seeds[-1]:08d}.npz"


def _read_chunk(path: Path, sample_id: str, count: int) -> tuple[np.ndarray, float] | None:
    """A finished chunk of this sampling identity, or None (absent, foreign or unreadable: it is redone)."""
    try:
        with np.load(path, allow_pickle=False) as chunk:
            if str(chunk["sample_id"]) != sample_id or len(chunk["images"]) != count:
                return None
            return chunk["images"], float(chunk["seconds"])
    except (OSError, KeyError, ValueError, EOFError):
        return None


def sample_chunks(model, cfg: ExperimentConfig, seeds: list[int], device: str, work: Path, sample_id: str):
    """Sample `seeds` one batch at a time, each finished batch saved to `work`; finished batches are not redone.

    Returns (images, seconds spent sampling, summed over the chunks, so a resumed job still reports its real speed,
    and how many chunks were reused).
    """
    s = cfg.sample
    work.mkdir(parents=True, exist_ok=True)
    parts, seconds, reused = [], 0.0, 0
    for start in range(0, len(seeds), s.batch_size):
        chunk = seeds[start:start + s.batch_size]
        path = _chunk_path(work, chunk)
        done = _read_chunk(path, sample_id, len(chunk))
        if done is None:
            started = time.perf_counter()
            images = model.sample(chunk, s.sampler, s.steps, s.eta, s.batch_size, device)
            done = images, time.perf_counter() - started
            save_images(path, images, sample_id=np.array(sample_id), seconds=np.array(done[1]))
        else:
            reused += 1
        parts.append(done[0])
        seconds += done[1]
    return np.concatenate(parts), seconds, reused


def _failed_samples(cfg: ExperimentConfig, train_record: dict, out_dir: Path, ids: dict) -> dict:
    """A failed training run has no model: write empty samples, a blank grid and a record that carries the reason."""
    info = train_record["data_info"]
    shape = (0, info["resolution"], info["resolution"], info["channels"])
    save_images(out_dir / "samples.npz", np.zeros(shape, np.uint8))
    save_grid(out_dir / "grid.png", np.full((1, *shape[1:]), 128, np.uint8), nrow=1)
    record = {**provenance(), "status": "failed", "failure": train_record.get("failure"),
              "train_id": ids["train_id"], "sample_id": ids["sample_id"], "num_samples": 0}
    write_json(out_dir / "sample.json", record)
    return record


def sample_step(cfg: ExperimentConfig, method: str, seed: int, model_dir: str | Path, out_dir: str | Path,
                snapshot: float | None = None) -> dict:
    """Sample the final weights, or with `snapshot` the weights saved at that fraction of the budget
    (model_dir/snapshots/{fraction}/, see pdm.sweep)."""
    from pdm.checkpoint import load_trained, read_train_record
    from pdm.sweep import network_evaluations, read_snapshot, snapshot_dir

    out_dir = Path(out_dir)
    train_record = read_train_record(cfg, method, seed, model_dir)  # refused unless its training identity matches
    ids = {"train_id": train_record["train_id"], "sample_id": sampling_identity(cfg, method, seed, snapshot)}
    if train_record.get("status", "ok") != "ok":
        return _failed_samples(cfg, train_record, out_dir, ids)
    weights, snapshot_fields = None, {}
    if snapshot is not None:
        info = read_snapshot(cfg, method, seed, model_dir, snapshot)  # refused unless it is a snapshot of this run
        weights = snapshot_dir(model_dir, snapshot)
        snapshot_fields = {"snapshot_fraction": float(snapshot), "snapshot_step": info.get("step")}
    device = setup_job(cfg)
    model, _ = load_trained(cfg, method, model_dir, device, seed=seed, weights=weights)
    s = cfg.sample
    work = out_dir / "chunks"
    images, seconds, reused = sample_chunks(model, cfg, sample_seeds(cfg), device, work, ids["sample_id"])
    save_images(out_dir / "samples.npz", images)
    save_grid(out_dir / "grid.png", images[: cfg.eval.grid_size])
    record = {**provenance(), "status": "ok", **ids,
              "sampler": s.sampler, "sampling_steps": s.steps,
              "nfe": network_evaluations(cfg, method, s.sampler, s.steps),
              "guidance_weight": cfg.method_options(method).get("guidance_weight"),  # None: no guidance
              **snapshot_fields, "eta": s.eta, "num_samples": len(images),
              "sampling_seconds": seconds, "sampling_images_per_second": len(images) / max(seconds, 1e-9),
              "sampling_batch_size": s.batch_size, "sampling_device": device, "sampling_chunks_reused": reused,
              "sample_record": model.record(), "versions": versions()}
    write_json(out_dir / "sample.json", record)
    shutil.rmtree(work, ignore_errors=True)
    return record


# --- reference statistics and evaluation -------------------------------------------------------------------------
def reference_images(cfg: ExperimentConfig) -> np.ndarray:
    """The real images of the reference statistics: num_real training images in a fixed (seed 0) order."""
    import torch

    from pdm.data import load_dataset

    dataset = load_dataset(cfg.data)
    order = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: cfg.eval.num_real]
    return dataset.images[order].permute(0, 2, 3, 1).numpy()  # (N, H, W, C) uint8


def refstats_step(cfg: ExperimentConfig, out_path: str | Path) -> dict:
    from pdm.metrics import compute_reference_stats

    out_path = Path(out_path)
    device = setup_job(cfg)
    work = out_path.with_name(out_path.name + ".work")
    metadata = compute_reference_stats(reference_images(cfg), out_path, device=device, work_dir=work,
                                       identity=refstats_identity(cfg), clean_fid=cfg.eval.clean_fid)
    shutil.rmtree(work, ignore_errors=True)
    return metadata


def check_refstats_identity(cfg: ExperimentConfig, refstats: str | Path) -> None:
    from pdm.metrics import load_reference_stats

    metadata, _ = load_reference_stats(refstats)
    expected = refstats_identity(cfg)
    if metadata.get("identity") != expected:
        raise ValueError(f"{refstats} holds reference statistics of identity {metadata.get('identity')}, this config "
                         f"gives {expected} (data or eval.num_real differ); recompute them (`pdm-bench refstats`)")


def storage(model_dir: Path, train_record: dict) -> dict:
    """Bytes on disk: weights needed to generate, training-only weights, and external memory (RDM's database).

    Stage-1 files count as weights when generation needs them (LDM's decoder), as external memory when they are a
    database, an index or a frozen encoder (RDM), and as training-only when only training needed them (LDM's encoder,
    ProtoDiffusion's prototype classifier).
    """
    from pdm.checkpoint import weights_dir

    sampling = set(train_record["method_record"].get("sampling_components", ()))
    sizes = {p.stem: p.stat().st_size for p in weights_dir(model_dir).glob("*.safetensors")}
    stage1, stage1_dir = train_record.get("stage1") or {}, Path(train_record.get("stage1_dir") or ".")
    stage1_weights = sum((stage1_dir / f).stat().st_size for f in stage1.get("sampling_files", []))
    external_bytes = sum((stage1_dir / f).stat().st_size for f in stage1.get("external_files", []))
    stage1_training_only = sum((stage1_dir / f).stat().st_size for f in stage1.get("training_only_files", []))
    return {
        "weights_bytes": sum(v for k, v in sizes.items() if not sampling or k in sampling) + stage1_weights,
        "stage1_weights_bytes": stage1_weights,
        "training_only_bytes": sum(v for k, v in sizes.items() if sampling and k not in sampling) + stage1_training_only,
        "prototype_bank_bytes": sizes.get("prototypes", 0),
        "external_memory_bytes": external_bytes,
    }


TRAIN_FIELDS = ("status", "failure", "failed_step", "failed_term", "budget", "budget_value", "steps_planned",
                "steps_done", "flops_per_step", "train_flops", "stage1_flops", "seconds_per_step_estimate",
                "stop_reason", "batch_size",
                "images_seen", "device", "num_processes", "mixed_precision", "channels_last", "compile",
                "stage1_seconds", "train_seconds",
                "train_images_per_second", "device_hours", "parameters_total", "parameters_sampling",
                "peak_memory_bytes", "peak_memory_kind", "config_hash")
SAMPLE_FIELDS = ("sampler", "sampling_steps", "nfe", "guidance_weight", "eta", "num_samples", "sampling_seconds",
                 "sampling_images_per_second", "sampling_batch_size", "sampling_device")


SNAPSHOT_FIELDS = ("snapshot_fraction", "snapshot_step")


def evaluate_step(cfg: ExperimentConfig, method: str, seed: int, model_dir: str | Path, samples_dir: str | Path,
                  refstats: str | Path, out_path: str | Path, snapshot: float | None = None) -> dict:
    """One flat result record: identities, scores, costs, storage, and what the method did differently.

    `snapshot`: the samples are of the weights saved at that fraction of the budget (see sample_step).
    """
    from pdm.checkpoint import read_train_record
    from pdm.metrics import score_samples

    out_path = Path(out_path)
    ids = all_identities(cfg, method, seed, snapshot)
    train_record = read_train_record(cfg, method, seed, model_dir)
    sample_record = read_json(Path(samples_dir) / "sample.json")
    if sample_record.get("sample_id") != ids["sample_id"]:
        raise ValueError(f"{samples_dir} holds samples of identity {sample_record.get('sample_id')}, this config gives "
                         f"{ids['sample_id']}; re-run the sample step (snakemake does this when the config changes)")
    check_refstats_identity(cfg, refstats)
    record = {
        **provenance(), **ids,
        "experiment": cfg.experiment, "method": method, "seed": seed, "dataset": cfg.data.dataset,
        "resolution": cfg.data.resolution,
        **{k: train_record.get(k) for k in TRAIN_FIELDS},
        **{k: v for k, v in train_record["method_record"].items() if not isinstance(v, (list, dict))},
        **{k: sample_record.get(k) for k in SAMPLE_FIELDS},
        **{k: sample_record[k] for k in SNAPSHOT_FIELDS if k in sample_record},
        "train_versions": train_record.get("versions"),
    }
    if train_record.get("status", "ok") == "ok":
        device = setup_job(cfg)
        work = out_path.with_name(out_path.stem + ".work")
        scores = score_samples(load_images(Path(samples_dir) / "samples.npz"), refstats, device=device,
                               kid_subset_size=cfg.eval.kid_subset_size, allow_download=cfg.eval.allow_is_download,
                               work_dir=work, identity=ids["sample_id"],
                               # replicates depend on eval.bootstrap_samples (in the identity); the record's interval
                               # is at report.confidence and the report recomputes it from the replicates
                               bootstrap_samples=cfg.eval.bootstrap_samples, confidence=cfg.report.confidence,
                               clean_fid=cfg.eval.clean_fid)
        record.update(storage(Path(model_dir), train_record))
        record.update({k: v for k, v in scores.items() if k not in ("versions", "refstats_versions")},
                      evaluation_device=device, metric_versions=scores.get("versions"),
                      refstats_versions=scores.get("refstats_versions"))
        shutil.rmtree(work, ignore_errors=True)
    write_json(out_path, record)
    return record
