"""`pdm-bench plan`: every job of an experiment with its predicted device-hours and peak memory, before submitting.

The jobs are the workflow's (Snakefile + workflow/rules/*.smk, mirrored by `workflow_jobs`); their costs come from a
few real steps measured on this device (pdm.probe, one process per measurement), multiplied by what the config asks:

    stage1      LDM: autoencoder_steps x s/step + encode passes (scale statistics) + rFID; ProtoDiffusion:
                classifier_steps x s/step; RDM: encoder s/image x images + index build + neighbour search
    train       steps (train.steps, or the budget's steps: pdm.flops.steps_for_budget) x s/step + finalize
    sample      num_samples x (U-Net evaluations per image x s/evaluation + per-image rest) / probe batch
    evaluate    num_samples x Inception passes (+ clean-FID, + IS where its weights are present) x s/image
    refstats    eval.num_real x Inception passes x s/image, once
    diagnostics one f_phi pass over the training set (the plots are not timed)

A probe at a smaller batch than the config's (--probe-batch-size) is scaled linearly in the batch: basis
'extrapolated'. Peak memory is scaled the same way above what the phase held before it started (weights, runtime,
and for training the gradients and AdamW / EMA state, which do not grow with the batch).
"""

from __future__ import annotations

import dataclasses
import json
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Callable

import pandas as pd

from pdm.config import ConfigError, ExperimentConfig
from pdm.probe import PHASES, DataShape, ProbeSettings

GIB = 2**30
FEATURE_BYTES = 2048 * 8  # one Inception-v3 pool feature vector, float64 (pdm.metrics.scores)
NOT_TIMED = "not timed (tables and plots: seconds)"


@dataclasses.dataclass(frozen=True)
class Job:
    rule: str
    method: str = ""
    seed: int | None = None
    point: str = ""  # sweep point (sampler-steps), guidance weight (w...) or snapshot fraction


def workflow_jobs(cfg: ExperimentConfig) -> list[Job]:
    """The jobs `snakemake` runs for this config from scratch, as the Snakefile and workflow/rules/*.smk expand them
    (the `all` target is not a job that does work)."""
    from pdm.methods.registry import get_method_class
    from pdm.sweep import FINAL, curve_fractions

    methods, seeds, jobs = list(cfg.methods), list(cfg.seeds), []
    per = lambda rule, names, point="": [Job(rule, m, s, point) for m in names for s in seeds]  # noqa: E731
    if cfg.trains:
        jobs += per("stage1", [m for m in methods if get_method_class(m).has_stage1])
        jobs += per("train", methods) + per("sample", methods) + per("evaluate", methods)
        jobs += per("diagnostics", [m for m in methods if get_method_class(m).has_prototypes])
    if cfg.sweep.enabled:
        for sampler in cfg.sweep.samplers:
            for steps in cfg.sweep.steps:
                jobs += per("sample_sweep", cfg.sweep_methods, f"{sampler}-{steps}")
                jobs += per("evaluate_sweep", cfg.sweep_methods, f"{sampler}-{steps}")
    for weight in cfg.sweep.guidance_weights:
        jobs += per("sample_guidance", cfg.guidance_methods, f"w{float(weight):g}")
        jobs += per("evaluate_guidance", cfg.guidance_methods, f"w{float(weight):g}")
    if cfg.train.snapshots:
        curve_methods = methods if cfg.trains else list(cfg.sweep_methods)
        for fraction in curve_fractions(cfg):
            if not (fraction == FINAL and cfg.trains):  # the final weights' point is the main evaluation
                jobs += per("sample_snapshot", curve_methods, fraction) + per("evaluate_snapshot", curve_methods, fraction)
    if any(job.rule.startswith("evaluate") for job in jobs):
        jobs.append(Job("refstats"))  # once; a sweep over another experiment's models may reuse that one's instead
    reports = {"report": cfg.trains, "sweep_report": cfg.sweep.enabled, "guidance_report": bool(cfg.sweep.guidance_weights),
               "training_curve": bool(cfg.train.snapshots)}
    return jobs + [Job(rule) for rule, on in reports.items() if on]


def measure(raw: dict, cfg: ExperimentConfig, shape: DataShape, probe: ProbeSettings, isolate: bool = True,
            progress: Callable[[str], None] = lambda _: None) -> dict:
    """Every measurement the jobs need: per method its training and sampling (once, shared by all seeds), per stage-1
    method its stage 1, and the Inception passes once. `isolate`: each in a fresh process (its own peak memory)."""
    from pdm.methods.registry import get_method_class

    tasks = [("inception", None)]
    for method in cfg.methods:
        if get_method_class(method).has_stage1:
            tasks.append(("stage1", method))
        tasks += [("sampling", method), ("training", method)] if cfg.trains else [("sampling", method)]
    results = {}
    for phase, method in tasks:
        progress(f"probing {phase}{' of ' + method if method else ''}")
        if isolate:
            with ProcessPoolExecutor(1, mp_context=get_context("spawn")) as pool:
                results[phase, method] = pool.submit(PHASES[phase], raw, method, shape, probe).result()
        else:
            results[phase, method] = PHASES[phase](raw, method, shape, probe)
    return results


