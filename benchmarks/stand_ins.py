"""What benchmarks/train_step.py needs besides the timing: the environment, the measured matmul peak, the methods
built at a config with throwaway stage-1 parts, and synthetic batches.

A training step's cost does not depend on what a stage 1 learned, only on its shapes, so the stand-ins are:
  ldm             a random-initialised AutoencoderKL of the configured shape, latent shift 0 and scale 1 (its
                  encoder still runs in every step, as in training);
  rdm             random unit embeddings of the configured encoder's width as the database, a real FAISS flat index
                  over them and each entry's k neighbours from it (the encoder itself never runs in a training step);
  protodiffusion  the class table left random (its stage-1 classifier only sets the table's values), frozen or not
                  as the configured mode says.
"""

from __future__ import annotations

import copy
import platform
import time
from dataclasses import dataclass

import numpy as np
import torch

from pdm.config import load_raw, resolve_config
from pdm.methods.base import DataInfo
from pdm.methods.registry import get_method_class
from pdm.runtime import cpu_model

RDM_DATABASE_SIZE = 4096  # rows of the stand-in database: a step gathers B x k of them, whatever their number
MATMUL_SIDE = {"cuda": 8192, "cpu": 2048}  # square matmul for the peak: large enough to saturate the device


def cpu_flags() -> set[str]:
    try:
        with open("/proc/cpuinfo") as info:
            return next((set(line.split(":", 1)[1].split()) for line in info if line.startswith("flags")), set())
    except OSError:
        return set()


def bf16_supported(device: str) -> bool:
    """bf16 autocast with hardware support: CUDA's own check; on CPU the AVX-512 BF16 or AMX instructions (without
    them oneDNN emulates bf16 and it is slower than fp32)."""
    if device == "cuda":
        return torch.cuda.is_bf16_supported()
    return bool(cpu_flags() & {"avx512_bf16", "amx_bf16"})


def environment(device: str) -> dict:
    env = {"device": device, "torch": torch.__version__, "python": platform.python_version(), "cpu_model": cpu_model(),
           "cpu_threads": torch.get_num_threads(), "bf16_supported": bf16_supported(device)}
    if device == "cuda":
        props = torch.cuda.get_device_properties(0)
        env.update(device_name=props.name, device_memory_gib=round(props.total_memory / 2**30, 1),
                   cuda=torch.version.cuda, cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   matmul_allow_tf32=torch.backends.cuda.matmul.allow_tf32)
    else:
        env["device_name"] = cpu_model()
    return env


def synchronize(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: str, dtype: torch.dtype, min_seconds: float = 0.5) -> float:
    """FLOP/s of a square matmul in `dtype` measured here (torch's default flags, so fp32 on CUDA is true fp32 unless
    TF32 was enabled): the denominator of model FLOPs utilisation."""
    n = MATMUL_SIDE[device]
    a = torch.randn(n, n, device=device).to(dtype)
    b = torch.randn(n, n, device=device).to(dtype)
    for _ in range(3):
        a @ b
    synchronize(device)
    reps, started = 0, time.perf_counter()
    while True:
        for _ in range(5):
            a @ b
        reps += 5
        synchronize(device)
        elapsed = time.perf_counter() - started
        if elapsed >= min_seconds:
            return 2 * n**3 * reps / elapsed


def method_config(config_path: str, name: str, batch_size: int | None, device: str):
    """The config with this method alone (another method's missing dependency cannot stop it), its options as the file
    gives them or the defaults where the file has none (cddpm is not in the paper config)."""
    raw = copy.deepcopy(load_raw(config_path))
    methods = raw.get("methods") or {}
    raw["methods"] = {name: methods.get(name) or {}}
    raw["device"] = device
    if batch_size is not None:
        raw.setdefault("train", {})["batch_size"] = batch_size
    raw.setdefault("sweep", {}).pop("methods", None)
    report = raw.get("report") or {}
    if report.get("reference_method") not in (None, name):
        report.pop("reference_method")
    note = "" if name in methods else "not in the config: default options"
    return resolve_config(raw), note


def build_method(cfg, name: str, num_classes: int, device: str):
    """The method at `cfg` (same seed-0 initial weights every time), stage-1 stand-ins attached, on `device`."""
    data = DataInfo(cfg.data.channels, cfg.data.resolution, num_classes)
    torch.manual_seed(0)
    method = get_method_class(name)(cfg, data)
    note = attach_stand_in_stage1(method)
    return method.to(device), note


def attach_stand_in_stage1(method) -> str:
    if method.name == "ldm":
        channels = method.latent_channels
        method.scale_factor = 1.0
        method.latent_shift = torch.zeros(1, channels, 1, 1)
        method.latent_scale = torch.ones(1, channels, 1, 1)
        return "stage 1: random-initialised autoencoder"
    if method.name == "rdm":
        from baselines import retrieval

        generator = np.random.default_rng(0)
        shape = (RDM_DATABASE_SIZE, method.embedding_dim)
        database = retrieval.unit_rows(generator.standard_normal(shape).astype(np.float32))
        index = retrieval.build_index(database, "flat")
        neighbours = retrieval.training_neighbours(index, database, method.k)
        method.database, method.train_neighbours = torch.from_numpy(database), torch.from_numpy(neighbours)
        method.index, method._database_np = index, database
        return f"stage 1: random {method.embedding_dim}-d database of {RDM_DATABASE_SIZE}, FAISS flat index"
    if method.name == "protodiffusion":
        method.embedding.table.weight.requires_grad_(method.options["mode"] == "proto_unfrozen")
        return "stage 1: random class table"
    return ""


@dataclass
class SyntheticBatches:
    """One fixed batch of random uint8 images (and labels, and training positions), as BatchStream would give it."""

    x0: torch.Tensor
    labels: torch.Tensor
    index: torch.Tensor

    @classmethod
    def make(cls, batch_size: int, channels: int, resolution: int, num_classes: int, device: str, positions: int):
        generator = torch.Generator().manual_seed(0)
        images = torch.randint(0, 256, (batch_size, channels, resolution, resolution), generator=generator,
                               dtype=torch.uint8)
        labels = torch.randint(0, num_classes, (batch_size,), generator=generator)
        index = torch.randint(0, positions, (batch_size,), generator=generator)
        x0 = images.to(device).float() / 127.5 - 1.0  # ImageDataset.to_model_range
        return cls(x0, labels.to(device), index.to(device))
