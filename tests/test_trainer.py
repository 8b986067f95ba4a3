"""The shared trainer: identical data order for every method, exact resume, records and checkpoints."""

import json

import pytest
import torch
from safetensors.torch import load_file

from conftest import train_until_first_checkpoint

from pdm.data import BatchStream
from pdm.identity import training_identity
from pdm.trainer import train

TINY = {"train": {"steps": 6, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 2}}


@pytest.fixture
def digits_cfg(make_cfg):
    return make_cfg({**TINY, "data": {"max_images": 32}})


def test_batch_stream_is_a_function_of_seed_and_step(tiny_data):
    a, b = BatchStream(tiny_data, 4, seed=5, hflip=True), BatchStream(tiny_data, 4, seed=5, hflip=True)
    seen = torch.cat([a.indices(s) for s in range(4)])
    assert sorted(seen.tolist()) == list(range(16))  # one epoch visits every image once
    for step in (7, 2, 9):  # any order of access gives the same batch
        torch.testing.assert_close(a.batch(step)[0], b.batch(step)[0])
    assert not torch.equal(a.indices(4), a.indices(0))  # a new permutation each epoch
    halves = [a.batch(3, rank=r, world_size=2)[0] for r in (0, 1)]
    full = a.batch(3)[0]
    torch.testing.assert_close(torch.cat([halves[0], halves[1]]), full[torch.tensor([0, 2, 1, 3])])


def test_train_writes_weights_and_record(digits_cfg, tmp_path):
    record = train(digits_cfg, "pdm", 0, tmp_path)
    assert record["steps_done"] == 6 and record["stop_reason"] == "steps"
    assert (tmp_path / "weights" / "unet.safetensors").exists() and (tmp_path / "weights" / "prototypes.safetensors").exists()
    assert not (tmp_path / "checkpoint").exists()
    saved = json.loads((tmp_path / "train.json").read_text())
    assert saved["train_id"] == training_identity(digits_cfg, "pdm", 0) and saved["status"] == "ok"
    assert saved["method_record"]["prototype_sampling"] == "frequency"
    assert saved["record_format"] >= 2 and saved["git_commit"] and saved["pdm_bench_version"]
    counts = load_file(str(tmp_path / "weights" / "prototypes.safetensors"))["usage_counts"]
    assert counts.sum().item() == 32 - round(32 * 0.1)  # usage frequencies over the whole training split
    assert "loss_prototype" in saved["final_losses"] and saved["train_seconds"] > 0
    assert "step 6" in (tmp_path / "train.log").read_text()


def test_resume_reproduces_an_uninterrupted_run(make_cfg, tmp_path):
    cfg = make_cfg({**TINY, "data": {"max_images": 32}, "train": {**TINY["train"], "ema_decay": 0.9}})
    train(cfg, "ddpm", 0, tmp_path / "straight")
    # interrupt the second run right after its first checkpoint (step 3), then resume it to the end
    train_until_first_checkpoint(cfg, "ddpm", 0, tmp_path / "resumed")
    assert (tmp_path / "resumed" / "checkpoint" / "progress.json").exists()
    record = train(cfg, "ddpm", 0, tmp_path / "resumed")
    assert record["steps_done"] == 6
    a = load_file(str(tmp_path / "straight" / "weights" / "unet.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "weights" / "unet.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)  # bitwise


def test_checkpoint_of_another_training_identity_is_refused(make_cfg, tmp_path):
    cfg = make_cfg({**TINY, "data": {"max_images": 32}})
    from pdm.checkpoint import save_training_state

    save_training_state(tmp_path / "checkpoint", {}, None, {"optimizer": {}}, {"step": 1, "train_seconds": 0.0, "train_id": "0" * 16})
    with pytest.raises(ValueError, match="belongs to training identity 0{16}"):
        train(cfg, "ddpm", 0, tmp_path)


def test_checkpoint_survives_settings_outside_the_training_identity(make_cfg, tmp_path):
    """Sampling or evaluation edits never make a half-trained model foreign."""
    first = make_cfg({**TINY, "data": {"max_images": 32}})
    later = make_cfg({**TINY, "data": {"max_images": 32}, "sample": {"steps": 9}, "eval": {"num_real": 10}})
    from pdm.checkpoint import save_training_state

    save_training_state(tmp_path / "checkpoint", {}, None, {"optimizer": {}},
                        {"step": 1, "train_seconds": 0.0, "train_id": training_identity(first, "ddpm", 0)})
    assert training_identity(first, "ddpm", 0) == training_identity(later, "ddpm", 0)


def test_sampling_refuses_weights_of_another_config(make_cfg, digits_cfg, tmp_path):
    from pdm.checkpoint import load_trained

    train(digits_cfg, "ddpm", 0, tmp_path)
    other = make_cfg({**TINY, "data": {"max_images": 32}, "train": {**TINY["train"], "lr": 1e-3}})
    with pytest.raises(ValueError, match="training identity"):
        load_trained(other, "ddpm", tmp_path)
    (tmp_path / "weights" / "unet.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_trained(digits_cfg, "ddpm", tmp_path)


class NanGradient(torch.autograd.Function):
    """Zero in the forward pass, NaN gradient in the backward pass."""

    @staticmethod
    def forward(ctx, x):
        ctx.shape = x.shape
        return x.new_zeros(())

    @staticmethod
    def backward(ctx, grad):
        return torch.full(ctx.shape, float("nan"))


@pytest.mark.parametrize("where", ["loss_prototype", "gradient"])
def test_non_finite_values_stop_training_and_are_recorded(digits_cfg, tmp_path, monkeypatch, where):
    """A NaN in one loss term (or in a gradient) stops the run at that step, naming both; the run is recorded as failed."""
    from pdm.methods.pdm import PDM

    original = PDM.loss

    def poisoned(self, x0, labels, generator, index=None):
        total, logs = original(self, x0, labels, generator, index)
        if self.poison_after == 0:
            if where == "loss_prototype":
                logs = {**logs, "loss_prototype": torch.tensor(float("nan"))}
            else:
                total = total + NanGradient.apply(self.bank.prototypes)  # finite loss, NaN gradient
        self.poison_after -= 1
        return total, logs

    monkeypatch.setattr(PDM, "loss", poisoned)
    monkeypatch.setattr(PDM, "poison_after", 1 + 3, raising=False)  # the first call is the FLOP count of one step
    record = train(digits_cfg, "pdm", 0, tmp_path)
    assert record["status"] == "failed" and record["failed_step"] == 4 and record["steps_done"] == 3
    expected = "loss_prototype" if where == "loss_prototype" else "the gradient of"
    assert expected in record["failure"] and "at step 4" in record["failure"] and "train.lr" in record["failure"]
    saved = json.loads((tmp_path / "train.json").read_text())
    assert saved["status"] == "failed" and saved["failure"] == record["failure"]
    assert list((tmp_path / "weights").iterdir()) == [] and not (tmp_path / "checkpoint").exists()
