"""Measurements behind `pdm-bench plan` (pdm.plan): a few real steps of each job's work on this device.

Every phase runs the code the workflow's job runs (the trainer's own run set-up and budget probe, `Method.sample`, the
Inception feature extractor, each stage 1's own loss and networks) on synthetic uint8 images of the config's
channels, resolution and classes, so it needs no data. Stage-1 outputs are random stand-ins of the real shapes
(`Method.prepare_for_probe`). Each phase returns seconds at the probe batch size and the peak memory it reached;
pdm.plan scales them to the config's batch sizes and counts. Run each phase in its own process (pdm.plan does) so
that its peak memory is its own: on CPU the peak is the process's peak resident set (ru_maxrss), as a job records it.
"""

from __future__ import annotations

import dataclasses
import os
import resource
import time
from typing import Any, Callable

import numpy as np
import torch

from pdm.config import ExperimentConfig, resolve_config
from pdm.data import ImageDataset


@dataclasses.dataclass(frozen=True)
class DataShape:
    """What the probes need to know about the data: image shape, classes (0: unlabelled) and split sizes."""

    channels: int
    resolution: int
    num_classes: int
    train_images: int
    holdout_images: int


@dataclasses.dataclass(frozen=True)
class ProbeSettings:
    batch_size: int | None  # None: the config's own batch sizes (nothing extrapolated)
    warmup_steps: int
    timed_steps: int
    device: str  # cpu | cuda


def synthetic_dataset(shape: DataShape, count: int) -> ImageDataset:
    """`count` random uint8 images (N, C, H, W) with labels cycling through the classes (none when unlabelled)."""
    generator = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (count, shape.channels, shape.resolution, shape.resolution), dtype=torch.uint8,
                           generator=generator)
    labels = torch.arange(count) % shape.num_classes if shape.num_classes else None
    names = tuple(f"class{i}" for i in range(shape.num_classes))
    return ImageDataset("synthetic", images, labels, names)


def probe_config(raw: dict, device: str) -> ExperimentConfig:
    """The config on `device`, with this process's threads pinned as a job's are (pdm.runtime.setup_job)."""
    from pdm.runtime import setup_job

    cfg = resolve_config({**raw, "device": device})
    if setup_job(cfg) == "cpu":  # more threads than this machine has cores only measures their contention
        torch.set_num_threads(min(cfg.threads_per_job, os.cpu_count() or 1))
    return cfg


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def memory_now(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.memory_allocated())
    import psutil

    return int(psutil.Process().memory_info().rss)


def memory_peak(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # Linux: KiB


def _reset_peak(device: str) -> None:
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()


def seconds_per_call(fn: Callable[[], Any], probe: ProbeSettings) -> float:
    """Mean seconds of `fn` over probe.timed_steps calls after probe.warmup_steps untimed ones."""
    for _ in range(probe.warmup_steps):
        fn()
    _sync(probe.device)
    started = time.perf_counter()
    for _ in range(probe.timed_steps):
        fn()
    _sync(probe.device)
    return (time.perf_counter() - started) / probe.timed_steps


def _batch(probe: ProbeSettings, configured: int) -> int:
    return configured if probe.batch_size is None else min(probe.batch_size, configured)


def _with_train_batch(cfg: ExperimentConfig, batch_size: int) -> ExperimentConfig:
    return dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, batch_size=batch_size))


# --- the phases: each takes (raw config, method, data shape, probe settings) and returns plain numbers -------------
def probe_training(raw: dict, method: str, shape: DataShape, probe: ProbeSettings) -> dict:
    """The trainer's own run (pdm.trainer.probe_run) at the probe batch: seconds per optimiser step (its budget
    probe), FLOPs of a step, and finalize's pass over the training set (timed on a synthetic set, per image)."""
    from pdm.trainer import probe_run

    cfg = probe_config(raw, probe.device)
    batch = _batch(probe, cfg.train.batch_size)
    images = max(2 * batch, 64)
    dataset = synthetic_dataset(shape, images)
    run = probe_run(_with_train_batch(cfg, batch), method, dataset, max(shape.train_images, images))
    _sync(probe.device)
    before = memory_now(probe.device)
    _reset_peak(probe.device)
    per_step, _ = run._time_steps(probe.warmup_steps, probe.timed_steps)
    peak = memory_peak(probe.device)
    state_bytes = sum(p.numel() * p.element_size() for p in run.trainable) * (3 + (run.ema is not None))
    started = time.perf_counter()
    with torch.no_grad():
        run.method.finalize(dataset)  # e.g. PDM's prototype usage over the training set
    finalize_per_image = (time.perf_counter() - started) / images
    return {"batch_size": batch, "seconds_per_step": per_step, "flops_per_step": run.flops_per_step,
            "memory_before": before, "memory_peak": peak, "state_bytes": state_bytes,
            "finalize_seconds_per_image": finalize_per_image,
            "parameters_trained": sum(p.numel() for p in run.trainable)}


