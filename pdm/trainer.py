"""One trainer for every method: data order, optimiser, LR schedule, clipping, EMA, precision, checkpoints, budget, costs.

A method only supplies `loss` (through `forward`); it never owns a loop, so every method of an experiment gets the
same batches in the same order, the same AdamW + warm-up + cosine schedule, the same clip and EMA, and the same
budget in optimiser steps. Multi-GPU runs go through accelerate (`accelerate launch -m pdm.cli train ...`): each
process takes its share of every global batch, so the global batch and data order do not change.
"""

from __future__ import annotations

import logging
import platform
import resource
import shutil
import sys
import time
from pathlib import Path

import torch
from accelerate import Accelerator
from diffusers.optimization import get_constant_schedule_with_warmup, get_cosine_schedule_with_warmup
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from pdm import __version__
from pdm.checkpoint import load_training_state, save_components, save_training_state
from pdm.config import ExperimentConfig
from pdm.data import BatchStream, load_dataset
from pdm.io import read_json, write_json
from pdm.methods.base import DataInfo
from pdm.methods.registry import get_method_class

log = logging.getLogger("pdm.trainer")


def resolve_device(cfg: ExperimentConfig) -> str:
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device: cuda was asked for but torch sees no GPU; set device: auto or cpu")
    return "cuda" if cfg.device in ("auto", "cuda") and torch.cuda.is_available() else "cpu"


def versions() -> dict[str, str]:
    import diffusers

    return {"pdm_bench": __version__, "torch": torch.__version__, "diffusers": diffusers.__version__, "python": platform.python_version()}


def peak_memory(device: str) -> dict:
    if device == "cuda":
        return {"peak_memory_bytes": int(torch.cuda.max_memory_allocated()), "peak_memory_kind": "cuda_allocated"}
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # Linux reports KiB
    return {"peak_memory_bytes": int(rss_kib) * 1024, "peak_memory_kind": "cpu_process_rss"}


def _file_logger(path: Path) -> logging.Handler:
    handler = logging.FileHandler(path, mode="a")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    logging.getLogger("pdm").addHandler(handler)
    logging.getLogger("pdm").setLevel(logging.INFO)
    return handler


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


