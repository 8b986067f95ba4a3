"""Crash safety: a training job SIGKILLed at a random step after a checkpoint resumes to bitwise the same weights."""

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import yaml
from safetensors.torch import load_file

from conftest import REPO

STEPS, EVERY = 120, 10


def _config(tmp_path: Path) -> Path:
    raw = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    raw["data"]["max_images"] = 64
    raw["train"].update(steps=STEPS, batch_size=8, checkpoint_every=EVERY, log_every=EVERY, warmup_steps=5)
    path = tmp_path / "kill.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


def _train(config: Path, out: Path) -> subprocess.Popen:
    command = [sys.executable, "-m", "pdm.cli", "train", "--config", str(config), "--method", "pdm", "--seed", "0",
               "--out", str(out)]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})


def _checkpoint_step(out: Path) -> int:
    try:
        return int(yaml.safe_load((out / "checkpoint" / "progress.json").read_text())["step"])
    except (OSError, TypeError, KeyError, yaml.YAMLError):
        return 0


def _weights(out: Path) -> dict:
    return {f.name: load_file(str(f)) for f in sorted((out / "weights").glob("*.safetensors"))}


def test_sigkill_after_a_checkpoint_then_resume_is_bitwise_identical(tmp_path):
    config = _config(tmp_path)
    straight = _train(config, tmp_path / "straight")
    assert straight.wait(timeout=600) == 0, straight.stderr.read()[-2000:]

    rng = random.Random(time.time_ns())
    target = rng.randrange(EVERY, STEPS // 2, EVERY)  # kill soon after this checkpoint, at a random later step
    killed_out = tmp_path / "killed"
    job = _train(config, killed_out)
    deadline = time.monotonic() + 600
    while _checkpoint_step(killed_out) < target:
        assert job.poll() is None, f"training ended before the kill at checkpoint {target}: {job.stderr.read()[-2000:]}"
        assert time.monotonic() < deadline
        time.sleep(0.002)
    time.sleep(rng.uniform(0, 0.05))
    job.send_signal(signal.SIGKILL)
    job.wait(timeout=60)
    assert job.returncode == -signal.SIGKILL and not (killed_out / "train.json").exists(), f"kill at {target} came too late"
    assert _checkpoint_step(killed_out) >= target

    resumed = _train(config, killed_out)
    assert resumed.wait(timeout=600) == 0, resumed.stderr.read()[-2000:]
    assert "resumed from step" in (killed_out / "train.log").read_text()
    a, b = _weights(tmp_path / "straight"), _weights(killed_out)
    assert a.keys() == b.keys() and a, "no weights written"
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert a[name][key].equal(b[name][key]), f"{name}:{key} differs after a kill at checkpoint {target}"
