"""`pdm-bench data prepare NAME --root DIR`: native files under DIR/NAME/raw/ -> the prepared set in DIR/NAME/."""

from __future__ import annotations

import time
from pathlib import Path

from pdm.datasets.catalog import CATALOG, MANIFEST, get_spec, prepared_folder


def prepare_command(name: str, root: str | Path) -> str:
    """The command a user runs to prepare `name` under `root` (named in every 'not prepared' error)."""
    return f"pdm-bench data prepare {name} --root {root}"


def prepare(name: str, root: str | Path, *, download: bool = False, seed: int = 0,
            per_class: int | None = None) -> dict:
    """Prepare dataset `name` under `root`; returns its manifest.

    download: fetch missing native files with torchvision's downloaders (checked by md5); else use only files placed
    in ROOT/NAME/raw/. seed and per_class: the seeded draw of CelebA (per Male value) and Tiny ImageNet (per class);
    per_class defaults to the reference's 10,000 and 250, and is refused for the datasets that take every image.
    """
    from pdm.datasets.raw import ensure_raw
    from pdm.datasets.readers import READERS
    from pdm.datasets.store import write_prepared

    spec = get_spec(name)
    if per_class is not None and spec.per_class is None:
        raise ValueError(f"--per-class applies to celeba and tinyimagenet only; {name} takes {spec.content}")
    if per_class is not None and per_class < 1:
        raise ValueError(f"--per-class must be at least 1, not {per_class}")
    folder = prepared_folder(root, name)
    raw = folder / "raw"
    started = time.perf_counter()
    sources = ensure_raw(name, raw, download)
    native = READERS[name](raw, spec.resolution, per_class or spec.per_class, seed)
    print(f"{name}: writing {native.count} images at {spec.resolution}x{spec.resolution} to {folder}/", flush=True)
    record = {"dataset": name, "content": spec.content, "labels": spec.labels, "source": spec.source,
              "licence": spec.licence,
              "native_files": [{"path": f"raw/{item.path}", "md5": item.md5, "url": item.url} for item in sources]}
    manifest = write_prepared(folder, native, spec.resolution, record)
    print(f"{name}: prepared {manifest['count']} images in {time.perf_counter() - started:.1f} s "
          f"({folder / MANIFEST})")
    return manifest


def list_datasets(root: str | Path | None = None) -> list[dict]:
    """One row per preparable dataset; with `root`, whether it is prepared there (manifest present) and its count."""
    rows = []
    for spec in CATALOG.values():
        row = {"name": spec.name, "resolution": spec.resolution, "count": spec.count, "source": spec.source}
        if root is not None:
            manifest = prepared_folder(root, spec.name) / MANIFEST
            row["prepared"] = "yes" if manifest.is_file() else "no"
        rows.append(row)
    return rows
