"""`pdm-bench data prepare` on fake files in each dataset's native format: the real preparation (torchvision's
readers, extraction, the reference's selections and resizing), the checked store, and loading through pdm.data.

The fake files cannot have the real md5 sums, so the tests that prepare them replace torchvision's
`check_integrity` with an existence check (fixture `fake_md5`); `test_wrong_md5_is_refused` runs the real check."""

from __future__ import annotations

import numpy as np
import pytest

import fake_native
from pdm.cli import main
from pdm.config import ConfigError, DataConfig
from pdm.data import DataError, check_data_config, load_dataset
from pdm.datasets.catalog import CATALOG
from pdm.datasets.prepare import prepare

NAMES = list(CATALOG)


@pytest.fixture
def fake_md5(monkeypatch):
    """Accept any existing file as checksum-correct: the places torchvision (and pdm.datasets.raw) call it from."""
    import os

    import torchvision.datasets.celeba
    import torchvision.datasets.cifar
    import torchvision.datasets.stl10
    import torchvision.datasets.utils

    def exists(fpath, md5=None):
        return os.path.isfile(fpath)

    for module in (torchvision.datasets.utils, torchvision.datasets.cifar, torchvision.datasets.stl10,
                   torchvision.datasets.celeba):
        monkeypatch.setattr(module, "check_integrity", exists)


def _config(name: str, root, **overrides) -> DataConfig:
    fields = dict(dataset=name, root=None if root is None else str(root), resolution=CATALOG[name].resolution, channels=3, hflip=False,
                  max_images=None, holdout_fraction=0.0)
    return DataConfig(**{**fields, **overrides})


def _load(name, root):
    return load_dataset(_config(name, root))


def test_cifar10_round_trip(tmp_path, fake_md5):
    expected = fake_native.cifar10(tmp_path)
    manifest = prepare("cifar10", tmp_path)
    assert manifest["count"] == 20 and manifest["class_names"] == fake_native.CIFAR_CLASSES  # the 5 train batches
    data = _load("cifar10", tmp_path)
    assert data.images.dtype.is_floating_point is False and tuple(data.images.shape) == (20, 3, 32, 32)
    np.testing.assert_array_equal(data.images.numpy(), expected["images"])  # test_batch left out, bytes exact
    np.testing.assert_array_equal(data.labels.numpy(), expected["labels"])


def test_stl10_is_train_test_and_folds(tmp_path, fake_md5):
    expected = fake_native.stl10(tmp_path)
    manifest = prepare("stl10", tmp_path)
    assert manifest["count"] == 6 + 4 + 10 * 2  # the reference's concatenation, fold images repeated
    data = _load("stl10", tmp_path)
    np.testing.assert_array_equal(data.images.numpy(), expected["images"])  # orientation from the column-major .bin
    np.testing.assert_array_equal(data.labels.numpy(), expected["labels"])
    assert data.class_names == tuple(expected["classes"])


def test_eurosat_folder_of_jpegs(tmp_path, fake_md5):
    expected = fake_native.eurosat(tmp_path)
    prepare("eurosat", tmp_path)
    data = _load("eurosat", tmp_path)
    assert tuple(data.images.shape) == (9, 3, 64, 64) and data.class_names == tuple(expected["classes"])
    np.testing.assert_array_equal(data.labels.numpy(), expected["labels"])
    mean_color = data.images.float().mean(dim=(2, 3)).numpy()
    np.testing.assert_allclose(mean_color, expected["colors"], atol=3)  # JPEG moves a solid colour by a level or two


def test_celeba_draws_per_male_value_from_train_and_resizes(tmp_path, fake_md5):
    expected = fake_native.celeba(tmp_path)
    manifest = prepare("celeba", tmp_path, per_class=3, seed=5)
    files = manifest["selection"]["files"]
    assert len(files) == 6 and set(files) <= set(expected["train"])  # the official train partition only
    assert [expected["male"][f] for f in files] == [True] * 3 + [False] * 3
    data = _load("celeba", tmp_path)
    assert tuple(data.images.shape) == (6, 3, 176, 176) and data.class_names == ("male", "not_male")
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]  # the reference s-PDM's `0 if male else 1`
    colors = np.asarray([fake_native.color_of(expected["names"].index(f)) for f in files])
    np.testing.assert_allclose(data.images.float().mean(dim=(2, 3)).numpy(), colors, atol=3)
    assert prepare("celeba", tmp_path, per_class=3, seed=5)["selection"]["files"] == files  # seeded draw


def test_celeba_too_few_images_per_value(tmp_path, fake_md5):
    fake_native.celeba(tmp_path)
    with pytest.raises(DataError, match="fewer than the 10 drawn per value"):
        prepare("celeba", tmp_path, per_class=10)


