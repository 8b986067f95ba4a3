"""Saving and loading: weights as safetensors (one file per component), training state loadable without code execution.

    {model_dir}/weights/{component}.safetensors   final weights (EMA weights where EMA is on), one file per component
    {model_dir}/train.json                        identities, config, method record, costs, status
    {model_dir}/checkpoint/                       resumable state while training runs (removed when training ends)
    {model_dir}/snapshots/{fraction}/             weights at a fraction of the planned steps (train.snapshots), in
                                                  the format of weights/, plus snapshot.json
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pdm.io import atomic_path, read_json


def weights_dir(model_dir: str | Path) -> Path:
    return Path(model_dir) / "weights"


def snapshot_name(fraction: float) -> str:
    """The folder name of a snapshot: the fraction as Python writes it (0.25, 0.1), distinct for distinct fractions."""
    return repr(float(fraction))


def snapshot_dir(model_dir: str | Path, fraction: float) -> Path:
    return Path(model_dir) / "snapshots" / snapshot_name(fraction)


def read_snapshot(model_dir: str | Path, fraction: float) -> dict | None:
    """snapshot.json of one snapshot, or None where there is none (or it cannot be read)."""
    try:
        return read_json(snapshot_dir(model_dir, fraction) / "snapshot.json")
    except (OSError, ValueError):
        return None


def write_snapshot(method, directory: Path, info: dict, with_weights: bool = True) -> dict:
    """One snapshot folder, written beside and then swapped in, so a kill never leaves half a snapshot:
    the components as in weights/ (unless with_weights is False: a marker for a snapshot training never reached),
    then snapshot.json (info + component_bytes). Returns the snapshot.json content."""
    from pdm.io import write_json

    directory = Path(directory)
    staging = directory.with_name(f".{directory.name}.tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    record = {**info, "component_bytes": save_components(method, staging) if with_weights else {}}
    write_json(staging / "snapshot.json", record)
    shutil.rmtree(directory, ignore_errors=True)
    staging.rename(directory)
    return record


def save_components(method, directory: Path) -> dict[str, int]:
    """Write every component to its own safetensors file in `directory`; returns bytes on disk per component."""
    sizes = {}
    for name, module in method.components().items():
        path = Path(directory) / f"{name}.safetensors"
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp))
        sizes[name] = path.stat().st_size
    return sizes


def load_components(method, directory: Path) -> None:
    for name, module in method.components().items():
        path = Path(directory) / f"{name}.safetensors"
        if not path.exists():
            raise FileNotFoundError(f"{path} is missing; re-run training for this method and seed")
        try:
            state = load_file(str(path))
        except Exception as err:  # safetensors raises its own error types for truncated or foreign files
            raise ValueError(f"{path} is not a readable safetensors file ({err}); delete it and re-run training") from None
        missing, unexpected = module.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ValueError(
                f"{path} does not match the {name} of this config (missing {missing[:3]}, unexpected {unexpected[:3]}); "
                "it was trained with another config: re-run training"
            )


def load_stage1(method, stage1_dir) -> dict:
    """Attach a method's stage-1 outputs and return their record ({} for methods without a stage 1)."""
    if not method.has_stage1:
        return {}
    if stage1_dir is None:
        raise ValueError(f"{method.name} needs its stage-1 outputs: run `pdm-bench stage1` first and pass --stage1-dir")
    record_path = Path(stage1_dir) / "stage1.json"
    if not record_path.exists():
        raise FileNotFoundError(f"{record_path} is missing; run `pdm-bench stage1 --method {method.name}` first")
    method.prepare(Path(stage1_dir))
    return read_json(record_path)


def read_train_record(cfg, method_name: str, seed: int, model_dir: str | Path) -> dict:
    """train.json of a run, refused unless its training identity is the one this config gives (method, seed)."""
    from pdm.identity import training_identity

    model_dir = Path(model_dir)
    record = read_json(model_dir / "train.json")
    expected = training_identity(cfg, method_name, seed)
    if record.get("train_id") != expected:
        raise ValueError(
            f"{model_dir} holds training identity {record.get('train_id')}, but this config gives {expected} for "
            f"{method_name} seed {seed} (the data, model, diffusion, train settings, method options or seed differ); "
            "re-run training (snakemake does this when the config changes) or pass the config it was trained with"
        )
    return record


def load_trained(cfg, method_name: str, model_dir: str | Path, device="cpu", seed: int | None = None,
                 weights: str | Path | None = None):
    """Rebuild a trained method from its config and folder, refusing weights of another training identity.

    `weights`: a folder of the same layout as weights/ to load instead (a training snapshot, checked by the caller).
    """
    from pdm.methods.base import DataInfo
    from pdm.methods.registry import get_method_class

    model_dir = Path(model_dir)
    if seed is None:
        seed = int(read_json(model_dir / "train.json").get("seed", 0))
    record = read_train_record(cfg, method_name, seed, model_dir)
    if record.get("status", "ok") != "ok":
        raise ValueError(f"{model_dir}: training failed ({record.get('failure')}); there is no model to load")
    method = get_method_class(method_name)(cfg, DataInfo(**record["data_info"]))
    load_stage1(method, record.get("stage1_dir"))
    load_components(method, Path(weights) if weights is not None else weights_dir(model_dir))
    return method.to(device), record


def save_training_state(directory: Path, model_state: dict, ema_state: dict | None, optim_state: dict, progress: dict) -> None:
    """Write a resumable checkpoint into a fresh folder, then swap it in, so a crash leaves the previous one intact.

    optim_state holds the optimizer's and LR schedule's state dicts: {"optimizer": ..., "lr_schedule": ...}.
    """
    from pdm.io import write_json

    directory = Path(directory)
    staging = directory.with_name(directory.name + ".tmp")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    save_file({k: v.detach().contiguous().cpu() for k, v in model_state.items()}, str(staging / "model.safetensors"))
    torch.save({**optim_state, "ema": ema_state}, staging / "optimizer.pt")
    write_json(staging / "progress.json", progress)
    old = directory.with_name(directory.name + ".old")
    if directory.exists():
        directory.rename(old)
    staging.rename(directory)
    shutil.rmtree(old, ignore_errors=True)


def load_training_state(directory: Path, device) -> tuple[dict, dict, dict] | None:
    directory = Path(directory)
    if not (directory / "progress.json").exists():
        old = directory.with_name(directory.name + ".old")
        if (old / "progress.json").exists():  # killed between the two renames of save_training_state
            old.rename(directory)
        else:
            return None
    model_state = load_file(str(directory / "model.safetensors"), device=str(device))
    # weights_only=True: optimizer states are tensors and numbers; nothing in a checkpoint can run code.
    rest = torch.load(directory / "optimizer.pt", map_location=device, weights_only=True)
    return model_state, rest, read_json(directory / "progress.json")
