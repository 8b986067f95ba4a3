"""Tiny fake copies of each dataset's NATIVE files (same names, layouts and encodings as the real downloads), for
tests/test_datasets.py. Each builder writes under ROOT/NAME/raw/ and returns what the prepared set must contain."""

from __future__ import annotations

import pickle
import tarfile
import zipfile
from pathlib import Path

import numpy as np
from PIL import Image

CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _rng(seed: int = 0) -> np.random.Generator:
    return np.random.default_rng(seed)


def _solid(color: tuple[int, int, int], size: tuple[int, int]) -> Image.Image:
    """A one-colour image: its colour survives JPEG and resizing (within a few levels), so tests can check pixels."""
    return Image.new("RGB", size, color)


def color_of(i: int) -> tuple[int, int, int]:
    return (20 + 37 * i % 200, 40 + 53 * i % 200, 60 + 71 * i % 180)


def cifar10(root: Path) -> dict:
    """cifar-10-python.tar.gz: cifar-10-batches-py/data_batch_1..5, test_batch (pickled dicts, rows of 3072 bytes
    R-plane, G-plane, B-plane), batches.meta."""
    raw = root / "cifar10" / "raw"
    staging = raw.parent / "staging" / "cifar-10-batches-py"
    staging.mkdir(parents=True)
    images, labels = [], []
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        data = _rng(len(name) + len(images)).integers(0, 256, (4, 3072), dtype=np.uint8)
        batch_labels = [int(x) for x in _rng(len(images)).integers(0, 10, 4)]
        (staging / name).write_bytes(pickle.dumps({"data": data, "labels": batch_labels, "batch_label": name}))
        if name != "test_batch":
            images.append(data.reshape(4, 3, 32, 32))
            labels += batch_labels
    (staging / "batches.meta").write_bytes(pickle.dumps({"label_names": CIFAR_CLASSES}))
    raw.mkdir(parents=True)
    with tarfile.open(raw / "cifar-10-python.tar.gz", "w:gz") as tar:
        tar.add(staging, arcname="cifar-10-batches-py")
    return {"images": np.concatenate(images), "labels": np.asarray(labels), "classes": CIFAR_CLASSES}


def stl10(root: Path) -> dict:
    """stl10_binary.tar.gz: {train,test}_X.bin (uint8, each image 3 planes stored column-major), {train,test}_y.bin
    (labels 1..10), unlabeled_X.bin, class_names.txt, fold_indices.txt (10 lines of train indices)."""
    staging = root / "stl10" / "staging" / "stl10_binary"
    staging.mkdir(parents=True)
    out = {}
    for split, n in (("train", 6), ("test", 4)):
        chw = _rng(n).integers(0, 256, (n, 3, 96, 96), dtype=np.uint8)  # what torchvision must read back
        chw.transpose(0, 1, 3, 2).tofile(staging / f"{split}_X.bin")  # the binary is column-major per plane
        labels = _rng(n + 1).integers(0, 10, n).astype(np.uint8)
        (labels + 1).tofile(staging / f"{split}_y.bin")
        out[split] = (chw, labels.astype(np.int64))
    np.zeros((1, 3, 96, 96), np.uint8).tofile(staging / "unlabeled_X.bin")
    folds = [[(fold + k) % 6 for k in range(2)] for fold in range(10)]
    (staging / "fold_indices.txt").write_text("\n".join(" ".join(map(str, f)) for f in folds) + "\n")
    classes = ["airplane", "bird", "car", "cat", "deer", "dog", "horse", "monkey", "ship", "truck"]
    (staging / "class_names.txt").write_text("\n".join(classes) + "\n")
    raw = root / "stl10" / "raw"
    raw.mkdir(parents=True)
    with tarfile.open(raw / "stl10_binary.tar.gz", "w:gz") as tar:
        tar.add(staging, arcname="stl10_binary")
    (train_x, train_y), (test_x, test_y) = out["train"], out["test"]
    fold_x = np.concatenate([train_x[f] for f in folds])
    fold_y = np.concatenate([train_y[f] for f in folds])
    return {"images": np.concatenate([train_x, test_x, fold_x]), "labels": np.concatenate([train_y, test_y, fold_y]),
            "classes": classes}