def _scaled_memory(m: dict, configured_batch: int, fixed_extra: int = 0) -> int:
    """Peak at the configured batch: what the phase held before (and fixed state), plus the rest scaled linearly."""
    fixed = m["memory_before"] + fixed_extra
    return int(fixed + max(0, m["memory_peak"] - fixed) * configured_batch / max(m["batch_size"], 1))


def _basis(measured_batch: int, configured_batch: int) -> str:
    return "measured" if measured_batch >= configured_batch else f"extrapolated (batch {measured_batch} -> {configured_batch})"


def predict(cfg: ExperimentConfig, shape: DataShape, m: dict) -> pd.DataFrame:
    """One row per workflow job: predicted device-hours, peak memory (GiB) and the basis of the prediction."""
    from pdm.flops import steps_for_budget
    from pdm.methods.registry import get_method_class
    from pdm.metrics.inception import logits_weights_status
    from pdm.sweep import network_evaluations

    inception = m["inception", None]
    passes = sum(inception["seconds_per_image"].values())  # seconds per image over every feature pass
    is_pass = inception["seconds_per_image"]["torch-fidelity"] if logits_weights_status()[0] is not None else 0.0
    rows = []

    def row(job: Job, seconds: float, memory: int, basis: str, note: str = ""):
        rows.append({"job": job.rule, "method": job.method, "seed": job.seed, "point": job.point,
                     "device_hours": seconds / 3600.0, "peak_memory_gib": memory / GIB, "basis": basis, "note": note})

    image_bytes = shape.channels * shape.resolution**2  # uint8

    def sampling(job: Job, point_cfg: ExperimentConfig):
        """num_samples / probe batch x (U-Net evaluations x s per evaluation + the per-batch rest); the finished
        samples are held in memory (uint8) until saved."""
        s, sm, method = point_cfg.sample, m["sampling", job.method], get_method_class(job.method)
        per_eval = sm["seconds_per_sampler_step"] / method.evaluations_per_step(cfg.method_options(job.method))
        nfe = network_evaluations(point_cfg, job.method, s.sampler, s.steps)
        seconds = s.num_samples * (nfe * per_eval + sm["seconds_per_batch_fixed"]) / sm["batch_size"]
        weight = point_cfg.method_options(job.method).get("guidance_weight")
        row(job, seconds, _scaled_memory(sm, s.batch_size) + s.num_samples * image_bytes,
            _basis(sm["batch_size"], s.batch_size), f"{s.sampler} {s.steps} steps, {nfe} U-Net evaluations/image"
            + ("" if weight is None else f", w={weight}"))

    def evaluation(job: Job, images: int, note: str):
        """Inception passes over `images`; in memory the images and the float64 pool features of every pass (the
        samples' and, when scoring, the reference's)."""
        modes = len(inception["seconds_per_image"])
        features = (images + (cfg.eval.num_real if job.rule != "refstats" else 0)) * FEATURE_BYTES * modes
        memory = _scaled_memory(inception, 64) + images * image_bytes + features
        row(job, images * (passes + is_pass), memory, _basis(inception["batch_size"], 64),
            f"{note} x {modes + bool(is_pass)} Inception passes")

    for job in workflow_jobs(cfg):
        if job.rule == "train":
            t = m["training", job.method]
            tc, scale = cfg.train_for(job.method), cfg.train.batch_size / t["batch_size"]
            flops = int(t["flops_per_step"] * scale)
            steps = steps_for_budget(tc, flops, t["seconds_per_step"] * scale, job.method)
            seconds = steps * t["seconds_per_step"] * scale + shape.train_images * t["finalize_seconds_per_image"]
            row(job, seconds, _scaled_memory(t, cfg.train.batch_size, t["state_bytes"]),
                _basis(t["batch_size"], cfg.train.batch_size), f"{steps} steps, {flops:.3g} FLOPs/step, "
                f"{t['seconds_per_step'] * scale:.3g} s/step")
        elif job.rule == "stage1":
            row(job, *_stage1(job.method, m["stage1", job.method], shape, passes))
        elif job.rule == "sample":
            sampling(job, cfg)
        elif job.rule == "sample_sweep":
            sampler, steps = job.point.split("-")
            sampling(job, cfg.with_sampling(sampler, int(steps)))
        elif job.rule == "sample_guidance":
            sampling(job, cfg.with_method_options(job.method, guidance_weight=float(job.point[1:])))
        elif job.rule == "sample_snapshot":
            sampling(job, cfg)
        elif job.rule.startswith("evaluate"):
            evaluation(job, cfg.sample.num_samples, f"{cfg.sample.num_samples} samples")
        elif job.rule == "refstats":
            evaluation(job, cfg.eval.num_real, f"{cfg.eval.num_real} real images")
        elif job.rule == "diagnostics":
            t = m["training", job.method]
            row(job, shape.train_images * t["finalize_seconds_per_image"], t["memory_before"], "measured",
                "f_phi over the training set; plots not timed")
        else:
            row(job, 0.0, 0, NOT_TIMED)
    return pd.DataFrame(rows)


