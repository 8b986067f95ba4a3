"""Equal-compute budgets (train.budget: steps | flops | seconds) and training snapshots (train.snapshots)."""

import json

import pytest
import torch
from safetensors.torch import load_file

from pdm.config import ConfigError
from pdm.data import BatchStream, load_dataset
from pdm.flops import Stage1FlopCounter, steps_for_budget, training_step_flops, uncounted
from pdm.identity import all_identities, train_settings
from pdm.methods.base import DataInfo
from pdm.methods.registry import get_method_class
from pdm.trainer import _Run, train

TINY = {"data": {"max_images": 32},
        "train": {"steps": 6, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 3, "log_every": 2}}


def tiny(make_cfg, **train_changes):
    return make_cfg({**TINY, "train": {**TINY["train"], **train_changes}})


def weights(folder) -> dict:
    return {f.name: load_file(str(f)) for f in sorted(folder.glob("*.safetensors"))}


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and bool(a) and all(a[n].keys() == b[n].keys() and all(a[n][k].equal(b[n][k])
                                                                                       for k in a[n]) for n in a)


def step_flops(cfg, name):
    dataset = load_dataset(cfg.data)
    torch.manual_seed(0)
    method = get_method_class(name)(cfg, DataInfo.of(dataset))
    return method, BatchStream(dataset, cfg.train.batch_size, 0).batch(0)


def test_flops_per_step_are_counted_repeatably_and_leave_the_method_alone(make_cfg):
    cfg = tiny(make_cfg)
    method, batch = step_flops(cfg, "pdm")
    before = {k: v.clone() for k, v in method.state_dict().items()}  # f_phi's BatchNorm statistics included
    rng = torch.get_rng_state()
    first, second = training_step_flops(method, batch), training_step_flops(method, batch)
    assert first == second > 0
    after = method.state_dict()
    assert all(before[k].equal(after[k]) for k in before)
    assert torch.get_rng_state().equal(rng) and all(p.grad is None for p in method.parameters())
    ddpm, batch = step_flops(cfg, "ddpm")
    assert first > training_step_flops(ddpm, batch)  # f_phi forward and backward, and the cross-attention


def test_flops_budget_gives_each_method_the_steps_its_budget_allows(make_cfg, tmp_path):
    cfg = tiny(make_cfg, budget="flops", flops=6e9)
    records = {m: train(cfg, m, 0, tmp_path / m) for m in ("ddpm", "pdm")}
    for r in records.values():
        assert r["budget"] == "flops" and r["budget_value"] == 6e9
        assert r["steps_planned"] == r["steps_done"] == int(6e9) // r["flops_per_step"]
        assert r["train_flops"] == r["steps_done"] * r["flops_per_step"] <= 6e9
        assert r["stage1_flops"] is None and r["seconds_per_step_estimate"] is None
    assert records["pdm"]["flops_per_step"] > records["ddpm"]["flops_per_step"]
    assert records["pdm"]["steps_done"] < records["ddpm"]["steps_done"]
    assert f"step {records['pdm']['steps_done']} lr 0 " in (tmp_path / "pdm" / "train.log").read_text()  # cosine ends
    assert steps_for_budget(cfg.train, 10**9 + 1) == 5 and steps_for_budget(cfg.train, 10**9) == 6  # floor


def test_lr_schedule_is_laid_out_for_the_resolved_steps(make_cfg, tmp_path):
    cfg = tiny(make_cfg, budget="flops", flops=6e9, steps=50)  # train.steps is not used in flops mode
    run = _Run(cfg, "pdm", 0, tmp_path, None)
    run._build()
    run._plan(None)
    n, warmup = run.steps_planned, cfg.train.warmup_steps
    assert n == int(6e9) // run.flops_per_step and n != cfg.train.steps
    factor = run.lr_schedule.lr_lambdas[0]
    assert factor(warmup) == 1.0 and factor(n) == pytest.approx(0.0, abs=1e-12)
    assert factor(warmup + (n - warmup) / 2) == pytest.approx(0.5)


