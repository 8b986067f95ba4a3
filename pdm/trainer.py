"""One trainer for every method: data order, optimiser, LR schedule, clipping, EMA, precision, checkpoints, budget, costs.

A method only supplies `loss` (through `forward`); it never owns a loop, so every method of an experiment gets the
same batches in the same order, the same AdamW + warm-up + cosine schedule, the same clip and EMA, and the same
budget in optimiser steps. Multi-GPU runs go through accelerate (`accelerate launch -m pdm.cli train ...`): each
process takes its share of every global batch, so the global batch and data order do not change.

Health: a NaN or Inf in any loss term or in the gradients stops training at that step, naming the step and the term;
the run is then recorded as failed (train.json `status: failed`, `failure: ...`) so that it shows in the tables with
its reason instead of silently disappearing.
"""

from __future__ import annotations

import logging
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

from pdm.checkpoint import load_stage1, load_training_state, save_components, save_training_state, weights_dir
from pdm.config import ExperimentConfig
from pdm.data import BatchStream, load_dataset
from pdm.identity import stage1_identity, training_identity
from pdm.io import write_json
from pdm.methods.base import DataInfo
from pdm.methods.registry import get_method_class
from pdm.runtime import provenance, resolve_device, setup_job, versions

__all__ = ["TrainingDiverged", "load_stage1", "resolve_device", "step_generator", "train", "versions"]
log = logging.getLogger("pdm.trainer")


class TrainingDiverged(RuntimeError):
    """A non-finite loss term or gradient: names the step and the term, and the usual fixes."""

    def __init__(self, method: str, step: int, term: str, value: float):
        self.step, self.term, self.value = step, term, value
        super().__init__(f"{method}: {term} became {value} at step {step}; training stopped there. Fix: lower train.lr, "
                         "set train.grad_clip, or use train.mixed_precision: 'no'")


def step_generator(seed: int, step: int, rank: int = 0, device="cpu") -> torch.Generator:
    """The generator of one training step (one per process): every method draws t and the noise from it first (then
    its own draws), so at a given step all methods of an experiment get the same batch, timesteps and noise."""
    return torch.Generator(device).manual_seed((seed * 1_000_003 + step) * 64 + rank)


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


def train(cfg: ExperimentConfig, method_name: str, seed: int, model_dir: str | Path, resume: bool = True,
          stage1_dir: str | Path | None = None) -> dict:
    """Train `method_name` under the experiment budget; writes weights/ + train.json into model_dir, returns the record.

    Methods with a stage 1 (LDM, RDM) need the folder that `pdm-bench stage1` wrote: stage1_dir. A run that diverges
    returns (and writes) a record with status 'failed' and the reason, and no weights.
    """
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    handler = _file_logger(model_dir / "train.log")
    try:
        return _Run(cfg, method_name, seed, model_dir, stage1_dir).execute(resume)
    finally:
        logging.getLogger("pdm").removeHandler(handler)
        handler.close()


