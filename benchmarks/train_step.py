#!/usr/bin/env python
"""Time one training step of every method at a config, in the reference code's settings and the fastest ones.

    python benchmarks/train_step.py --config config/paper/cifar10.yaml --device cuda --json step.json

Settings (--settings, any of them, side by side in one process):
  reference   fp32, no channels-last, no compile: the reference code's computation (github.com/b-faye/pdm trains in
              fp32; torch's default flags, so cuDNN may use TF32 for convolutions, as the reference would)
  fast        bf16 autocast where the hardware supports it (else fp32), channels-last, torch.compile of the denoiser
  or a spec such as fp32+channels_last, bf16+compile, fp16+channels_last+compile (fp16 steps through a GradScaler)

A step is what pdm.trainer runs: the method's loss on a batch under autocast, backward, the finite check on the loss,
grad clip, fused AdamW (and EMA where train.ema_decay is set). Data are synthetic uint8 images (one fixed batch, no
loader); stage-1 parts are stand-ins of the configured shapes (benchmarks/stand_ins.py). Warm-up steps (compilation
included) are not timed; the device is synchronised around the timer. Model FLOPs per step are pdm.flops' count of
the whole loss forward and backward (what train.budget: flops spends); utilisation divides them per second by a
matmul peak measured here in the setting's precision. A method that cannot be built here (a missing package) is
reported as skipped with the reason; the others still run.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import resource
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # the repo's pdm and baselines, without installing

import torch  # noqa: E402

from benchmarks.stand_ins import (  # noqa: E402
    RDM_DATABASE_SIZE, SyntheticBatches, bf16_supported, build_method, environment, matmul_peak, method_config,
    synchronize)

DEFAULT_METHODS = ("pdm", "spdm", "ddpm", "cddpm", "protodiffusion", "ldm", "rdm")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
NUM_CLASSES = 10  # CIFAR-10's: the trainer hands every method the labels of a labelled dataset


@dataclass(frozen=True)
class Setting:
    name: str
    precision: str  # fp32 | bf16 | fp16
    channels_last: bool
    compile: bool


def parse_setting(spec: str, device: str) -> Setting:
    if spec == "reference":
        return Setting("reference", "fp32", False, False)
    if spec == "fast":
        return Setting("fast", "bf16" if bf16_supported(device) else "fp32", True, True)
    parts = spec.split("+")
    unknown = [p for p in parts[1:] if p not in ("channels_last", "compile")]
    if parts[0] not in DTYPES or unknown:
        raise SystemExit(f"--settings: cannot read '{spec}'; use reference, fast, or a precision (fp32, bf16, fp16) "
                         "followed by +channels_last and/or +compile, e.g. bf16+channels_last+compile")
    if parts[0] == "bf16" and not bf16_supported(device):
        raise SystemExit(f"--settings {spec}: this {device} has no bf16 support; use fp32 or fp16")
    return Setting(spec, parts[0], "channels_last" in parts, "compile" in parts)


def peak_memory_bytes(device: str) -> int:
    if device == "cuda":
        return int(torch.cuda.max_memory_allocated())
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # the process's peak so far (Linux: KiB)


def time_method(cfg, name: str, setting: Setting, batches: SyntheticBatches, args) -> dict:
    """Warm-up then timed training steps of one method in one setting; ms/step, images/s and peak memory."""
    from diffusers.training_utils import EMAModel

    from pdm.speed import apply_speed_options, to_layout
    from pdm.trainer import step_generator

    device, tc = args.device, cfg.train_for(name)
    if device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    method, _ = build_method(cfg, name, NUM_CLASSES, device)
    apply_speed_options(method, setting.channels_last, setting.compile)
    method.train()
    trainable = [p for p in method.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(trainable, lr=tc.lr, betas=tuple(tc.betas), weight_decay=tc.weight_decay, fused=True)
    ema = EMAModel(trainable, decay=tc.ema_decay) if tc.ema_decay is not None else None
    scaler = torch.amp.GradScaler(device) if setting.precision == "fp16" else None
    x0 = to_layout(batches.x0, setting.channels_last)

    def step(number: int) -> None:
        autocast = (torch.autocast(device, dtype=DTYPES[setting.precision]) if setting.precision != "fp32"
                    else contextlib.nullcontext())
        with autocast:
            loss, _ = method(x0, batches.labels, step_generator(0, number, 0, device), batches.index)
        if not bool(torch.isfinite(loss.detach())):  # the trainer's check (one sync per step)
            raise RuntimeError(f"{name}: the loss became {float(loss)} at step {number}")
        (scaler.scale(loss) if scaler else loss).backward()
        if scaler:
            scaler.unscale_(optimizer)
        if tc.grad_clip is not None:
            torch.nn.utils.clip_grad_norm_(trainable, tc.grad_clip)
        scaler.step(optimizer) if scaler else optimizer.step()
        if scaler:
            scaler.update()
        optimizer.zero_grad(set_to_none=True)
        if ema is not None:
            ema.step(trainable)

    started = time.perf_counter()
    for number in range(args.warmup):
        step(number)
    synchronize(device)
    warmup_seconds = time.perf_counter() - started
    started = time.perf_counter()
    for number in range(args.warmup, args.warmup + args.steps):
        step(number)
    synchronize(device)
    seconds = (time.perf_counter() - started) / args.steps
    memory = peak_memory_bytes(device)
    del method, optimizer, ema, trainable
    return {"ms_per_step": 1e3 * seconds, "images_per_second": batches.x0.shape[0] / seconds,
            "warmup_seconds": warmup_seconds, "peak_memory_bytes": memory}


def print_side_by_side(rows: list[dict], settings: list[Setting]) -> None:
    """images/s per method in every setting, and each setting's ratio to the first (reference)."""
    first = settings[0].name
    print(f"\n{'method':15s} " + " ".join(f"{s.name + ' img/s':>26s}" for s in settings)
          + "".join(f"  {s.name + '/' + first:>26s}" for s in settings[1:]))
    for name in dict.fromkeys(r["method"] for r in rows):
        speed = {r["setting"]: r["images_per_second"] for r in rows if r["method"] == name}
        cells = " ".join(f"{speed[s.name]:26.1f}" if s.name in speed else f"{'-':>26s}" for s in settings)
        ratios = "".join(f"  {speed[s.name] / speed[first]:25.2f}x" if s.name in speed and first in speed
                         else f"  {'-':>26s}" for s in settings[1:])
        print(f"{name:15s} {cells}{ratios}")


