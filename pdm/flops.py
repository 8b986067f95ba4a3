"""Equal-compute budgets (issue 7, item 5): FLOPs of one training step, and the steps a budget allows.

What is counted is what `torch.utils.flop_counter.FlopCounterMode` counts: matrix multiplies, convolutions and
attention, 2 FLOPs per multiply-add, forward and backward. Element-wise work (normalisation, activations, the loss
arithmetic, the optimiser update, EMA) is not counted; neither is anything outside torch (FAISS). The count depends
on tensor shapes only, so it is the same on every machine and device, and for every call with the same config.

    budget: steps     every method runs train.steps steps
    budget: flops     steps = floor(train.flops / flops_per_step): deterministic, machine-independent
    budget: seconds   steps = floor(train.seconds / seconds_per_step), seconds_per_step timed on this machine
                      (not reproducible across machines, nor across runs on one machine)
"""

from __future__ import annotations

import contextlib
import functools

import torch
from torch.utils.flop_counter import FlopCounterMode, _FlopCounterMode

from pdm.config import ConfigError


@contextlib.contextmanager
def preserved_state(module: torch.nn.Module):
    """Run a block on `module` and put back exactly what it had: every parameter and buffer (bitwise, e.g. BatchNorm
    running statistics a forward pass in training mode moves), each submodule's train/eval mode, and the global RNGs.
    Gradients are cleared on the way out (callers use it where none are held)."""
    saved = {k: v.detach().clone() for k, v in module.state_dict().items()}
    modes = [(m, m.training) for m in module.modules()]
    devices = sorted({t.device.index or 0 for t in saved.values() if t.device.type == "cuda"})
    try:
        with torch.random.fork_rng(devices=devices):
            yield module
    finally:
        module.load_state_dict(saved)
        for m, training in modes:
            m.training = training
        module.zero_grad(set_to_none=True)


_OWN_KERNEL_KEYS = ("CPU", "CUDA", "CompositeExplicitAutograd", "CompositeExplicitAutogradNonFunctional")


@functools.lru_cache(maxsize=None)
def _kernels(name: str) -> tuple[bool, bool]:
    """(has a kernel of its own, has a C++ CompositeImplicitAutograd kernel) for an aten op name."""
    has = torch._C._dispatch_has_kernel_for_dispatch_key
    return any(has(name, key) for key in _OWN_KERNEL_KEYS), has(name, "CompositeImplicitAutograd")


class _ExactDispatch(_FlopCounterMode):
    """FlopCounterMode's dispatch, but the counted code computes bitwise what it computes uncounted.

    FlopCounterMode replaces every op it has no formula for by `op.decompose()`, which prefers Python decompositions
    (torch._decomp) that round differently from the op's own kernel: counted, LDM's autoencoder training (silu_backward)
    and RDM's embeddings (upsample_bilinear2d) came out different. Here an op with a kernel of its own runs that
    kernel (it holds no counted op: those have formulas), and a pure composite (linear, matmul, conv2d, sdpa, which
    reach the mode undecomposed e.g. under inference_mode) runs its C++ composite kernel, exactly what the dispatcher
    runs uncounted, with the ops inside it counted. While paused (measurements) every op runs as it is.
    """

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if getattr(self.counter, "paused", 0):
            return func(*args, **kwargs)
        if isinstance(func, torch._ops.OpOverload) and func._overloadpacket not in self.counter.flop_registry:
            own, composite = _kernels(func.name())
            if own:
                return func(*args, **kwargs)
            if composite:
                with self:
                    return func._op_dk(torch._C.DispatchKey.CompositeImplicitAutograd, *args, **kwargs)
        return super().__torch_dispatch__(func, types, args, kwargs)


class ExactFlopCounter(FlopCounterMode):
    """torch.utils.flop_counter.FlopCounterMode (display off) that leaves the numerics of the counted code alone, and
    totals only: no per-module breakdown, so no module hooks (they were most of the counting overhead)."""

    def __init__(self):
        super().__init__(display=False)

    def __enter__(self):
        self.flop_counts.clear()
        self.mode = _ExactDispatch(self)  # mod_tracker is never entered: every count goes to 'Global'
        self.mode.__enter__()
        return self

    def __exit__(self, *args):
        mode, self.mode = self.mode, None
        return mode.__exit__(*args)


def training_step_flops(method, batch, generator: torch.Generator | None = None) -> int:
    """FLOPs of one training step of `method` on `batch` = (x0, labels, index): its whole `loss` (f_phi, the stage-1
    encoder where it runs per step, the U-Net) forward and backward. Leaves the method as it found it."""
    x0, labels, index = batch
    device = x0.device
    if generator is None:
        generator = torch.Generator(device).manual_seed(0)  # the draws change values, never shapes
    with preserved_state(method), ExactFlopCounter() as counter:
        loss, _ = method.loss(x0, labels, generator, index)
        loss.backward()
    return int(counter.get_total_flops())


def steps_for_budget(train_cfg, flops_per_step: int | None = None, seconds_per_step: float | None = None,
                     method: str = "this method") -> int:
    """The optimiser steps a method gets under the experiment's budget; refuses a budget that allows no step, or
    fewer steps than the warm-up."""
    mode = train_cfg.budget
    if mode == "steps":
        steps = int(train_cfg.steps)
    elif mode == "flops":
        if not flops_per_step or flops_per_step <= 0:
            raise ValueError(f"{method}: no FLOPs were counted for a training step, so train.budget: flops cannot "
                             "apply to it; use train.budget: steps or seconds")
        steps = int(train_cfg.flops) // int(flops_per_step)  # floor(floor(F) / f) == floor(F / f): exact integers
        unit = f"{flops_per_step:.4g} FLOPs per step"
        needed = f"{(train_cfg.warmup_steps + 1) * flops_per_step:.4g}"
    elif mode == "seconds":
        steps = int(train_cfg.seconds // seconds_per_step)
        unit = f"{seconds_per_step:.4g} s per step measured here"
        needed = f"{(train_cfg.warmup_steps + 1) * seconds_per_step:.4g}"
    else:
        raise ConfigError(f"train.budget: unknown mode '{mode}'; use steps, flops or seconds")
    if mode != "steps" and (steps < 1 or steps <= train_cfg.warmup_steps):
        raise ConfigError(f"train.{mode}={getattr(train_cfg, mode):.4g} gives {method} {steps} steps ({unit}), not "
                          f"more than train.warmup_steps={train_cfg.warmup_steps}; raise train.{mode} to at least "
                          f"{needed} or lower train.warmup_steps")
    return steps


class Stage1FlopCounter(ExactFlopCounter):
    """The counter around a whole stage-1 job; measurements inside `uncounted()` (pdm.metrics: LDM's rFID) are left
    out, as their seconds are left out of the stage-1 cost, and run exactly as they would uncounted."""

    active: "Stage1FlopCounter | None" = None

    def __init__(self):
        super().__init__()
        self.paused = 0

    def __enter__(self):
        Stage1FlopCounter.active = self
        return super().__enter__()

    def __exit__(self, *args):
        Stage1FlopCounter.active = None
        return super().__exit__(*args)

    def _count_flops(self, func_packet, out, args, kwargs):
        if self.paused:
            return out
        return super()._count_flops(func_packet, out, args, kwargs)


@contextlib.contextmanager
def uncounted():
    """A measurement, not a cost: FLOPs inside this block never enter a running stage-1 count."""
    counter = Stage1FlopCounter.active
    if counter is not None:
        counter.paused += 1
    try:
        yield
    finally:
        if counter is not None:
            counter.paused -= 1