def train(cfg: ExperimentConfig, method_name: str, seed: int, model_dir: str | Path, resume: bool = True,
          stage1_dir: str | Path | None = None) -> dict:
    """Train `method_name` under the experiment budget; writes weights + train.json into model_dir, returns the record.

    Methods with a stage 1 (LDM, RDM) need the folder that `pdm-bench stage1` wrote: stage1_dir.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    handler = _file_logger(model_dir / "train.log")
    try:
        return _train(cfg, method_name, seed, model_dir, resume, stage1_dir)
    finally:
        logging.getLogger("pdm").removeHandler(handler)
        handler.close()


def _train(cfg: ExperimentConfig, method_name: str, seed: int, model_dir: Path, resume: bool, stage1_dir) -> dict:
    tc = cfg.train
    device = resolve_device(cfg)
    accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=device == "cpu")
    rank, world = accelerator.process_index, accelerator.num_processes
    if tc.batch_size % world:
        raise ValueError(f"train.batch_size={tc.batch_size} must be divisible by the {world} processes")
    if device == "cpu":
        torch.set_num_threads(cfg.threads_per_job)

    dataset = load_dataset(cfg.data)
    torch.manual_seed(seed)  # same seed -> same initial U-Net for every method
    method = get_method_class(method_name)(cfg, DataInfo.of(dataset))
    log.info("training %s seed %d on %s x%d: %d parameters, config %s", method_name, seed, device, world,
             sum(p.numel() for p in method.parameters()), cfg.hash)

    stage1 = load_stage1(method, stage1_dir)  # frozen stage-1 outputs; their time counts in this method's cost
    method.to(accelerator.device)
    trainable = [p for p in method.parameters() if p.requires_grad]  # stage-1 networks stay frozen

    optimizer = torch.optim.AdamW(trainable, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
    if tc.lr_schedule == "cosine":
        lr_schedule = get_cosine_schedule_with_warmup(optimizer, tc.warmup_steps, tc.steps)
    else:
        lr_schedule = get_constant_schedule_with_warmup(optimizer, tc.warmup_steps)
    ema = EMAModel(trainable, decay=tc.ema_decay) if tc.ema_decay is not None else None
    model, optimizer = accelerator.prepare(method, optimizer)

    checkpoint_dir = model_dir / "checkpoint"
    step, train_seconds = 0, 0.0
    state = load_training_state(checkpoint_dir, accelerator.device) if resume else None
    if state is not None:
        model_state, rest, progress = state
        if progress["config_hash"] != cfg.hash:
            raise ValueError(
                f"{checkpoint_dir} belongs to config {progress['config_hash']}, not {cfg.hash}; "
                "delete that folder to start over, or use the config it was made with"
            )
        method.load_state_dict(model_state)
        optimizer.load_state_dict(rest["optimizer"])
        if ema is not None:
            ema.load_state_dict(rest["ema"])
        lr_schedule.load_state_dict(rest["lr_schedule"])
        step, train_seconds = progress["step"], progress["train_seconds"]
        log.info("resumed from step %d", step)

    stream = BatchStream(dataset, tc.batch_size, seed, hflip=cfg.data.hflip)
    bar = tqdm(total=tc.steps, initial=step, desc=f"{method_name} seed{seed}", mininterval=2.0,
               disable=not accelerator.is_main_process, file=sys.stderr)
    window: dict[str, float] = {}
    last_window: dict[str, float] = {}
    stop_reason = "steps"
    model.train()
    loop_started = time.perf_counter() - train_seconds
    while step < tc.steps:
        x0, labels, index = stream.batch(step, rank, world)
        x0 = x0.to(accelerator.device)
        labels = labels.to(accelerator.device) if labels is not None else None
        generator = torch.Generator(accelerator.device).manual_seed((seed * 1_000_003 + step) * 64 + rank)
        with accelerator.autocast():
            loss, logs = model(x0, labels, generator, index.to(accelerator.device))
        if not torch.isfinite(loss):
            raise FloatingPointError(f"{method_name}: loss became {loss.item()} at step {step}; lower train.lr or enable grad_clip")
        accelerator.backward(loss)
        if tc.grad_clip is not None:
            accelerator.clip_grad_norm_(model.parameters(), tc.grad_clip)
        optimizer.step()
        lr_schedule.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(trainable)
        step += 1

        for key, value in logs.items():
            window[key] = window.get(key, 0.0) + float(value)
        if step % tc.log_every == 0 or step == tc.steps:
            means = {k: v / (tc.log_every if step % tc.log_every == 0 else step % tc.log_every) for k, v in window.items()}
            log.info("step %d lr %.3g %s", step, lr_schedule.get_last_lr()[0], " ".join(f"{k} {v:.4f}" for k, v in means.items()))
            bar.set_postfix({k: f"{v:.3f}" for k, v in means.items() if k in ("loss", "loss_diffusion", "loss_prototype")})
            last_window, window = means, {}
        bar.update(1)
        train_seconds = time.perf_counter() - loop_started
        if tc.max_seconds is not None and train_seconds >= tc.max_seconds and step < tc.steps:
            stop_reason = "max_seconds"
            break
        if step % tc.checkpoint_every == 0 and step < tc.steps and accelerator.is_main_process:
            save_training_state(checkpoint_dir, method.state_dict(), ema.state_dict() if ema else None,
                                {"optimizer": optimizer.state_dict(), "lr_schedule": lr_schedule.state_dict()}, {"step": step, "train_seconds": train_seconds, "config_hash": cfg.hash})
    bar.close()
    accelerator.wait_for_everyone()

    if ema is not None:
        ema.copy_to(trainable)  # the saved and evaluated weights are the EMA weights
    method.finalize(dataset)
    record = {
        "experiment": cfg.experiment,
        "method": method_name,
        "seed": seed,
        "config_hash": cfg.hash,
        "config": dict(cfg.resolved),
        "data_info": DataInfo.of(dataset).__dict__,
        "method_record": method.record(),
        "steps_done": step,
        "stop_reason": stop_reason,
        "final_losses": {k: round(v, 6) for k, v in last_window.items()},
        "batch_size": tc.batch_size,
        "images_seen": step * tc.batch_size,
        "device": device,
        "num_processes": world,
        "mixed_precision": tc.mixed_precision,
        "stage1": stage1,
        "stage1_dir": str(stage1_dir) if stage1_dir is not None else None,
        "stage1_seconds": stage1.get("seconds", 0.0),
        "train_seconds": train_seconds,
        "train_images_per_second": step * tc.batch_size / max(train_seconds, 1e-9),
        "device_hours": (stage1.get("seconds", 0.0) + train_seconds) * world / 3600.0,
        "parameters_total": sum(p.numel() for p in method.parameters()),
        "parameters_trained": sum(p.numel() for p in trainable),
        "parameters_sampling": sum(p.numel() for module in method.sampling_modules() for p in module.parameters()),
        **peak_memory(device),
        "versions": versions(),
    }
    if accelerator.is_main_process:
        record["component_bytes"] = save_components(method, model_dir)
        write_json(model_dir / "train.json", record)
        shutil.rmtree(checkpoint_dir, ignore_errors=True)
    log.info("done: %d steps in %.1f s (%.0f img/s)", step, train_seconds, record["train_images_per_second"])
    return record
