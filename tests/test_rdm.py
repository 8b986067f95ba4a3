"""RDM: FAISS retrieval against brute force, the frozen encoders (offline), the errors, and per-seed determinism."""

from __future__ import annotations

import copy
import json
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from baselines import retrieval
from pdm.config import ConfigError
from pdm.methods.base import DataInfo

REPO = Path(__file__).resolve().parents[1]
TINY_CLIP = "pdm-test-tiny-clip"
RDM_OPTIONS = {"encoder_resolution": 32, "encoder_batch_size": 16}  # tiny input: the stage runs in about a second


def clustered(n_clusters=20, per_cluster=30, dim=32, noise=0.15, seed=0):
    rng = np.random.default_rng(seed)
    centres = retrieval.unit_rows(rng.normal(size=(n_clusters, dim)))
    database = retrieval.unit_rows(np.repeat(centres, per_cluster, 0) + noise * rng.normal(size=(n_clusters * per_cluster, dim)))
    queries = retrieval.unit_rows(centres[rng.integers(0, n_clusters, 50)] + noise * rng.normal(size=(50, dim)))
    return database, queries


def recall(found, exact):
    return float(np.mean([len(set(a) & set(b)) / len(b) for a, b in zip(found, exact)]))


# --- retrieval ------------------------------------------------------------------------------------------------------
def test_flat_index_returns_the_true_nearest_neighbours():
    rng = np.random.default_rng(1)
    database, queries = retrieval.unit_rows(rng.normal(size=(300, 24))), retrieval.unit_rows(rng.normal(size=(40, 24)))
    index = retrieval.build_index(database, "flat")
    np.testing.assert_array_equal(retrieval.search(index, queries, 5), retrieval.brute_force(database, queries, 5))


def test_training_neighbours_exclude_the_image_itself_even_with_duplicates():
    rng = np.random.default_rng(2)
    database = retrieval.unit_rows(rng.normal(size=(60, 16)))
    database[1] = database[0]  # a pair of duplicates
    database[3] = database[4] = database[5] = database[2]  # a group of four: each has three perfect matches
    neighbours = retrieval.training_neighbours(retrieval.build_index(database, "flat"), database, 4)
    assert neighbours.shape == (60, 4) and neighbours.dtype == np.int64
    assert not (neighbours == np.arange(60)[:, None]).any()
    assert neighbours[0, 0] == 1 and neighbours[1, 0] == 0  # a duplicate is another image: it stays eligible
    for i in (2, 3, 4, 5):
        assert set(neighbours[i, :3]) == {2, 3, 4, 5} - {i}
    # every row otherwise agrees with brute force after removing the row itself (ties between duplicates aside)
    exact = retrieval.brute_force(database, database, 6)
    for i in range(6, 60):
        expected = [j for j in exact[i] if j != i][:4]
        np.testing.assert_allclose(database[neighbours[i]] @ database[i], database[expected] @ database[i], atol=1e-6)


