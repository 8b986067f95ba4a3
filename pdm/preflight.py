"""Every check that can fail before a job starts, run when the workflow is built and by `pdm-bench validate`.

`resolve_config` has already checked the config on its own (schema, cross-field rules, each method's `check_config`;
RDM's `index_device: gpu` is checked there by `baselines.retrieval.check_index_device`). `preflight` adds what needs
the machine or the data: a GPU for `device: cuda`, class labels for the methods that train on them, and every image
file of an image folder (decodable, not truncated). Each failure is one ConfigError / DataError naming the fix.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Mapping, NoReturn

import torch
from PIL import Image

from pdm.config import ConfigError, DataConfig, ExperimentConfig, resolve_config
from pdm.data import LABELLED_DATASETS, DataError, check_data_config, image_folder_files
from pdm.io import atomic_path

VERIFY_VERSION = 1  # bump when _image_error checks more, so markers written by the old check no longer vouch
MAX_NAMED = 10  # bad files named in one error; the rest are counted


def preflight(cfg: ExperimentConfig, *, local: bool = True) -> None:
    """Run every pre-job check on a resolved config; raises ConfigError or DataError (both ValueError).

    local=False skips the device check, for a machine that only submits the jobs to others (a cluster's login node
    often has no GPU); run `check_device` where the jobs run instead.
    """
    check_data_config(cfg.data)
    if local:
        check_device(cfg)
    root, files, labelled = _dataset_files(cfg.data)
    check_labels(cfg, labelled, root)
    if files:
        verify_images(root, files)


def preflight_or_exit(raw: Mapping[str, Any], *, local: bool = True) -> ExperimentConfig:
    """For the Snakefile: resolve the config dict and run `preflight`; a bad input prints its message and exits (code 2,
    as `pdm-bench`), since a traceback from Snakemake's parser would bury the message."""
    try:
        cfg = resolve_config(raw)
        preflight(cfg, local=local)
    except (ConfigError, DataError) as err:
        _exit(err)
    return cfg


def check_device_or_exit(cfg: ExperimentConfig) -> None:
    """For a Snakefile `onstart:` handler, the first point where Snakemake knows whether the jobs run on this machine."""
    try:
        check_device(cfg)
    except ConfigError as err:
        _exit(err)


def check_models_or_exit(cfg: ExperimentConfig) -> None:
    """For the Snakefile of an experiment that samples another one's models (sweep.models_from): they must exist and
    have this config's training identity (pdm.sweep.check_models), or the workflow stops before any job."""
    from pdm.sweep import check_models

    try:
        check_models(cfg)
    except ConfigError as err:
        _exit(err)


def _exit(err: ValueError) -> NoReturn:
    print(f"pdm-bench: error: {err}", file=sys.stderr)
    raise SystemExit(2)


def check_device(cfg: ExperimentConfig) -> None:
    """`device: cuda` without a GPU would otherwise pass validation and fail inside the first training job."""
    if cfg.device == "cuda" and not torch.cuda.is_available():
        raise ConfigError(
            "device: cuda was asked for but torch sees no GPU (torch.cuda.is_available() is False); "
            "set device: auto or cpu, or run on a machine with a GPU"
        )


def _dataset_files(data: DataConfig) -> tuple[Path | None, list[Path], bool]:
    """(root, image files to verify, has labels); built-in datasets have no files and known labels."""
    if data.dataset == "imagefolder":
        return image_folder_files(data)
    return None, [], data.dataset in LABELLED_DATASETS


def check_labels(cfg: ExperimentConfig, labelled: bool, root: Path | None = None) -> None:
    """Methods that train on class labels (`Method.needs_labels`, e.g. s-PDM) need a dataset that has them."""
    from pdm.methods.registry import get_method_class

    needing = [name for name in cfg.methods if get_method_class(name).needs_labels]
    if labelled or not needing:
        return
    names = ", ".join(needing)
    verb = "needs" if len(needing) == 1 else "need"
    if root is not None:
        raise ConfigError(
            f"methods: {names} {verb} class labels, but data.root {root} holds its images directly (no class "
            f"sub-folders), so they have none; put the images into one sub-folder per class under data.root, "
            f"or remove {names} from methods"
        )
    raise ConfigError(
        f"methods: {names} {verb} class labels, but data.dataset '{cfg.data.dataset}' has none; use a labelled "
        f"dataset (digits, or an imagefolder with one sub-folder per class), or remove {names} from methods"
    )


def verify_images(root: Path, files: list[Path]) -> None:
    """Open every image file and check it fully (see _image_error); name all bad files in one DataError.

    A success is remembered as a marker file keyed by every file's (relative path, size, mtime_ns), so building the
    workflow again over an unchanged folder only lists and stats it; any change to any file re-verifies the folder.
    """
    marker = _cache_dir() / f"{_fingerprint(root, files)}.json"
    if marker.exists():
        return
    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:  # zlib CRCs and PIL decoders release the GIL
        errors = list(pool.map(_image_error, files))
    bad = [(path, error) for path, error in zip(files, errors) if error is not None]
    if bad:
        raise DataError(_describe_bad(root, bad, len(files)))
    _write_marker(marker, root, len(files))


def _image_error(path: Path) -> str | None:
    """Why `path` is not a readable image, or None.

    PNG: verify() reads every chunk to IEND and checks its CRC (catches truncation and corruption, ~10x faster than
    decoding). Other formats: their verify() reads no pixel data (a JPEG cut in half passes it), so decode instead.
    """
    try:
        with Image.open(path) as image:
            if image.format == "PNG":
                image.verify()
            else:
                image.load()
    except Exception as err:  # PIL reports bad files as OSError, SyntaxError, ValueError, DecompressionBombError, ...
        return f"{type(err).__name__}: {err}"
    return None


def _describe_bad(root: Path, bad: list[tuple[Path, str]], total: int) -> str:
    lines = [f"  - {path.relative_to(root)} ({error})" for path, error in bad[:MAX_NAMED]]
    if len(bad) > MAX_NAMED:
        lines.append(f"  ... and {len(bad) - MAX_NAMED} more")
    many = len(bad) > 1
    return (
        f"cannot read image {'files' if many else 'file'} under data.root {root} ({len(bad)} of {total}):\n"
        + "\n".join(lines)
        + f"\nremove or replace {'them' if many else 'it'} (the training job decodes every image), then run again"
    )


def _cache_dir() -> Path:
    """Markers of verified folders, in the user cache shared with the Inception weights (PDM_BENCH_CACHE)."""
    return Path(os.environ.get("PDM_BENCH_CACHE") or Path.home() / ".cache" / "pdm-bench") / "verified"


def _fingerprint(root: Path, files: list[Path]) -> str:
    digest = hashlib.sha256(f"pdm-bench image verification v{VERIFY_VERSION}\n".encode())
    for path in files:
        try:
            stat = path.stat()
            size, mtime_ns = stat.st_size, stat.st_mtime_ns
        except OSError:  # vanished, or a broken link: verification reports it, so no marker is written for it
            size = mtime_ns = -1
        digest.update(f"{path.relative_to(root)}\0{size}\0{mtime_ns}\n".encode())
    return digest.hexdigest()


def _write_marker(marker: Path, root: Path, count: int) -> None:
    try:
        with atomic_path(marker) as tmp:
            tmp.write_text(json.dumps({"root": str(root), "files": count, "verify_version": VERIFY_VERSION}) + "\n")
    except OSError:
        pass  # an unwritable cache only costs a re-verification next time; it must not stop the workflow
