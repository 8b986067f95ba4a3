"""RDM (Blattmann et al. 2022, retrieval-augmented diffusion): the shared U-Net, conditioned through its bottleneck
cross-attention on the frozen-encoder embeddings of k retrieved neighbours (k = 4 as in RDM).

Stage 1 (its own workflow job, timed): a frozen pretrained encoder (`baselines.retrieval`) embeds the training split;
a FAISS index holds the L2-normalised embeddings. Written to the stage-1 folder:
    database.npy    float32 (N, D) unit rows, row i = training image i
    index.faiss     the index over them (exact inner product by default; IVF / IVF-PQ for large databases)
    neighbours.npy  int64 (N, k): each training image's k nearest neighbours, the image itself excluded
    retrieval.json  what was built (encoder, sizes, index kind), checked when the outputs are loaded
database + index + the encoder's weight files are RDM's external memory.

Training: tokens = W [e_n1, ..., e_nk] (B, k, C) for the batch images' precomputed neighbours, W a trainable linear
map from the embedding width D to the bottleneck channels C (saved as the `projection` component). No auxiliary loss.
Generation, unconditional as in RDM: each image draws one database entry uniformly from its own generator and is
conditioned on that entry's k neighbours returned by the index (the entry itself is usually the first of them),
for the whole trajectory. Each image is queried on its own, so neighbours never depend on the batch.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import torch
from torch import nn

from baselines import retrieval
from pdm.config import ConfigError, ExperimentConfig
from pdm.io import atomic_path, write_json
from pdm.methods.base import DataInfo, Method, options_from_yaml

DATABASE_FILE, INDEX_FILE, NEIGHBOURS_FILE, META_FILE = "database.npy", "index.faiss", "neighbours.npy", "retrieval.json"
RERUN = "re-run RDM's stage 1 (`pdm-bench stage1 --method rdm`; snakemake re-runs it when its outputs are missing)"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as handle:
            np.save(handle, array)


def _load_npy(path: Path, dtype, ndim: int) -> np.ndarray:
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; {RERUN}")
    try:
        array = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise ValueError(f"{path} is not a readable array ({err}); delete it and {RERUN}") from None
    if array.dtype != dtype or array.ndim != ndim:
        raise ValueError(f"{path} holds {array.dtype} {array.shape}, expected {np.dtype(dtype)} with {ndim} axes; {RERUN}")
    return array


class RDM(Method):
    name = "rdm"
    conditioning = "retrieval"
    cross_attention = True
    has_stage1 = True
    sampling_components = ("unet", "projection")
    description = "retrieval-augmented diffusion: a frozen image encoder, a FAISS index of the training set, k neighbours as tokens"
    options_schema = options_from_yaml("""
    encoder: {type: string, enum: [clip, efficientnet_lite0], default: efficientnet_lite0}
    encoder_resolution: {type: [integer, "null"], minimum: 32, default: null, description: "efficientnet_lite0 input side (whole image resized, no crop); null = its native 224. One CPU thread: about 28 img/s at 224, 190 at 96 (where 16x16 digits also get as good or better neighbours)"}
    clip_model: {type: string, default: ViT-B-32}
    clip_pretrained: {type: string, default: openai, description: "open_clip pretrained tag, used when clip_weights is null"}
    clip_weights: {type: [string, "null"], default: null, description: "local CLIP weights file (works offline); the clip_pretrained tag's settings (quick_gelu, mean/std) apply to it"}
    k: {type: integer, minimum: 1, default: 4}
    index: {type: string, enum: [flat, ivf, ivfpq], default: flat, description: "flat = exact inner product"}
    nlist: {type: integer, minimum: 1, default: 64, description: "IVF lists (ivf, ivfpq)"}
    nprobe: {type: integer, minimum: 1, default: 8, description: "IVF lists searched per query (ivf, ivfpq)"}
    pq_m: {type: integer, minimum: 1, default: 8, description: "PQ sub-vectors of 8 bits (ivfpq); must divide the embedding width"}
    index_device: {type: string, enum: [cpu, gpu], default: cpu, description: "gpu needs faiss-gpu and a GPU"}
    encoder_batch_size: {type: integer, minimum: 1, default: 16, description: "images per encoder batch (small batches are faster on CPU; raise on GPU)"}
    """)

    @classmethod
    def check_config(cls, cfg: ExperimentConfig, options: Mapping[str, Any]) -> None:
        retrieval.check_index_device(options["index_device"])
        k, data = options["k"], cfg.data
        if data.max_images is not None:  # the training split can only be smaller than this
            most = data.max_images - round(data.max_images * data.holdout_fraction)
            if k >= most:
                raise ConfigError(f"methods.rdm.k={k} is larger than the database allows: data.max_images={data.max_images} "
                                  f"leaves at most {most} training images, and an image is never its own neighbour; "
                                  f"lower k below {most} or raise max_images")
        if options["encoder"] == "clip":
            if options.get("encoder_resolution") is not None:
                raise ConfigError("methods.rdm.encoder_resolution applies to efficientnet_lite0 only (CLIP's input size "
                                  "is fixed by its model); remove it or use encoder: efficientnet_lite0")
            # fails early (before any job) where the weights cannot be had: a missing local file, or offline and uncached
            retrieval.resolve_clip_weights(options["clip_model"], options["clip_pretrained"], options.get("clip_weights"),
                                           download=False)

    def __init__(self, cfg: ExperimentConfig, data: DataInfo):
        super().__init__(cfg, data)
        self.k = int(self.options["k"])
        self.embedding_dim = retrieval.encoder_dim(self.options)
        self.projection = nn.Linear(self.embedding_dim, cfg.model.bottleneck_channels)
        # Plain tensors, not buffers: never saved (they are stage-1 outputs), and never broadcast by DistributedDataParallel
        # at every step; `_tables` moves them to the projection's device on use.
        self.database = torch.zeros(0, self.embedding_dim)
        self.train_neighbours = torch.zeros(0, self.k, dtype=torch.long)
        self.index = None
        self.meta: dict[str, Any] = {}
        self._database_np: np.ndarray | None = None

    # --- stage 1 ------------------------------------------------------------------------------------------------
    @classmethod
    def run_stage1(cls, cfg: ExperimentConfig, seed: int, out_dir) -> dict[str, Any]:
        from pdm.data import load_dataset
        from pdm.runtime import resolve_device

        started = time.perf_counter()
        out_dir = Path(out_dir)
        options = cfg.method_options(cls.name)
        retrieval.check_index_device(options["index_device"])
        dataset = load_dataset(cfg.data)
        k, n = int(options["k"]), len(dataset)
        if k >= n:
            raise ConfigError(f"methods.rdm.k={k} is larger than the database allows: {n} training images, and an "
                              f"image is never its own neighbour; lower k below {n} or use more images")
        device = resolve_device(cfg)
        if device == "cpu":
            import faiss

            faiss.omp_set_num_threads(torch.get_num_threads())

        encoder = retrieval.build_encoder(options)
        embed_started = time.perf_counter()
        database = encoder.embed(dataset.images, options["encoder_batch_size"], device)
        embed_seconds = time.perf_counter() - embed_started

        index_started = time.perf_counter()
        index = retrieval.build_index(database, options["index"], options["nlist"], options["pq_m"], options["nprobe"],
                                      options["index_device"], seed)
        index_seconds = time.perf_counter() - index_started
        search_started = time.perf_counter()
        neighbours = retrieval.training_neighbours(index, database, k)
        neighbours_seconds = time.perf_counter() - search_started

        kind = retrieval.index_kind(options["index"], options["nlist"], options["pq_m"])
        meta = {"encoder": encoder.name, "encoder_resolution": encoder.input_size, "embedding_dim": encoder.dim,
                "database_size": n, "index": kind, "k": k}
        _save_npy(out_dir / DATABASE_FILE, database)
        _save_npy(out_dir / NEIGHBOURS_FILE, neighbours)
        retrieval.write_index(index, out_dir / INDEX_FILE)
        write_json(out_dir / META_FILE, meta)
        sizes = {name: (out_dir / name).stat().st_size for name in (DATABASE_FILE, INDEX_FILE, NEIGHBOURS_FILE)}
        return {
            "seconds": time.perf_counter() - started,
            "embed_seconds": embed_seconds,
            "embed_images_per_second": n / max(embed_seconds, 1e-9),
            "index_seconds": index_seconds,
            "neighbours_seconds": neighbours_seconds,
            **meta,
            "index_device": options["index_device"],
            "encoder_device": device,
            "database_bytes": sizes[DATABASE_FILE],
            "index_bytes": sizes[INDEX_FILE],
            "neighbours_bytes": sizes[NEIGHBOURS_FILE],
            "encoder_weight_bytes": encoder.weight_bytes,
            "sampling_files": [],
            # external memory: the database, its index and the frozen encoder (neighbours.npy is training-only)
            "external_files": [DATABASE_FILE, INDEX_FILE, *[str(p) for p in encoder.weight_files]],
        }

    def prepare(self, stage1_dir) -> None:
        stage1_dir = Path(stage1_dir)
        meta_path = stage1_dir / META_FILE
        if not meta_path.is_file():
            raise FileNotFoundError(f"{meta_path} is missing; {RERUN}")
        try:
            meta = json.loads(meta_path.read_text())
        except json.JSONDecodeError as err:
            raise ValueError(f"{meta_path} is not valid JSON ({err}); delete it and {RERUN}") from None
        database = _load_npy(stage1_dir / DATABASE_FILE, np.float32, 2)
        neighbours = _load_npy(stage1_dir / NEIGHBOURS_FILE, np.int64, 2)
        index = retrieval.read_index(stage1_dir / INDEX_FILE, self.options["index_device"], self.options["nprobe"])
        n = len(database)
        expected = {"encoder": retrieval.encoder_name(self.options), "embedding_dim": self.embedding_dim, "k": self.k,
                    "index": retrieval.index_kind(self.options["index"], self.options["nlist"], self.options["pq_m"])}
        if self.options["encoder"] == "efficientnet_lite0":
            expected["encoder_resolution"] = self.options.get("encoder_resolution") or retrieval.EFFICIENTNET_NATIVE_SIZE
        differ = {key: (meta.get(key), value) for key, value in expected.items() if meta.get(key) != value}
        if differ:
            raise ValueError(f"{stage1_dir} was built with other retrieval settings (built, configured): {differ}; {RERUN}")
        if (database.shape[1] != self.embedding_dim or neighbours.shape != (n, self.k) or index.ntotal != n
                or index.d != self.embedding_dim or meta.get("database_size") != n
                or (n and (neighbours.min() < 0 or neighbours.max() >= n))):
            raise ValueError(f"{stage1_dir}: database {database.shape}, neighbours {neighbours.shape} and index "
                             f"({index.ntotal} x {index.d}) do not agree; {RERUN}")
        device = self.projection.weight.device
        self.database = torch.from_numpy(database).to(device)
        self.train_neighbours = torch.from_numpy(neighbours).to(device)
        self.index, self.meta, self._database_np = index, meta, database  # the CPU copy serves index queries

    def prepare_for_probe(self, database_size: int) -> dict[str, Any]:
        """A random unit-norm database of `database_size` rows, random neighbours and the configured FAISS index over
        it: retrieval at sampling time searches an index of the real size."""
        if database_size <= self.k:
            raise ValueError(f"rdm: a database of {database_size} images cannot give k={self.k} neighbours")
        generator = torch.Generator().manual_seed(0)
        database = torch.nn.functional.normalize(torch.randn(database_size, self.embedding_dim, generator=generator), dim=1)
        self._database_np = database.numpy()
        self.database = database.to(self.projection.weight.device)
        self.train_neighbours = torch.randint(database_size, (database_size, self.k), generator=generator)
        o = self.options
        self.index = retrieval.build_index(self._database_np, o["index"], o["nlist"], o["pq_m"], o["nprobe"],
                                           o["index_device"], 0)
        self.meta = {"database_size": database_size, "stand_in": True}
        return dict(self.meta)

    def _require_prepared(self) -> None:
        if self.index is None:
            raise RuntimeError("RDM's database is not loaded: call prepare(stage1_dir) with RDM's stage-1 folder first")

    # --- conditioning -------------------------------------------------------------------------------------------
    def _tables(self) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.projection.weight.device
        if self.database.device != device:
            self.database, self.train_neighbours = self.database.to(device), self.train_neighbours.to(device)
        return self.database, self.train_neighbours

    def tokens(self, ids: torch.Tensor) -> torch.Tensor:
        """(B, k) database ids -> (B, k, C) cross-attention tokens."""
        database, _ = self._tables()
        return self.projection(database[ids.to(database.device)])

    def context(self, x0, labels, t, generator, index=None):
        self._require_prepared()
        if index is None:
            raise ValueError("RDM needs the batch images' positions in the training split (index) to look up their neighbours")
        _, neighbours = self._tables()
        index = index.to(neighbours.device)
        if len(index) and (int(index.min()) < 0 or int(index.max()) >= len(neighbours)):
            raise ValueError(f"training positions up to {int(index.max())} but the database holds "
                             f"{len(neighbours)} images: the stage-1 outputs are for another dataset; {RERUN}")
        return self.tokens(neighbours[index]), None, {}

    def retrieve(self, entries: torch.Tensor) -> torch.Tensor:
        """(B,) database entries -> (B, k) ids of their k nearest neighbours from the index, one query per entry."""
        self._require_prepared()
        queries = self._database_np[entries.cpu().numpy()]
        rows = [retrieval.search(self.index, queries[i : i + 1], self.k, database=self._database_np)
                for i in range(len(queries))]
        return torch.from_numpy(np.concatenate(rows)) if rows else torch.zeros(0, self.k, dtype=torch.long)

    def sampling_context(self, generators, device):
        self._require_prepared()
        n = len(self.database)
        entries = torch.cat([torch.randint(n, (1,), generator=g) for g in generators])  # one draw per image
        tokens = self.tokens(self.retrieve(entries)).to(device)
        return lambda t: tokens

    def components(self):
        return {"unet": self.unet, "projection": self.projection}

    def record(self) -> dict[str, Any]:
        o = self.options
        return {
            **super().record(),
            "encoder": self.meta.get("encoder", retrieval.encoder_name(o)),
            "encoder_resolution": self.meta.get("encoder_resolution", o.get("encoder_resolution")),
            "embedding_dim": self.embedding_dim,
            "k": self.k,
            "index": retrieval.index_kind(o["index"], o["nlist"], o["pq_m"]),
            "index_device": o["index_device"],
            "database_size": self.meta.get("database_size"),
        }