def _stage1(method: str, s: dict, shape: DataShape, inception_seconds: float) -> tuple[float, int, str, str]:
    if method == "rdm":
        seconds = (shape.train_images * (s["embed_seconds_per_image"] + s["search_seconds_per_query"])
                   + s["index_seconds"])
        return (seconds, _scaled_memory(s, s["configured_batch_size"]), _basis(s["batch_size"], s["configured_batch_size"]),
                f"encoder ({s['encoder_weights']} weights) over {shape.train_images} images, index, neighbours")
    scale = s["configured_batch_size"] / max(s["batch_size"], 1)
    seconds = s["steps"] * s["seconds_per_step"] * scale
    note = f"{s['steps']} steps"
    if method == "ldm":  # two encode passes (scale statistics), holdout reconstructions and their rFID (2 Inception passes)
        holdout = shape.holdout_images
        seconds += 2 * shape.train_images * s["encode_seconds_per_image"]
        seconds += holdout * (s["encode_seconds_per_image"] + s["decode_seconds_per_image"] + 2 * inception_seconds)
        note += f" + encodes of {shape.train_images} images + rFID on {holdout}"
    return seconds, _scaled_memory(s, s["configured_batch_size"]), _basis(s["batch_size"], s["configured_batch_size"]), note


def totals(table: pd.DataFrame) -> dict:
    hours = float(table["device_hours"].sum())
    largest = table.loc[table["peak_memory_gib"].idxmax()] if len(table) else None
    return {"device_hours": hours, "gpu_days": hours / 24.0, "jobs": len(table),
            "peak_memory_gib": float(largest["peak_memory_gib"]) if largest is not None else 0.0,
            "peak_memory_job": f"{largest['job']} {largest['method']}".strip() if largest is not None else "",
            "extrapolated_jobs": int(table["basis"].str.startswith("extrapolated").sum())}


def data_shape(cfg: ExperimentConfig, dataset_size: int | None, num_classes: int | None) -> DataShape:
    """Image shape and split sizes: from the data where it is already there, else from --dataset-size / --num-classes
    (the plan never needs the data)."""
    size, classes = dataset_size, num_classes
    if size is None or classes is None:
        try:
            from pdm.data import image_folder_files, load_dataset

            if cfg.data.dataset == "imagefolder":
                _, files, labelled = image_folder_files(cfg.data)
                found_size, found_classes = len(files), len({f.parent for f in files}) if labelled else 0
            else:
                dataset = load_dataset(cfg.data)
                found_size = len(dataset) + round(len(dataset) / (1 - cfg.data.holdout_fraction) * cfg.data.holdout_fraction)
                found_classes = dataset.num_classes if dataset.labels is not None else 0
        except (ValueError, OSError) as err:
            raise ConfigError(f"the data of {cfg.experiment} is not here ({str(err).splitlines()[0]}); the plan does not "
                              "need it, but then give its size: --dataset-size N --num-classes K (CIFAR-10: 50000 "
                              "and 10; 0 classes for unlabelled data)") from None
        size = found_size if size is None else size
        classes = found_classes if classes is None else classes
    if cfg.data.max_images:
        size = min(size, cfg.data.max_images)
    holdout = round(size * cfg.data.holdout_fraction)
    return DataShape(cfg.data.channels, cfg.data.resolution, int(classes), size - holdout, holdout)


def device_name(device: str) -> str:
    import torch

    from pdm.runtime import cpu_model

    if device == "cuda":
        return f"{torch.cuda.get_device_name()} ({torch.cuda.get_device_properties(0).total_memory / GIB:.0f} GiB)"
    return f"{cpu_model()}, {torch.get_num_threads()} threads"