def test_tinyimagenet_per_class_draw_and_grey_images(tmp_path, fake_md5):
    expected = fake_native.tinyimagenet(tmp_path)
    manifest = prepare("tinyimagenet", tmp_path, per_class=3)
    assert manifest["selection"]["wnids"] == expected["wnids"] and manifest["count"] == 9
    data = _load("tinyimagenet", tmp_path)
    assert data.labels.tolist() == [0] * 3 + [1] * 3 + [2] * 3
    assert data.class_names == tuple(f"thing {w}" for w in expected["wnids"])  # first name in words.txt
    for image, file in zip(data.images, manifest["selection"]["files"]):
        color = expected["colors"][file.rsplit("/", 1)[1]]
        mean = image.float().mean(dim=(1, 2)).numpy()
        if color is None:  # the greyscale JPEG becomes RGB with equal channels
            assert mean[0] == mean[1] == mean[2]
        else:
            np.testing.assert_allclose(mean, color, atol=3)
    with pytest.raises(DataError, match="fewer than the 6 drawn per class"):
        prepare("tinyimagenet", tmp_path, per_class=6)


@pytest.mark.parametrize("name", NAMES)
def test_offline_missing_files_name_each_file_and_place(tmp_path, name, capsys):
    assert main(["data", "prepare", name, "--root", str(tmp_path)]) == 2  # no --config needed
    message = capsys.readouterr().err
    from pdm.datasets.raw import REQUIREMENTS

    for item in REQUIREMENTS[name]():
        assert f"place {tmp_path / name / 'raw' / item.path}" in message and item.md5 in message
    assert "--download" in message and not (tmp_path / name / "manifest.json").exists()


def test_wrong_md5_is_refused(tmp_path):
    fake_native.cifar10(tmp_path)  # a real tar.gz, not the real CIFAR-10: the real md5 check must refuse it
    with pytest.raises(DataError, match="does not have md5 c58f30108f718f92721af3b95e74349a"):
        prepare("cifar10", tmp_path)


def test_corrupted_images_are_caught_on_load(tmp_path, fake_md5):
    fake_native.cifar10(tmp_path)
    prepare("cifar10", tmp_path)
    images = tmp_path / "cifar10" / "images.npy"
    raw = bytearray(images.read_bytes())
    raw[-1] ^= 0xFF  # one pixel, same size
    images.write_bytes(bytes(raw))
    with pytest.raises(DataError, match=r"does not match the sha256.*pdm-bench data prepare cifar10 --root"):
        _load("cifar10", tmp_path)


def test_interrupted_preparation_leaves_no_manifest(tmp_path, fake_md5, monkeypatch):
    fake_native.cifar10(tmp_path)
    prepare("cifar10", tmp_path)  # a complete set first: a failed re-preparation must not leave it looking valid
    from pdm.datasets import readers

    real = readers.READERS["cifar10"]

    def dies_halfway(*args):
        native = real(*args)
        return readers.Native(native.count, lambda i: native.image_at(i) if i < 7 else 1 / 0, native.labels,
                              native.class_names)

    monkeypatch.setitem(readers.READERS, "cifar10", dies_halfway)
    with pytest.raises(ZeroDivisionError):
        prepare("cifar10", tmp_path)
    folder = tmp_path / "cifar10"
    assert not (folder / "manifest.json").exists()
    assert not [p for p in folder.iterdir() if p.name.startswith(".")]  # no temporary file left behind
    with pytest.raises(DataError, match=r"no prepared dataset .* run `pdm-bench data prepare cifar10 --root"):
        _load("cifar10", tmp_path)


def test_config_checks_name_the_fix(tmp_path):
    with pytest.raises(ConfigError, match="set data.resolution: 32"):
        check_data_config(_config("cifar10", tmp_path, resolution=16))
    with pytest.raises(ConfigError, match="data.root is required"):
        check_data_config(_config("celeba", None))
    check_data_config(_config("stl10", tmp_path))  # not prepared yet is fine here: the prepare_data rule makes it
    with pytest.raises(DataError, match="run `pdm-bench data prepare stl10 --root"):
        _load("stl10", tmp_path)


def test_data_list_and_per_class_refusal(tmp_path, capsys):
    assert main(["data", "list", "--root", str(tmp_path)]) == 0
    listing = capsys.readouterr().out
    assert all(name in listing for name in NAMES) and "176x176" in listing and "prepared: no" in listing
    assert main(["data", "prepare", "cifar10", "--root", str(tmp_path), "--per-class", "3"]) == 2
    assert "--per-class applies to celeba and tinyimagenet only" in capsys.readouterr().err


@pytest.mark.parametrize("name", ["cifar10", "tinyimagenet"])
def test_download_fetches_the_pinned_url_and_md5(tmp_path, fake_md5, monkeypatch, name):
    """--download goes through torchvision's download_url with the pinned URL and md5 (here it copies a fake
    archive instead of fetching; the network is off in tests), then unpacks and prepares."""
    import shutil

    import torchvision.datasets.utils

    from pdm.datasets.raw import REQUIREMENTS

    getattr(fake_native, name)(tmp_path / "made")
    archive = next((tmp_path / "made" / name / "raw").glob("*.*"))
    fetched = []

    def fake_download_url(url, root, filename=None, md5=None, **kwargs):
        fetched.append((url, md5))
        shutil.copy(archive, f"{root}/{filename or url.rsplit('/', 1)[1]}")

    monkeypatch.setattr(torchvision.datasets.utils, "download_url", fake_download_url)
    [item] = REQUIREMENTS[name]()
    assert prepare(name, tmp_path, download=True, per_class=2 if name == "tinyimagenet" else None)["count"] > 0
    assert fetched == [(item.url, item.md5)]