@pytest.mark.parametrize("kind,min_recall", [("ivf", 0.9), ("ivfpq", 0.5)])
def test_ivf_indexes_return_sensible_neighbours(kind, min_recall):
    database, queries = clustered()
    index = retrieval.build_index(database, kind, nlist=16, nprobe=4, pq_m=8)
    found, exact = retrieval.search(index, queries, 4, database=database), retrieval.brute_force(database, queries, 4)
    assert recall(found, exact) >= min_recall
    assert np.mean(found // 30 == exact[:, :1] // 30) >= 0.95  # neighbours come from the query's own cluster
    neighbours = retrieval.training_neighbours(index, database, 4)
    assert (neighbours >= 0).all() and not (neighbours == np.arange(len(database))[:, None]).any()


def test_short_ivf_rows_are_completed_by_exact_search():
    """nprobe=1 over lists of 5 entries leaves 4 hits besides the query itself; k=6 needs the exact fallback."""
    database, _ = clustered(n_clusters=8, per_cluster=5, noise=0.01)
    index = retrieval.build_index(database, "ivf", nlist=8, nprobe=1)
    neighbours = retrieval.training_neighbours(index, database, 6)
    exact = retrieval.brute_force(database, database, 7)
    assert (neighbours >= 0).all() and not (neighbours == np.arange(40)[:, None]).any()
    assert all(set(neighbours[i]) == set([j for j in exact[i] if j != i][:6]) for i in range(40))


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq"])
def test_index_survives_write_and_read(tmp_path, kind):
    database, queries = clustered()
    index = retrieval.build_index(database, kind, nlist=16, nprobe=4, pq_m=8)
    retrieval.write_index(index, tmp_path / "index.faiss")
    loaded = retrieval.read_index(tmp_path / "index.faiss", nprobe=4)
    assert loaded.ntotal == len(database)
    np.testing.assert_array_equal(retrieval.search(loaded, queries, 4), retrieval.search(index, queries, 4))
    (tmp_path / "broken.faiss").write_bytes(b"not an index")
    with pytest.raises(ValueError, match="re-run RDM's stage 1"):
        retrieval.read_index(tmp_path / "broken.faiss")
    with pytest.raises(FileNotFoundError, match="re-run RDM's stage 1"):
        retrieval.read_index(tmp_path / "missing.faiss")


def test_k_larger_than_the_database_is_a_clear_error(make_cfg, tiny_data, tmp_path, monkeypatch):
    database = retrieval.unit_rows(np.random.default_rng(0).normal(size=(5, 8)))
    index = retrieval.build_index(database)
    with pytest.raises(ConfigError, match="k=5 is larger than the database"):
        retrieval.training_neighbours(index, database, 5)  # 4 other entries only
    with pytest.raises(ConfigError, match="k=9 is larger than the database allows.*lower k"):
        make_cfg({"data": {"max_images": 10}, "methods": {"rdm": {"k": 9}}})  # 9 of 10 images in the training split
    # caught again when stage 1 sees the real training split
    from baselines.rdm import RDM

    monkeypatch.setattr("pdm.data.load_dataset", lambda cfg: tiny_data)  # 16 images
    cfg = make_cfg({"methods": {"rdm": {**RDM_OPTIONS, "k": 16}}})
    with pytest.raises(ConfigError, match="k=16 is larger than the database allows: 16 training images"):
        RDM.run_stage1(cfg, 0, tmp_path)


def test_gpu_index_without_gpu_or_faiss_gpu_is_a_clear_error(make_cfg, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError, match="no GPU; set index_device: cpu"):
        make_cfg({"methods": {"rdm": {"index_device": "gpu"}}})  # at config time, before any job
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(retrieval, "faiss_gpus", lambda: 0)
    with pytest.raises(ConfigError, match="no GPU support.*install faiss-gpu.*or set index_device: cpu"):
        retrieval.check_index_device("gpu")
    with pytest.raises(ConfigError, match="faiss-gpu"):
        retrieval.build_index(retrieval.unit_rows(np.eye(4)), device="gpu")


# --- encoders -------------------------------------------------------------------------------------------------------
def test_shipped_efficientnet_weights_load_and_recognise_photographs():
    from sklearn.datasets import load_sample_image

    encoder = retrieval.EfficientNetLite0Encoder()  # raises unless every tensor matched timm's architecture (strict)
    assert encoder.name == "efficientnet_lite0/imagenet" and encoder.dim == 1280 and encoder.input_size == 224
    state = torch.load(encoder.weight_files[0], map_location="cpu", weights_only=True)
    loaded = encoder.model.state_dict()
    converted = retrieval.convert_efficientnet_state_dict(state, [len(s) for s in encoder.model.blocks])
    assert set(converted) == set(loaded) and all(torch.equal(converted[k], loaded[k]) for k in loaded)

    def square(name):
        image = torch.from_numpy(load_sample_image(name).copy()).permute(2, 0, 1)
        side = min(image.shape[1:])
        top, left = (image.shape[1] - side) // 2, (image.shape[2] - side) // 2
        return image[:, top : top + side, left : left + side]

    photos = torch.stack([square("china.jpg"), square("flower.jpg")])
    with torch.inference_mode():
        top5 = encoder.logits(encoder.preprocess(photos)).topk(5).indices
    assert 698 in top5[0]  # ImageNet 698 'palace' for the Summer Palace photograph
    assert 985 in top5[1]  # ImageNet 985 'daisy' for the flower
    features = encoder.embed(photos, batch_size=2)
    assert features.shape == (2, 1280) and np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)
    assert features[0] @ features[1] < 0.9  # different photographs, different features
    grey = encoder.preprocess(torch.full((1, 1, 16, 16), 200, dtype=torch.uint8))
    assert grey.shape == (1, 3, 224, 224)


@pytest.fixture
def tiny_clip(tmp_path):
    """A registered tiny open_clip architecture and a weights file for it (about 0.2 MB)."""
    import open_clip

    config = {"embed_dim": 16, "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "patch_size": 16, "head_width": 16},
              "text_cfg": {"context_length": 8, "vocab_size": 64, "width": 16, "heads": 2, "layers": 1}}
    (tmp_path / f"{TINY_CLIP}.json").write_text(json.dumps(config))
    open_clip.add_model_config(tmp_path / f"{TINY_CLIP}.json")
    torch.manual_seed(123)
    model = open_clip.create_model(TINY_CLIP, pretrained=None)
    torch.save(model.state_dict(), tmp_path / "tiny_clip.pt")
    return model, tmp_path / "tiny_clip.pt"


