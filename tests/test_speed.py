"""Speed options of training (pdm/speed.py, train.channels_last / compile / mixed_precision): same results, same files."""

import functools
import os

import pytest
import torch
from safetensors.torch import load_file

from pdm.identity import training_identity
from pdm.methods.base import DataInfo
from pdm.methods.registry import get_method_class
from pdm.speed import apply_speed_options
from pdm.trainer import train

TINY = {"train": {"steps": 4, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 2, "log_every": 2},
        "data": {"max_images": 32}}


def _with(make_cfg, **train_options):
    return make_cfg({**TINY, "train": {**TINY["train"], **train_options}})


def _assert_same_training(eager_dir, eager, other_dir, other, atol):
    assert eager["train_id"] == other["train_id"]  # not in the training identity: float noise only, like the device
    for key, value in eager["final_losses"].items():
        assert other["final_losses"][key] == pytest.approx(value, abs=atol), key
    for name in ("unet", "prototypes"):
        a = load_file(eager_dir / "weights" / f"{name}.safetensors")
        b = load_file(other_dir / "weights" / f"{name}.safetensors")
        assert a.keys() == b.keys()  # same files: no layout or compilation trace in the saved names
        for key in a:
            torch.testing.assert_close(b[key].contiguous(), a[key], atol=atol, rtol=0, msg=key)


def test_channels_last_trains_the_same_model(make_cfg, tmp_path):
    eager = train(_with(make_cfg), "pdm", 0, tmp_path / "eager")
    nhwc = train(_with(make_cfg, channels_last=True), "pdm", 0, tmp_path / "nhwc")
    assert nhwc["channels_last"] is True and eager["channels_last"] is False and nhwc["compile"] is False
    _assert_same_training(tmp_path / "eager", eager, tmp_path / "nhwc", nhwc, atol=1e-5)


def test_compile_keeps_the_state_dict_keys(make_cfg):
    cfg = _with(make_cfg)
    method = get_method_class("pdm")(cfg, DataInfo(1, 16, 10))
    keys = list(method.state_dict())
    apply_speed_options(method, channels_last=True, compile=True)  # compiles lazily, at the first call
    assert list(method.state_dict()) == keys and not any("_orig_mod" in k for k in keys)
    assert method.unet.state_dict().keys() == {k.removeprefix("unet.") for k in keys if k.startswith("unet.")}


@pytest.mark.skipif(os.environ.get("PDM_BENCH_TEST_COMPILE") != "1",
                    reason="torch.compile of even the ci U-Net takes several minutes of CPU inductor compilation on "
                           "2 cores (measured); set PDM_BENCH_TEST_COMPILE=1 to run it")
def test_compiled_training_matches_eager(make_cfg, tmp_path):
    eager = train(_with(make_cfg), "pdm", 0, tmp_path / "eager")
    compiled = train(_with(make_cfg, compile=True), "pdm", 0, tmp_path / "compiled")
    assert compiled["compile"] is True
    _assert_same_training(tmp_path / "eager", eager, tmp_path / "compiled", compiled, atol=1e-4)


def fresh_accelerate_state_reset():
    """accelerate keeps one AcceleratorState per process and refuses another mixed_precision in it (a training job is
    one process): tests that change the precision reset it."""
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)


@pytest.fixture
def fresh_accelerate_state():
    fresh_accelerate_state_reset()
    yield
    fresh_accelerate_state_reset()


def test_bf16_autocast_trains_on_cpu(make_cfg, tmp_path, fresh_accelerate_state):
    eager = train(_with(make_cfg), "ddpm", 0, tmp_path / "fp32")
    fresh_accelerate_state_reset()
    bf16 = train(_with(make_cfg, mixed_precision="bf16"), "ddpm", 0, tmp_path / "bf16")
    assert bf16["status"] == "ok" and bf16["mixed_precision"] == "bf16"
    assert bf16["train_id"] != eager["train_id"]  # another arithmetic: another model
    # bf16 keeps 8 mantissa bits: the same loss to about 1%, not to float noise
    assert bf16["final_losses"]["loss"] == pytest.approx(eager["final_losses"]["loss"], rel=0.05)
    assert bf16["final_losses"]["loss"] != eager["final_losses"]["loss"]  # autocast really ran


def test_fp16_on_cpu_is_refused(make_cfg, tmp_path):
    with pytest.raises(ValueError, match="fp16 needs a GPU.*bf16"):
        train(_with(make_cfg, mixed_precision="fp16"), "ddpm", 0, tmp_path)


def _accelerator_with_scale(init_scale):
    from accelerate import Accelerator
    from accelerate.utils import GradScalerKwargs

    return functools.partial(Accelerator, kwargs_handlers=[GradScalerKwargs(init_scale=init_scale)])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="fp16 with accelerate's GradScaler needs a GPU")
@pytest.mark.parametrize("init_scale, diverges", [(2.0**30, False), (2.0**200, True)])
def test_fp16_overflows_are_skipped_by_the_scaler_not_called_divergence(make_cfg, tmp_path, monkeypatch, init_scale,
                                                                          diverges, fresh_accelerate_state):
    """A loss scale too large overflows the fp16 gradients: the scaler skips those steps and halves the scale (from
    2**30 it settles within MAX_CONSECUTIVE_OVERFLOWS); an overflow on every step (inf scale) is divergence."""
    monkeypatch.setattr("pdm.trainer.Accelerator", _accelerator_with_scale(init_scale))
    cfg = make_cfg({**TINY, "device": "cuda", "train": {**TINY["train"], "steps": 30, "warmup_steps": 1,
                                                          "mixed_precision": "fp16"}})
    record = train(cfg, "ddpm", 0, tmp_path)
    if diverges:
        assert record["status"] == "failed" and "gradient" in record["failed_term"]
    else:
        assert record["status"] == "ok" and record["steps_done"] == 30
        assert record["train_id"] == training_identity(cfg, "ddpm", 0)
