"""Tiny ImageNet (200 classes x 500 train images, 64x64): a checked downloader and a reader of its native layout.

torchvision has no class for it. The zip is the CS231N original; its md5 is the one pinned by several maintained
codebases (e.g. Avalanche's `TinyImagenet`, 248,100,043 bytes). The native layout read here:

    tiny-imagenet-200/wnids.txt                         the 200 WordNet ids
    tiny-imagenet-200/words.txt                         wnid <tab> human names (optional here)
    tiny-imagenet-200/train/<wnid>/images/*.JPEG        500 per class
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pdm.data import DataError

URL = "http://cs231n.stanford.edu/tiny-imagenet-200.zip"
ZIP = "tiny-imagenet-200.zip"
MD5 = "90528d7ca1a48142e341f4ef8d21d0de"
FOLDER = "tiny-imagenet-200"


def download(raw: Path) -> None:
    """Fetch and unpack the zip; torchvision's helper checks the md5 after the download and refuses a mismatch."""
    from torchvision.datasets.utils import download_and_extract_archive

    download_and_extract_archive(URL, download_root=str(raw), filename=ZIP, md5=MD5)


def class_names(folder: Path) -> tuple[list[str], list[str]]:
    """(sorted wnids, their first human name from words.txt, else the wnid)."""
    wnids_file = folder / "wnids.txt"
    if not wnids_file.is_file():
        raise DataError(f"{wnids_file} is missing; {folder} is not an unpacked {ZIP} (delete it and place the zip)")
    wnids = sorted(line.strip() for line in wnids_file.read_text().splitlines() if line.strip())
    words = {}
    if (folder / "words.txt").is_file():
        for line in (folder / "words.txt").read_text().splitlines():
            wnid, _, names = line.partition("\t")
            words[wnid] = names.split(",")[0].strip()
    return wnids, [words.get(wnid, wnid) for wnid in wnids]


def train_files(folder: Path, per_class: int | None, seed: int) -> tuple[list[Path], np.ndarray, list[str], list[str]]:
    """(image paths, labels, wnids, names): `per_class` images drawn per class with one seeded generator, in sorted
    order within each class, as the reference's random.sample(indices, 250) per class (there unseeded)."""
    wnids, names = class_names(folder)
    rng = np.random.default_rng(seed)
    files, labels = [], []
    for label, wnid in enumerate(wnids):
        images = sorted((folder / "train" / wnid / "images").glob("*.JPEG"))
        if per_class is not None:
            if len(images) < per_class:
                raise DataError(f"{folder / 'train' / wnid / 'images'} holds {len(images)} images, fewer than the "
                                f"{per_class} drawn per class; the unpacked archive is incomplete: delete it and re-place {ZIP}")
            images = [images[i] for i in sorted(rng.choice(len(images), per_class, replace=False))]
        files.extend(images)
        labels.extend([label] * len(images))
    return files, np.asarray(labels, dtype=np.int64), wnids, names
