"""The shared trainer: identical data order for every method, exact resume, records and checkpoints."""

import json

import pytest
import torch
from safetensors.torch import load_file

from pdm.data import BatchStream
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
    assert (tmp_path / "unet.safetensors").exists() and (tmp_path / "prototypes.safetensors").exists()
    assert not (tmp_path / "checkpoint").exists()
    saved = json.loads((tmp_path / "train.json").read_text())
    assert saved["config_hash"] == digits_cfg.hash and saved["method_record"]["prototype_sampling"] == "frequency"
    counts = load_file(str(tmp_path / "prototypes.safetensors"))["usage_counts"]
    assert counts.sum().item() == 32 - round(32 * 0.1)  # usage frequencies over the whole training split
    assert "loss_prototype" in saved["final_losses"] and saved["train_seconds"] > 0
    assert "step 6" in (tmp_path / "train.log").read_text()


def test_resume_reproduces_an_uninterrupted_run(make_cfg, tmp_path):
    cfg = make_cfg({**TINY, "data": {"max_images": 32}, "train": {**TINY["train"], "ema_decay": 0.9}})
    train(cfg, "ddpm", 0, tmp_path / "straight")
    # interrupt the second run right after its first checkpoint (step 3), then resume it to the end

    class Interrupt(Exception):
        pass

    import pdm.trainer as trainer

    original = trainer.save_training_state

    def save_then_stop(*args, **kwargs):
        original(*args, **kwargs)
        raise Interrupt

    trainer.save_training_state = save_then_stop
    try:
        with pytest.raises(Interrupt):
            train(cfg, "ddpm", 0, tmp_path / "resumed")
    finally:
        trainer.save_training_state = original
    assert (tmp_path / "resumed" / "checkpoint" / "progress.json").exists()
    record = train(cfg, "ddpm", 0, tmp_path / "resumed")
    assert record["steps_done"] == 6
    a = load_file(str(tmp_path / "straight" / "unet.safetensors"))
    b = load_file(str(tmp_path / "resumed" / "unet.safetensors"))
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


def test_checkpoint_from_another_config_is_refused(make_cfg, tmp_path):
    cfg = make_cfg({**TINY, "data": {"max_images": 32}})
    from pdm.checkpoint import save_training_state

    save_training_state(tmp_path / "checkpoint", {}, None, {"optimizer": {}}, {"step": 1, "train_seconds": 0.0, "config_hash": "0" * 16})
    with pytest.raises(ValueError, match="belongs to config"):
        train(cfg, "ddpm", 0, tmp_path)


def test_sampling_refuses_weights_of_another_config(make_cfg, digits_cfg, tmp_path):
    from pdm.checkpoint import load_trained

    train(digits_cfg, "ddpm", 0, tmp_path)
    other = make_cfg({**TINY, "data": {"max_images": 32}, "train": {**TINY["train"], "lr": 1e-3}})
    with pytest.raises(ValueError, match="config hash"):
        load_trained(other, "ddpm", tmp_path)
    (tmp_path / "unet.safetensors").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="not a readable safetensors"):
        load_trained(digits_cfg, "ddpm", tmp_path)
