"""Data-parallel training launched the way the train rule launches it (pdm.launch), on two CPU processes (gloo):
the same batches, the same loss and the same final weights as one process, up to the order of floating-point sums."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file

from pdm.config import resolve_config
from pdm.launch import launch_training, processes_for, train_command

TRACED_TRAIN = (str(Path(__file__).parent / "data_parallel" / "traced_train.py"),)
FAKE_TRAIN = (str(Path(__file__).parent / "data_parallel" / "fake_train.py"),)
STEPS = 4
# PDM: prototype tokens through cross-attention, f_phi's BatchNorm over the global batch; s-PDM: the null-condition
# draw (label_drop); DDPM: no tokens
METHODS = {"pdm": {"num_prototypes": 4}, "spdm": {"label_drop": 0.5}, "ddpm": {}}


@pytest.fixture(scope="module")
def cfg():
    raw = yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "ci.yaml").read_text())
    raw["data"].update(max_images=48, hflip=True)
    raw["train"].update(steps=STEPS, batch_size=8, warmup_steps=1, log_every=1, checkpoint_every=100, ema_decay=0.9)
    raw["methods"] = METHODS
    return resolve_config(raw)


@pytest.fixture(scope="module")
def runs(cfg, tmp_path_factory):
    """Every method trained by one process and by two, each through launch_training as the train rule runs it (the
    traced wrapper trains the methods one after the other in the same processes)."""
    out = tmp_path_factory.mktemp("data_parallel")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("PDM_TRACE_METHODS", ",".join(METHODS))
        mp.setenv("OMP_NUM_THREADS", "1")
        for processes in (1, 2):
            status = launch_training(cfg, "pdm", 0, out / f"processes{processes}", processes, program=TRACED_TRAIN)
            assert status == 0 and not (out / f"processes{processes}" / "launch_config.yaml").exists()
    return out


def result(runs: Path, processes: int, method: str) -> tuple[Path, dict, list[dict]]:
    folder = runs / f"processes{processes}" / method
    traces = [json.loads((folder / f"rank{rank}.json").read_text()) for rank in range(processes)]
    return folder, json.loads((folder / "train.json").read_text()), traces


def noise_driven(weights: dict) -> set[str]:
    """A convolution's bias right before a BatchNorm (f_phi's), and that BatchNorm's running mean: BatchNorm subtracts
    the bias again, so its gradient is 0 in exact arithmetic and float noise in practice, which AdamW scales to
    updates of ~lr in either run; they agree to lr x steps, not to float precision."""
    keys = set()
    for key in weights:
        if key.endswith(".running_mean"):
            *module, index, _ = key.split(".")  # e.g. encoder.3.running_mean: the convolution is encoder.2
            keys |= {key, ".".join([*module, str(int(index) - 1), "bias"])}
    return keys


@pytest.mark.parametrize("method", list(METHODS))
def test_two_processes_train_as_one(cfg, runs, method):
    one_dir, one_record, (one,) = result(runs, 1, method)
    two_dir, two_record, (rank0, rank1) = result(runs, 2, method)

    for step in map(str, range(STEPS)):  # the global batch, in order: rank r holds positions r, r + 2, ...
        whole = one["positions"][step]
        assert len(whole) == cfg.train.batch_size
        assert rank0["positions"][step] == whole[0::2] and rank1["positions"][step] == whole[1::2]
        losses = {k: v for k, v in one["logs"][step].items() if k.startswith("loss")}
        assert losses and rank0["logs"][step].keys() == one["logs"][step].keys()
        for key, value in losses.items():  # the processes' mean: the whole batch's loss
            assert rank0["logs"][step][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (step, key)
            assert rank1["logs"][step][key] == rank0["logs"][step][key]  # every process logs the same mean

    weights = sorted(p.name for p in (one_dir / "weights").glob("*.safetensors"))
    assert weights and weights == sorted(p.name for p in (two_dir / "weights").glob("*.safetensors"))
    for name in weights:  # EMA weights after STEPS steps; the gradient all-reduce sums in another order
        a, b = load_file(one_dir / "weights" / name), load_file(two_dir / "weights" / name)
        assert a.keys() == b.keys()
        loose = noise_driven(a)
        for key in a:
            atol = STEPS * cfg.train.lr if key in loose else 1e-5
            torch.testing.assert_close(b[key], a[key], rtol=1e-4, atol=atol, msg=f"{name}:{key}")

    assert (one_record["num_processes"], two_record["num_processes"]) == (1, 2)
    assert one_record["train_id"] == two_record["train_id"]  # same data order, global batch and draws: same identity
    assert one_record["images_seen"] == two_record["images_seen"] == STEPS * cfg.train.batch_size
    assert (two_dir / "train.log").read_text().count(f"step {STEPS} lr") == 1  # one writer: process 0


def test_the_launch_command_follows_the_gpus_given(tmp_path):
    plain = train_command("c.yaml", "pdm", 1, "out", 1)
    assert plain[1:] == ["-m", "pdm.cli", "train", "--config", "c.yaml", "--method", "pdm", "--seed", "1", "--out", "out"]
    parallel = train_command("c.yaml", "ldm", 0, "out", 4, stage1_dir="s1")
    assert parallel[1:9] == ["-m", "torch.distributed.run", "--standalone", "--nnodes", "1", "--nproc_per_node", "4",
                             "-m"]
    assert parallel[9:] == ["pdm.cli", "train", "--config", "c.yaml", "--method", "ldm", "--seed", "0", "--out", "out",
                            "--stage1-dir", "s1"]
    assert [processes_for(g, device_count=0) for g in (None, 0, 1)] == [1, 1, 1]  # CPU jobs and one-GPU jobs
    assert processes_for(2, device_count=2) == 2 and processes_for("4", device_count=8) == 4
    with pytest.raises(ValueError, match=r"gpu=4 but torch sees 2 GPU\(s\).*train:gpu=2"):
        processes_for(4, device_count=2)


@pytest.mark.parametrize("outcome", ["error", "diverged"])
def test_a_failed_process_fails_the_job_unless_training_diverged(cfg, outcome, tmp_path, monkeypatch):
    """torchrun exits 1 whichever way a process failed: an error fails the job (naming the status), a diverged run
    (train.json written with status failed, exit 3, as pdm.cli) is a recorded result, as in one process."""
    from pdm.identity import training_identity
    from pdm.launch import TRAINING_FAILED

    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("FAKE_OUTCOME", outcome)
    monkeypatch.setenv("FAKE_TRAIN_ID", training_identity(cfg, "pdm", 0))
    launch = lambda: launch_training(cfg, "pdm", 0, tmp_path, 2, program=FAKE_TRAIN)  # noqa: E731
    if outcome == "error":
        with pytest.raises(RuntimeError, match="pdm seed 0 in 2 processes exited with status 1"):
            launch()
    else:
        assert launch() == TRAINING_FAILED
    assert not (tmp_path / "launch_config.yaml").exists()