class _Run:
    """One training run, in the order it happens: set up, resume, loop, write the record."""

    def __init__(self, cfg: ExperimentConfig, method_name: str, seed: int, model_dir: Path, stage1_dir):
        self.cfg, self.method_name, self.seed, self.model_dir = cfg, method_name, seed, model_dir
        self.stage1_dir = stage1_dir
        self.train_id = training_identity(cfg, method_name, seed)
        self.checkpoint_dir = model_dir / "checkpoint"

    # --- set up ------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, tc = self.cfg, self.cfg.train
        self.device = setup_job(cfg)
        self.accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=self.device == "cpu")
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        if tc.batch_size % self.world:
            raise ValueError(f"train.batch_size={tc.batch_size} must be divisible by the {self.world} processes")
        self.dataset = load_dataset(cfg.data)
        torch.manual_seed(self.seed)  # same seed -> same initial U-Net for every method
        self.method = get_method_class(self.method_name)(cfg, DataInfo.of(self.dataset))
        log.info("training %s seed %d on %s x%d: %d parameters, training identity %s", self.method_name, self.seed,
                 self.device, self.world, sum(p.numel() for p in self.method.parameters()), self.train_id)
        self.stage1 = load_stage1(self.method, self.stage1_dir)  # frozen; its time counts in this method's cost
        self.method.to(self.accelerator.device)
        self.trainable = [p for p in self.method.parameters() if p.requires_grad]  # stage-1 networks stay frozen
        self.optimizer = torch.optim.AdamW(self.trainable, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
        if tc.lr_schedule == "cosine":
            self.lr_schedule = get_cosine_schedule_with_warmup(self.optimizer, tc.warmup_steps, tc.steps)
        else:
            self.lr_schedule = get_constant_schedule_with_warmup(self.optimizer, tc.warmup_steps)
        self.ema = EMAModel(self.trainable, decay=tc.ema_decay) if tc.ema_decay is not None else None
        self.model, self.optimizer = self.accelerator.prepare(self.method, self.optimizer)

    def _resume(self) -> tuple[int, float]:
        state = load_training_state(self.checkpoint_dir, self.accelerator.device)
        if state is None:
            return 0, 0.0
        model_state, rest, progress = state
        if progress.get("train_id") != self.train_id:
            raise ValueError(
                f"{self.checkpoint_dir} belongs to training identity {progress.get('train_id')}, not {self.train_id} "
                "(the data, model, diffusion, train settings, method options or seed differ); delete that folder to "
                "start over, or use the config it was made with"
            )
        self.method.load_state_dict(model_state)
        self.optimizer.load_state_dict(rest["optimizer"])
        if self.ema is not None:
            self.ema.load_state_dict(rest["ema"])
        self.lr_schedule.load_state_dict(rest["lr_schedule"])
        log.info("resumed from step %d", progress["step"])
        return progress["step"], progress["train_seconds"]

    # --- the loop ----------------------------------------------------------------------------------------------
    def _check_finite(self, step: int, logs: dict) -> None:
        """One device sync for every loss term; only on failure find which one."""
        values = torch.stack([torch.as_tensor(v, dtype=torch.float32).reshape(()) for v in logs.values()])
        if not bool(torch.isfinite(values).all()):
            bad = {k: float(v) for k, v in logs.items() if not bool(torch.isfinite(torch.as_tensor(v)))}
            specific = [k for k in bad if k != "loss"] or list(bad)  # name the term, not only the total it spoils
            raise TrainingDiverged(self.method_name, step, ", ".join(specific), bad[specific[0]])

    def _clip_and_check_gradients(self, step: int) -> None:
        tc = self.cfg.train
        if tc.grad_clip is not None:
            norm = self.accelerator.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        else:
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.trainable if p.grad is not None])
        if not bool(torch.isfinite(torch.as_tensor(norm))):
            name = next((n for n, p in self.method.named_parameters()
                         if p.grad is not None and not bool(torch.isfinite(p.grad).all())), "some parameter")
            raise TrainingDiverged(self.method_name, step, f"the gradient of {name}", float(norm))

    def _loop(self, step: int, train_seconds: float) -> tuple[int, float, str, dict]:
        cfg, tc, accelerator = self.cfg, self.cfg.train, self.accelerator
        stream = BatchStream(self.dataset, tc.batch_size, self.seed, hflip=cfg.data.hflip)
        bar = tqdm(total=tc.steps, initial=step, desc=f"{self.method_name} seed{self.seed}", mininterval=2.0,
                   disable=not accelerator.is_main_process, file=sys.stderr)
        window: dict[str, float] = {}
        last_window: dict[str, float] = {}
        stop_reason = "steps"
        self.model.train()
        loop_started = time.perf_counter() - train_seconds
        while step < tc.steps:
            x0, labels, index = stream.batch(step, self.rank, self.world)
            x0 = x0.to(accelerator.device)
            labels = labels.to(accelerator.device) if labels is not None else None
            generator = step_generator(self.seed, step, self.rank, accelerator.device)
            with accelerator.autocast():
                loss, logs = self.model(x0, labels, generator, index.to(accelerator.device))
            self._check_finite(step + 1, {**logs, "loss": loss.detach()})
            accelerator.backward(loss)
            self._clip_and_check_gradients(step + 1)
            self.optimizer.step()
            self.lr_schedule.step()
            self.optimizer.zero_grad(set_to_none=True)
            if self.ema is not None:
                self.ema.step(self.trainable)
            step += 1

            for key, value in logs.items():
                window[key] = window.get(key, 0.0) + float(value)
            if step % tc.log_every == 0 or step == tc.steps:
                count = tc.log_every if step % tc.log_every == 0 else step % tc.log_every
                means = {k: v / count for k, v in window.items()}
                log.info("step %d lr %.3g %s", step, self.lr_schedule.get_last_lr()[0],
                         " ".join(f"{k} {v:.4f}" for k, v in means.items()))
                bar.set_postfix({k: f"{v:.3f}" for k, v in means.items() if k in ("loss", "loss_diffusion", "loss_prototype")})
                last_window, window = means, {}
            bar.update(1)
            train_seconds = self.elapsed = time.perf_counter() - loop_started
            if tc.max_seconds is not None and train_seconds >= tc.max_seconds and step < tc.steps:
                stop_reason = "max_seconds"
                break
            if step % tc.checkpoint_every == 0 and step < tc.steps and accelerator.is_main_process:
                save_training_state(self.checkpoint_dir, self.method.state_dict(),
                                    self.ema.state_dict() if self.ema else None,
                                    {"optimizer": self.optimizer.state_dict(), "lr_schedule": self.lr_schedule.state_dict()},
                                    {"step": step, "train_seconds": train_seconds, "train_id": self.train_id})
        bar.close()
        accelerator.wait_for_everyone()
        return step, train_seconds, stop_reason, last_window

    # --- the record --------------------------------------------------------------------------------------------
    def _record(self, steps_done: int, train_seconds: float, stop_reason: str, final_losses: dict) -> dict:
        cfg, tc, method = self.cfg, self.cfg.train, self.method
        stage1_seconds = self.stage1.get("seconds", 0.0)
        return {
            **provenance(),
            "status": "ok", "failure": None,
            "experiment": cfg.experiment, "method": self.method_name, "seed": self.seed,
            "train_id": self.train_id, "stage1_id": stage1_identity(cfg, self.method_name, self.seed),
            "config_hash": cfg.hash, "config": dict(cfg.resolved),
            "data_info": DataInfo.of(self.dataset).__dict__,
            "method_record": method.record(),
            "steps_done": steps_done, "stop_reason": stop_reason,
            "final_losses": {k: round(v, 6) for k, v in final_losses.items()},
            "batch_size": tc.batch_size, "images_seen": steps_done * tc.batch_size,
            "device": self.device, "num_processes": self.world, "mixed_precision": tc.mixed_precision,
            "stage1": self.stage1, "stage1_dir": str(self.stage1_dir) if self.stage1_dir is not None else None,
            "stage1_seconds": stage1_seconds, "train_seconds": train_seconds,
            "train_images_per_second": steps_done * tc.batch_size / max(train_seconds, 1e-9),
            "device_hours": (stage1_seconds + train_seconds) * self.world / 3600.0,
            "parameters_total": sum(p.numel() for p in method.parameters()),
            "parameters_trained": sum(p.numel() for p in self.trainable),
            "parameters_sampling": sum(p.numel() for m in method.sampling_modules() for p in m.parameters()),
            **peak_memory(self.device),
            "versions": versions(),
        }

    def execute(self, resume: bool) -> dict:
        self._build()
        step, train_seconds = self._resume() if resume else (0, 0.0)
        self.elapsed = train_seconds
        weights = weights_dir(self.model_dir)
        try:
            steps_done, train_seconds, stop_reason, final_losses = self._loop(step, train_seconds)
        except TrainingDiverged as err:
            log.error("%s", err)
            record = self._record(err.step - 1, self.elapsed, "diverged", {})
            record.update(status="failed", failure=str(err), failed_step=err.step, failed_term=err.term)
            if self.accelerator.is_main_process:
                shutil.rmtree(weights, ignore_errors=True)
                weights.mkdir(parents=True)  # an empty weights folder: the run has no model to sample from
                write_json(self.model_dir / "train.json", record)
                shutil.rmtree(self.checkpoint_dir, ignore_errors=True)  # resuming would only diverge again
            return record
        if self.ema is not None:
            self.ema.copy_to(self.trainable)  # the saved and evaluated weights are the EMA weights
        self.method.finalize(self.dataset)
        record = self._record(steps_done, train_seconds, stop_reason, final_losses)
        if self.accelerator.is_main_process:
            record["component_bytes"] = save_components(self.method, weights)
            write_json(self.model_dir / "train.json", record)
            shutil.rmtree(self.checkpoint_dir, ignore_errors=True)
        log.info("done: %d steps in %.1f s (%.0f img/s)", steps_done, train_seconds, record["train_images_per_second"])
        return record
