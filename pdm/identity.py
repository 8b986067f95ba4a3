"""Identities per stage: a short hash of exactly what determines a stage's output, and nothing else.

    stage 1     data + the method's stage-1 options + seed                         (LDM's autoencoder, RDM's index)
    training    data + model + the method's diffusion + train + the method's training options + seed + stage 1
    sampling    training + sample settings + the method's sampling-only options
    refstats    the real images (data, num_real) + the feature extractor's tensors
    evaluation  sampling + evaluation settings + refstats

The workflow hands them to Snakemake as `params:`, so a config edit re-runs exactly the jobs whose identity changed
(adding a seed runs that seed's jobs; `sample.steps` re-samples and re-scores without retraining; `eval.num_real`
recomputes the reference statistics and re-scores; `train.lr` retrains everything downstream). Every output records
its identity and every consumer checks it, so a stale file is refused with a message instead of mixed in.

The training budget enters as its mode and the value that mode spends (train.steps, train.flops or train.seconds).
Left out on purpose, because they do not change the result: logging and checkpoint intervals, training snapshots, the sampling batch
size (each image depends on its seed alone), the experiment name (it is the folder), threads and the device
(recorded in every row; floating-point results differ across devices and CPU types, see README).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from typing import Any, Mapping

IDENTITY_VERSION = 1  # bump when what an identity covers changes, so old outputs are recomputed, never reused
# snapshots never change the final weights; channels_last and compile (pdm/speed.py) compute the same fp32 maths in
# another order, so they change the weights by float noise only, as the device and CPU type do (also not in it): a
# checkpoint made with them resumes without them, and switching them on for speed never retrains a finished model
TRAIN_KEYS_NOT_IN_IDENTITY = ("log_every", "checkpoint_every", "snapshots", "channels_last", "compile")
BUDGET_VALUES = {"steps": "steps", "flops": "flops", "seconds": "seconds"}  # budget mode -> the train key it spends
SAMPLE_KEYS_NOT_IN_IDENTITY = ("batch_size",)
EXTRACTOR = "inception-v3-fid-2015-12-05"


def digest(payload: Mapping[str, Any]) -> str:
    canonical = json.dumps({"identity_version": IDENTITY_VERSION, **payload}, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def _method_class(name: str):
    from pdm.methods.registry import get_method_class

    return get_method_class(name)


def _options(cfg, method: str) -> dict:
    return dict(cfg.method_options(method))


def stage1_identity(cfg, method: str, seed: int) -> str | None:
    """None for methods without a stage 1."""
    cls = _method_class(method)
    if not cls.has_stage1:
        return None
    from pdm.methods.base import DENOISER_ONLY_OPTIONS

    options = _options(cfg, method)
    keys = cls.stage1_options if cls.stage1_options is not None else sorted(set(options) - DENOISER_ONLY_OPTIONS)
    return digest({"stage": "stage1", "method": method, "seed": int(seed), "data": cfg.resolved["data"],
                   "options": {k: options.get(k) for k in keys}})


def train_settings(cfg) -> dict:
    """The train settings an identity covers: the budget mode with the one value it spends, and the optimiser.

    In steps mode the dict is exactly what it was before budgets had modes (no `budget`, `flops` or `seconds` key),
    so existing results keep their identities; in the flops and seconds modes `budget` and its value replace `steps`
    (unused there, so editing it retrains nothing).
    """
    train = {k: v for k, v in cfg.resolved["train"].items() if k not in TRAIN_KEYS_NOT_IN_IDENTITY}
    mode = train.pop("budget", "steps")
    values = {key: train.pop(key, None) for key in BUDGET_VALUES.values()}
    if mode == "steps":
        train["steps"] = values["steps"]
    else:
        train.update(budget=mode, **{BUDGET_VALUES[mode]: values[BUDGET_VALUES[mode]]})
    return train


def _training_payload(cfg, method: str, seed: int) -> dict:
    options = _options(cfg, method)
    sampling_only = set(_method_class(method).sampling_options)
    train = train_settings(cfg)
    return {
        "stage": "train", "method": method, "seed": int(seed),
        "data": cfg.resolved["data"], "model": cfg.resolved["model"],
        "diffusion": dataclasses.asdict(cfg.diffusion_for(method)), "train": train,
        "options": {k: v for k, v in options.items() if k not in sampling_only},
        "stage1": stage1_identity(cfg, method, seed),
    }


def training_identity(cfg, method: str, seed: int) -> str:
    return digest(_training_payload(cfg, method, seed))


def training_differences(cfg, other, method: str, seed: int) -> list[tuple[str, Any, Any]]:
    """The settings in the training identity where two configs differ: [(dotted key, cfg's value, other's value)].

    Empty when both give the same training identity. Method options are named `methods.{method}.{option}`.
    """
    def flat(node, prefix=""):
        if isinstance(node, Mapping):
            return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node}

    def settings(c):
        payload = _training_payload(c, method, seed)
        payload[f"methods.{method}"] = payload.pop("options")
        payload.pop("stage1")  # its inputs (data, the method's options) are named themselves
        return flat(payload)

    a, b = settings(cfg), settings(other)
    return [(k, a.get(k), b.get(k)) for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)]


def sampling_identity(cfg, method: str, seed: int, snapshot: float | None = None) -> str:
    """`snapshot`: samples of the weights saved at that fraction of the budget (train.snapshots), not the final ones."""
    options = _options(cfg, method)
    sample = {k: v for k, v in cfg.resolved["sample"].items() if k not in SAMPLE_KEYS_NOT_IN_IDENTITY}
    payload = {
        "stage": "sample", "train": training_identity(cfg, method, seed), "sample": sample,
        "grid_size": cfg.eval.grid_size,  # the sample job draws the grid
        "options": {k: options.get(k) for k in _method_class(method).sampling_options},
    }
    if snapshot is not None:  # absent for the final weights, so their identities stay what they were
        payload["snapshot"] = float(snapshot)
    return digest(payload)


def refstats_identity(cfg) -> str:
    from pdm.metrics.inception import EXTRACTOR_LAYOUT, EXTRACTOR_TENSORS_SHA256

    data = {k: v for k, v in cfg.resolved["data"].items() if k != "hflip"}  # flips are a training augmentation
    # clean_fid: whether the file holds the clean-FID features too (a second Inception pass per image)
    return digest({"stage": "refstats", "data": data, "num_real": cfg.eval.num_real, "clean_fid": cfg.eval.clean_fid,
                   "extractor": EXTRACTOR, "extractor_tensors_sha256": EXTRACTOR_TENSORS_SHA256,
                   "extractor_layout": EXTRACTOR_LAYOUT})


def evaluation_identity(cfg, method: str, seed: int, snapshot: float | None = None) -> str:
    evaluation = {k: v for k, v in cfg.resolved["eval"].items() if k not in ("num_real", "grid_size")}
    return digest({"stage": "evaluate", "sample": sampling_identity(cfg, method, seed, snapshot), "eval": evaluation,
                   "refstats": refstats_identity(cfg)})


def comparison_identity(cfg) -> str:
    """What every row of one table must share to be a fair comparison: data, backbone, budget, sampler, evaluation."""
    sample = {k: v for k, v in cfg.resolved["sample"].items() if k not in SAMPLE_KEYS_NOT_IN_IDENTITY}
    train = train_settings(cfg)
    return digest({"stage": "comparison", "data": cfg.resolved["data"], "model": cfg.resolved["model"],
                   "diffusion": cfg.resolved["diffusion"], "train": train, "sample": sample,
                   "refstats": refstats_identity(cfg),
                   "eval": {k: v for k, v in cfg.resolved["eval"].items() if k not in ("num_real", "grid_size")}})


def all_identities(cfg, method: str, seed: int, snapshot: float | None = None) -> dict[str, str | None]:
    return {"stage1_id": stage1_identity(cfg, method, seed), "train_id": training_identity(cfg, method, seed),
            "sample_id": sampling_identity(cfg, method, seed, snapshot),
            "eval_id": evaluation_identity(cfg, method, seed, snapshot),
            "refstats_id": refstats_identity(cfg), "comparison_id": comparison_identity(cfg)}