def test_budget_values_are_required_in_their_mode_and_refused_outside_it(make_cfg, tmp_path):
    with pytest.raises(ConfigError, match=r"train\.flops is required with train\.budget: flops"):
        tiny(make_cfg, budget="flops")
    with pytest.raises(ConfigError, match=r"train\.seconds is required"):
        tiny(make_cfg, budget="seconds")
    with pytest.raises(ConfigError, match=r"train\.flops is set but train\.budget is 'steps'"):
        tiny(make_cfg, flops=1e9)
    small = tiny(make_cfg, budget="flops", flops=1e9)  # one or two steps of pdm: not more than the warm-up + 1
    with pytest.raises(ConfigError, match=r"train\.flops=1e\+09 gives pdm 1 steps .* raise train\.flops to at least"):
        train(small, "pdm", 0, tmp_path)


def test_identity_covers_the_budget_mode_and_value_not_snapshots(make_cfg):
    base = tiny(make_cfg)
    assert "budget" not in train_settings(base) and train_settings(base)["steps"] == 6  # steps mode: ids as before
    flops = tiny(make_cfg, budget="flops", flops=6e9)
    ids = {name: all_identities(cfg, "pdm", 0)["train_id"] for name, cfg in {
        "steps": base, "flops": flops, "more flops": tiny(make_cfg, budget="flops", flops=7e9),
        "flops, other steps": tiny(make_cfg, budget="flops", flops=6e9, steps=99),
        "snapshots": tiny(make_cfg, snapshots=[0.5]), "seconds": tiny(make_cfg, budget="seconds", seconds=9)}.items()}
    assert ids["snapshots"] == ids["steps"] and ids["flops, other steps"] == ids["flops"]  # unused or output-neutral
    assert len({ids[k] for k in ("steps", "flops", "more flops", "seconds")}) == 4


def test_snapshots_are_written_at_their_steps_and_leave_the_final_weights_alone(make_cfg, tmp_path):
    plain = tiny(make_cfg, ema_decay=0.9)
    snap = tiny(make_cfg, ema_decay=0.9, snapshots=[0.25, 0.5, 0.75])
    train(plain, "pdm", 0, tmp_path / "plain")
    record = train(snap, "pdm", 0, tmp_path / "snap")
    assert same(weights(tmp_path / "plain" / "weights"), weights(tmp_path / "snap" / "weights"))  # bitwise
    assert [(s["fraction"], s["step"], s["done"]) for s in record["snapshots"]] == [(0.25, 2, True), (0.5, 3, True),
                                                                                  (0.75, 5, True)]  # halves round up
    for fraction, step in ((0.25, 2), (0.5, 3), (0.75, 5)):
        folder = tmp_path / "snap" / "snapshots" / repr(fraction)
        info = json.loads((folder / "snapshot.json").read_text())
        assert info["status"] == "ok" and info["step"] == step and info["fraction"] == fraction
        assert info["train_id"] == record["train_id"] and info["weights"] == "ema"
        assert info["train_flops"] == step * record["flops_per_step"]
        assert sorted(info["component_bytes"]) == ["f_phi", "prototypes", "unet"]
        # as weights/: loadable, with prototype usage counted by `finalize` at that step
        assert load_file(str(folder / "prototypes.safetensors"))["usage_counts"].sum() == 32 - 3
    assert not same(weights(tmp_path / "snap" / "snapshots" / "0.5"), weights(tmp_path / "snap" / "weights"))


def test_resume_after_a_checkpoint_still_writes_the_later_snapshots(make_cfg, tmp_path):
    from conftest import train_until_first_checkpoint

    cfg = tiny(make_cfg, ema_decay=0.9, snapshots=[0.25, 0.5, 0.75])
    train(cfg, "ddpm", 0, tmp_path / "straight")
    train_until_first_checkpoint(cfg, "ddpm", 0, tmp_path / "resumed")
    resumed = tmp_path / "resumed"
    assert sorted(p.name for p in (resumed / "snapshots").iterdir()) == ["0.25", "0.5"]  # before the step-3 checkpoint
    # the step-3 snapshot holds the EMA weights of step 3, which the checkpoint also holds
    shadow = torch.load(resumed / "checkpoint" / "optimizer.pt", weights_only=True)["ema"]["shadow_params"]
    method, _ = step_flops(cfg, "ddpm")
    names = [n.removeprefix("unet.") for n, p in method.named_parameters() if p.requires_grad]
    snapshot = load_file(str(resumed / "snapshots" / "0.5" / "unet.safetensors"))
    assert all(snapshot[n].equal(s) for n, s in zip(names, shadow, strict=True))

    record = train(cfg, "ddpm", 0, resumed)
    assert record["steps_done"] == 6 and all(s["done"] for s in record["snapshots"])
    assert "resumed from step 3" in (resumed / "train.log").read_text()
    for name in ("0.25", "0.5", "0.75"):
        assert same(weights(tmp_path / "straight" / "snapshots" / name), weights(resumed / "snapshots" / name))
    assert same(weights(tmp_path / "straight" / "weights"), weights(resumed / "weights"))


