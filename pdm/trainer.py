"""One trainer for every method: data order, optimiser, LR schedule, clipping, EMA, precision, checkpoints, budget, costs.

A method only supplies `loss` (through `forward`); it never owns a loop, so every method of an experiment gets the
same batches in the same order, the same AdamW + warm-up + cosine schedule, the same clip and EMA, and the same
budget (train.budget): the same optimiser steps, or the same training FLOPs, or the same training seconds. In the
flops and seconds modes each method runs the steps its budget allows (pdm.flops) and its LR schedule is laid out for
that number of steps. Snapshots (train.snapshots) save the weights at fractions of the planned steps without
changing the training. Data-parallel runs (several GPUs for one job: pdm.launch, docs/multigpu.md) go through
accelerate: each process takes its share of every global batch and draws every per-image random quantity for the
whole batch (pdm.shards), so the data order, global batch and per-image draws are those of one process; only the
order of floating-point sums differs.

Health: a NaN or Inf in any loss term or in the gradients stops training at that step, naming the step and the term;
the run is then recorded as failed (train.json `status: failed`, `failure: ...`) so that it shows in the tables with
its reason instead of silently disappearing.
"""

from __future__ import annotations

import logging
import math
import os
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

from pdm.checkpoint import (
    load_stage1,
    load_training_state,
    read_snapshot,
    save_components,
    save_training_state,
    snapshot_dir,
    weights_dir,
    write_snapshot,
)
from pdm.config import ExperimentConfig
from pdm.data import BatchStream, load_dataset
from pdm.flops import preserved_state, steps_for_budget, training_step_flops
from pdm.identity import stage1_identity, training_identity
from pdm.io import write_json
from pdm.methods.base import DataInfo
from pdm.methods.registry import get_method_class
from pdm.runtime import provenance, resolve_device, setup_job, versions
from pdm.shards import global_batch_norm, step_generator
from pdm.speed import apply_speed_options, to_layout

__all__ = ["TrainingDiverged", "load_stage1", "resolve_device", "step_generator", "train", "versions"]
log = logging.getLogger("pdm.trainer")
# budget: seconds times this many real steps (after the untimed warm-up ones) on a throwaway optimiser and EMA
PROBE_WARMUP_STEPS, PROBE_TIMED_STEPS = 2, 8
# fp16: accelerate's GradScaler skips a step whose scaled gradients overflow and halves its scale; this many skipped
# steps in a row (scale down by 2**20) is divergence, not a scale still settling (it starts at 2**16)
MAX_CONSECUTIVE_OVERFLOWS = 20


class TrainingDiverged(RuntimeError):
    """A non-finite loss term or gradient: names the step and the term, and the usual fixes."""

    def __init__(self, method: str, step: int, term: str, value: float):
        self.step, self.term, self.value = step, term, value
        super().__init__(f"{method}: {term} became {value} at step {step}; training stopped there. Fix: lower train.lr, "
                         "set train.grad_clip, or use train.mixed_precision: 'no'")


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
    # one writer of train.log: process 0 of a data-parallel run (torchrun sets RANK in every process it starts)
    handler = _file_logger(model_dir / "train.log") if int(os.environ.get("RANK", "0")) == 0 else None
    try:
        return _Run(cfg, method_name, seed, model_dir, stage1_dir).execute(resume)
    finally:
        if handler is not None:
            logging.getLogger("pdm").removeHandler(handler)
            handler.close()


def probe_run(cfg: ExperimentConfig, method_name: str, dataset, database_size: int) -> "_Run":
    """A training run built exactly as `train` builds it (device, accelerate, method, fused AdamW, EMA, FLOPs of a
    step), on a given (synthetic) dataset and with random stage-1 outputs (Method.prepare_for_probe), for pdm.plan:
    `run._time_steps(warmup, timed)` then times real steps with the budget probe, and `run.method` samples."""
    run = _Run(cfg, method_name, 0, None, None, dataset=dataset, stand_in_database=database_size)
    run._build()
    return run


