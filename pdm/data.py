"""Datasets, registered by name in one place, and the seeded batch order shared by every method.

A dataset is held in memory as uint8 images (N, C, H, W) plus optional integer labels; the model sees
x_0 = images / 127.5 - 1 in [-1, 1], as in the reference code's `Normalize([0.5], [0.5])`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from pdm.config import ConfigError, DataConfig
from pdm.shards import share

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".webp", ".tif", ".tiff")


class DataError(ValueError):
    """A data problem, naming the file or folder and the fix."""


@dataclass(frozen=True)
class ImageDataset:
    name: str
    images: torch.Tensor  # (N, C, H, W) uint8
    labels: torch.Tensor | None  # (N,) int64, or None for unlabelled data
    class_names: tuple[str, ...]

    def __len__(self) -> int:
        return self.images.shape[0]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    def to_model_range(self, index: torch.Tensor) -> torch.Tensor:
        return self.images[index].float() / 127.5 - 1.0


def _to_uint8_square(image: Image.Image, resolution: int, mode: str) -> np.ndarray:
    """Centre-crop to a square, resize with bicubic filtering, return (C, H, W) uint8."""
    image = image.convert(mode)
    side = min(image.size)
    left, top = (image.width - side) // 2, (image.height - side) // 2
    image = image.crop((left, top, left + side, top + side)).resize((resolution, resolution), Image.BICUBIC)
    array = np.asarray(image, dtype=np.uint8)
    return array[None] if array.ndim == 2 else array.transpose(2, 0, 1)


def load_digits(cfg: DataConfig) -> ImageDataset:
    """scikit-learn's 1,797 8x8 digits (ships with the wheel, offline), upsampled so the U-Net has room to halve."""
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    pixels = np.clip(bunch.images * (255.0 / 16.0), 0, 255).round().astype(np.uint8)  # values 0..16 -> 0..255
    mode = "L" if cfg.channels == 1 else "RGB"
    images = np.stack([_to_uint8_square(Image.fromarray(p, mode="L"), cfg.resolution, mode) for p in pixels])
    names = tuple(str(n) for n in bunch.target_names)
    return ImageDataset("digits", torch.from_numpy(images), torch.from_numpy(bunch.target.astype(np.int64)), names)


def _list_images(root: Path) -> tuple[list[Path], list[int] | None, tuple[str, ...]]:
    if not root.is_dir():
        raise DataError(f"data.root: {root} is not a folder; point it at a folder of images (class sub-folders optional)")
    class_dirs = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    by_class = [sorted(f for f in d.rglob("*") if f.suffix.lower() in IMAGE_SUFFIXES) for d in class_dirs]
    if class_dirs and any(by_class):
        pairs = [(f, label) for label, files in enumerate(by_class) for f in files]
        return [f for f, _ in pairs], [label for _, label in pairs], tuple(d.name for d in class_dirs)
    files = sorted(f for f in root.iterdir() if f.suffix.lower() in IMAGE_SUFFIXES)
    if not files:
        raise DataError(
            f"data.root: no images under {root} (looked for {', '.join(IMAGE_SUFFIXES)}); "
            "put images there, or in one sub-folder per class"
        )
    return files, None, ()


def load_imagefolder(cfg: DataConfig) -> ImageDataset:
    """A local folder of images; one sub-folder per class gives labels (as torchvision's ImageFolder)."""
    if not cfg.root:
        raise ConfigError("data.root is required for the imagefolder dataset; set it to a folder of images")
    files, labels, names = _list_images(Path(cfg.root).expanduser())
    if cfg.max_images:
        files, labels = files[: cfg.max_images], (labels[: cfg.max_images] if labels else None)
    mode = "L" if cfg.channels == 1 else "RGB"
    arrays = []
    for path in files:
        try:
            with Image.open(path) as image:
                arrays.append(_to_uint8_square(image, cfg.resolution, mode))
        except (UnidentifiedImageError, OSError) as err:
            raise DataError(f"cannot read image {path} ({err}); remove or replace it") from None
    label_tensor = torch.tensor(labels, dtype=torch.int64) if labels is not None else None
    return ImageDataset("imagefolder", torch.from_numpy(np.stack(arrays)), label_tensor, names)


def _check_prepared_config(cfg: DataConfig) -> tuple[Path, str]:
    """(the prepared folder, the command that makes it); the config must match the prepared set's fixed shape."""
    from pdm.datasets.catalog import CATALOG, prepared_folder
    from pdm.datasets.prepare import prepare_command

    spec = CATALOG[cfg.dataset]
    if not cfg.root:
        raise ConfigError(f"data.root is required for the {cfg.dataset} dataset: the folder given to "
                          f"`pdm-bench data prepare {cfg.dataset} --root DIR` (e.g. data)")
    if cfg.resolution != spec.resolution or cfg.channels != 3:
        raise ConfigError(f"data: {cfg.dataset} is prepared at {spec.resolution}x{spec.resolution} RGB (the reference "
                          f"code's size); set data.resolution: {spec.resolution} and data.channels: 3")
    return prepared_folder(cfg.root, cfg.dataset), prepare_command(cfg.dataset, cfg.root)


def load_prepared(cfg: DataConfig) -> ImageDataset:
    """A dataset prepared by `pdm-bench data prepare` (pdm.datasets), checked against its manifest's sha256."""
    from pdm.datasets.store import load_prepared as load_checked

    folder, hint = _check_prepared_config(cfg)
    manifest, images, labels = load_checked(folder, hint)
    # copy-on-write memory maps: torch shares their pages; only the images used are read from disk
    return ImageDataset(cfg.dataset, torch.from_numpy(images), torch.from_numpy(labels), tuple(manifest["class_names"]))