def test_clip_builds_offline_from_a_local_weights_file(tiny_clip, make_cfg):
    model, weights = tiny_clip
    options = {"encoder": "clip", "clip_model": TINY_CLIP, "clip_pretrained": "openai", "clip_weights": str(weights),
               "encoder_resolution": None}
    torch.manual_seed(0)  # a different random init than the written weights: equality below means they were loaded
    encoder = retrieval.build_encoder(options)
    assert encoder.name == f"clip:{TINY_CLIP}/tiny_clip.pt" == retrieval.encoder_name(options)
    assert encoder.dim == 16 == retrieval.encoder_dim(options) and encoder.input_size == 32
    assert encoder.weight_files == [weights.resolve()]
    written = model.visual.state_dict()
    assert all(torch.equal(value, written[key]) for key, value in encoder.visual.state_dict().items())
    images = torch.randint(0, 256, (5, 1, 16, 16), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)
    features = encoder.embed(images, batch_size=2)
    assert features.shape == (5, 16) and np.allclose(np.linalg.norm(features, axis=1), 1, atol=1e-5)
    with torch.no_grad():
        expected = model.encode_image(encoder.preprocess(images), normalize=True).numpy()
    np.testing.assert_allclose(features, expected, atol=1e-5)
    make_cfg({"methods": {"rdm": dict(options)}})  # the config check accepts a local file
    (weights.parent / "foreign.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(ConfigError, match="not an open_clip state dict of pdm-test-tiny-clip"):
        retrieval.build_encoder({**options, "clip_weights": str(weights.parent / "foreign.pt")})


def test_clip_unavailable_offline_names_both_fixes_quickly(monkeypatch, tmp_path, make_cfg):
    import huggingface_hub.constants

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "empty-cache"))  # nothing cached
    options = {"encoder": "clip", "clip_model": "ViT-B-32", "clip_pretrained": "openai", "clip_weights": None,
               "encoder_resolution": None}
    started = time.perf_counter()
    with pytest.raises(ConfigError) as caught:
        retrieval.build_encoder(options)
    assert time.perf_counter() - started < 30  # generous for a busy machine; a hub retry loop takes ~46 s
    message = str(caught.value)
    assert "not available offline" in message and "methods.rdm.clip_weights" in message
    assert "methods.rdm.encoder: efficientnet_lite0" in message
    with pytest.raises(ConfigError, match="clip_weights.*efficientnet_lite0"):
        make_cfg({"methods": {"rdm": options}})  # reported when the config is checked, before any job
    with pytest.raises(ConfigError, match="does not exist.*efficientnet_lite0"):
        retrieval.build_encoder({**options, "clip_weights": str(tmp_path / "missing.pt")})


# --- the method -----------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rdm_stage1(tmp_path_factory):
    """Stage 1 on 40 digits (36 in the training split) with EfficientNet-Lite0 at 32x32 input, shared by the tests."""
    from baselines.rdm import RDM
    from pdm.config import resolve_config

    raw = yaml.safe_load((REPO / "config" / "ci.yaml").read_text())
    raw["data"]["max_images"] = 40
    raw["methods"] = {"rdm": dict(RDM_OPTIONS)}
    cfg = resolve_config(copy.deepcopy(raw))
    out = tmp_path_factory.mktemp("rdm_stage1")
    from pdm.steps import stage1_step

    record = stage1_step(cfg, "rdm", 0, out)
    return cfg, out, record, RDM


def build_prepared(cfg, out, RDM):
    torch.manual_seed(0)
    method = RDM(cfg, DataInfo(1, 16, 10))
    method.prepare(out)
    return method


def test_stage1_writes_database_index_and_neighbours(rdm_stage1):
    cfg, out, record, _ = rdm_stage1
    assert json.loads((out / "stage1.json").read_text())["encoder"] == "efficientnet_lite0/imagenet"
    assert record["database_size"] == 36 and record["embedding_dim"] == 1280 and record["k"] == 4
    assert record["index"] == "flat-ip" and record["encoder_resolution"] == 32
    assert record["seconds"] >= record["embed_seconds"] + record["index_seconds"] > 0
    database = np.load(out / "database.npy")
    neighbours = np.load(out / "neighbours.npy")
    assert database.dtype == np.float32 and np.allclose(np.linalg.norm(database, axis=1), 1, atol=1e-5)
    assert neighbours.shape == (36, 4) and not (neighbours == np.arange(36)[:, None]).any()
    np.testing.assert_array_equal(neighbours, retrieval.training_neighbours(retrieval.build_index(database), database, 4))
    assert record["sampling_files"] == []
    external = [Path(f) if Path(f).is_absolute() else out / f for f in record["external_files"]]
    assert {p.name for p in external} == {"database.npy", "index.faiss", "efficientnet-lite0-57934424.pth"}
    assert sum(p.stat().st_size for p in external) == (record["database_bytes"] + record["index_bytes"]
                                                       + record["encoder_weight_bytes"])


