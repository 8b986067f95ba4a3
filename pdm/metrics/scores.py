"""FID, KID, clean-FID and Inception Score of uint8 image arrays, all on the one converted Inception-v3.

Feature extraction follows the two libraries' conventions; the distances are the libraries' own functions:
  * "torch-fidelity": uint8 NCHW into FeatureExtractorInceptionV3, which resizes to 299 internally (TF1 bilinear);
    FID = torch_fidelity.metric_fid.fid_statistics_to_metric, KID = torch_fidelity.metric_kid.kid_features_to_metric.
  * "clean": clean-fid's resizer (cleanfid.resize.build_resizer("clean"): PIL bicubic to 299, float, no
    quantisation), then the same network; distance = cleanfid.fid.frechet_distance on np.mean / np.cov statistics
    (as cleanfid.fid.fid_from_feats). clean-fid's own network download is never triggered.
  * The Fréchet distance itself: see frechet_distance_from_features (exact low-rank form when n < 2048, else the
    libraries' functions above).
  * IS: torch_fidelity.metric_isc.isc_features_to_metric on 'logits_unbiased' from torch-fidelity's own weights,
    only when those weights are present; our converted file has no logits layer (it is NaN-filled on purpose).
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.metadata
import json
import math
import pathlib
import sys
import time
import warnings

import numpy as np
import torch

from pdm.flops import uncounted
from pdm.io import atomic_path
from pdm.metrics import inception

MODES = ("torch-fidelity", "clean")
_KEYS = {"torch-fidelity": "torch_fidelity", "clean": "clean"}
FEATURE_DIM = 2048  # Inception-v3 pool features
# 2: the extractor is named by its tensor hash (extractor_tensors_sha256), no longer by its file's sha256.
REFSTATS_FORMAT = 2


def versions() -> dict:
    return {"torch": torch.__version__, "torch_fidelity": importlib.metadata.version("torch-fidelity"),
            "clean_fid": importlib.metadata.version("clean-fid"), "numpy": np.__version__}


def _validate_images(images, what="images", min_count=2) -> np.ndarray:
    if not isinstance(images, np.ndarray):
        raise TypeError(f"{what} must be a numpy array of shape (N, H, W, C), got {type(images).__name__}")
    if images.dtype != np.uint8:
        raise ValueError(f"{what} must have dtype uint8 (values 0..255), got {images.dtype}")
    if images.ndim != 4:
        raise ValueError(f"{what} must have shape (N, H, W, C) with 4 dimensions, got shape {images.shape}")
    if images.shape[-1] not in (1, 3):
        raise ValueError(f"{what} must have 1 (grey) or 3 (RGB) channels in the last axis, got shape {images.shape}")
    if images.shape[0] < min_count:
        why = " (FID needs a covariance)" if min_count >= 2 else ""
        raise ValueError(f"{what}: need at least {min_count} images{why}, got {images.shape[0]}")
    if images.shape[1] < 2 or images.shape[2] < 2:
        raise ValueError(f"{what} are too small to resize: shape {images.shape}")
    if images.shape[-1] == 1:
        images = np.repeat(images, 3, axis=-1)  # grey -> RGB, as PIL's convert('RGB') does
    return images


def _clean_resize(batch: np.ndarray) -> torch.Tensor:
    """clean-fid's "clean" preprocessing of a uint8 NHWC batch -> float NCHW 299x299 in [0, 255]."""
    from cleanfid.resize import build_resizer

    resize = build_resizer("clean")  # make_resizer("PIL", False, "bicubic", (299, 299)), per image and channel
    return torch.from_numpy(np.stack([resize(img) for img in batch]).transpose(0, 3, 1, 2).copy())


def _batch_features(net, batch: np.ndarray, mode: str, device) -> np.ndarray:
    """Pool features of one uint8 NHWC RGB batch, as the network returns them (float32, on the CPU)."""
    if mode == "torch-fidelity":
        x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device)
        feats = net(x)[0]
    else:
        feats = inception.forward_normalised_299(net, _clean_resize(batch).to(device))
    return feats.cpu().numpy()


