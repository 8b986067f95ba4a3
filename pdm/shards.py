"""A training step's global batch split over data-parallel processes, with its random draws made for the whole batch.

With P processes (pdm.launch), process r takes the images at positions r, r + P, r + 2P, ... of every global batch
(`share`). For P processes to train exactly as one, every per-image random draw of a step (t, the noise, the null
condition, LDM's posterior sample, ...) must land on the same image as in one process. So every process seeds the
step's generator the same way one process does, draws each quantity for the whole global batch and keeps its share
(`draw_for_batch`). With one process that is the very same draw as before: results and the ci golden numbers do not
change. The cost, P times the draws of one share, is negligible next to the U-Net.
"""

from __future__ import annotations

from typing import Callable

import torch


class StepGenerator(torch.Generator):
    """The generator of one training step, knowing which share of the global batch this process trains on."""

    rank: int = 0
    world: int = 1


def step_generator(seed: int, step: int, rank: int = 0, device="cpu", world: int = 1) -> StepGenerator:
    """The generator of one training step: every method draws t and the noise from it first (then its own draws), so at
    a given step all methods of an experiment get the same batch, timesteps and noise, whatever the process count."""
    if not 0 <= rank < world:
        raise ValueError(f"rank {rank} is not one of the {world} processes")
    generator = StepGenerator(device)
    generator.rank, generator.world = rank, world
    generator.manual_seed((seed * 1_000_003 + step) * 64)  # the same stream on every process (one process: as ever)
    return generator


def share(batch: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Process `rank`'s share of a global batch (first dimension): positions rank, rank + world, ..."""
    return batch[rank::world]


def share_of(generator: torch.Generator) -> tuple[int, int]:
    """(rank, world) of a step generator; a plain torch.Generator is one process's whole batch."""
    return getattr(generator, "rank", 0), getattr(generator, "world", 1)


def positions(local_size: int, generator: torch.Generator) -> torch.Tensor:
    """(B_local,) positions in the global batch of this process's images."""
    rank, world = share_of(generator)
    return torch.arange(local_size) * world + rank


def draw_for_batch(draw: Callable[[int], torch.Tensor], local_size: int, generator: torch.Generator) -> torch.Tensor:
    """draw(n) -> a tensor with one row per image, called for the global batch; returns this process's rows."""
    rank, world = share_of(generator)
    if world == 1:
        return draw(local_size)
    return share(draw(local_size * world), rank, world)


class _SumOverProcesses(torch.autograd.Function):
    """all_reduce(sum) with its gradient: each process's input feeds every process's output, so the gradient is the
    sum of every process's (as torch.distributed.nn.functional.all_reduce, deprecated there)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        x = x.clone()
        dist.all_reduce(x)
        return x

    @staticmethod
    def backward(ctx, grad: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        grad = grad.clone()
        dist.all_reduce(grad)
        return grad


def all_reduce(x: torch.Tensor) -> torch.Tensor:
    return _SumOverProcesses.apply(x)


class GlobalBatchNorm2d(torch.nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are the global batch's, summed over every process (as torch's
    SyncBatchNorm, which runs on GPUs only; this one also runs on CPU processes (gloo), so the two-process CPU test
    checks the very code a multi-GPU run uses). One process, or eval mode: plain BatchNorm2d. Same parameters and
    buffers, so checkpoints and weights are interchangeable with BatchNorm2d's."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        import torch.distributed as dist

        if not (self.training and dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1):
            return super().forward(x)
        dtype, x = x.dtype, x.float()  # statistics in fp32, as batch_norm under autocast
        count = x.numel() // x.shape[1] * dist.get_world_size()  # values per channel in the global batch
        mean = all_reduce(x.sum(dim=(0, 2, 3))) / count  # (C,); two passes, as batch_norm, for stable variances
        var = all_reduce(((x - mean[None, :, None, None]) ** 2).sum(dim=(0, 2, 3))) / count  # (C,) biased
        if self.track_running_stats:  # as batch_norm: the running variance is the unbiased one
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                self.running_mean.lerp_(mean.detach(), momentum)
                self.running_var.lerp_(var.detach() * count / max(count - 1, 1), momentum)
        x = (x - mean[None, :, None, None]) * torch.rsqrt(var + self.eps)[None, :, None, None]
        if self.affine:
            x = x * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return x.to(dtype)


def global_batch_norm(module: torch.nn.Module) -> torch.nn.Module:
    """Swap every BatchNorm2d inside `module` for GlobalBatchNorm2d in place, keeping its state (PDM's f_phi: the
    reference FeatureExtractor's BatchNorm would otherwise see one process's share of the batch)."""
    for name, child in module.named_children():
        if type(child) is torch.nn.BatchNorm2d:
            replacement = GlobalBatchNorm2d(child.num_features, child.eps, child.momentum, child.affine,
                                            child.track_running_stats).to(next(child.buffers(), torch.empty(0)).device)
            replacement.load_state_dict(child.state_dict())
            replacement.train(child.training)
            setattr(module, name, replacement)
        else:
            global_batch_norm(child)
    return module
