"""The configured device reaches every step: sampling, reference statistics, evaluation, stage 1 and training.

CI has no GPU, so the resolved device is replaced by a sentinel object equal to "cpu" and every place that receives
a device is checked to receive that very object (identity, not equality), so no step can fall back to a hard-coded
"cpu" unnoticed.
"""

import numpy as np
import pytest

import pdm.runtime
import pdm.steps
import pdm.trainer


class Device(str):
    pass


SENTINEL = Device("cpu")
TINY = {"train": {"steps": 2, "batch_size": 4, "warmup_steps": 1, "checkpoint_every": 10, "log_every": 1},
        "data": {"max_images": 32}, "sample": {"num_samples": 4, "batch_size": 2}, "eval": {"num_real": 4, "kid_subset_size": 2}}


@pytest.fixture
def seen(monkeypatch):
    calls = []

    def resolve(cfg):
        calls.append("resolve")
        return SENTINEL

    monkeypatch.setattr(pdm.runtime, "resolve_device", resolve)  # stage 1 (LDM, RDM) asks here
    for module in (pdm.steps, pdm.trainer):
        monkeypatch.setattr(module, "setup_job", lambda cfg: (calls.append("setup"), SENTINEL)[1])
    return calls


def _spy(monkeypatch, module, name, received):
    original = getattr(module, name)

    def spy(*args, **kwargs):
        received.append((name, kwargs.get("device")))
        return original(*args, **kwargs)

    monkeypatch.setattr(module, name, spy)


def test_device_reaches_sampling_refstats_and_evaluation(make_cfg, tmp_path, seen, monkeypatch):
    import pdm.metrics
    from pdm.methods.base import Method

    cfg = make_cfg(TINY, replace_methods={"ddpm": {}})
    received = []
    original_sample = Method.sample

    def sample(self, seeds, sampler, steps, eta=0.0, batch_size=64, device="cpu"):
        received.append(("sample", device))
        return original_sample(self, seeds, sampler, steps, eta, batch_size, device)

    monkeypatch.setattr(Method, "sample", sample)
    _spy(monkeypatch, pdm.metrics, "compute_reference_stats", received)
    _spy(monkeypatch, pdm.metrics, "score_samples", received)

    record = pdm.steps.train_step(cfg, "ddpm", 0, tmp_path / "model")
    assert record["device"] is SENTINEL
    sampled = pdm.steps.sample_step(cfg, "ddpm", 0, tmp_path / "model", tmp_path / "samples")
    pdm.steps.refstats_step(cfg, tmp_path / "refstats.npz")
    scored = pdm.steps.evaluate_step(cfg, "ddpm", 0, tmp_path / "model", tmp_path / "samples",
                                     tmp_path / "refstats.npz", tmp_path / "metrics.json")
    assert {name for name, _ in received} == {"sample", "compute_reference_stats", "score_samples"}
    assert all(device is SENTINEL for _, device in received), received
    assert sampled["sampling_device"] == "cpu" and scored["evaluation_device"] == "cpu"
    assert np.isfinite(scored["fid"])


def test_device_reaches_stage1(make_cfg, tmp_path, seen, monkeypatch):
    from baselines import retrieval

    cfg = make_cfg(TINY, replace_methods={"rdm": {"encoder_resolution": 64, "k": 2}})
    received = []
    original = retrieval.EfficientNetLite0Encoder.embed

    def embed(self, images, batch_size, device):
        received.append(device)
        return original(self, images, batch_size, device)

    monkeypatch.setattr(retrieval.EfficientNetLite0Encoder, "embed", embed)
    record = pdm.steps.stage1_step(cfg, "rdm", 0, tmp_path / "stage1")
    assert received and all(device is SENTINEL for device in received)
    assert record["encoder_device"] is SENTINEL and "resolve" in seen