def _device_label(device) -> str:
    """What decides a chunk's bits besides its images: the device type and, for a GPU, its model."""
    device = torch.device(device)
    if device.type == "cuda":
        return f"cuda:{torch.cuda.get_device_name(device)}"
    return device.type


CHUNK_PREFIX = "features-"
CHUNK_FORMAT = 2  # 2: CPU features in channels_last layout (inception.EXTRACTOR_LAYOUT)


def _chunk_path(work_dir: pathlib.Path, mode: str, start: int, stop: int) -> pathlib.Path:
    return work_dir / f"{CHUNK_PREFIX}{mode}-{start:09d}-{stop:09d}.npz"


def _load_chunk(path: pathlib.Path, expected: dict, count: int) -> np.ndarray | None:
    """The chunk's features if the file holds exactly this chunk (same meta, shape), else None (it is recomputed)."""
    try:
        with np.load(path, allow_pickle=False) as data:
            if json.loads(str(data["meta"])) != expected:
                return None
            feats = data["feats"]
    except Exception:  # missing, half-copied, another format: recompute rather than fail a long run
        return None
    return feats if feats.shape == (count, FEATURE_DIM) else None


@torch.no_grad()
def extract_features(images_uint8: np.ndarray, mode: str, device="cpu", batch_size=64, work_dir=None,
                     identity: str | None = None, chunk_size: int | None = None) -> np.ndarray:
    """(N, 2048) float64 pool features of uint8 (N, H, W, C) images; mode "torch-fidelity" or "clean".

    With `work_dir`, the images are processed in chunks of `chunk_size` (default: 256 rounded up to a multiple of
    `batch_size`) and each finished chunk is written atomically to its own file there, so a run killed after hours
    resumes where it stopped: a rerun loads the finished chunks and computes only the rest. A chunk file is re-used
    only when everything that decides its bits matches: `identity` (the caller's name for the images, e.g. a sampling
    identity), mode, image range, the chunk's image bytes and shape, batch size, extractor, device and torch version;
    anything else is recomputed and overwritten. Chunks hold whole batches, so the features are bitwise those of an
    uninterrupted run. Remove the folder when done (remove_feature_chunks).
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    if int(batch_size) < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    images = _validate_images(images_uint8, min_count=1)
    net = inception.build_feature_extractor(device)
    if work_dir is None:
        batches = [_batch_features(net, images[i:i + batch_size], mode, device)
                   for i in range(0, len(images), batch_size)]
        return np.concatenate(batches).astype(np.float64)

    if chunk_size is None:
        chunk_size = -(-256 // batch_size) * batch_size
    if int(chunk_size) < 1 or chunk_size % batch_size:
        raise ValueError(f"chunk_size ({chunk_size}) must be a positive multiple of batch_size ({batch_size}), so "
                         "that chunks split into the same batches as an uninterrupted run; pass e.g. "
                         f"chunk_size={4 * batch_size}")
    work_dir = pathlib.Path(work_dir)
    common = {"format": CHUNK_FORMAT, "identity": identity, "mode": mode, "batch_size": int(batch_size),
              "extractor_tensors_sha256": inception.extractor_identity(), "device": _device_label(device),
              "torch": torch.__version__}
    chunks, reused = [], 0
    for start in range(0, len(images), chunk_size):
        part = np.ascontiguousarray(images[start:start + chunk_size])
        stop = start + len(part)
        path = _chunk_path(work_dir, mode, start, stop)
        expected = {**common, "start": start, "stop": stop, "image_shape": list(part.shape),
                    "images_sha256": hashlib.sha256(part).hexdigest()}
        feats = _load_chunk(path, expected, len(part))
        if feats is None:
            feats = np.concatenate([_batch_features(net, part[i:i + batch_size], mode, device)
                                    for i in range(0, len(part), batch_size)])
            with atomic_path(path) as tmp, open(tmp, "wb") as fh:  # a file object: np.savez adds no second ".npz"
                np.savez(fh, feats=feats, meta=np.array(json.dumps(expected)))
        else:
            reused += 1
        chunks.append(feats)
    if reused:
        print(f"extract_features({mode}): re-used {reused} of {len(chunks)} finished chunks from {work_dir}",
              file=sys.stderr)
    return np.concatenate(chunks).astype(np.float64)


def remove_feature_chunks(work_dir) -> None:
    """Delete the chunk files (and leftover temporary files) of extract_features, then the folder if it is empty."""
    work_dir = pathlib.Path(work_dir)
    if not work_dir.is_dir():
        return
    for path in [*work_dir.glob(f"{CHUNK_PREFIX}*.npz"), *work_dir.glob(f".{CHUNK_PREFIX}*")]:
        path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):  # something else lives there: leave the folder
        work_dir.rmdir()


def feature_stats(feats: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """mu, sigma as both libraries compute them (torch_fidelity.metric_fid.fid_features_to_statistics, np.cov)."""
    return np.mean(feats, axis=0), np.cov(feats, rowvar=False)


def fid_torch_fidelity(mu1, sigma1, mu2, sigma2) -> float:
    """torch-fidelity's Fréchet distance (trace term via eigenvalues of sigma1 @ sigma2)."""
    from torch_fidelity.metric_fid import fid_statistics_to_metric, KEY_METRIC_FID

    return float(fid_statistics_to_metric({"mu": mu1, "sigma": sigma1}, {"mu": mu2, "sigma": sigma2},
                                          verbose=False)[KEY_METRIC_FID])


