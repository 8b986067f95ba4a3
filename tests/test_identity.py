"""Stage identities: each covers exactly what determines its stage's output (pdm.identity)."""

import subprocess
import sys

import pytest

from pdm.identity import all_identities

from conftest import REPO


def ids(cfg, method="pdm", seed=0):
    return all_identities(cfg, method, seed)


def changed(a: dict, b: dict) -> set[str]:
    return {k for k in a if a[k] != b[k]}


@pytest.fixture
def base(make_cfg):
    return make_cfg()


def test_sampling_settings_resample_without_retraining(base, make_cfg):
    assert changed(ids(base), ids(make_cfg({"sample": {"steps": 7}}))) == {"sample_id", "eval_id", "comparison_id"}
    # the sampling batch size never changes an image (per-image seeds), so nothing reruns
    assert changed(ids(base), ids(make_cfg({"sample": {"batch_size": 3}}))) == set()


def test_training_settings_retrain_everything_downstream(base, make_cfg):
    assert changed(ids(base), ids(make_cfg({"train": {"lr": 3e-4}}))) == {"train_id", "sample_id", "eval_id", "comparison_id"}
    assert changed(ids(base), ids(make_cfg({"train": {"log_every": 7, "checkpoint_every": 3}}))) == set()


def test_reference_statistics_follow_num_real_only(base, make_cfg):
    diff = changed(ids(base), ids(make_cfg({"eval": {"num_real": 12}})))
    assert diff == {"refstats_id", "eval_id", "comparison_id"}
    assert changed(ids(base), ids(make_cfg({"eval": {"kid_subset_size": 4}}))) == {"eval_id", "comparison_id"}


def test_adding_a_seed_leaves_existing_seeds_alone(base, make_cfg):
    assert ids(base, seed=0) == ids(make_cfg({"seeds": [0, 1, 2]}), seed=0)
    assert ids(base, seed=0)["train_id"] != ids(base, seed=1)["train_id"]


def test_sampling_only_method_options_do_not_retrain(make_cfg):
    a = make_cfg({"methods": {"pdm": {"prototype_sampling": "frequency"}}})
    b = make_cfg({"methods": {"pdm": {"prototype_sampling": "per_step_uniform"}}})
    assert changed(ids(a), ids(b)) == {"sample_id", "eval_id"}
    c = make_cfg({"methods": {"pdm": {"num_prototypes": 5}}})
    assert "train_id" in changed(ids(a), ids(c))
    # another method's options never touch this method's identities
    d = make_cfg({"methods": {"spdm": {"alpha": 0.5}}})
    assert ids(a, "pdm") == ids(d, "pdm") and ids(a, "spdm")["train_id"] != ids(d, "spdm")["train_id"]


def test_stage1_identity(make_cfg):
    base = make_cfg()
    assert ids(base, "pdm")["stage1_id"] is None
    steps = make_cfg({"methods": {"ldm": {"autoencoder_steps": 30}}})
    assert changed(ids(base, "ldm"), ids(steps, "ldm")) >= {"stage1_id", "train_id"}
    timesteps = make_cfg({"methods": {"ldm": {"num_train_timesteps": 50}}})  # stage 2 only
    diff = changed(ids(base, "ldm"), ids(timesteps, "ldm"))
    assert "stage1_id" not in diff and "train_id" in diff


def test_identities_are_stable_across_processes(base):
    """The same config gives the same identities in a fresh interpreter (no hash randomisation, no dict order)."""
    code = ("import yaml; from pdm.config import resolve_config; from pdm.identity import all_identities; "
            f"cfg = resolve_config(yaml.safe_load(open({str(REPO / 'config' / 'ci.yaml')!r}))); "
            "print(all_identities(cfg, 'pdm', 0)['train_id'])")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={"PYTHONHASHSEED": "123", "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    assert out.stdout.strip() == ids(base)["train_id"]


def test_a_methods_own_lr_and_dropout_retrain_it_alone(make_cfg):
    """methods.X.lr / dropout (a reference's own settings, e.g. ProtoDiffusion's in the paper configs) retrain X only,
    never its stage 1, and reach its optimiser / U-Net; the shared values stay for every other method."""
    from pdm.methods.base import DataInfo
    from pdm.methods.registry import get_method_class

    base = make_cfg()
    own = make_cfg({"methods": {"ldm": {"lr": 2e-4, "dropout": 0.1}}})
    diff = changed(ids(base, "ldm"), ids(own, "ldm"))
    assert "train_id" in diff and "stage1_id" not in diff and ids(base, "ddpm") == ids(own, "ddpm")
    assert own.train_for("ldm").lr == 2e-4 and own.train_for("ddpm").lr == base.train.lr
    method = get_method_class("ddpm")(make_cfg({"methods": {"ddpm": {"dropout": 0.1}}}), DataInfo(1, 16, 0))
    assert method.unet.unet.down_blocks[0].resnets[0].dropout.p == 0.1 and method.record()["dropout"] == 0.1
    assert get_method_class("ddpm")(base, DataInfo(1, 16, 0)).record()["lr"] == base.train.lr