def test_unreached_snapshots_are_marked(make_cfg, tmp_path):
    cfg = tiny(make_cfg, snapshots=[0.9], max_seconds=1e-9)  # stops after the first step
    record = train(cfg, "ddpm", 0, tmp_path)
    assert record["stop_reason"] == "max_seconds" and record["steps_done"] == 1
    info = json.loads((tmp_path / "snapshots" / "0.9" / "snapshot.json").read_text())
    assert info["status"] == "not_reached" and "max_seconds" in info["reason"] and info["component_bytes"] == {}


def test_seconds_budget_times_steps_without_changing_the_training(make_cfg, tmp_path):
    cfg = tiny(make_cfg, budget="seconds", seconds=1.0, ema_decay=0.9)
    record = train(cfg, "pdm", 0, tmp_path / "seconds")
    estimate = record["seconds_per_step_estimate"]
    assert estimate > 0 and record["budget_probe_seconds"] > 0
    assert record["steps_planned"] == record["steps_done"] == int(1.0 // estimate)
    # the timing steps ran on throwaway state: the run equals a steps-mode run of the same length, bitwise
    same_length = tiny(make_cfg, steps=record["steps_done"], ema_decay=0.9)
    train(same_length, "pdm", 0, tmp_path / "steps")
    assert same(weights(tmp_path / "seconds" / "weights"), weights(tmp_path / "steps" / "weights"))


def test_stage1_counter_leaves_measurements_out():
    a, b = torch.ones(8, 16), torch.ones(16, 4)
    with Stage1FlopCounter() as counter:
        a @ b
        with uncounted():
            a @ b  # e.g. LDM's rFID: a measurement, not a cost
    assert counter.get_total_flops() == 2 * 8 * 16 * 4


def test_counting_changes_no_number_and_no_count():
    """FlopCounterMode swaps ops for Python decompositions that round differently (silu_backward, bilinear
    upsampling); the counters here run the ops' own kernels, and count the same FLOPs, also under inference_mode."""
    from torch.utils.flop_counter import FlopCounterMode

    torch.manual_seed(0)
    conv, linear = torch.nn.Conv2d(3, 8, 3), torch.nn.Linear(8, 4)
    x = torch.randn(2, 3, 12, 12)

    def work():
        y = torch.nn.functional.interpolate(x, scale_factor=1.7, mode="bilinear", antialias=False)
        out = linear(torch.nn.functional.silu(conv(y)).mean((2, 3)))
        grads = torch.autograd.grad(out.square().sum(), [conv.weight, linear.weight])
        with torch.inference_mode():
            z = linear(torch.randn(5, 8, generator=torch.Generator().manual_seed(1)))
        return [out.detach(), *grads, z]

    plain = work()
    with Stage1FlopCounter() as exact:
        counted = work()
    with FlopCounterMode(display=False) as reference:
        work()
    assert all(a.equal(b) for a, b in zip(plain, counted))
    assert exact.get_total_flops() == reference.get_total_flops() > 2 * 5 * 8 * 4  # inference-mode linear included


def test_an_exponent_without_sign_gets_a_hint(make_cfg):
    with pytest.raises(ConfigError, match=r"train\.flops: .* write the exponent with its sign"):
        tiny(make_cfg, budget="flops", flops="6.0e10")  # what YAML 1.1 makes of `flops: 6.0e10`