def fid_clean(mu1, sigma1, mu2, sigma2) -> float:
    """clean-fid's Fréchet distance (cleanfid.fid.frechet_distance: scipy sqrtm, eps retry on singular products)."""
    from cleanfid.fid import frechet_distance

    # clean-fid passes scipy's deprecated `disp` argument and prints its own notes: keep stdout clean.
    with warnings.catch_warnings(), contextlib.redirect_stdout(sys.stderr):
        warnings.simplefilter("ignore", DeprecationWarning)
        return float(frechet_distance(mu1, sigma1, mu2, sigma2))


def frechet_distance_from_features(feats1: np.ndarray, feats2: np.ndarray, mode: str) -> tuple[float, str]:
    """Fréchet distance of two feature sets: ||mu1 - mu2||^2 + tr(S1) + tr(S2) - 2 tr((S1 S2)^(1/2)).

    With fewer images than feature dimensions (every CPU-scale run: n of a few hundred, d = 2048), S1 and S2 have
    rank < d and the trace term is exact and cheap: the non-zero eigenvalues of S1 S2 are the squared singular values
    of M = X1c X2c^T / sqrt((n1 - 1)(n2 - 1)) (X centred), so tr((S1 S2)^(1/2)) = ||M||_* (nuclear norm). That is an
    (n1 x n2) SVD instead of a 2048 x 2048 matrix square root (10-40 s on two cores, and ill-conditioned exactly when
    the covariances are singular). With more images than dimensions it calls the library's own function.
    Returns (distance, which computation was used); a test checks both agree.
    """
    x1, x2 = np.asarray(feats1, np.float64), np.asarray(feats2, np.float64)
    (n1, dim), n2 = x1.shape, x2.shape[0]
    if min(n1, n2) > dim:
        library = fid_torch_fidelity if mode == "torch-fidelity" else fid_clean
        return library(*feature_stats(x1), *feature_stats(x2)), "library"
    c1, c2 = x1 - x1.mean(0), x2 - x2.mean(0)
    trace_cross = np.linalg.svd(c1 @ c2.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    mean_term = np.sum((x1.mean(0) - x2.mean(0)) ** 2)
    trace_1, trace_2 = np.sum(c1 * c1) / (n1 - 1), np.sum(c2 * c2) / (n2 - 1)
    return float(mean_term + trace_1 + trace_2 - 2 * trace_cross), "exact-lowrank"


def kid_torch_fidelity(feats1, feats2, subset_size, subsets, seed) -> tuple[float, float]:
    """torch-fidelity's KID (cubic polynomial kernel, unbiased MMD^2 over seeded random subsets)."""
    from torch_fidelity.metric_kid import kid_features_to_metric, KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD

    out = kid_features_to_metric(torch.from_numpy(np.asarray(feats1)), torch.from_numpy(np.asarray(feats2)),
                                 kid_subsets=int(subsets), kid_subset_size=int(subset_size), rng_seed=int(seed),
                                 verbose=False)
    return out[KEY_METRIC_KID_MEAN], out[KEY_METRIC_KID_STD]


# --- bootstrap intervals (issue 7) -------------------------------------------------------------------------------
BOOTSTRAP_SEED = 0  # fixed: replicate b draws the same sample indices for every method and seed (a paired bootstrap)


def bootstrap_indices(n: int, replicate: int) -> np.ndarray:
    """Sample indices of bootstrap replicate `replicate` (n draws with replacement from 0..n-1).

    A generator seeded by (BOOTSTRAP_SEED, replicate) alone: every method samples the same sample seeds 0..n-1, so
    replicate b of method A and of method B resample the same seeds, and replicate-wise differences are a paired
    bootstrap of the difference (Efron & Tibshirani 1993, ch. 6). Replicate b does not depend on how many are drawn.
    """
    return np.random.default_rng([BOOTSTRAP_SEED, int(replicate)]).integers(0, n, size=n)


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """KID's kernel k(x, y) = (x.y / d + 1)^3 (Binkowski et al. 2018; torch_fidelity.metric_kid.polynomial_kernel)."""
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def _kid_resample(k_xx: np.ndarray, k_xy: np.ndarray, idx: np.ndarray, k_yy_term: float) -> float:
    """Unbiased MMD^2 of the resample `idx` against all reals, from precomputed kernel matrices.

    The within-sample term averages over pairs of draws of *different* samples: a sample drawn twice is not a pair
    of two samples, and counting k(x, x) would bias every replicate upwards by ~k(x, x) / n. A resample of one
    sample drawn n times (likely only for n of 2 or 3) has no such pair: then every off-diagonal pair counts.
    """
    distinct = idx[:, None] != idx[None, :]  # (n, n)
    if not distinct.any():
        distinct = ~np.eye(len(idx), dtype=bool)
    xx = k_xx[np.ix_(idx, idx)][distinct].mean()
    return float(xx + k_yy_term - 2.0 * k_xy[idx].mean())


def bootstrap_scores(feats: np.ndarray, ref_feats: np.ndarray, replicates: int, mode: str = "torch-fidelity"):
    """FID and KID of `replicates` bootstrap resamples of the generated features against the fixed real features.

    The real images are the fixed target, so only the generated samples are resampled. FID per replicate is the
    same computation as the point estimate (frechet_distance_from_features). KID per replicate is the unbiased
    MMD^2 with KID's cubic polynomial kernel over the whole resample against all reals (kernel matrices computed
    once and indexed per replicate, see _kid_resample): it estimates the same quantity as torch-fidelity's subset
    average (kid_torch_fidelity) at a fraction of the cost: re-running its 100 subsets of 200 took 5.3 s per
    replicate on two busy cores, ~18 minutes for 200 replicates. Returns (fid list, kid list), one per replicate.
    """
    x, y = np.asarray(feats, np.float64), np.asarray(ref_feats, np.float64)
    n, m = len(x), len(y)
    k_xx, k_xy, k_yy = polynomial_kernel(x, x), polynomial_kernel(x, y), polynomial_kernel(y, y)
    k_yy_term = (k_yy.sum() - np.trace(k_yy)) / (m * (m - 1))
    fids, kids = [], []
    for b in range(int(replicates)):
        idx = bootstrap_indices(n, b)
        fids.append(frechet_distance_from_features(x[idx], y, mode)[0])
        kids.append(_kid_resample(k_xx, k_xy, idx, k_yy_term))
    return fids, kids


def _bootstrap_fields(feats, ref_feats, replicates: int, confidence: float, fid: float, kid: float) -> dict:
    """The record's bootstrap fields: replicates, their bias-corrected percentile intervals around the estimates
    (pdm.uncertainty.percentile_interval) at `confidence`, and the seconds it took (a timing: it stays out of
    main.csv). With 0 replicates the fields are present and empty (null / []), the timing too, so that a record
    without a bootstrap stays a pure function of its inputs."""
    from pdm.uncertainty import percentile_interval

    started = time.perf_counter()
    fids, kids = bootstrap_scores(feats, ref_feats, replicates) if replicates else ([], [])
    fid_low, fid_high = percentile_interval(fids, confidence, estimate=fid)
    kid_low, kid_high = percentile_interval(kids, confidence, estimate=kid)

    def finite(value):
        return None if math.isnan(value) else value

    return {"bootstrap_samples": replicates, "bootstrap_confidence": confidence, "fid_bootstrap": fids,
            "kid_bootstrap": kids, "fid_ci_low": finite(fid_low), "fid_ci_high": finite(fid_high),
            "kid_ci_low": finite(kid_low), "kid_ci_high": finite(kid_high),
            "bootstrap_seconds": time.perf_counter() - started if replicates else None}


REFSTATS_FIX = "delete it and recompute it (`pdm-bench refstats ...` or rerun snakemake)"


@uncounted()  # a measurement: never part of a stage-1 FLOP count (LDM's rFID)
def compute_reference_stats(images_uint8, out_path, device="cpu", work_dir=None, identity=None,
                            clean_fid: bool = True) -> dict:
    """Write features, mu/sigma and metadata of the real images to an .npz atomically.

    Both modes by default; `clean_fid=False` writes the torch-fidelity mode only (one Inception pass per image instead
    of two), and the metadata's `modes` says so: scoring clean-FID against such a file is refused.
    `work_dir` and `identity` make the feature extraction resumable (see extract_features); the caller removes
    `work_dir` once the file is written (remove_feature_chunks).
    """
    images = _validate_images(images_uint8, "reference images")
    modes = MODES if clean_fid else ("torch-fidelity",)
    arrays = {}
    for mode in modes:
        feats = extract_features(images, mode, device=device, work_dir=work_dir, identity=identity)
        mu, sigma = feature_stats(feats)
        key = _KEYS[mode]
        arrays.update({f"feats_{key}": feats, f"mu_{key}": mu, f"sigma_{key}": sigma})
    metadata = {"format": REFSTATS_FORMAT, "extractor": inception.EXTRACTOR_NAME,
                "extractor_tensors_sha256": inception.extractor_identity(), "versions": versions(),
                "num_images": int(images.shape[0]), "image_shape": [int(s) for s in images_uint8.shape[1:]],
                "modes": list(modes), "identity": identity}  # the caller's refstats identity (pdm.identity), checked by the evaluation
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:  # a file object: np.savez adds no second ".npz"
        np.savez(fh, metadata=np.array(json.dumps(metadata)), **arrays)
    return metadata


class _NotRefstats(Exception):
    """Internal: why a file cannot be reference statistics (turned into one ValueError by load_reference_stats)."""


def _short(exc: Exception) -> str:
    text = (str(exc).splitlines() or [""])[0]
    return f"{type(exc).__name__}: {text[:120]}"


def _read_refstats(path: pathlib.Path) -> tuple[dict, dict]:
    """Parse and shape-check a refstats file; raises _NotRefstats with a short reason for anything else."""
    try:
        data = np.load(path, allow_pickle=False)
    except ValueError as exc:  # numpy falls back to unpickling whatever is neither .npz nor plain .npy
        if "pickle" in str(exc).lower():
            raise _NotRefstats("not an .npz archive; numpy would have to unpickle it, which is never done") from None
        raise _NotRefstats(f"not an .npz archive: {_short(exc)}") from None
    except Exception as exc:  # empty, truncated, a bad zip, ...
        raise _NotRefstats(f"not a readable .npz archive: {_short(exc)}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise _NotRefstats(f"a single .npy array of shape {getattr(data, 'shape', '?')}, not an .npz archive")
    with data:
        try:
            if "metadata" not in data.files:
                raise _NotRefstats("no metadata")
            metadata = json.loads(str(data["metadata"]))
            if not isinstance(metadata, dict):
                raise _NotRefstats("its metadata is not a JSON object")
            modes = _refstats_modes(metadata)
            wanted = [f"{p}_{_KEYS[m]}" for p in ("feats", "mu", "sigma") for m in modes]
            missing = [k for k in wanted if k not in data.files]
            if missing:
                raise _NotRefstats(f"missing arrays {missing}")
            arrays = {k: data[k] for k in data.files if k != "metadata"}
        except _NotRefstats:
            raise
        except Exception as exc:  # object arrays, damaged members, bad JSON
            reason = "an array holds pickled (object) data" if "pickle" in str(exc).lower() else \
                f"a damaged member: {_short(exc)}"
            raise _NotRefstats(reason) from None
    n = metadata.get("num_images")
    for mode in modes:
        key = _KEYS[mode]
        shapes = {f"feats_{key}": (n, FEATURE_DIM), f"mu_{key}": (FEATURE_DIM,),
                  f"sigma_{key}": (FEATURE_DIM, FEATURE_DIM)}
        for name, shape in shapes.items():
            if arrays[name].shape != shape or arrays[name].dtype != np.float64:
                raise _NotRefstats(f"{name} has shape {arrays[name].shape} and dtype {arrays[name].dtype}, "
                                   f"expected {shape} float64")
    return metadata, arrays


def _refstats_modes(metadata: dict) -> tuple[str, ...]:
    """The feature modes a refstats file holds: its `modes` (files written before it existed hold both)."""
    modes = tuple(metadata.get("modes", MODES))
    if "torch-fidelity" not in modes or not set(modes) <= set(MODES):
        raise _NotRefstats(f"its metadata lists feature modes {list(modes)}; expected torch-fidelity and optionally clean")
    return modes


def load_reference_stats(path) -> tuple[dict, dict]:
    """(metadata, arrays) of a refstats file, checked against the extractor in use (ValueError otherwise)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics not found: {path} (make them with compute_reference_stats)")
    try:
        metadata, arrays = _read_refstats(path)
    except _NotRefstats as exc:
        raise ValueError(f"{path} is not a pdm-bench reference-statistics file ({exc}); {REFSTATS_FIX}") from None
    if metadata.get("format") != REFSTATS_FORMAT:
        raise ValueError(f"{path} has reference-statistics format {metadata.get('format')!r}, this pdm-bench reads "
                         f"format {REFSTATS_FORMAT} (older files name the extractor by a file hash); {REFSTATS_FIX}")
    if metadata.get("extractor") != inception.EXTRACTOR_NAME:
        raise ValueError(f"{path} was made with extractor {metadata.get('extractor')!r}, "
                         f"not {inception.EXTRACTOR_NAME!r}; {REFSTATS_FIX}")
    identity = inception.extractor_identity()
    if metadata.get("extractor_tensors_sha256") != identity:
        raise ValueError(f"{path} was made with Inception tensors sha256 {metadata.get('extractor_tensors_sha256')}, "
                         f"but the extractor in use has tensors sha256 {identity}; {REFSTATS_FIX}")
    return metadata, arrays


def _inception_score(samples: np.ndarray, weights_path, device, seed: int) -> tuple[float, float]:
    from torch_fidelity.metric_isc import isc_features_to_metric, KEY_METRIC_ISC_MEAN, KEY_METRIC_ISC_STD

    net = inception._new_extractor(weights_path, features=("logits_unbiased",)).to(device)
    with torch.no_grad():
        logits = torch.cat([net(torch.from_numpy(np.ascontiguousarray(samples[i:i + 64].transpose(0, 3, 1, 2)))
                                .to(device))[0].cpu() for i in range(0, len(samples), 64)])
    if not torch.isfinite(logits).all():
        raise RuntimeError(f"non-finite logits from {weights_path}; refusing to report an Inception Score")
    out = isc_features_to_metric(logits, splits=min(10, len(samples)), shuffle=True, rng_seed=seed)
    return out[KEY_METRIC_ISC_MEAN], out[KEY_METRIC_ISC_STD]


@uncounted()  # a measurement: never part of a stage-1 FLOP count (LDM's rFID)
def score_samples(samples_uint8, refstats_path, device="cpu", kid_subset_size=1000, kid_subsets=100, seed=0,
                  allow_download=False, work_dir=None, identity=None, bootstrap_samples=0, confidence=0.95,
                  clean_fid=True) -> dict:
    """FID, KID, clean-FID (and IS when its weights are present) of samples against reference statistics.

    `clean_fid=False` skips clean-FID (its second Inception pass per image); the record then says None.

    Every network runs on `device`. `work_dir` and `identity` make the feature extraction resumable (see
    extract_features); the caller removes `work_dir` once the record is written (remove_feature_chunks).
    `bootstrap_samples` > 0 adds that many bootstrap replicates of FID and KID and their percentile intervals at
    `confidence` (see bootstrap_scores and _bootstrap_fields).
    """
    if kid_subset_size < 2 or kid_subsets < 1:
        raise ValueError(f"need kid_subset_size >= 2 and kid_subsets >= 1, got {kid_subset_size}, {kid_subsets}")
    if int(bootstrap_samples) < 0:
        raise ValueError(f"bootstrap_samples must be >= 0 (0 turns the bootstrap off), got {bootstrap_samples}")
    samples = _validate_images(samples_uint8, "samples")
    metadata, ref = load_reference_stats(refstats_path)
    n, n_real = int(samples.shape[0]), int(metadata["num_images"])
    subset = min(int(kid_subset_size), n, n_real)

    feats = extract_features(samples, "torch-fidelity", device=device, work_dir=work_dir, identity=identity)
    fid, frechet = frechet_distance_from_features(feats, ref["feats_torch_fidelity"], "torch-fidelity")
    kid_mean, kid_std = kid_torch_fidelity(feats, ref["feats_torch_fidelity"], subset, kid_subsets, seed)
    clean = None
    if clean_fid:
        if "feats_clean" not in ref:
            raise ValueError(f"{refstats_path} holds no clean-FID features (made with eval.clean_fid: false); remake "
                             "the reference statistics with clean-FID on (snakemake does this when eval.clean_fid is "
                             "true), or score with clean_fid=False")
        clean_feats = extract_features(samples, "clean", device=device, work_dir=work_dir, identity=identity)
        clean, _ = frechet_distance_from_features(clean_feats, ref["feats_clean"], "clean")
    bootstrap = _bootstrap_fields(feats, ref["feats_torch_fidelity"], int(bootstrap_samples), confidence,
                                  fid, kid_mean)

    is_mean = is_std = None
    logits_path, is_missing = inception.logits_weights_status(allow_download=allow_download)
    if logits_path is not None:
        is_mean, is_std = _inception_score(samples, logits_path, device, int(seed))

    return {
        "fid": fid,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subset_size": subset,
        "clean_fid": clean,
        "frechet_trace": frechet,
        "is_mean": is_mean,
        "is_std": is_std,
        "is_missing": is_missing,
        **bootstrap,
        "num_samples": n,
        "num_real": n_real,
        "extractor": inception.EXTRACTOR_NAME,
        "extractor_tensors_sha256": inception.extractor_identity(),
        "refstats_tensors_sha256": metadata["extractor_tensors_sha256"],
        "versions": versions(),
        "refstats_versions": metadata.get("versions"),
    }
