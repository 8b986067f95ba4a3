"""Saving and loading: weights as safetensors (one file per component), training state loadable without code execution.

    {model_dir}/{component}.safetensors   final weights (EMA weights where EMA is on), one file per component
    {model_dir}/train.json                config, method record, costs, progress
    {model_dir}/checkpoint/               resumable state while training runs (removed when training finishes)
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from pdm.io import atomic_path, read_json


def save_components(method, model_dir: Path) -> dict[str, int]:
    """Write every component to its own safetensors file; returns bytes on disk per component."""
    sizes = {}
    for name, module in method.components().items():
        path = Path(model_dir) / f"{name}.safetensors"
        state = {k: v.detach().contiguous().cpu() for k, v in module.state_dict().items()}
        with atomic_path(path) as tmp:
            save_file(state, str(tmp))
        sizes[name] = path.stat().st_size
    return sizes


def load_components(method, model_dir: Path) -> None:
    for name, module in method.components().items():
        path = Path(model_dir) / f"{name}.safetensors"
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


def load_trained(cfg, method_name: str, model_dir: str | Path, device="cpu"):
    """Rebuild a trained method from its config and folder, refusing weights trained under another config."""
    from pdm.methods.base import DataInfo
    from pdm.methods.registry import get_method_class

    model_dir = Path(model_dir)
    record = read_json(model_dir / "train.json")
    if record["config_hash"] != cfg.hash:
        raise ValueError(
            f"{model_dir} was trained with config hash {record['config_hash']}, this config is {cfg.hash}; "
            "re-run training (snakemake does this when the config changes) or pass the matching config"
        )
    from pdm.trainer import load_stage1

    method = get_method_class(method_name)(cfg, DataInfo(**record["data_info"]))
    load_stage1(method, record.get("stage1_dir"))
    load_components(method, model_dir)
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
        return None
    model_state = load_file(str(directory / "model.safetensors"), device=str(device))
    # weights_only=True: optimizer states are tensors and numbers; nothing in a checkpoint can run code.
    rest = torch.load(directory / "optimizer.pt", map_location=device, weights_only=True)
    return model_state, rest, read_json(directory / "progress.json")