def eurosat(root: Path) -> dict:
    """eurosat/EuroSAT.zip unpacking to 2750/<class>/<class>_<k>.jpg (64x64 RGB JPEGs)."""
    raw = root / "eurosat" / "raw" / "eurosat"
    raw.mkdir(parents=True)
    classes, colors, labels = ["AnnualCrop", "Forest", "River"], [], []
    with zipfile.ZipFile(raw / "EuroSAT.zip", "w") as archive:
        for label, name in enumerate(classes):
            for k in range(1, 4):
                i = len(colors)
                path = raw / f"{name}_{k}.jpg"
                _solid(color_of(i), (64, 64)).save(path, quality=95)
                archive.write(path, f"2750/{name}/{name}_{k}.jpg")
                path.unlink()
                colors.append(color_of(i))
                labels.append(label)
    return {"colors": np.asarray(colors), "labels": np.asarray(labels), "classes": classes}


CELEBA_ATTRS = ["5_o_Clock_Shadow", "Arched_Eyebrows", "Male", "Smiling", "Young"]


def celeba(root: Path, n: int = 16) -> dict:
    """celeba/img_align_celeba.zip (img_align_celeba/000001.jpg.., 178x218) and the five annotation files in the
    original whitespace-separated formats; image i is Male when i % 3 == 0; partition 0 (train) except the last 4."""
    raw = root / "celeba" / "raw" / "celeba"
    raw.mkdir(parents=True)
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    male = {name: i % 3 == 0 for i, name in enumerate(names)}
    with zipfile.ZipFile(raw / "img_align_celeba.zip", "w") as archive:
        for i, name in enumerate(names):
            _solid(color_of(i), (178, 218)).save(raw / name, quality=95)
            archive.write(raw / name, f"img_align_celeba/{name}")
            (raw / name).unlink()

    def table(header: list[str] | None, rows: list[list[int]], count: bool) -> str:
        lines = ([str(n)] if count else []) + ([" ".join(header)] if header else [])
        return "\n".join(lines + [f"{name} " + " ".join(f"{v:2d}" for v in row) for name, row in zip(names, rows)]) + "\n"

    attrs = [[(1 if male[name] else -1) if a == "Male" else -1 for a in CELEBA_ATTRS] for name in names]
    (raw / "list_attr_celeba.txt").write_text(table(CELEBA_ATTRS, attrs, True))
    (raw / "list_eval_partition.txt").write_text(table(None, [[0 if i < n - 4 else 2] for i in range(n)], False))
    (raw / "identity_CelebA.txt").write_text(table(None, [[i % 5] for i in range(n)], False))
    (raw / "list_bbox_celeba.txt").write_text(table(["image_id", "x_1", "y_1", "width", "height"], [[1, 2, 3, 4]] * n, True))
    landmarks = ["lefteye_x", "lefteye_y", "righteye_x", "righteye_y", "nose_x", "nose_y", "leftmouth_x",
                 "leftmouth_y", "rightmouth_x", "rightmouth_y"]
    (raw / "list_landmarks_align_celeba.txt").write_text(table(landmarks, [list(range(10))] * n, True))
    return {"names": names, "male": male, "train": names[: n - 4]}


def tinyimagenet(root: Path, classes: int = 3, per_class: int = 5) -> dict:
    """tiny-imagenet-200.zip: tiny-imagenet-200/{wnids.txt, words.txt, train/<wnid>/images/<wnid>_<k>.JPEG};
    one greyscale JPEG, as the real archive has."""
    raw = root / "tinyimagenet" / "raw"
    raw.mkdir(parents=True)
    wnids = [f"n0{4000000 + 17 * c}" for c in (2, 0, 1)][:classes]  # wnids.txt is not sorted in the original
    colors = {}
    with zipfile.ZipFile(raw / "tiny-imagenet-200.zip", "w") as archive:
        archive.writestr("tiny-imagenet-200/wnids.txt", "\n".join(wnids) + "\n")
        archive.writestr("tiny-imagenet-200/words.txt", "".join(f"{w}\tthing {w}, other name\n" for w in wnids))
        for wnid in wnids:
            for k in range(per_class):
                name = f"{wnid}_{k}.JPEG"
                colors[name] = color_of(len(colors))
                image = _solid(colors[name], (64, 64))
                if k == 0 and wnid == wnids[0]:
                    image, colors[name] = image.convert("L"), None  # a greyscale file
                image.save(raw / name, format="JPEG", quality=95)
                archive.write(raw / name, f"tiny-imagenet-200/train/{wnid}/images/{name}")
                (raw / name).unlink()
    return {"wnids": sorted(wnids), "colors": colors}
