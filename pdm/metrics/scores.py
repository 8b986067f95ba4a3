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
import importlib.metadata
import json
import pathlib
import sys
import warnings

import numpy as np
import torch

from pdm.io import atomic_path
from pdm.metrics import inception

MODES = ("torch-fidelity", "clean")
_KEYS = {"torch-fidelity": "torch_fidelity", "clean": "clean"}
REFSTATS_FORMAT = 1


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


@torch.no_grad()
def extract_features(images_uint8: np.ndarray, mode: str, device="cpu", batch_size=64) -> np.ndarray:
    """(N, 2048) float64 pool features of uint8 (N, H, W, C) images; mode "torch-fidelity" or "clean"."""
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES}, got {mode!r}")
    images = _validate_images(images_uint8, min_count=1)
    net = inception.build_feature_extractor(device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = images[start:start + batch_size]
        if mode == "torch-fidelity":
            x = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2))).to(device)
            feats = net(x)[0]
        else:
            feats = inception.forward_normalised_299(net, _clean_resize(batch).to(device))
        out.append(feats.cpu().numpy().astype(np.float64))
    return np.concatenate(out)


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


def _current_sha256() -> str:
    return inception.weights_sha256(inception.converted_weights_path())


def compute_reference_stats(images_uint8, out_path, device="cpu") -> dict:
    """Write features (both modes), mu/sigma and metadata of the real images to an .npz atomically."""
    images = _validate_images(images_uint8, "reference images")
    arrays = {}
    for mode in MODES:
        feats = extract_features(images, mode, device=device)
        mu, sigma = feature_stats(feats)
        key = _KEYS[mode]
        arrays.update({f"feats_{key}": feats, f"mu_{key}": mu, f"sigma_{key}": sigma})
    metadata = {"format": REFSTATS_FORMAT, "extractor": inception.EXTRACTOR_NAME,
                "extractor_weights_sha256": _current_sha256(), "versions": versions(),
                "num_images": int(images.shape[0]), "image_shape": [int(s) for s in images_uint8.shape[1:]]}
    with atomic_path(out_path) as tmp, open(tmp, "wb") as fh:  # a file object: np.savez adds no second ".npz"
        np.savez(fh, metadata=np.array(json.dumps(metadata)), **arrays)
    return metadata


def load_reference_stats(path) -> tuple[dict, dict]:
    """(metadata, arrays) of a refstats file, checked against the extractor in use (ValueError otherwise)."""
    path = pathlib.Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"reference statistics not found: {path} (make them with compute_reference_stats)")
    with np.load(path, allow_pickle=False) as data:
        if "metadata" not in data.files:
            raise ValueError(f"{path} is not a pdm-bench refstats file (no metadata)")
        metadata = json.loads(str(data["metadata"]))
        arrays = {k: data[k] for k in data.files if k != "metadata"}
    missing = sorted({f"{p}_{_KEYS[m]}" for p in ("feats", "mu", "sigma") for m in MODES} - set(arrays))
    if missing:
        raise ValueError(f"{path} lacks {missing}; recompute the reference statistics")
    if metadata.get("extractor") != inception.EXTRACTOR_NAME:
        raise ValueError(f"{path} was made with extractor {metadata.get('extractor')!r}, "
                         f"not {inception.EXTRACTOR_NAME!r}; recompute the reference statistics")
    sha = _current_sha256()
    if metadata.get("extractor_weights_sha256") != sha:
        raise ValueError(f"{path} was made with Inception weights sha256 {metadata.get('extractor_weights_sha256')}, "
                         f"but the weights in use have sha256 {sha}; recompute the reference statistics")
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


def score_samples(samples_uint8, refstats_path, device="cpu", kid_subset_size=1000, kid_subsets=100, seed=0,
                  allow_download=False) -> dict:
    """FID, KID, clean-FID (and IS when its weights are present) of samples against reference statistics."""
    if kid_subset_size < 2 or kid_subsets < 1:
        raise ValueError(f"need kid_subset_size >= 2 and kid_subsets >= 1, got {kid_subset_size}, {kid_subsets}")
    samples = _validate_images(samples_uint8, "samples")
    metadata, ref = load_reference_stats(refstats_path)
    n, n_real = int(samples.shape[0]), int(metadata["num_images"])
    subset = min(int(kid_subset_size), n, n_real)

    feats = extract_features(samples, "torch-fidelity", device=device)
    fid, frechet = frechet_distance_from_features(feats, ref["feats_torch_fidelity"], "torch-fidelity")
    kid_mean, kid_std = kid_torch_fidelity(feats, ref["feats_torch_fidelity"], subset, kid_subsets, seed)
    clean_fid, _ = frechet_distance_from_features(extract_features(samples, "clean", device=device), ref["feats_clean"], "clean")

    is_mean = is_std = None
    logits_path, is_missing = inception.logits_weights_status(allow_download=allow_download)
    if logits_path is not None:
        is_mean, is_std = _inception_score(samples, logits_path, device, int(seed))

    return {
        "fid": fid,
        "kid_mean": kid_mean,
        "kid_std": kid_std,
        "kid_subset_size": subset,
        "clean_fid": clean_fid,
        "frechet_trace": frechet,
        "is_mean": is_mean,
        "is_std": is_std,
        "is_missing": is_missing,
        "num_samples": n,
        "num_real": n_real,
        "extractor": inception.EXTRACTOR_NAME,
        "extractor_weights_sha256": _current_sha256(),
        "refstats_weights_sha256": metadata["extractor_weights_sha256"],
        "versions": versions(),
        "refstats_versions": metadata.get("versions"),
    }
