"""The native files each dataset needs under `{root}/{name}/raw/`, checked by checksum, extracted, or downloaded.

The file names, URLs and md5 sums are torchvision's own (read off its dataset classes, not copied), except EuroSAT's
archive (inline in `torchvision.datasets.EuroSAT.download`) and Tiny ImageNet (no torchvision class). Offline, the
default, nothing is fetched: a missing file is one DataError naming each file, its md5, its URL and its folder.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from pdm.data import DataError


@dataclass(frozen=True)
class RawFile:
    path: str  # relative to the raw folder
    md5: str
    url: str
    extracts_to: str | None = None  # for an archive: the folder it unpacks to (relative to the raw folder)

    def ready(self, raw: Path) -> bool:
        return (raw / self.extracts_to).is_dir() if self.extracts_to else (raw / self.path).is_file()


def _cifar10() -> list[RawFile]:
    from torchvision.datasets import CIFAR10

    return [RawFile(CIFAR10.filename, CIFAR10.tgz_md5, CIFAR10.url, CIFAR10.base_folder)]


def _stl10() -> list[RawFile]:
    from torchvision.datasets import STL10

    return [RawFile(STL10.filename, STL10.tgz_md5, STL10.url, STL10.base_folder)]


# torchvision 0.28's EuroSAT.download() (the URL pins a commit of torchgeo's copy on the Hugging Face hub)
EUROSAT_URL = "https://huggingface.co/datasets/torchgeo/eurosat/resolve/c877bcd43f099cd0196738f714544e355477f3fd/EuroSAT.zip"
EUROSAT_MD5 = "c8fa014336c82ac7804f0398fcb19387"


def _eurosat() -> list[RawFile]:
    return [RawFile("eurosat/EuroSAT.zip", EUROSAT_MD5, EUROSAT_URL, "eurosat/2750")]


def _celeba() -> list[RawFile]:
    from torchvision.datasets import CelebA

    files = []
    for drive_id, md5, filename in CelebA.file_list:  # the aligned-image zip and the five annotation files
        url = f"https://drive.google.com/file/d/{drive_id}"
        extracts_to = f"{CelebA.base_folder}/img_align_celeba" if filename.endswith(".zip") else None
        files.append(RawFile(f"{CelebA.base_folder}/{filename}", md5, url, extracts_to))
    return files


def _tinyimagenet() -> list[RawFile]:
    from pdm.datasets.tinyimagenet import FOLDER, MD5, URL, ZIP

    return [RawFile(ZIP, MD5, URL, FOLDER)]


REQUIREMENTS: dict[str, Callable[[], list[RawFile]]] = {
    "cifar10": _cifar10, "stl10": _stl10, "eurosat": _eurosat, "celeba": _celeba, "tinyimagenet": _tinyimagenet,
}


def _download(name: str, raw: Path) -> None:
    """torchvision's own downloaders (each checks its md5); Tiny ImageNet's checked downloader."""
    import torchvision.datasets as tvd

    raw.mkdir(parents=True, exist_ok=True)
    if name == "cifar10":
        tvd.CIFAR10(raw, train=True, download=True)
    elif name == "stl10":
        tvd.STL10(raw, split="train", download=True)
    elif name == "eurosat":
        tvd.EuroSAT(raw, download=True)
    elif name == "celeba":
        try:
            tvd.CelebA(raw, split="train", download=True)
        except RuntimeError as err:  # torchvision fetches CelebA from Google Drive through gdown (quota-limited)
            raise DataError(f"downloading CelebA failed ({err}); `pip install gdown` if it is missing, or place the "
                            f"files by hand (run `pdm-bench data prepare celeba` without --download to list them)") from None
    else:
        from pdm.datasets.tinyimagenet import download

        download(raw)


def ensure_raw(name: str, raw: Path, download: bool) -> list[RawFile]:
    """Make every native file of `name` ready under `raw` (verify and extract archives placed there; download the
    missing ones if `download`); returns the requirements. Raises DataError naming what is missing or corrupt."""
    from torchvision.datasets import utils as tv_utils

    requirements = REQUIREMENTS[name]()
    missing = []
    for item in requirements:
        if item.ready(raw):
            continue
        path = raw / item.path
        if not path.is_file():
            missing.append(item)
            continue
        if not tv_utils.check_integrity(path, item.md5):
            raise DataError(
                f"{path} does not have md5 {item.md5} (a partial or different download); delete it and place the "
                f"original from {item.url}, or delete it and pass --download"
            )
        if item.extracts_to:
            print(f"extracting {path} ...", flush=True)
            tv_utils.extract_archive(str(path), str(path.parent))
            if not item.ready(raw):
                raise DataError(f"{path} did not unpack to {raw / item.extracts_to}; it is not the expected archive")
    if missing and download:
        _download(name, raw)
        missing = [item for item in requirements if not item.ready(raw)]
    if missing:
        lines = "\n".join(f"  place {raw / item.path}  (md5 {item.md5}, from {item.url})"
                          + (f"\n    or its unpacked folder {raw / item.extracts_to}/" if item.extracts_to else "")
                          for item in missing)
        raise DataError(f"{name}: native files missing (offline: nothing is downloaded):\n{lines}\n"
                        f"or pass --download to fetch them")
    return requirements