class _Run:
    """One training run, in the order it happens: set up, resume, loop, write the record."""

    def __init__(self, cfg: ExperimentConfig, method_name: str, seed: int, model_dir: Path | None, stage1_dir,
                 dataset=None, stand_in_database: int | None = None):
        self.cfg, self.method_name, self.seed, self.model_dir = cfg, method_name, seed, model_dir
        # pdm.plan's cost probe: a synthetic dataset, and random stage-1 outputs for a database of that many images
        self.given_dataset, self.stand_in_database = dataset, stand_in_database
        self.train_cfg = cfg.train_for(method_name)  # the shared `train`, with this method's own lr if it sets one
        self.stage1_dir = stage1_dir
        self.train_id = training_identity(cfg, method_name, seed)
        self.checkpoint_dir = model_dir / "checkpoint" if model_dir is not None else None

    # --- set up ------------------------------------------------------------------------------------------------
    def _build(self) -> None:
        cfg, tc = self.cfg, self.train_cfg
        self.device = setup_job(cfg)
        if tc.mixed_precision == "fp16" and self.device == "cpu":
            # accelerate runs CPU "fp16" in plain fp32 without autocast or loss scaler: the record would lie
            raise ValueError("train.mixed_precision: fp16 needs a GPU (on CPU accelerate silently trains in fp32); "
                             "use bf16 or 'no' on CPU")
        self.accelerator = Accelerator(mixed_precision=tc.mixed_precision, cpu=self.device == "cpu")
        self.rank, self.world = self.accelerator.process_index, self.accelerator.num_processes
        if tc.batch_size % self.world:
            raise ValueError(f"train.batch_size={tc.batch_size} must be divisible by the {self.world} processes")
        self.dataset = self.given_dataset if self.given_dataset is not None else load_dataset(cfg.data)
        torch.manual_seed(self.seed)  # same seed -> same initial U-Net for every method
        self.method = get_method_class(self.method_name)(cfg, DataInfo.of(self.dataset))
        log.info("training %s seed %d on %s x%d: %d parameters, training identity %s", self.method_name, self.seed,
                 self.device, self.world, sum(p.numel() for p in self.method.parameters()), self.train_id)
        if self.stand_in_database is None:
            self.stage1 = load_stage1(self.method, self.stage1_dir)  # frozen; its time counts in this method's cost
        else:
            self.stage1 = self.method.prepare_for_probe(self.stand_in_database)
        self.method.to(self.accelerator.device)
        if self.world > 1:  # several processes (pdm.shards): BatchNorm over the global batch; dropout masks differ
            global_batch_norm(self.method)
            torch.manual_seed(self.seed * 1_000_003 + self.rank)  # per process (dropout draws from the process RNG)
        self.trainable = [p for p in self.method.parameters() if p.requires_grad]  # stage-1 networks stay frozen
        self.stream = BatchStream(self.dataset, tc.batch_size, self.seed, hflip=cfg.data.hflip)
        # FLOPs of one real training step: step 0's whole (global) batch through the method's loss, forward and
        # backward; shapes alone decide it, so every process, machine and resumed attempt gets the same number
        x0, labels, index = self.stream.batch(0)
        device = self.accelerator.device
        self.flops_per_step = training_step_flops(
            self.method, (x0.to(device), labels.to(device) if labels is not None else None, index.to(device)))
        # after the count (FLOPs do not depend on layout or compilation), before the optimiser sees the parameters
        apply_speed_options(self.method, tc.channels_last, tc.compile)
        self.consecutive_overflows = 0
        # One fused kernel per parameter group (CPU and CUDA): the same AdamW update, ~8% less time per step on the
        # default's small U-Net on a 2-core CPU (pytorch foreach: 49.9 vs 46 ms, PDM 69.5 vs 64 ms, README). Same for
        # every method, so it changes no comparison; the last bits of the update differ from the foreach kernel.
        fused = device.type in ("cpu", "cuda")
        self.optimizer = torch.optim.AdamW(self.trainable, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay,
                                           fused=fused)
        self.ema = EMAModel(self.trainable, decay=tc.ema_decay) if tc.ema_decay is not None else None
        self.model, self.optimizer = self.accelerator.prepare(self.method, self.optimizer)

    def _load_checkpoint(self):
        """The checkpoint's (model state, optimiser/EMA/schedule state, progress), refused when it belongs to another
        training identity; None when there is none."""
        state = load_training_state(self.checkpoint_dir, self.accelerator.device)
        if state is None:
            return None
        progress = state[2]
        if progress.get("train_id") != self.train_id:
            raise ValueError(
                f"{self.checkpoint_dir} belongs to training identity {progress.get('train_id')}, not {self.train_id} "
                "(the data, model, diffusion, train settings, method options or seed differ); delete that folder to "
                "start over, or use the config it was made with"
            )
        return state

    # --- the budget: steps planned, LR schedule, snapshot steps ---------------------------------------------------
    def _plan(self, progress: dict | None) -> None:
        """The steps this method gets under the budget, and the LR schedule laid out for exactly that many.

        A resumed run keeps the plan its checkpoint recorded (in seconds mode, the timing it was made with), so the
        schedule and the step count never change mid-run.
        """
        tc = self.train_cfg
        self.seconds_per_step, self.probe_seconds = None, None
        if progress is not None and "steps_planned" in progress:
            self.steps_planned = int(progress["steps_planned"])
            self.seconds_per_step = progress.get("seconds_per_step_estimate")
            self.probe_seconds = progress.get("budget_probe_seconds")
            if progress.get("flops_per_step") not in (None, self.flops_per_step):
                log.warning("FLOPs per step counted now (%d) differ from the checkpoint's (%d); keeping its plan of "
                            "%d steps", self.flops_per_step, progress["flops_per_step"], self.steps_planned)
        else:
            if tc.budget == "seconds":
                self.seconds_per_step, self.probe_seconds = self._time_steps()
            self.steps_planned = steps_for_budget(tc, self.flops_per_step, self.seconds_per_step, self.method_name)
        if tc.warmup_steps > self.steps_planned:  # steps mode: also refused by the config check
            raise ValueError(f"train.warmup_steps={tc.warmup_steps} exceeds the {self.steps_planned} steps "
                             f"{self.method_name} gets; lower train.warmup_steps or raise the budget")
        if tc.lr_schedule == "cosine":
            self.lr_schedule = get_cosine_schedule_with_warmup(self.optimizer, tc.warmup_steps, self.steps_planned)
        else:
            self.lr_schedule = get_constant_schedule_with_warmup(self.optimizer, tc.warmup_steps)
        # snapshot steps: the nearest step to fraction x planned steps (halves up), at least 1
        self.snapshot_steps = {f: min(self.steps_planned, max(1, math.floor(f * self.steps_planned + 0.5)))
                               for f in tc.snapshots}
        per_step = f", {self.seconds_per_step:.4g} s per step measured" if self.seconds_per_step else ""
        log.info("budget %s: %d steps planned (%.4g FLOPs per step%s)", tc.budget, self.steps_planned,
                 self.flops_per_step, per_step)

    def _time_steps(self, warmup: int = PROBE_WARMUP_STEPS, timed: int = PROBE_TIMED_STEPS) -> tuple[float, float]:
        """budget: seconds: seconds per training step on this machine, and what measuring them took.

        Runs `warmup` (PROBE_WARMUP_STEPS) untimed then `timed` (PROBE_TIMED_STEPS) timed real steps (steps 0.. of the data order) with a
        throwaway AdamW and EMA, inside preserved_state: the weights, buffers and RNGs are put back bitwise after, so
        the training that follows is exactly the one steps mode would run for the same number of steps. The probe's
        time is recorded (budget_probe_seconds), never counted in train_seconds. With several processes, process 0's
        timing is used by all.
        """
        tc, accelerator = self.train_cfg, self.accelerator
        started = time.perf_counter()
        with preserved_state(self.method):
            optimizer = torch.optim.AdamW(self.trainable, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay)
            ema = EMAModel(self.trainable, decay=tc.ema_decay) if tc.ema_decay is not None else None
            self.model.train()
            for step in range(warmup + timed):
                if step == warmup:
                    self._synchronize()
                    started_timed = time.perf_counter()
                self._step(step, optimizer, ema, probe=True)
            self._synchronize()
            per_step = (time.perf_counter() - started_timed) / timed
            del optimizer, ema
        if self.world > 1:
            from accelerate.utils import broadcast

            per_step = float(broadcast(torch.tensor([per_step], device=accelerator.device), from_process=0)[0])
        return per_step, time.perf_counter() - started

    def _synchronize(self) -> None:
        if self.device == "cuda":
            torch.cuda.synchronize()

    # --- snapshots ---------------------------------------------------------------------------------------------
    def _snapshot_done(self, fraction: float) -> bool:
        info = read_snapshot(self.model_dir, fraction)
        return bool(info) and info.get("status") == "ok" and info.get("train_id") == self.train_id \
            and info.get("step") == self.snapshot_steps[fraction]

    def _save_snapshots(self, step: int, train_seconds: float) -> None:
        """The weights generation would use (EMA where on, after `finalize`, as weights/) at this step, for every
        fraction due now; the training state is put back bitwise (preserved_state), so the run goes on unchanged."""
        due = [f for f, s in self.snapshot_steps.items() if s == step]
        if not due or not self.accelerator.is_main_process:
            return
        with preserved_state(self.method):
            if self.ema is not None:
                self.ema.copy_to(self.trainable)
            self.method.finalize(self.dataset)
            for fraction in due:
                write_snapshot(self.method, snapshot_dir(self.model_dir, fraction), {
                    "status": "ok", "method": self.method_name, "seed": self.seed, "train_id": self.train_id,
                    "fraction": fraction, "step": step, "steps_planned": self.steps_planned,
                    "weights": "ema" if self.ema is not None else "current",
                    "images_seen": step * self.cfg.train.batch_size, "train_flops": step * self.flops_per_step,
                    "train_seconds": train_seconds})
                log.info("snapshot %s at step %d", fraction, step)

    def _mark_unreached_snapshots(self, reason: str) -> None:
        """A snapshot.json (status not_reached, no weights) for every snapshot training stopped before (max_seconds,
        divergence), so the workflow's declared outputs exist and say why they hold no weights."""
        if not self.accelerator.is_main_process:
            return
        for fraction, step in self.snapshot_steps.items():
            if not self._snapshot_done(fraction):
                write_snapshot(self.method, snapshot_dir(self.model_dir, fraction), {
                    "status": "not_reached", "reason": reason, "method": self.method_name, "seed": self.seed,
                    "train_id": self.train_id, "fraction": fraction, "step": step,
                    "steps_planned": self.steps_planned}, with_weights=False)

    def _restore(self, state) -> tuple[int, float]:
        if state is None:
            return 0, 0.0
        model_state, rest, progress = state
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
        """Clip (accelerate unscales fp16 gradients first) and stop on a non-finite gradient, except an fp16 overflow,
        which the loss scaler handles by skipping the step, until MAX_CONSECUTIVE_OVERFLOWS in a row."""
        tc, accelerator = self.train_cfg, self.accelerator
        if tc.grad_clip is not None:
            norm = accelerator.clip_grad_norm_(self.model.parameters(), tc.grad_clip)
        else:
            accelerator.unscale_gradients()  # a no-op without a scaler
            norm = torch.nn.utils.get_total_norm([p.grad for p in self.trainable if p.grad is not None])
        finite = bool(torch.isfinite(torch.as_tensor(norm)))
        if accelerator.scaler is not None:
            self.consecutive_overflows = 0 if finite else self.consecutive_overflows + 1
            if not finite:
                log.info("step %d: fp16 gradients overflowed at loss scale %g; the scaler skips this step", step,
                         accelerator.scaler.get_scale())
            finite = finite or self.consecutive_overflows < MAX_CONSECUTIVE_OVERFLOWS
        if not finite:
            name = next((n for n, p in self.method.named_parameters()
                         if p.grad is not None and not bool(torch.isfinite(p.grad).all())), "some parameter")
            raise TrainingDiverged(self.method_name, step, f"the gradient of {name}", float(norm))

    def _step(self, step: int, optimizer, ema, probe: bool = False) -> dict:
        """One optimiser step on step `step`'s batch; returns the loss terms. The probe (budget: seconds) runs the
        same work with a throwaway optimiser and EMA, and a plain clip that leaves accelerate's loss scaler alone."""
        tc, accelerator = self.train_cfg, self.accelerator
        x0, labels, index = self.stream.batch(step, self.rank, self.world)
        x0 = to_layout(x0.to(accelerator.device), tc.channels_last)
        labels = labels.to(accelerator.device) if labels is not None else None
        generator = step_generator(self.seed, step, self.rank, accelerator.device, self.world)
        with accelerator.autocast():
            loss, logs = self.model(x0, labels, generator, index.to(accelerator.device))
        if not probe:
            self._check_finite(step + 1, {**logs, "loss": loss.detach()})
        if self.world > 1:  # the global batch's terms: means over equal shares (batch diagnostics: mean of the shares')
            values = accelerator.reduce(torch.stack([torch.as_tensor(v, dtype=torch.float32, device=accelerator.device)
                                                     .reshape(()) for v in logs.values()]), "mean")
            logs = dict(zip(logs, values))
        accelerator.backward(loss)
        if not probe:
            self._clip_and_check_gradients(step + 1)
        elif tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(self.trainable, tc.grad_clip)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(self.trainable)
        return logs

    def _loop(self, step: int, train_seconds: float) -> tuple[int, float, str, dict]:
        tc, accelerator = self.train_cfg, self.accelerator
        steps = self.steps_planned
        bar = tqdm(total=steps, initial=step, desc=f"{self.method_name} seed{self.seed}", mininterval=2.0,
                   disable=not accelerator.is_main_process, file=sys.stderr)
        window: dict[str, float] = {}
        last_window: dict[str, float] = {}
        stop_reason = "steps"
        self.model.train()
        loop_started = time.perf_counter() - train_seconds
        while step < steps:
            logs = self._step(step, self.optimizer, self.ema)
            self.lr_schedule.step()  # after the optimiser step, as before: the LR only acts on the next one
            step += 1

            for key, value in logs.items():
                window[key] = window.get(key, 0.0) + float(value)
            if step % tc.log_every == 0 or step == steps:
                count = tc.log_every if step % tc.log_every == 0 else step % tc.log_every
                means = {k: v / count for k, v in window.items()}
                log.info("step %d lr %.3g %s", step, self.lr_schedule.get_last_lr()[0],
                         " ".join(f"{k} {v:.4f}" for k, v in means.items()))
                bar.set_postfix({k: f"{v:.3f}" for k, v in means.items() if k in ("loss", "loss_diffusion", "loss_prototype")})
                last_window, window = means, {}
            bar.update(1)
            train_seconds = self.elapsed = time.perf_counter() - loop_started
            # snapshots before this step's checkpoint: a run resumed from it has every snapshot up to its step
            snapshot_started = time.perf_counter()
            self._save_snapshots(step, train_seconds)
            loop_started += time.perf_counter() - snapshot_started  # writing snapshots is not training time
            if tc.max_seconds is not None and train_seconds >= tc.max_seconds and step < steps:
                stop_reason = "max_seconds"
                break
            if step % tc.checkpoint_every == 0 and step < steps and accelerator.is_main_process:
                save_training_state(self.checkpoint_dir, self.method.state_dict(),
                                    self.ema.state_dict() if self.ema else None,
                                    {"optimizer": self.optimizer.state_dict(), "lr_schedule": self.lr_schedule.state_dict()},
                                    {"step": step, "train_seconds": train_seconds, "train_id": self.train_id,
                                     "steps_planned": steps, "flops_per_step": self.flops_per_step,
                                     "seconds_per_step_estimate": self.seconds_per_step,
                                     "budget_probe_seconds": self.probe_seconds})
        bar.close()
        accelerator.wait_for_everyone()
        return step, train_seconds, stop_reason, last_window

    # --- the record --------------------------------------------------------------------------------------------
    def _record(self, steps_done: int, train_seconds: float, stop_reason: str, final_losses: dict) -> dict:
        cfg, tc, method = self.cfg, self.train_cfg, self.method
        stage1_seconds = self.stage1.get("seconds", 0.0)
        budget_value = {"steps": tc.steps, "flops": tc.flops, "seconds": tc.seconds}[tc.budget]
        return {
            **provenance(),
            "status": "ok", "failure": None,
            "experiment": cfg.experiment, "method": self.method_name, "seed": self.seed,
            "train_id": self.train_id, "stage1_id": stage1_identity(cfg, self.method_name, self.seed),
            "config_hash": cfg.hash, "config": dict(cfg.resolved),
            "data_info": DataInfo.of(self.dataset).__dict__,
            "method_record": method.record(),
            "budget": tc.budget, "budget_value": budget_value, "steps_planned": self.steps_planned,
            "steps_done": steps_done, "stop_reason": stop_reason,
            "flops_per_step": self.flops_per_step, "train_flops": steps_done * self.flops_per_step,
            "stage1_flops": self.stage1.get("stage1_flops") if self.method.has_stage1 else None,
            "seconds_per_step_estimate": self.seconds_per_step, "budget_probe_seconds": self.probe_seconds,
            "snapshots": [{"fraction": f, "step": s, "done": self._snapshot_done(f)}
                          for f, s in self.snapshot_steps.items()],
            "final_losses": {k: round(v, 6) for k, v in final_losses.items()},
            "batch_size": tc.batch_size, "images_seen": steps_done * tc.batch_size,
            "device": self.device, "num_processes": self.world, "mixed_precision": tc.mixed_precision,
            "channels_last": tc.channels_last, "compile": tc.compile,
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
        state = self._load_checkpoint() if resume else None
        self._plan(state[2] if state else None)
        if state is not None:
            missing = [f for f, s in self.snapshot_steps.items() if s <= state[2]["step"] and not self._snapshot_done(f)]
            if missing:  # e.g. train.snapshots gained a fraction after the kill: only training from 0 can make it
                log.warning("snapshots %s lie before the checkpoint's step %d and are missing; training from step 0",
                            missing, state[2]["step"])
                state = None
                self._plan(None)
        if state is None and self.accelerator.is_main_process:
            shutil.rmtree(self.model_dir / "snapshots", ignore_errors=True)  # a fresh run writes all of them
        step, train_seconds = self._restore(state)
        self.elapsed = train_seconds
        weights = weights_dir(self.model_dir)
        try:
            steps_done, train_seconds, stop_reason, final_losses = self._loop(step, train_seconds)
        except TrainingDiverged as err:
            log.error("%s", err)
            self._mark_unreached_snapshots(f"training diverged at step {err.step}")
            record = self._record(err.step - 1, self.elapsed, "diverged", {})
            record.update(status="failed", failure=str(err), failed_step=err.step, failed_term=err.term)
            if self.accelerator.is_main_process:
                shutil.rmtree(weights, ignore_errors=True)
                weights.mkdir(parents=True)  # an empty weights folder: the run has no model to sample from
                write_json(self.model_dir / "train.json", record)
                shutil.rmtree(self.checkpoint_dir, ignore_errors=True)  # resuming would only diverge again
            return record
        self._mark_unreached_snapshots(f"training stopped at step {steps_done} ({stop_reason})")
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
