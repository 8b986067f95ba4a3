"""Native files -> RGB uint8 images (3, R, R) and int64 labels, through torchvision's dataset classes (which check
the md5 of the files inside each archive) and the reference code's choices (see catalog.py)."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
from PIL import Image

from pdm.data import DataError


@dataclass(frozen=True)
class Native:
    count: int
    image_at: Callable[[int], np.ndarray]  # i -> (3, R, R) uint8; called once per image, in order
    labels: np.ndarray  # (count,) int64
    class_names: tuple[str, ...]
    selection: dict = field(default_factory=dict)  # how the images were chosen, recorded in the manifest


def _open(cls, *args, **kwargs):
    """A torchvision dataset on files already in place; its 'not found or corrupted' becomes a DataError."""
    try:
        return cls(*args, download=False, **kwargs)
    except RuntimeError as err:
        raise DataError(f"torchvision's {cls.__name__} refused the files under {args[0]} ({err}): an inner file is "
                        f"missing or fails its md5; delete the unpacked folder and re-place the archive, or pass --download") from None


def _pil_rgb(path: Path, resolution: int) -> np.ndarray:
    """(3, R, R) uint8; resized only where the native size differs, with the reference's transforms.Resize((R, R))
    (bilinear, antialiased on PIL images, no crop; CelebA's 178x218 is squeezed to 176x176 as in the reference)."""
    from torchvision.transforms import functional as tvf

    try:
        with Image.open(path) as image:
            image = image.convert("RGB")  # the reference's image.convert('RGB') (Tiny ImageNet has grey JPEGs)
            if image.size != (resolution, resolution):
                image = tvf.resize(image, [resolution, resolution])
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    except OSError as err:
        raise DataError(f"cannot read image {path} ({err}); re-place the archive it came from") from None


def cifar10(raw: Path, resolution: int, per_class: int | None, seed: int) -> Native:
    from torchvision.datasets import CIFAR10

    train = _open(CIFAR10, str(raw), train=True)
    images = train.data.transpose(0, 3, 1, 2)  # (N, 32, 32, 3) -> (N, 3, 32, 32)
    return Native(len(images), images.__getitem__, np.asarray(train.targets, dtype=np.int64), tuple(train.classes),
                  {"splits": ["train"]})


def stl10(raw: Path, resolution: int, per_class: int | None, seed: int) -> Native:
    """The reference's concatenation: train, test, then train folds 0..9 (each 1,000 train images again)."""
    from torchvision.datasets import STL10

    parts = [_open(STL10, str(raw), split="train"), _open(STL10, str(raw), split="test")]
    parts += [_open(STL10, str(raw), split="train", folds=fold) for fold in range(10)]
    images = np.concatenate([part.data for part in parts])  # (N, 3, 96, 96), already channels-first
    labels = np.concatenate([part.labels for part in parts]).astype(np.int64)
    classes = getattr(parts[0], "classes", None)  # torchvision reads them from class_names.txt when it exists
    if classes is None:
        raise DataError(f"{raw / STL10.base_folder / STL10.class_names_file} is missing; re-place the archive")
    return Native(len(images), images.__getitem__, labels, tuple(classes),
                  {"splits": ["train", "test"] + [f"train fold {fold}" for fold in range(10)]})


def eurosat(raw: Path, resolution: int, per_class: int | None, seed: int) -> Native:
    from torchvision.datasets import EuroSAT

    folder = _open(EuroSAT, str(raw))
    paths = [Path(path) for path, _ in folder.samples]
    labels = np.asarray([label for _, label in folder.samples], dtype=np.int64)
    return Native(len(paths), lambda i: _pil_rgb(paths[i], resolution), labels, tuple(folder.classes),
                  {"splits": ["all (EuroSAT has no official split)"]})


def celeba(raw: Path, resolution: int, per_class: int | None, seed: int) -> Native:
    """`per_class` train-partition images per value of `Male`, drawn with one seeded generator (the reference's
    random.sample(indices, 10000) per value is unseeded). Label 0 = Male, 1 = not Male, as the reference s-PDM."""
    from torchvision.datasets import CelebA

    train = _open(CelebA, str(raw), split="train", target_type="attr")
    male = train.attr[:, train.attr_names.index("Male")].numpy()  # torchvision maps -1/1 to 0/1
    rng = np.random.default_rng(seed)
    chosen, labels = [], []
    for label, value in enumerate((1, 0)):
        group = np.flatnonzero(male == value)
        if per_class is not None:
            if len(group) < per_class:
                raise DataError(f"CelebA's train partition has {len(group)} images with Male={value}, fewer than "
                                f"the {per_class} drawn per value; lower --per-class")
            group = np.sort(rng.choice(group, per_class, replace=False))
        chosen.extend(group.tolist())
        labels.extend([label] * len(group))
    folder = Path(train.root) / train.base_folder / "img_align_celeba"
    names = [train.filename[i] for i in chosen]
    return Native(len(names), lambda i: _pil_rgb(folder / names[i], resolution), np.asarray(labels, dtype=np.int64),
                  ("male", "not_male"), {"splits": ["train"], "attribute": "Male", "per_class": per_class,
                                         "seed": seed, "files": names})


def tinyimagenet(raw: Path, resolution: int, per_class: int | None, seed: int) -> Native:
    from pdm.datasets.tinyimagenet import FOLDER, train_files

    folder = raw / FOLDER
    paths, labels, wnids, names = train_files(folder, per_class, seed)
    return Native(len(paths), lambda i: _pil_rgb(paths[i], resolution), labels, tuple(names),
                  {"splits": ["train"], "per_class": per_class, "seed": seed, "wnids": wnids,
                   "files": [str(p.relative_to(folder)) for p in paths]})


READERS: dict[str, Callable[[Path, int, int | None, int], Native]] = {
    "cifar10": cifar10, "stl10": stl10, "eurosat": eurosat, "celeba": celeba, "tinyimagenet": tinyimagenet,
}