def markdown_table(rows: list[dict]) -> str:
    """The rows as a Markdown table, for docs/performance.md."""
    lines = ["| method | setting | ms/step | images/s | x reference | peak memory (MiB) | GFLOP/step | MFU |",
             "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        ratio = f"{r['ratio_to_first_setting']:.2f}" if r["ratio_to_first_setting"] is not None else "-"
        lines.append(f"| {r['method']} | {r['setting']} | {r['ms_per_step']:.1f} | {r['images_per_second']:.1f} | "
                     f"{ratio} | {r['peak_memory_bytes'] / 2**20:.0f} | {r['flops_per_step'] / 1e9:.1f} | "
                     f"{100 * r['mfu']:.1f}% |")
    return "\n".join(lines)


def free(device: str) -> None:
    gc.collect()
    if device == "cuda":
        torch.cuda.empty_cache()
    torch._dynamo.reset()  # every method's own compiled graphs: none reused across methods, no recompile limit hit


def run(args) -> dict:
    from pdm.flops import training_step_flops
    from pdm.io import write_json

    settings = [parse_setting(spec, args.device) for spec in args.settings]
    env = environment(args.device)
    peaks = {p: matmul_peak(args.device, DTYPES[p]) for p in sorted({"fp32", *(s.precision for s in settings)})}
    print(f"# {env['device_name']} ({args.device}) | torch {env['torch']} | CPU {env['cpu_model']} "
          f"x{env['cpu_threads']} threads | bf16 supported: {env['bf16_supported']}")
    print("# measured matmul peak: " + ", ".join(f"{p} {v / 1e12:.3g} TFLOP/s" for p, v in peaks.items()))
    print(f"# config {args.config}; {args.warmup} warm-up + {args.steps} timed steps; synthetic uint8 data")
    header = {"environment": env, "matmul_peak_flops": peaks, "config": args.config, "steps": args.steps,
              "warmup": args.warmup, "settings": [asdict(s) for s in settings]}
    rows, skipped, prepared = [], [], {}
    for name in args.methods:  # configs, FLOPs and notes first: a method that cannot be built here is skipped
        try:
            cfg, config_note = method_config(args.config, name, args.batch_size, args.device)
            method, stage1_note = build_method(cfg, name, NUM_CLASSES, args.device)
            batches = SyntheticBatches.make(cfg.train.batch_size, cfg.data.channels, cfg.data.resolution, NUM_CLASSES,
                                            args.device, RDM_DATABASE_SIZE)
            flops = training_step_flops(method, (batches.x0, batches.labels, batches.index))
            del method
        except Exception as err:  # a missing package or option for this method: report it, time the others
            skipped.append({"method": name, "reason": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
            print(f"{name:15s} skipped: {skipped[-1]['reason']}", flush=True)
            continue
        prepared[name] = (cfg, batches, flops, "; ".join(n for n in (config_note, stage1_note) if n))
    # every method in the settings without compilation first: a run cut short while compiling keeps those
    for setting in sorted(settings, key=lambda s: s.compile):
        for name, (cfg, batches, flops, note) in prepared.items():
            free(args.device)
            try:
                timing = time_method(cfg, name, setting, batches, args)
            except Exception as err:
                skipped.append({"method": name, "setting": setting.name,
                                "reason": f"{type(err).__name__}: {str(err).splitlines()[0]}"})
                print(f"{name:15s} {setting.name:24s} failed: {skipped[-1]['reason']}", flush=True)
                continue
            row = {"method": name, "setting": setting.name, "precision": setting.precision,
                   "channels_last": setting.channels_last, "compile": setting.compile,
                   "batch_size": cfg.train.batch_size,
                   "flops_per_step": flops, **timing, "note": note}
            row["mfu"] = flops / (timing["ms_per_step"] / 1e3) / peaks[setting.precision]
            rows.append(row)
            if args.json:  # after every row: a run stopped by a time limit keeps what it measured
                write_json(args.json, {**header, "rows": rows, "skipped": skipped})
            print(f"{name:15s} {setting.name:24s} {row['ms_per_step']:9.1f} ms/step "
                  f"{row['images_per_second']:8.1f} img/s  peak {row['peak_memory_bytes'] / 2**20:7.0f} MiB  "
                  f"{flops / 1e9:7.1f} GFLOP/step  MFU {100 * row['mfu']:5.1f}%  warm-up {row['warmup_seconds']:.1f} s"
                  f"{'  (' + note + ')' if note else ''}", flush=True)
    print_side_by_side(rows, settings)
    for row in rows:  # images/s against the first setting (reference) of the same method
        first = next((r for r in rows if r["method"] == row["method"] and r["setting"] == settings[0].name), None)
        row["ratio_to_first_setting"] = row["images_per_second"] / first["images_per_second"] if first else None
    if args.markdown:
        print("\n" + markdown_table(rows))
    if args.device == "cpu":
        print("# CPU peak memory is the process's peak RSS so far (it only grows), not per method")
    result = {**header, "rows": rows, "skipped": skipped}
    if args.json:
        write_json(args.json, result)
        print(f"# wrote {args.json}")
    return result


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--config", default="config/paper/cifar10.yaml")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS))
    parser.add_argument("--steps", type=int, default=20, help="timed steps per method and setting")
    parser.add_argument("--warmup", type=int, default=3, help="untimed steps first (torch.compile compiles in them)")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's train.batch_size")
    parser.add_argument("--device", choices=("cuda", "cpu"), default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--settings", nargs="+", default=["reference", "fast"])
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--json", type=Path, default=None, help="also write every number here")
    parser.add_argument("--markdown", action="store_true", help="also print the rows as a Markdown table")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: torch sees no GPU here; use --device cpu")
    if args.steps < 1 or args.warmup < 0:
        raise SystemExit("--steps must be at least 1 and --warmup at least 0")
    if args.threads:
        torch.set_num_threads(args.threads)
    run(args)


if __name__ == "__main__":
    main()
