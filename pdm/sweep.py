"""Curves without retraining: samplers x step counts over trained models (FID against network evaluations per
image), and the snapshots saved at fractions of the budget (FID over training).

    results/{experiment}/sweep/samples/{method}/seed{seed}/{sampler}-{steps}/   samples.npz, grid.png, sample.json
    results/{experiment}/sweep/metrics/{method}/seed{seed}/{sampler}-{steps}.json
    results/{experiment}/curve/samples/{method}/seed{seed}/{fraction}/          (the experiment's own `sample:`)
    results/{experiment}/curve/metrics/{method}/seed{seed}/{fraction}.json

The models are read from results/{models_experiment}/models/{method}/seed{seed}/ (weights/, train.json, and
snapshots/{fraction}/ with the same safetensors layout as weights/ plus snapshot.json: step, fraction, train_id).
With `sweep.models_from` set they are another experiment's: plain inputs, never retrained, refused with a message
that names the differing setting when their training identity is not this config's.
"""

from __future__ import annotations

from pathlib import Path

from pdm.checkpoint import snapshot_dir, snapshot_name
from pdm.config import ConfigError, ExperimentConfig
from pdm.io import read_json

FINAL = "1.0"  # the fraction wildcard of the final weights (weights/) on the training curve


def curve_fractions(cfg: ExperimentConfig) -> list[str]:
    """The training curve's points: every snapshot, then the final weights."""
    return [snapshot_name(f) for f in sorted(cfg.train.snapshots)] + [FINAL]


def network_evaluations(cfg: ExperimentConfig, method: str, sampler: str, steps: int) -> int:
    """Denoiser network evaluations per image: the sampler's timesteps (diffusers decides them; DDPM, DDIM and
    DPM-Solver++ 2M call the model once per step) times the U-Net calls of one denoiser call (1 for every method
    without guidance, 2 under classifier-free guidance: the method's `evaluations_per_step(options)`).
    LDM's single decoder pass per image and RDM's retrieval are not denoiser evaluations and are not counted."""
    from pdm.diffusion import make_sampler
    from pdm.methods.registry import get_method_class

    scheduler = make_sampler(sampler, cfg.diffusion_for(method))
    scheduler.set_timesteps(int(steps))
    per_step = get_method_class(method).evaluations_per_step(cfg.method_options(method))
    return len(scheduler.timesteps) * int(per_step)


def read_snapshot(cfg: ExperimentConfig, method: str, seed: int, model_dir: str | Path, fraction: float) -> dict:
    """snapshot.json of one snapshot, refused unless it belongs to the training run this config gives."""
    from pdm.identity import training_identity

    folder = snapshot_dir(model_dir, fraction)
    path = folder / "snapshot.json"
    if not path.exists():
        raise FileNotFoundError(f"{path} is missing: {model_dir} has no snapshot at {fraction} of the budget. Train "
                                f"with train.snapshots containing {fraction} (the snapshots are saved during training)")
    record = read_json(path)
    expected = training_identity(cfg, method, seed)
    if record.get("train_id") != expected:
        raise ValueError(f"{folder} belongs to training identity {record.get('train_id')}, this config gives {expected}; "
                         "it is a snapshot of another training run: retrain, or use the config it was trained with")
    if abs(float(record.get("fraction", -1)) - float(fraction)) > 1e-9:
        raise ValueError(f"{path} says fraction {record.get('fraction')}, its folder says {fraction}; rename or retrain")
    return record


def describe_difference(cfg: ExperimentConfig, record: dict, method: str, seed: int) -> str:
    """Which training settings of `record` (a train.json) differ from this config's, as 'key: models X, config Y'."""
    from pdm.config import resolve_config
    from pdm.identity import training_differences

    try:
        trained = resolve_config(record["config"])
    except (KeyError, ValueError) as err:
        return f"(the record's config cannot be read: {err})"
    diffs = training_differences(trained, cfg, method, seed)
    if not diffs:
        return "(the settings agree: the identity rules changed since it was trained, see pdm/identity.py)"
    return "; ".join(f"{key}: trained with {a!r}, this config has {b!r}" for key, a, b in diffs)


def check_models(cfg: ExperimentConfig, root: str | Path = ".") -> None:
    """Before any job of an experiment that samples another one's models: every (method, seed) to sweep, and every
    snapshot of the training curve, exists and has this config's training identity. ConfigError otherwise."""
    from pdm.identity import training_identity

    other = cfg.models_experiment
    run_first = (f"run experiment '{other}' first (snakemake --cores all --configfile <the config with experiment: "
                 f"{other}>); this experiment only re-samples its models and never trains")
    for method in cfg.sweep_methods:
        for seed in cfg.seeds:
            model_dir = Path(root) / "results" / other / "models" / method / f"seed{seed}"
            if not (model_dir / "train.json").exists() or not (model_dir / "weights").is_dir():
                raise ConfigError(f"sweep.models_from: {model_dir} has no trained model (train.json + weights/); {run_first}")
            record = read_json(model_dir / "train.json")
            expected = training_identity(cfg, method, seed)
            if record.get("train_id") != expected:
                raise ConfigError(
                    f"sweep.models_from: {model_dir} was trained under training identity {record.get('train_id')}, but this "
                    f"config ({cfg.experiment}) gives {expected} for {method} seed {seed}; differing: "
                    f"{describe_difference(cfg, record, method, seed)}. Make this config's training settings those of "
                    f"experiment '{other}' (best: `base:` its config file and change only experiment, sample, eval and "
                    f"sweep), or retrain '{other}' with the new settings")
            for fraction in cfg.train.snapshots:
                try:
                    read_snapshot(cfg, method, seed, model_dir, fraction)
                except (FileNotFoundError, ValueError) as err:
                    raise ConfigError(f"train.snapshots: {err}") from None
