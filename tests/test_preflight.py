"""The preflight: a GPU for device: cuda, labels for s-PDM and every image file are checked before any job starts."""

import io
import os

import numpy as np
import pytest
import torch
from PIL import Image

import pdm.preflight as pf
from pdm.config import ConfigError
from pdm.data import DataError
from pdm.preflight import preflight

FIX_LABELS = "put the images into one sub-folder per class under data.root, or remove spdm from methods"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    """Markers go to a per-test cache, never the user's ~/.cache."""
    monkeypatch.setenv("PDM_BENCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache" / "verified"


def png_bytes(seed: int, fmt: str = "PNG") -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (32, 32, 3), dtype=np.uint8)  # noise: no compression
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, fmt)
    return buffer.getvalue()


def make_folder(root, classes=("cat", "dog"), per_class=3):
    """A valid image folder, a JPEG among the PNGs; classes=() puts the images in root itself (no labels)."""
    for c, folder in enumerate([root / name for name in classes] or [root]):
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            (folder / f"{i}.png").write_bytes(png_bytes(10 * c + i))
        (folder / "photo.jpg").write_bytes(png_bytes(99, "JPEG"))
    return root


def folder_cfg(make_cfg, root, methods=None):
    methods = methods or {"pdm": {"num_prototypes": 4}, "spdm": {}}
    return make_cfg({"data": {"dataset": "imagefolder", "root": str(root)}}, replace_methods=methods)


def test_digits_and_a_labelled_folder_pass(make_cfg, tmp_path, cache):
    preflight(make_cfg())  # ci.yaml: digits (labelled), every method, including spdm
    preflight(folder_cfg(make_cfg, make_folder(tmp_path / "images")))
    assert len(list(cache.glob("*.json"))) == 1  # the folder's verification is remembered


def test_cuda_without_gpu(make_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    cfg = make_cfg({"device": "cuda"})
    with pytest.raises(ConfigError) as info:
        preflight(cfg)
    message = str(info.value)
    assert "device: cuda was asked for but torch sees no GPU" in message
    assert "set device: auto or cpu, or run on a machine with a GPU" in message
    preflight(cfg, local=False)  # a submit-only machine leaves the check to the machines that run the jobs
    preflight(make_cfg({"device": "auto"}))


def test_gpu_faiss_index_without_gpu_is_rejected_by_rdm_when_the_config_resolves(make_cfg, monkeypatch):
    """Not repeated in the preflight: RDM.check_config (retrieval.check_index_device) runs in resolve_config."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="index_device: gpu, but there is no GPU; set index_device: cpu"):
        make_cfg({"methods": {"rdm": {"index_device": "gpu"}}})


def test_spdm_on_an_unlabelled_folder(make_cfg, tmp_path):
    root = make_folder(tmp_path / "flat", classes=())
    with pytest.raises(ConfigError) as info:
        preflight(folder_cfg(make_cfg, root))
    message = str(info.value)
    assert "spdm needs class labels" in message and str(root) in message and "no class sub-folders" in message
    assert FIX_LABELS in message
    preflight(folder_cfg(make_cfg, root, methods={"pdm": {"num_prototypes": 4}}))  # unsupervised PDM is fine


def test_corrupt_and_truncated_images_are_named_together(make_cfg, tmp_path, cache):
    root = make_folder(tmp_path / "images")
    good = png_bytes(7)
    (root / "cat" / "noise.png").write_bytes(os.urandom(2000))
    (root / "cat" / "cut.png").write_bytes(good[: len(good) // 2])  # a truncated PNG: its header is intact
    (root / "dog" / "cut.jpg").write_bytes(png_bytes(8, "JPEG")[:-200])  # passes PIL's verify(); only decoding fails
    with pytest.raises(DataError) as info:
        preflight(folder_cfg(make_cfg, root))
    message = str(info.value)
    assert "cannot read image files" in message and "(3 of 11)" in message
    for name in ("cat/noise.png", "cat/cut.png", "dog/cut.jpg"):
        assert f"  - {name} (" in message
    assert "cat/0.png" not in message and "remove or replace them" in message
    assert not list(cache.glob("*.json"))  # a failed verification is never remembered


def test_at_most_ten_bad_files_are_named(make_cfg, tmp_path):
    root = make_folder(tmp_path / "images")
    for i in range(12):
        (root / "cat" / f"bad{i:02d}.png").write_bytes(b"not an image")
    with pytest.raises(DataError) as info:
        preflight(folder_cfg(make_cfg, root))
    message = str(info.value)
    assert "(12 of 20)" in message and "bad09.png" in message and "bad10.png" not in message
    assert "... and 2 more" in message


def test_verification_is_cached_until_a_file_changes(make_cfg, tmp_path, monkeypatch):
    opened = []
    image_error = pf._image_error
    monkeypatch.setattr(pf, "_image_error", lambda path: opened.append(path) or image_error(path))
    root = make_folder(tmp_path / "images")
    cfg = folder_cfg(make_cfg, root)

    preflight(cfg)
    assert len(opened) == 8
    preflight(cfg)
    assert len(opened) == 8  # unchanged folder: listed and stat-ed, no file opened

    target = root / "dog" / "1.png"
    stat = target.stat()
    os.utime(target, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000_000))  # same size, newer mtime
    preflight(cfg)
    assert len(opened) == 16  # re-verified

    target.write_bytes(target.read_bytes()[:-100])  # damaged after it was verified
    with pytest.raises(DataError, match=r"(?s)dog/1\.png .*remove or replace it"):
        preflight(cfg)


def test_unwritable_cache_does_not_stop_the_preflight(make_cfg, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("")
    monkeypatch.setenv("PDM_BENCH_CACHE", str(blocker))
    preflight(folder_cfg(make_cfg, make_folder(tmp_path / "images")))


def test_snakefile_entry_prints_one_line_and_exits(ci_raw, tmp_path, monkeypatch, capsys):
    assert pf.preflight_or_exit(ci_raw).experiment == "ci"
    (tmp_path / "flat").mkdir()
    (tmp_path / "flat" / "x.png").write_bytes(png_bytes(0))
    ci_raw["data"] = {"dataset": "imagefolder", "root": str(tmp_path / "flat")}
    with pytest.raises(SystemExit) as info:
        pf.preflight_or_exit(ci_raw)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("pdm-bench: error: methods: spdm, cddpm, protodiffusion need class labels")
    assert "Traceback" not in err

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    ci_raw["data"], ci_raw["device"] = {"dataset": "digits"}, "cuda"
    cfg = pf.preflight_or_exit(ci_raw, local=False)  # the submit side of a cluster run
    with pytest.raises(SystemExit):
        pf.check_device_or_exit(cfg)  # where the jobs run
    assert "torch sees no GPU" in capsys.readouterr().err