PREPARED_DATASETS = ("cifar10", "stl10", "eurosat", "celeba", "tinyimagenet")  # pdm.datasets.catalog.CATALOG


def manifest_path(cfg: DataConfig) -> Path:
    """DIR/NAME/manifest.json of a prepared dataset: the workflow's prepare_data output, an input of every data job."""
    from pdm.datasets.catalog import MANIFEST, prepared_folder

    return prepared_folder(cfg.root or "data", cfg.dataset) / MANIFEST

DATASETS: dict[str, Callable[[DataConfig], ImageDataset]] = {
    "digits": load_digits, "imagefolder": load_imagefolder, **{name: load_prepared for name in PREPARED_DATASETS},
}
# Registered datasets that always carry class labels; imagefolder has them when its root holds class sub-folders.
LABELLED_DATASETS = frozenset({"digits", *PREPARED_DATASETS})


def subset(dataset: ImageDataset, index: torch.Tensor) -> ImageDataset:
    labels = dataset.labels[index] if dataset.labels is not None else None
    return ImageDataset(dataset.name, dataset.images[index], labels, dataset.class_names)


def load_dataset(cfg: DataConfig, split: str = "train") -> ImageDataset:
    """The 'train' split (every method trains on it; reference statistics come from it) or the 'holdout' split.

    The holdout is a fixed (seed 0) random `holdout_fraction` of the images, never trained on: it measures the
    autoencoder's reconstructions on unseen images.
    """
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset '{cfg.dataset}'; known datasets: {', '.join(sorted(DATASETS))}")
    if split not in ("train", "holdout"):
        raise ValueError(f"split must be 'train' or 'holdout', not {split!r}")
    dataset = DATASETS[cfg.dataset](cfg)
    if cfg.max_images and len(dataset) > cfg.max_images:
        dataset = subset(dataset, torch.arange(cfg.max_images))
    held = torch.randperm(len(dataset), generator=torch.Generator().manual_seed(0))[: round(len(dataset) * cfg.holdout_fraction)]
    if split == "holdout":
        return subset(dataset, held.sort().values)
    keep = torch.ones(len(dataset), dtype=torch.bool)
    keep[held] = False
    return subset(dataset, keep.nonzero().squeeze(1))


def image_folder_files(cfg: DataConfig) -> tuple[Path, list[Path], bool]:
    """(root, the image files the imagefolder dataset reads, whether class sub-folders label them).

    Lists folders and never opens a file, so it is cheap enough to run when the workflow is built.
    """
    if not cfg.root:
        raise ConfigError("data.root is required for the imagefolder dataset; set it to a folder of images")
    root = Path(cfg.root).expanduser()
    files, labels, _ = _list_images(root)
    return root, files[: cfg.max_images] if cfg.max_images else files, labels is not None


def check_data_config(cfg: DataConfig) -> None:
    """Cheap checks run when the workflow is built, before any job: the dataset exists, a folder holds images, and a
    prepared dataset's config matches its fixed size.

    `pdm.preflight.verify_images` then checks every image file (cached) and names all the bad ones at once.
    """
    if cfg.dataset not in DATASETS:
        raise ConfigError(f"data.dataset: unknown dataset '{cfg.dataset}'; known datasets: {', '.join(sorted(DATASETS))}")
    if cfg.dataset == "imagefolder":
        image_folder_files(cfg)
    elif cfg.dataset in PREPARED_DATASETS:  # the files themselves may not exist yet: the prepare_data rule makes them
        _check_prepared_config(cfg)


class BatchStream:
    """The training data order, a pure function of (seed, step): identical for every method, exact on resume.

    Epoch e visits the dataset in the permutation drawn from a generator seeded with (seed, e); the last
    incomplete batch of an epoch is dropped. Flips use a generator seeded with (seed, step).
    """

    def __init__(self, dataset: ImageDataset, batch_size: int, seed: int, hflip: bool = False):
        if batch_size > len(dataset):
            raise ConfigError(f"train.batch_size={batch_size} exceeds the {len(dataset)} training images; lower it")
        self.dataset, self.batch_size, self.seed, self.hflip = dataset, batch_size, seed, hflip
        self.batches_per_epoch = len(dataset) // batch_size
        self._epoch, self._order = -1, None

    def indices(self, step: int) -> torch.Tensor:
        epoch, position = divmod(step, self.batches_per_epoch)
        if epoch != self._epoch:
            generator = torch.Generator().manual_seed(self.seed * 1_000_003 + epoch)
            self._epoch, self._order = epoch, torch.randperm(len(self.dataset), generator=generator)
        return self._order[position * self.batch_size : (position + 1) * self.batch_size]

    def batch(self, step: int, rank: int = 0, world_size: int = 1) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """x_0 in [-1, 1] (B, C, H, W), labels (B,) and dataset positions (B,) for this step (this rank's share)."""
        index = self.indices(step)
        index = share(index, rank, world_size)  # pdm.shards: positions rank, rank + world_size, ...
        x0 = self.dataset.to_model_range(index)
        if self.hflip:
            flip = torch.rand(len(self.indices(step)), generator=torch.Generator().manual_seed(self.seed * 7919 + step))
            flip = share(flip, rank, world_size) < 0.5
            x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        labels = self.dataset.labels[index] if self.dataset.labels is not None else None
        return x0, labels, index
