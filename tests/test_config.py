"""Bad config and data give one clear error each, before any training starts."""

import pytest
import torch

from pdm.cli import main, preflight
from pdm.config import ConfigError, load_config, resolve_config
from pdm.data import DataError


def expect(raw, *fragments):
    with pytest.raises((ConfigError, DataError)) as info:
        preflight(resolve_config(raw))
    for fragment in fragments:
        assert fragment in str(info.value), str(info.value)


def test_defaults_fill_in_and_hash_is_stable(ci_raw):
    a, b = resolve_config(ci_raw), resolve_config(ci_raw)
    assert a.hash == b.hash and a.train.grad_clip == 1.0 and a.methods["pdm"]["tau"] == 1.0
    only_pdm = resolve_config({**ci_raw, "methods": {"pdm": None}})
    assert list(only_pdm.methods) == ["pdm"]  # listing methods is opt-in; defaults never add one
    assert only_pdm.methods["pdm"]["prototype_sampling"] == "frequency" and only_pdm.hash != a.hash


def test_shipped_configs_are_valid():
    """Every shipped config validates; offline, the paper configs may only fail on their CLIP weights, clearly."""
    from conftest import REPO

    import yaml

    from pdm.experiments import experiment_configs, is_multi_experiment

    for path in sorted((REPO / "config").rglob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if path.name == "base.yaml":  # config/paper/base.yaml: the shared part the paper configs merge onto
            continue
        try:
            if is_multi_experiment(raw):  # config/paper/all.yaml: every experiment it lists resolves
                experiments = experiment_configs(raw, [path.parent, REPO / "config"])
                assert len(experiments) == len(raw["experiments"])
                for experiment in experiments.values():
                    assert resolve_config(experiment).experiment
            else:
                assert load_config(path).experiment
        except ConfigError as err:
            assert "paper" in path.parts, f"{path}: {err}"
            assert "methods.rdm.clip_weights" in str(err) and "efficientnet_lite0" in str(err)


def test_unknown_method(ci_raw):
    ci_raw["methods"]["pdn"] = {}
    expect(ci_raw, "unknown method 'pdn'", "did you mean 'pdm'")


def test_unknown_dataset(ci_raw):
    ci_raw["data"]["dataset"] = "cifar11"
    expect(ci_raw, "unknown dataset 'cifar11'", "digits")


def test_misspelled_key(ci_raw):
    ci_raw["train"]["stpes"] = ci_raw["train"].pop("steps")
    expect(ci_raw, "train", "unknown key 'stpes'", "did you mean 'steps'")


def test_missing_required_key(ci_raw):
    del ci_raw["data"]["dataset"]
    expect(ci_raw, "'dataset' is a required property")


@pytest.mark.parametrize("budget", [0, -5])
def test_non_positive_budget(ci_raw, budget):
    ci_raw["train"]["steps"] = budget
    expect(ci_raw, "train.steps", "minimum of 1")


def test_k_below_one(ci_raw):
    ci_raw["methods"]["pdm"]["num_prototypes"] = 0
    expect(ci_raw, "methods.pdm.num_prototypes", "minimum of 1")


def test_prototype_dim_differs_from_bottleneck(ci_raw):
    ci_raw["methods"]["pdm"]["prototype_dim"] = 48
    expect(ci_raw, "prototype_dim=48", "bottleneck channels 32")


def test_empty_image_folder(ci_raw, tmp_path):
    ci_raw["data"] = {"dataset": "imagefolder", "root": str(tmp_path)}
    expect(ci_raw, "no images under", str(tmp_path))


def test_unreadable_image(ci_raw, tmp_path):
    (tmp_path / "digits").mkdir()
    (tmp_path / "digits" / "broken.png").write_bytes(b"not a png")
    ci_raw["data"] = {"dataset": "imagefolder", "root": str(tmp_path)}
    expect(ci_raw, "cannot read image", "broken.png")


def test_imagefolder_with_classes_loads(ci_raw, tmp_path):
    from PIL import Image

    from pdm.data import load_dataset

    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(3):
            Image.new("RGB", (20, 24), (i * 40, 10, 200)).save(tmp_path / name / f"{i}.png")
    cfg = resolve_config({**ci_raw, "data": {"dataset": "imagefolder", "root": str(tmp_path), "channels": 3, "holdout_fraction": 0.0}})
    dataset = load_dataset(cfg.data)
    assert dataset.images.shape == (6, 3, 16, 16) and dataset.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert dataset.class_names == ("cat", "dog")


def test_cli_reports_errors_without_traceback(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("experiment: x\ndata: {dataset: digits}\nmethods: {pdm: {num_prototypes: 0}}\n")
    assert main(["validate", "--config", str(bad)]) == 2
    assert "num_prototypes" in capsys.readouterr().err
    assert main(["validate", "--config", str(tmp_path / "missing.yaml")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_holdout_split_is_disjoint_and_fixed(ci_raw):
    from pdm.data import load_dataset

    cfg = resolve_config({**ci_raw, "data": {"dataset": "digits", "holdout_fraction": 0.25, "max_images": 40}})
    train, held = load_dataset(cfg.data), load_dataset(cfg.data, "holdout")
    assert (len(train), len(held)) == (30, 10)
    flat = lambda d: {bytes(img.numpy()) for img in d.images}  # noqa: E731
    assert not flat(train) & flat(held)
    assert torch.equal(load_dataset(cfg.data, "holdout").images, held.images)


def test_one_channel_groupnorm_groups_are_refused(ci_raw):
    """A level with one channel per GroupNorm group cannot see t (diffusers adds temb right before that norm)."""
    ci_raw["model"].update(block_out_channels=[16, 32], norm_num_groups=16)
    expect(ci_raw, "model.norm_num_groups=16", "16-channel level one channel per GroupNorm group", "e.g. 4")


@pytest.mark.parametrize("name", ["ci", "default", "diagnostics"])
def test_shipped_unets_see_the_timestep(name):
    """Guards the flaw above end to end: a fresh U-Net from each shipped CPU config answers differently at two t.

    With one-channel groups (the earlier ci config) the output moved by ~1e-6 between t = 5 and t = 95."""
    from conftest import REPO
    from pdm.unet import ConditionedUNet

    cfg = load_config(REPO / "config" / f"{name}.yaml")
    torch.manual_seed(0)
    unet = ConditionedUNet(cfg.model, cfg.data.channels, cfg.data.resolution, cross_attention=False).eval()
    x = torch.randn(2, cfg.data.channels, cfg.data.resolution, cfg.data.resolution)
    with torch.no_grad():
        early, late = unet(x, torch.tensor([5, 5])), unet(x, torch.tensor([95, 95]))
    assert (early - late).abs().max() > 1e-2 * early.abs().max()
