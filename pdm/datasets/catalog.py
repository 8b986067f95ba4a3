"""What each prepared dataset is, in the reference code's choices (github.com/b-faye/pdm, `get_dataloaders` of each
`<DATASET>/PDM/main.py`). Imported when a config is checked, so it imports nothing heavy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class DatasetSpec:
    name: str
    resolution: int  # images are stored square at this side, RGB
    count: int  # images in the prepared set with the default selection
    content: str  # which native images, how selected and resized (mirrors the reference's get_dataloaders)
    labels: str
    source: str
    licence: str
    per_class: int | None = None  # images drawn per label value (seeded); None: every image of the split(s)


CATALOG: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec(
            "cifar10", 32, 50_000,
            "the train split, native 32x32 (reference: HF `cifar10`, dataset['train'])",
            "the 10 classes", "https://www.cs.toronto.edu/~kriz/cifar.html",
            "no licence stated; cite Krizhevsky 2009 (Learning Multiple Layers of Features from Tiny Images)",
        ),
        DatasetSpec(
            "stl10", 96, 23_000,
            "train (5,000) + test (8,000) + the 10 training folds (10 x 1,000, images of train again), native 96x96, "
            "as the reference concatenates HF `jxie/stl10` train, test and train_0..train_9; no unlabelled images",
            "the 10 classes", "https://cs.stanford.edu/~acoates/stl10/",
            "no licence stated; images from ImageNet; cite Coates, Lee & Ng, AISTATS 2011",
        ),
        DatasetSpec(
            "eurosat", 64, 27_000,
            "every RGB image, native 64x64 (reference: HF `nielsr/eurosat-demo`, dataset['train'])",
            "the 10 land-cover classes", "https://github.com/phelber/eurosat",
            "MIT; cite Helber et al., IEEE JSTARS 2019",
        ),
        DatasetSpec(
            "celeba", 176, 20_000,
            "10,000 images drawn (seeded) per value of the `Male` attribute from the official train partition, "
            "the aligned 178x218 images resized to 176x176 without cropping (reference: HF `flwrlabs/celeba` "
            "train, random.sample per value, transforms.Resize((176, 176)))",
            "0 = Male, 1 = not Male (the reference s-PDM's `0 if male else 1`)",
            "https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html",
            "non-commercial research use only (CelebA agreement); cite Liu et al., ICCV 2015",
            per_class=10_000,
        ),
        DatasetSpec(
            "tinyimagenet", 64, 50_000,
            "250 images drawn (seeded) per class from the train split (500 per class), native 64x64 "
            "(reference: HF `zh-plus/tiny-imagenet` train, random.sample(indices, 250) per class)",
            "the 200 classes (sorted WordNet ids)", "http://cs231n.stanford.edu/tiny-imagenet-200.zip",
            "ImageNet terms (non-commercial research); cite Le & Yang 2015 (CS231N)",
            per_class=250,
        ),
    )
}


def get_spec(name: str) -> DatasetSpec:
    if name not in CATALOG:
        raise ValueError(f"unknown dataset '{name}'; preparable datasets: {', '.join(CATALOG)}")
    return CATALOG[name]


MANIFEST = "manifest.json"  # written last by pdm.datasets.store: its presence means a complete preparation


def prepared_folder(root: str | Path, name: str) -> Path:
    """ROOT/NAME/: where `pdm-bench data prepare NAME --root ROOT` writes and a config's data.root loads from."""
    return Path(root).expanduser() / name