def render(cfg: ExperimentConfig, table: pd.DataFrame, header: dict) -> str:
    """The plan as Markdown: settings, one row per job, and the totals."""
    t = totals(table)
    lines = [f"# Plan: {cfg.experiment}", ""] + [f"- {key}: {value}" for key, value in header.items()] + [""]
    shown = table.assign(seed=table["seed"].map(lambda s: "" if pd.isna(s) else str(int(s))))
    lines.append(shown.to_markdown(index=False, floatfmt=".4g"))
    lines += ["", f"**Total: {t['device_hours']:.4g} device-hours = {t['gpu_days']:.3g} device-days over {t['jobs']} "
              f"jobs; largest peak memory {t['peak_memory_gib']:.3g} GiB ({t['peak_memory_job']}).**"]
    if t["extrapolated_jobs"]:
        lines.append(f"{t['extrapolated_jobs']} jobs are extrapolated from a smaller probe batch (linear in the batch): "
                     "probe at the config's batch sizes on the target GPU for measured numbers.")
    return "\n".join(lines) + "\n"


def _probe_key(raw: dict, shape: DataShape, probe: ProbeSettings) -> dict:
    """What the measurements depend on: the networks and data (not the counts of steps, samples or seeds, which the
    prediction scales, nor batch sizes, which it scales too), and the probe's own settings."""
    settings = {k: raw.get(k) for k in ("data", "model", "diffusion", "methods")}
    return json.loads(json.dumps({"config": settings, "shape": dataclasses.asdict(shape),
                                  "probe": dataclasses.asdict(probe)}, sort_keys=True, default=str))


def _save_probes(path: str, raw: dict, shape: DataShape, probe: ProbeSettings, measurements: dict) -> None:
    from pdm.io import write_json

    write_json(path, {"key": _probe_key(raw, shape, probe),
                      "measurements": [{"phase": p, "method": m, **v} for (p, m), v in measurements.items()]})


def _load_probes(path: str | None, raw: dict, shape: DataShape, probe: ProbeSettings) -> dict | None:
    if not path or not Path(path).is_file():
        return None
    saved = json.loads(Path(path).read_text())
    if saved.get("key") != _probe_key(raw, shape, probe):
        raise ConfigError(f"{path} holds measurements of other networks, data or probe settings; delete it to probe "
                          "again, or pass another --probes file")
    return {(e.pop("phase"), e.pop("method")): e for e in saved["measurements"]}


def plan(config_path: str, *, device: str | None = None, probe_batch_size: int | None = None, probe_steps: int = 2,
         dataset_size: int | None = None, num_classes: int | None = None, isolate: bool = True,
         probes_file: str | None = None, progress: Callable[[str], None] = lambda _: None) -> tuple[pd.DataFrame, str]:
    """Measure on this machine and predict every job of the config: (the table, its Markdown with header and totals).

    probes_file: where the measurements are kept (JSON); when it exists and was made for this config's shapes, device
    and probe settings, it is reused instead of probing again (e.g. to re-plan another budget or seed count)."""
    import time

    import torch

    from pdm.config import load_raw
    from pdm.probe import probe_config

    raw = load_raw(config_path)
    wanted = device or raw.get("device", "auto")
    if wanted == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{config_path} asks for device: cuda, but torch sees no GPU here; plan on a GPU machine, or "
                          "pass --device cpu to measure this CPU (then the plan is for running on this CPU)")
    resolved_device = "cuda" if wanted in ("cuda", "auto") and torch.cuda.is_available() else "cpu"
    cfg = probe_config(raw, resolved_device)  # also pins this process's threads as the probes' (device_name says them)
    if probe_steps < 1:
        raise ConfigError(f"--probe-steps {probe_steps}: time at least 1 step")
    shape = data_shape(cfg, dataset_size, num_classes)
    probe = ProbeSettings(probe_batch_size, 1, probe_steps, resolved_device)
    started = time.perf_counter()
    measurements = _load_probes(probes_file, raw, shape, probe)
    if measurements is None:
        measurements = measure(raw, cfg, shape, probe, isolate, progress)
        if probes_file:
            _save_probes(probes_file, raw, shape, probe, measurements)
    else:
        progress(f"reusing the measurements in {probes_file}")
    table = predict(cfg, shape, measurements)
    header = {"config": config_path, "device": device_name(resolved_device),
              "probe": f"batch {probe_batch_size or 'as configured'}, 1 warm-up + {probe_steps} timed steps per "
                       f"measurement, {'each in its own process' if isolate else 'all in one process'}",
              "data": f"{shape.train_images} training + {shape.holdout_images} held-out images, {shape.channels}x"
                      f"{shape.resolution}x{shape.resolution}, {shape.num_classes} classes (synthetic for the probes)",
              "memory": "CUDA max_memory_allocated" if resolved_device == "cuda" else "peak resident set of the process",
              "probe time": f"{time.perf_counter() - started:.0f} s", "torch": torch.__version__}
    return table, render(cfg, table, header)