def probe_sampling(raw: dict, method: str, shape: DataShape, probe: ProbeSettings) -> dict:
    """`Method.sample` at the probe batch with the config's sampler: seconds per sampler step (one denoiser call, two
    under guidance) from the difference of a 2-step and a 4-step run, and the per-batch rest (conditioning, decoding)."""
    from pdm.methods.base import DataInfo
    from pdm.methods.registry import get_method_class

    cfg = probe_config(raw, probe.device)
    s = cfg.sample
    batch = _batch(probe, s.batch_size)
    torch.manual_seed(0)
    model = get_method_class(method)(cfg, DataInfo(shape.channels, shape.resolution, shape.num_classes))
    model.prepare_for_probe(max(shape.train_images, 64))
    model.to(probe.device).eval()
    model.finalize(synthetic_dataset(shape, 64))  # what training leaves for sampling (PDM's prototype frequencies)
    seeds = list(range(batch))

    def run(steps: int) -> float:
        _sync(probe.device)
        started = time.perf_counter()
        model.sample(seeds, s.sampler, steps, s.eta, batch, probe.device)
        _sync(probe.device)
        return time.perf_counter() - started

    before = memory_now(probe.device)
    _reset_peak(probe.device)
    run(2)  # warm-up
    short = min(run(2) for _ in range(max(1, probe.timed_steps // 2)))
    long = min(run(4) for _ in range(max(1, probe.timed_steps // 2)))
    per_step = max((long - short) / 2, long / 4 * 0.5)  # a noisy difference is kept no lower than half the mean
    return {"batch_size": batch, "seconds_per_sampler_step": per_step,
            "seconds_per_batch_fixed": max(0.0, short - 2 * per_step),
            "memory_before": before, "memory_peak": memory_peak(probe.device)}


def probe_inception(raw: dict, method: str | None, shape: DataShape, probe: ProbeSettings) -> dict:
    """Seconds per image of each Inception feature pass the evaluation and reference statistics run."""
    from pdm.metrics.scores import extract_features

    cfg = probe_config(raw, probe.device)
    modes = ("torch-fidelity", "clean") if cfg.eval.clean_fid else ("torch-fidelity",)
    batch = _batch(probe, 64)  # the metrics' batch size (pdm.metrics.scores.extract_features)
    images = synthetic_dataset(shape, batch).images.permute(0, 2, 3, 1).numpy()
    before = memory_now(probe.device)
    _reset_peak(probe.device)
    per_image = {}
    for mode in modes:
        seconds = seconds_per_call(lambda: extract_features(images, mode, probe.device, batch_size=batch), probe)
        per_image[mode] = seconds / batch
    return {"batch_size": batch, "seconds_per_image": per_image, "memory_before": before,
            "memory_peak": memory_peak(probe.device)}


def probe_stage1(raw: dict, method: str, shape: DataShape, probe: ProbeSettings) -> dict:
    """Each stage 1's own work at the probe batch: LDM's autoencoder steps and encode / decode passes, ProtoDiffusion's
    classifier steps, RDM's encoder (its real weights, or the same architecture with random ones where they cannot be
    had offline) and a FAISS search of the full-size database."""
    cfg = probe_config(raw, probe.device)
    options = cfg.method_options(method)
    before = memory_now(probe.device)
    _reset_peak(probe.device)
    measure = {"ldm": _stage1_ldm, "protodiffusion": _stage1_classifier, "rdm": _stage1_rdm}[method]
    out = measure(cfg, options, shape, probe)
    return {**out, "memory_before": before, "memory_peak": memory_peak(probe.device)}


def _stage1_ldm(cfg, options, shape: DataShape, probe: ProbeSettings) -> dict:
    from baselines.ldm import autoencoder_loss, build_autoencoder, sample_latents

    batch = _batch(probe, options["autoencoder_batch_size"])
    autoencoder = build_autoencoder(shape.channels, shape.resolution, options).to(probe.device)
    optimizer = torch.optim.Adam(autoencoder.parameters(), lr=options["autoencoder_lr"])
    x = synthetic_dataset(shape, batch).to_model_range(torch.arange(batch)).to(probe.device)
    generator = torch.Generator(probe.device).manual_seed(0)

    def step():
        loss, _ = autoencoder_loss(autoencoder, x, options["kl_weight"], generator)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    per_step = seconds_per_call(step, probe)
    with torch.no_grad():
        encode = seconds_per_call(lambda: sample_latents(autoencoder, x, generator), probe) / batch
        z = sample_latents(autoencoder, x, generator)
        decode = seconds_per_call(lambda: autoencoder.decode(z), probe) / batch
    return {"batch_size": batch, "seconds_per_step": per_step, "steps": options["autoencoder_steps"],
            "configured_batch_size": options["autoencoder_batch_size"],
            "encode_seconds_per_image": encode, "decode_seconds_per_image": decode}


def _stage1_classifier(cfg, options, shape: DataShape, probe: ProbeSettings) -> dict:
    from baselines.proto_classifier import PrototypeClassifier, dce_loss

    if options["mode"] == "regular":  # no classifier
        return {"batch_size": 0, "seconds_per_step": 0.0, "steps": 0, "configured_batch_size": 0}
    batch = _batch(probe, options["classifier_batch_size"])
    classifier = PrototypeClassifier(shape.channels, shape.num_classes, options["prototype_dim"],
                                     options["classifier_scale"]).to(probe.device)
    optimizer = torch.optim.Adam(classifier.parameters(), lr=options["classifier_lr"])
    data = synthetic_dataset(shape, batch)
    x, labels = data.to_model_range(torch.arange(batch)).to(probe.device), data.labels.to(probe.device)

    def step():
        loss, _ = dce_loss(classifier, x, labels, options["pl_weight"])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    return {"batch_size": batch, "seconds_per_step": seconds_per_call(step, probe), "steps": options["classifier_steps"],
            "configured_batch_size": options["classifier_batch_size"]}


def _stage1_rdm(cfg, options, shape: DataShape, probe: ProbeSettings) -> dict:
    from baselines import retrieval

    from pdm.config import ConfigError

    batch = _batch(probe, options["encoder_batch_size"])
    images = synthetic_dataset(shape, batch).images
    try:
        encoder, weights = retrieval.build_encoder(options), "real"
    except ConfigError:  # CLIP weights not available offline: the same architecture, random weights, same work
        encoder, weights = _random_clip(options), "random (same architecture)"
    per_image = seconds_per_call(lambda: encoder.embed(images, batch, probe.device), probe) / batch
    database = np.random.default_rng(0).standard_normal((shape.train_images, encoder.dim), dtype=np.float32)
    database /= np.linalg.norm(database, axis=1, keepdims=True)
    started = time.perf_counter()
    index = retrieval.build_index(database, options["index"], options["nlist"], options["pq_m"], options["nprobe"],
                                  options["index_device"], 0)
    index_seconds = time.perf_counter() - started
    queries = min(len(database), 512)  # the search is linear in the queries: time a slice, scale to all
    started = time.perf_counter()
    retrieval.search(index, database[:queries], options["k"] + 1, database=database)
    search_per_query = (time.perf_counter() - started) / queries
    return {"batch_size": batch, "configured_batch_size": options["encoder_batch_size"],
            "embed_seconds_per_image": per_image, "encoder_weights": weights, "index_seconds": index_seconds,
            "search_seconds_per_query": search_per_query}


def _random_clip(options):
    """open_clip's visual tower of the configured model with random weights, behind the encoder's `embed`."""
    import open_clip

    from baselines.retrieval import FrozenEncoder

    visual = open_clip.create_model(options["clip_model"], pretrained=None).visual.eval().requires_grad_(False)
    size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[-1]
    dim = getattr(visual, "output_dim", None) or open_clip.get_model_config(options["clip_model"])["embed_dim"]
    class RandomCLIP(FrozenEncoder):
        def features(self, x):
            return self.visual(x)

    encoder = RandomCLIP("clip-random", dim, size, (0.5,) * 3, (0.5,) * 3, "bicubic", [])
    encoder.visual = visual
    return encoder


PHASES: dict[str, Callable[[dict, Any, DataShape, ProbeSettings], dict]] = {
    "training": probe_training, "sampling": probe_sampling, "inception": probe_inception, "stage1": probe_stage1}
