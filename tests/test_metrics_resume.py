"""Resumable feature extraction (a killed run loses at most one chunk) and junk reference-statistics files.

Inception runs at ~13 images/s on two cores: a handful of 16x16 images in chunks of 8 and batches of 4.
"""

import json
import zipfile

import numpy as np
import pytest

from pdm.metrics import inception, scores

NOT_REFSTATS = r"is not a pdm-bench reference-statistics file \((?P<reason>.*)\); delete it and recompute it " \
               r"\(`pdm-bench refstats \.\.\.` or rerun snakemake\)"


@pytest.fixture(scope="module", autouse=True)
def isolated_env(isolated_inception_cache):
    return isolated_inception_cache


@pytest.fixture(scope="module")
def images():
    """20 images: chunks [0, 8), [8, 16), [16, 20) of batches of 4; smooth gradients plus noise."""
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 16)[None, :, None, None] * rng.uniform(0.2, 1.0, size=(20, 1, 1, 3))
    return np.clip(ramp + rng.normal(0, 20, size=(20, 16, 16, 3)), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def uninterrupted(images):
    return scores.extract_features(images, "torch-fidelity", batch_size=4)


class Killed(RuntimeError):
    pass


def count_batches(monkeypatch, fail_at=None):
    """Replace the per-batch forward with a counting one; the call number `fail_at` dies like a killed job."""
    calls = []
    real = scores._batch_features

    def forward(net, batch, mode, device):
        calls.append(len(batch))
        if fail_at is not None and len(calls) == fail_at:
            raise Killed(f"killed at batch {fail_at}")
        return real(net, batch, mode, device)

    monkeypatch.setattr(scores, "_batch_features", forward)
    return calls


def test_killed_extraction_resumes_with_bitwise_equal_features(images, uninterrupted, tmp_path, monkeypatch):
    work = tmp_path / "work"
    kw = dict(batch_size=4, chunk_size=8, work_dir=work, identity="samples-abc")

    calls = count_batches(monkeypatch, fail_at=4)  # dies in the second chunk's second batch
    with pytest.raises(Killed):
        scores.extract_features(images, "torch-fidelity", **kw)
    assert sorted(p.name for p in work.iterdir()) == ["features-torch-fidelity-000000000-000000008.npz"]

    calls = count_batches(monkeypatch)
    resumed = scores.extract_features(images, "torch-fidelity", **kw)
    assert calls == [4, 4, 4]  # chunk [8, 16) (two batches) and chunk [16, 20); chunk [0, 8) was loaded
    assert resumed.dtype == np.float64 and np.array_equal(resumed, uninterrupted)
    assert len(list(work.glob("features-torch-fidelity-*.npz"))) == 3

    calls = count_batches(monkeypatch)
    assert np.array_equal(scores.extract_features(images, "torch-fidelity", **kw), uninterrupted)
    assert calls == []  # everything finished: nothing is recomputed

    # Another identity (other samples), other images under the same identity or a damaged file: recomputed.
    calls = count_batches(monkeypatch)
    scores.extract_features(images, "torch-fidelity", **{**kw, "identity": "samples-xyz"})
    assert calls == [4, 4, 4, 4, 4]
    calls = count_batches(monkeypatch)
    changed = images.copy()
    changed[9, 0, 0, 0] ^= 1
    scores.extract_features(changed, "torch-fidelity", **{**kw, "identity": "samples-xyz"})
    assert calls == [4, 4]  # only the chunk holding image 9
    calls = count_batches(monkeypatch)
    assert np.array_equal(scores.extract_features(images, "torch-fidelity", **kw), uninterrupted)
    assert calls == [4, 4, 4, 4, 4]  # identity back to samples-abc: all chunks were overwritten above
    (work / "features-torch-fidelity-000000016-000000020.npz").write_bytes(b"half a file")
    calls = count_batches(monkeypatch)
    assert np.array_equal(scores.extract_features(images, "torch-fidelity", **kw), uninterrupted)
    assert calls == [4]  # only the damaged chunk

    scores.remove_feature_chunks(work)
    assert not work.exists()


def test_chunked_clean_mode_equals_unchunked(images, tmp_path):
    subset = images[:10]
    plain = scores.extract_features(subset, "clean", batch_size=4)
    chunked = scores.extract_features(subset, "clean", batch_size=4, chunk_size=8, work_dir=tmp_path / "w")
    assert np.array_equal(plain, chunked)
    with pytest.raises(ValueError, match="multiple of batch_size"):
        scores.extract_features(subset, "clean", batch_size=4, chunk_size=6, work_dir=tmp_path / "w")


def test_refstats_and_scores_resume_from_work_dir(images, tmp_path, monkeypatch):
    real, fake = images[:10], images[10:]
    ref_work, score_work, ref_path = tmp_path / "ref-work", tmp_path / "score-work", tmp_path / "ref.npz"
    scores.compute_reference_stats(real, ref_path, work_dir=ref_work, identity="real-10")
    _, ref = scores.load_reference_stats(ref_path)
    first = scores.score_samples(fake, ref_path, kid_subsets=5, work_dir=score_work, identity="fake-10")
    assert len(list(ref_work.glob("features-*.npz"))) == len(list(score_work.glob("features-*.npz"))) == 2

    calls = count_batches(monkeypatch, fail_at=1)  # any forward call would fail: all features come from the chunks
    scores.compute_reference_stats(real, tmp_path / "again.npz", work_dir=ref_work, identity="real-10")
    again = scores.score_samples(fake, ref_path, kid_subsets=5, work_dir=score_work, identity="fake-10")
    assert calls == []
    _, ref_again = scores.load_reference_stats(tmp_path / "again.npz")
    assert all(np.array_equal(ref[k], ref_again[k]) for k in ref)
    assert again == first and np.isfinite(first["fid"]) and first["is_mean"] is None
    for work in (ref_work, score_work):
        scores.remove_feature_chunks(work)
        assert not work.exists()


def _npz(path, **arrays):
    with open(path, "wb") as fh:
        np.savez(fh, **arrays)
    return path


def _junk_files(tmp_path):
    good_meta = np.array(json.dumps({"format": scores.REFSTATS_FORMAT, "num_images": 2}))
    full = {f"{p}_{k}": np.zeros(s) for k in ("torch_fidelity", "clean")
            for p, s in (("feats", (2, 2048)), ("mu", (2048,)), ("sigma", (2048, 2048)))}
    np.save(tmp_path / "objects.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    (tmp_path / "objects.npy").rename(tmp_path / "objects.npz")
    zipped = _npz(tmp_path / "full.npz", metadata=good_meta, **full).read_bytes()
    (tmp_path / "truncated.npz").write_bytes(zipped[:len(zipped) // 2])
    (tmp_path / "random.npz").write_bytes(np.random.default_rng(0).bytes(5000))
    (tmp_path / "empty.npz").write_bytes(b"")
    _npz(tmp_path / "no_metadata.npz", **full)
    _npz(tmp_path / "missing_arrays.npz", metadata=good_meta, feats_torch_fidelity=np.zeros((2, 2048)))
    _npz(tmp_path / "object_member.npz", metadata=good_meta, **{**full, "mu_clean": np.array([None, 1])})
    _npz(tmp_path / "bad_json.npz", metadata=np.array("{not json"), **full)
    _npz(tmp_path / "wrong_shape.npz", metadata=good_meta, **{**full, "sigma_clean": np.zeros((3, 3))})
    np.save(tmp_path / "plain.npy", np.zeros(3))
    (tmp_path / "plain.npy").rename(tmp_path / "plain.npz")
    # A member whose bytes are damaged after the zip directory was written.
    with zipfile.ZipFile(tmp_path / "full.npz") as z:
        info = z.getinfo("mu_clean.npy")
    damaged = bytearray(zipped)
    damaged[info.header_offset + 100: info.header_offset + 140] = b"\xff" * 40
    (tmp_path / "damaged_member.npz").write_bytes(bytes(damaged))
    return {
        "objects": "unpickle", "truncated": "", "random": "unpickle", "empty": "", "no_metadata": "no metadata",
        "missing_arrays": "missing arrays", "object_member": "pickled", "bad_json": "damaged member: JSONDecodeError",
        "wrong_shape": "sigma_clean has shape", "plain": "single .npy array", "damaged_member": "damaged member",
    }


def test_junk_refstats_files_are_one_clear_error(tmp_path):
    junk = tmp_path / "junk"
    junk.mkdir()
    for name, reason in _junk_files(junk).items():
        path = junk / f"{name}.npz"
        with pytest.raises(ValueError, match=NOT_REFSTATS) as err:
            scores.load_reference_stats(path)
        message = str(err.value)
        print(f"\n{name}: {message}")
        assert message.startswith(f"{path} is not a pdm-bench reference-statistics file (")
        assert reason in message and len(message) < 400
