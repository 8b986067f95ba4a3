"""ProtoDiffusion: stage 1 end to end, the embedding table from the classifier's centres (frozen or not), guidance NFE,
the label drop, clear errors."""

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from baselines.protodiffusion import CENTRES_FILE, CLASSIFIER_FILE, ProtoDiffusion
from pdm.config import ConfigError
from pdm.methods.base import DataInfo

TINY = {"prototype_dim": 8, "classifier_steps": 4, "classifier_batch_size": 8}


def tiny_cfg(make_cfg, **options):
    return make_cfg({"data": {"max_images": 60}}, replace_methods={"protodiffusion": {**TINY, **options}})


@pytest.fixture(scope="module")
def stage1(tmp_path_factory, ci_raw_module):
    from pdm.config import resolve_config
    from pdm.steps import stage1_step

    raw = {**ci_raw_module, "data": {**ci_raw_module["data"], "max_images": 60}, "methods": {"protodiffusion": TINY}}
    cfg = resolve_config(raw)
    out = tmp_path_factory.mktemp("stage1_protodiffusion")
    return cfg, out, stage1_step(cfg, "protodiffusion", 0, out)


@pytest.fixture(scope="module")
def ci_raw_module():
    import yaml

    return yaml.safe_load((Path(__file__).resolve().parents[1] / "config" / "ci.yaml").read_text())


def test_stage1_writes_the_classifier_and_its_held_out_accuracy(stage1):
    cfg, out, record = stage1
    assert (out / CLASSIFIER_FILE).is_file() and (out / CENTRES_FILE).is_file()
    assert load_file(str(out / CENTRES_FILE))["centres"].shape == (10, 8)
    assert 0.0 <= record["classifier_holdout_accuracy"] <= 1.0 and record["classifier_holdout_images"] > 0
    assert record["training_only_files"] == [CLASSIFIER_FILE, CENTRES_FILE] and record["sampling_files"] == []
    assert record["seconds"] > 0


@pytest.mark.parametrize("mode, trained", [("proto_frozen", False), ("proto_unfrozen", True)])
def test_table_starts_as_the_centres_and_stays_frozen_when_asked(stage1, make_cfg, mode, trained):
    _, out, _ = stage1
    cfg = tiny_cfg(make_cfg, mode=mode)
    torch.manual_seed(0)
    method = ProtoDiffusion(cfg, DataInfo(1, 16, 10))
    method.prepare(out)
    centres = load_file(str(out / CENTRES_FILE))["centres"]
    assert torch.equal(method.embedding.table.weight, centres)
    assert method.embedding.table.weight.requires_grad is trained
    optimizer = torch.optim.AdamW([p for p in method.parameters() if p.requires_grad], lr=1e-2)
    x0, labels = torch.rand(8, 1, 16, 16) * 2 - 1, torch.arange(8) % 10
    for step in range(2):
        loss, _ = method.loss(x0, labels, torch.Generator().manual_seed(step))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert torch.equal(method.embedding.table.weight, centres) is not trained


def test_regular_mode_has_no_classifier(make_cfg, tmp_path):
    from pdm.steps import stage1_step

    record = stage1_step(tiny_cfg(make_cfg, mode="regular"), "protodiffusion", 0, tmp_path / "s1")
    assert record["mode"] == "regular" and record["training_only_files"] == []
    assert not (tmp_path / "s1" / CENTRES_FILE).exists()


def test_wrong_number_of_classes_is_a_clear_error(stage1):
    cfg, out, _ = stage1
    method = ProtoDiffusion(cfg, DataInfo(1, 16, 7))  # 7 classes, the centres have 10
    with pytest.raises(ValueError, match="centres of shape.*re-run protodiffusion's stage 1"):
        method.prepare(out)


def test_no_labels_is_a_clear_error(make_cfg):
    with pytest.raises(ConfigError, match="needs class labels"):
        ProtoDiffusion(tiny_cfg(make_cfg), DataInfo(1, 16, 0))


@pytest.mark.parametrize("weight, per_step", [(1.8, 2), (0.0, 1)])
def test_guidance_doubles_the_network_evaluations(make_cfg, weight, per_step):
    from pdm.sweep import network_evaluations

    cfg = tiny_cfg(make_cfg, guidance_weight=weight)
    assert network_evaluations(cfg, "protodiffusion", "ddim", 5) == 5 * per_step


def test_label_drop_zeroes_a_tenth_of_the_embeddings(make_cfg):
    torch.manual_seed(0)
    method = ProtoDiffusion(tiny_cfg(make_cfg, label_drop=0.1, mode="regular"), DataInfo(1, 16, 10))
    labels = torch.arange(4000) % 10
    tokens, _, logs = method.context(None, labels, None, torch.Generator().manual_seed(0))
    zero_rows = (tokens.abs().sum(dim=1) == 0).float().mean().item()
    assert 0.085 < zero_rows < 0.115 and zero_rows == pytest.approx(logs["label_drop_fraction"].item())


@pytest.mark.parametrize("fraction, batch, low", [(0.0, 32, 0), (0.1, 32, 3), (0.1, 64, 6), (0.1, 70, 7)])
def test_reference_low_t_quirk_redraws_the_batch_tail(make_cfg, fraction, batch, low):
    """diffusion.py trainloss: the last B // 10 images train at t ~ U{0..49}; off by default (shared t draws kept)."""
    method = ProtoDiffusion(tiny_cfg(make_cfg, low_t_fraction=fraction, mode="regular"), DataInfo(1, 16, 10))
    shared = torch.full((batch,), 500)
    generator = torch.Generator().manual_seed(0)
    t = method.training_timesteps(shared, generator)
    assert t.shape == shared.shape and torch.equal(t[: batch - low], shared[: batch - low])
    assert bool((t[batch - low:] < 50).all())
    if low == 0:  # nothing drawn: the step's random stream is what it was
        assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())


def test_stage1_interrupted_then_rerun_gives_the_uninterrupted_result(stage1, tmp_path, monkeypatch):
    """Stage 1 resumes by re-running: a crash before stage1.json (the file Snakemake and train check) leaves no record
    that passes for complete, and the re-run is bitwise the uninterrupted run (seeded classifier training)."""
    import baselines.protodiffusion as module
    from pdm.steps import stage1_step

    cfg, clean_out, _ = stage1
    real_save = module.save_file

    def crash_on_centres(tensors, path):
        if path.endswith(CENTRES_FILE):
            raise KeyboardInterrupt("simulated kill")
        real_save(tensors, path)

    monkeypatch.setattr(module, "save_file", crash_on_centres)
    with pytest.raises(KeyboardInterrupt):
        stage1_step(cfg, "protodiffusion", 0, tmp_path / "s1")
    assert (tmp_path / "s1" / CLASSIFIER_FILE).exists() and not (tmp_path / "s1" / "stage1.json").exists()
    monkeypatch.setattr(module, "save_file", real_save)
    stage1_step(cfg, "protodiffusion", 0, tmp_path / "s1")
    for name in (CLASSIFIER_FILE, CENTRES_FILE):
        rerun, clean = load_file(str(tmp_path / "s1" / name)), load_file(str(clean_out / name))
        assert rerun.keys() == clean.keys() and all(torch.equal(rerun[k], clean[k]) for k in clean)