def test_rdm_trains_and_samples_deterministically_per_seed(rdm_stage1):
    cfg, out, _, RDM = rdm_stage1
    method = build_prepared(cfg, out, RDM)
    x0 = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(0)) * 2 - 1
    index = torch.tensor([0, 5, 17, 35])
    tokens, aux, _ = method.context(x0, None, torch.zeros(4, dtype=torch.long), torch.Generator(), index)
    assert tokens.shape == (4, 4, cfg.model.bottleneck_channels) and aux is None
    torch.testing.assert_close(tokens, method.projection(method.database[method.train_neighbours[index]]))
    loss, logs = method.loss(x0, None, torch.Generator().manual_seed(0), index)
    assert torch.isfinite(loss)
    loss.backward()
    assert method.projection.weight.grad.abs().sum() > 0  # the projection learns through the cross-attention
    with pytest.raises(ValueError, match="positions in the training split"):
        method.context(x0, None, torch.zeros(4, dtype=torch.long), torch.Generator(), None)

    together = method.sample([0, 1, 2], "ddim", steps=3, batch_size=3)
    alone = np.concatenate([method.sample([s], "ddim", steps=3, batch_size=1) for s in (0, 1, 2)])
    assert together.dtype == np.uint8 and together.shape == (3, 16, 16, 1)
    assert np.abs(together.astype(int) - alone.astype(int)).max() <= 1
    assert not np.array_equal(together[0], together[1])
    # each image's conditioning: one drawn entry's k neighbours from the index (the entry itself among them)
    retrieved = method.retrieve(torch.tensor([3, 7]))
    assert retrieved.shape == (2, 4) and retrieved[0, 0] == 3 and retrieved[1, 0] == 7
    record = method.record()
    assert record["encoder"] == "efficientnet_lite0/imagenet" and record["k"] == 4 and record["database_size"] == 36
    assert record["index"] == "flat-ip" and record["embedding_dim"] == 1280


def test_prepare_refuses_missing_or_foreign_stage1_outputs(rdm_stage1, tmp_path):
    import dataclasses
    import shutil

    cfg, out, _, RDM = rdm_stage1
    method = RDM(cfg, DataInfo(1, 16, 10))
    with pytest.raises(FileNotFoundError, match="re-run RDM's stage 1"):
        method.prepare(tmp_path)
    broken = tmp_path / "broken"
    shutil.copytree(out, broken)
    (broken / "neighbours.npy").write_bytes(b"garbage")
    with pytest.raises(ValueError, match="re-run RDM's stage 1"):
        method.prepare(broken)
    other = RDM(dataclasses.replace(cfg, methods={"rdm": {**cfg.methods["rdm"], "k": 3}}), DataInfo(1, 16, 10))
    with pytest.raises(ValueError, match="other retrieval settings.*re-run RDM's stage 1"):
        other.prepare(out)
    native = RDM(dataclasses.replace(cfg, methods={"rdm": {**cfg.methods["rdm"], "encoder_resolution": None}}), DataInfo(1, 16, 10))
    with pytest.raises(ValueError, match="encoder_resolution"):
        native.prepare(out)  # built at 32, configured at the native 224


def test_trained_rdm_round_trips_through_the_workflow_steps(rdm_stage1, tmp_path):
    """train (2 steps) -> safetensors -> load_trained samples the same images; storage counts the external memory."""
    import dataclasses

    from pdm.checkpoint import load_trained
    from pdm.steps import storage, train_step

    cfg, out, record, _ = rdm_stage1
    cfg = dataclasses.replace(cfg, train=dataclasses.replace(cfg.train, steps=2, warmup_steps=0, ema_decay=None))
    trained = train_step(cfg, "rdm", 0, tmp_path, stage1_dir=out)
    assert trained["method_record"]["encoder"] == "efficientnet_lite0/imagenet"
    assert {"unet", "projection"} <= set(trained["component_bytes"])
    model, _ = load_trained(cfg, "rdm", tmp_path)
    first = model.sample([4, 9], "ddim", steps=2, batch_size=2)
    again, _ = load_trained(cfg, "rdm", tmp_path)
    np.testing.assert_array_equal(first, again.sample([4, 9], "ddim", steps=2, batch_size=2))
    sizes = storage(tmp_path, trained)
    assert sizes["external_memory_bytes"] == record["database_bytes"] + record["index_bytes"] + record["encoder_weight_bytes"]
