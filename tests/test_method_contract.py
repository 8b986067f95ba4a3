"""The fairness contract every registered method must keep, checked for each of them (a new method gets these for free).

At a given training step every method receives the same batch, timesteps and noise; its loss is finite and reaches
every trainable parameter; each generated image depends only on its seed; save, load and sample again gives the
same images.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pdm.methods.registry import METHODS, get_method_class

REPO = Path(__file__).resolve().parents[1]
TINY_OPTIONS = {  # small enough that every stage 1 runs in seconds
    "pdm": {"num_prototypes": 4},
    "ldm": {"autoencoder_channels": [8, 16], "latent_channels": 2, "autoencoder_batch_size": 8, "autoencoder_steps": 4},
    "rdm": {"encoder_resolution": 32, "encoder_batch_size": 16, "k": 2},
    "protodiffusion": {"prototype_dim": 8, "classifier_steps": 3, "classifier_batch_size": 8},
}
SEED, STEPS = 3, 3


@pytest.fixture(scope="module")
def setting(tmp_path_factory):
    """A tiny config listing every registered method, the digits it trains on, and each stage-1 folder."""
    from pdm.config import resolve_config
    from pdm.data import load_dataset
    from pdm.metrics import scores
    from pdm.steps import stage1_step

    def fast_frechet(mu1, sigma1, mu2, sigma2):  # LDM's stage 1 scores its reconstructions: skip the matrix roots
        return float(((mu1 - mu2) ** 2).sum())

    raw = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    raw["data"]["max_images"] = 40
    raw["train"].update(steps=STEPS, batch_size=4, warmup_steps=1)
    raw["methods"] = {name: copy.deepcopy(TINY_OPTIONS.get(name, {})) for name in METHODS}
    cfg = resolve_config(raw)
    stage1 = {}
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(scores, "fid_torch_fidelity", fast_frechet)
        mp.setattr(scores, "fid_clean", fast_frechet)
        for name in METHODS:
            if get_method_class(name).has_stage1:
                stage1[name] = tmp_path_factory.mktemp(f"stage1_{name}")
                stage1_step(cfg, name, SEED, stage1[name])
    return cfg, load_dataset(cfg.data), stage1


def build(setting, name, init_seed=0):
    from pdm.checkpoint import load_stage1
    from pdm.methods.base import DataInfo

    cfg, dataset, stage1 = setting
    torch.manual_seed(init_seed)
    method = get_method_class(name)(cfg, DataInfo.of(dataset))
    load_stage1(method, stage1.get(name))
    return method


@pytest.mark.parametrize("name", sorted(METHODS))
def test_every_method_gets_the_same_batches_timesteps_and_noise(setting, name, tmp_path, monkeypatch):
    from pdm.data import BatchStream
    from pdm.diffusion import training_draws
    from pdm.methods import base
    from pdm.trainer import step_generator, train

    cfg, dataset, stage1 = setting
    seen = []
    original_forward, original_draws = base.Method.forward, base.training_draws

    def recording_forward(self, x0, labels, generator, index=None):  # the trainer's training steps call forward
        seen.append({"x0": x0.clone(), "labels": labels, "index": index.clone()})
        return original_forward(self, x0, labels, generator, index)

    def recording_draws(scheduler, shape, generator):
        t, noise = original_draws(scheduler, shape, generator)
        if seen and "t" not in seen[-1]:  # the first draws of a training step (not of the FLOP count's probe step)
            seen[-1].update(t=t.clone(), noise=noise.clone())
        return t, noise

    monkeypatch.setattr(base.Method, "forward", recording_forward)
    monkeypatch.setattr(base, "training_draws", recording_draws)
    record = train(cfg, name, SEED, tmp_path / "model", stage1_dir=stage1.get(name))
    assert record["status"] == "ok" and len(seen) == STEPS

    method = build(setting, name)
    shape = (cfg.train.batch_size, method.latent_channels, method.latent_size, method.latent_size)
    stream = BatchStream(dataset, cfg.train.batch_size, SEED, hflip=cfg.data.hflip)
    for step, got in enumerate(seen):  # what the data order and the step's generator give, independent of the method
        x0, labels, index = stream.batch(step, 0, 1)
        t, noise = training_draws(method.train_scheduler, shape, step_generator(SEED, step))
        assert torch.equal(got["x0"], x0) and torch.equal(got["labels"], labels) and torch.equal(got["index"], index)
        assert torch.equal(got["t"], t) and torch.equal(got["noise"], noise), f"{name} drew before t and the noise"


@pytest.mark.parametrize("name", sorted(METHODS))
def test_the_loss_is_finite_and_reaches_every_trained_parameter(setting, name):
    from pdm.data import BatchStream
    from pdm.trainer import step_generator

    cfg, dataset, _ = setting
    method = build(setting, name).train()
    x0, labels, index = BatchStream(dataset, 8, SEED).batch(0, 0, 1)
    loss, logs = method.loss(x0, labels, step_generator(SEED, 0), index)
    assert torch.isfinite(loss) and all(torch.isfinite(torch.as_tensor(v)) for v in logs.values())
    loss.backward()
    trained = {n: p for n, p in method.named_parameters() if p.requires_grad}
    assert trained, f"{name} has nothing to train"
    no_grad = [n for n, p in trained.items() if p.grad is None]
    assert not no_grad, f"{name}: the loss never reaches {no_grad[:5]}"
    assert all(torch.isfinite(p.grad).all() for p in trained.values())
    assert sum(float(p.grad.abs().sum()) for p in trained.values()) > 0


@pytest.mark.parametrize("name", sorted(METHODS))
def test_images_depend_only_on_their_seed_and_survive_save_and_load(setting, name, tmp_path):
    from pdm.checkpoint import load_components, save_components

    cfg, dataset, _ = setting
    method = build(setting, name)
    method.finalize(dataset)  # generation priors (prototype usage, label frequencies)
    together = method.sample([5, 6, 7, 8], "ddim", 3, batch_size=4)
    alone = method.sample([8, 6], "ddim", 3, batch_size=1)
    assert together.dtype == np.uint8 and together.shape[0] == 4
    np.testing.assert_array_equal(alone, together[[3, 1]])
    assert not np.array_equal(together[0], together[1])  # different seeds, different images

    save_components(method, tmp_path)
    reloaded = build(setting, name, init_seed=1)  # other initial weights, until the saved ones are loaded
    load_components(reloaded, tmp_path)
    np.testing.assert_array_equal(reloaded.sample([5, 6, 7, 8], "ddim", 3, batch_size=2), together)


SHARED_DRAW_OPTIONS = {"spdm": {"label_drop": 0.5}, "cddpm": {"label_drop": 0.5}}  # make the null-condition draw too
BATCH_COUPLED = {"pdm_balanced": "its Sinkhorn assignment balances each process's share, not the global batch"}


@pytest.mark.parametrize("name", sorted(METHODS))
def test_two_processes_train_on_the_whole_batch_as_one(setting, name):
    """Data-parallel training (pdm.shards): two processes, each on its share of the global batch with its share of the
    step's draws, average to the one-process loss and gradient, so P processes train as one (up to float sums).

    In one process here, so BatchNorm runs on its running statistics (per image); over real processes it uses the
    global batch's (pdm.shards.GlobalBatchNorm2d), checked by tests/test_multiprocess.py.
    """
    from pdm.checkpoint import load_stage1
    from pdm.data import BatchStream
    from pdm.methods.base import DataInfo
    from pdm.shards import step_generator

    if name in BATCH_COUPLED:
        pytest.skip(f"{name} is not exact over processes: {BATCH_COUPLED[name]} (docs/multigpu.md)")
    cfg, dataset, stage1 = setting
    if name in SHARED_DRAW_OPTIONS:
        cfg = cfg.with_method_options(name, **SHARED_DRAW_OPTIONS[name])
    stream = BatchStream(dataset, 8, SEED, hflip=True)

    def loss_and_gradient(rank, world):
        torch.manual_seed(0)
        method = get_method_class(name)(cfg, DataInfo.of(dataset)).train()
        load_stage1(method, stage1.get(name))
        for module in method.modules():
            if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
                module.eval()
        x0, labels, index = stream.batch(1, rank, world)
        loss, _ = method.loss(x0, labels, step_generator(SEED, 1, rank, "cpu", world), index)
        loss.backward()
        return loss.detach(), [p.grad.clone() for p in method.parameters() if p.requires_grad]

    whole_loss, whole_grads = loss_and_gradient(0, 1)
    shares = [loss_and_gradient(rank, 2) for rank in (0, 1)]
    mean_loss = (shares[0][0] + shares[1][0]) / 2  # what the trainer logs: the processes' losses, averaged
    torch.testing.assert_close(mean_loss, whole_loss, rtol=1e-5, atol=1e-6)
    for whole, a, b in zip(whole_grads, shares[0][1], shares[1][1]):  # what DDP's all-reduce gives: the mean gradient
        torch.testing.assert_close((a + b) / 2, whole, rtol=1e-4, atol=1e-6)
