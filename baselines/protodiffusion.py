"""ProtoDiffusion (Baykal et al., ACML 2023; github.com/ituvisionlab/ProtoDiffusion), the paper's other baseline.

Stage 1 trains a prototype classifier (baselines/proto_classifier.py: the reference's ResNet-18 + distance-based
cross-entropy, Models.py); its class centres initialise the denoiser's class-embedding table (embedding.py: table
(K, d) -> Linear -> SiLU -> Linear), frozen (`mode: proto_frozen`, default), trainable (`proto_unfrozen`) or unused
(`regular`: the reference's plain classifier-free guided baseline). train.py zeroes an image's embedding with
probability `threshold` = 0.1 (the null condition); diffusion.py guides with eps = (1 + w) eps(y) - w eps(null), w 1.8.

Differences from the reference, recorded in every result row (`conditioning`): the embedding enters the shared
diffusers U-Net through its class-embedding input, summed into the time embedding (its MLP maps d to the
time-embedding width E), where the reference's U-Net projects it in every residual block; the optimiser, schedule,
budget, sampler and data order are the shared ones (the reference: lr 2e-4, posterior variance v = 0.3). Its quirks
are flags, off by default: `padding_idx_zero` (nn.Embedding(padding_idx=0): class 0's row gets no gradient) and
`low_t_fraction` (a tenth of each batch at t < 50).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from pdm.config import ConfigError
from pdm.guidance import TokenGuidance, guided_denoiser
from pdm.io import read_json
from pdm.methods.base import DataInfo, Method, options_from_yaml
from pdm.shards import positions, share_of

CLASSIFIER_FILE, CENTRES_FILE = "classifier.safetensors", "centres.safetensors"


class ConditionalEmbedding(nn.Module):
    """Reference embedding.py: a (K, d) table, then Linear(d, E), SiLU, Linear(E, E) (reference: E = d)."""

    def __init__(self, num_classes: int, dim: int, out_dim: int, padding_idx_zero: bool = False):
        super().__init__()
        self.table = nn.Embedding(num_classes, dim, padding_idx=0 if padding_idx_zero else None)
        self.mlp = nn.Sequential(nn.Linear(dim, out_dim), nn.SiLU(), nn.Linear(out_dim, out_dim))

    def forward(self, labels: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.table(labels))


class ProtoDiffusion(TokenGuidance, Method):  # TokenGuidance: label drop and NFE; its own null below
    name = "protodiffusion"
    description = "ProtoDiffusion (ACML 2023): prototype-initialised class embedding + classifier-free guidance"
    conditioning = "class-embedding+cfg (summed into the time embedding; reference: per residual block)"
    class_embedding = True
    has_stage1, counts_own_stage1_flops = True, True  # the classifier: one counted step x its steps
    needs_labels = True
    sampling_components = ("unet", "class_embedding")
    sampling_options = ("guidance_weight",)
    stage1_options = ("mode", "prototype_dim", "classifier_steps", "classifier_batch_size", "classifier_lr",
                      "pl_weight", "classifier_scale", "classifier_weights")
    options_schema = options_from_yaml("""
    mode: {type: string, enum: [proto_frozen, proto_unfrozen, regular], default: proto_frozen, description: "reference --mode: the table from the classifier's centres, frozen or trained; or random (plain classifier-free guidance)"}
    prototype_dim: {type: integer, minimum: 1, default: 128, description: "d, the classifier's feature and centre dimension (reference cdim)"}
    label_drop: {type: number, minimum: 0, maximum: 1, default: 0.1, description: "probability of the null condition in training (reference --threshold)"}
    guidance_weight: {type: number, minimum: 0, default: 1.8, description: "w in (1 + w) eps(y) - w eps(null) (reference --w); 0 = no guidance, one network evaluation per step"}
    classifier_steps: {type: integer, minimum: 1, default: 300}
    classifier_batch_size: {type: integer, minimum: 1, default: 32}
    classifier_lr: {type: number, exclusiveMinimum: 0, default: 0.001, description: "Adam"}
    pl_weight: {type: number, minimum: 0, default: 0.01, description: "weight of the prototype (distance) loss beside the DCE loss"}
    classifier_scale: {type: number, exclusiveMinimum: 0, default: 2.0, description: "s in log_softmax(-s d^2) (reference ModifiedResNet(s=2))"}
    classifier_weights: {type: [string, "null"], default: null, description: "a local torchvision resnet18 state_dict (the reference starts from ImageNet weights; none can be downloaded here)"}
    padding_idx_zero: {type: boolean, default: false, description: "the reference's nn.Embedding(padding_idx=0) quirk"}
    low_t_fraction: {type: number, minimum: 0, maximum: 1, default: 0.0, description: "reference quirk: this fraction of each batch (0.1 there) trains at t < 50; 0 keeps the shared t draws"}
    """)

    def __init__(self, cfg, data: DataInfo):
        super().__init__(cfg, data)
        if data.num_classes < 1:
            raise ConfigError("protodiffusion needs class labels, and this dataset has none: use class sub-folders, "
                              "or drop protodiffusion")
        self.embedding = ConditionalEmbedding(data.num_classes, self.options["prototype_dim"],
                                              self.unet.class_embedding_dim, self.options["padding_idx_zero"])

    @classmethod
    def run_stage1(cls, cfg, seed: int, out_dir) -> dict[str, Any]:
        from baselines.proto_classifier import train_classifier
        from pdm.data import load_dataset
        from pdm.runtime import resolve_device

        out_dir, options = Path(out_dir), cfg.method_options(cls.name)
        out_dir.mkdir(parents=True, exist_ok=True)
        if options["mode"] == "regular":  # no classifier: the table stays randomly initialised
            return {"seconds": 0.0, "mode": "regular", "sampling_files": [], "training_only_files": [], "stage1_flops": 0}
        train_set, holdout = load_dataset(cfg.data, split="train"), load_dataset(cfg.data, split="holdout")
        classifier, record = train_classifier(
            train_set, holdout, num_classes=DataInfo.of(train_set).num_classes, dim=options["prototype_dim"],
            steps=options["classifier_steps"], batch_size=options["classifier_batch_size"],
            lr=options["classifier_lr"], pl_weight=options["pl_weight"], scale=options["classifier_scale"],
            seed=seed, device=resolve_device(cfg), weights_path=options["classifier_weights"])
        save_file({k: v.contiguous().cpu() for k, v in classifier.state_dict().items()}, str(out_dir / CLASSIFIER_FILE))
        save_file({"centres": classifier.centres.detach().contiguous().cpu()}, str(out_dir / CENTRES_FILE))
        return {**record, "seconds": record["classifier_train_seconds"], "mode": options["mode"],
                "sampling_files": [], "training_only_files": [CLASSIFIER_FILE, CENTRES_FILE]}

    def prepare(self, stage1_dir) -> None:
        mode = self.options["mode"]
        if mode == "regular":
            return
        centres = load_file(str(Path(stage1_dir) / CENTRES_FILE))["centres"]
        if tuple(centres.shape) != tuple(self.embedding.table.weight.shape):
            raise ValueError(f"{Path(stage1_dir) / CENTRES_FILE} holds centres of shape {tuple(centres.shape)}, this "
                             f"config needs {tuple(self.embedding.table.weight.shape)} (classes x prototype_dim); "
                             "re-run protodiffusion's stage 1")
        with torch.no_grad():  # reference train.py: the table's weight := the classifier's centres (transposed)
            self.embedding.table.weight.copy_(centres)
        self.embedding.table.weight.requires_grad_(mode == "proto_unfrozen")
        self.stage1_record = read_json(Path(stage1_dir) / "stage1.json")

    def context(self, x0, labels, t, generator, index=None):
        if labels is None:
            raise ValueError("protodiffusion trains on class labels, and this batch has none")
        # reference train.py: cemb[rand(b) < threshold] = 0, the null condition is a zero embedding (B, E)
        embedding, logs = self.drop_class_part(self.embedding(labels), generator)
        return embedding, None, logs

    def training_timesteps(self, t, generator):
        """Reference quirk (diffusion.py trainloss), with `low_t_fraction`: the batch's last B // 10 get t < 50."""
        batch = t.shape[0] * share_of(generator)[1]  # the global batch's last images, whatever the process count
        count = int(batch * self.options["low_t_fraction"] + 1e-9)
        if count == 0:
            return t
        low = torch.randint(50, (count,), generator=generator, device=generator.device).to(t.device)
        place = positions(t.shape[0], generator).to(t.device) - (batch - count)  # (B_local,) index into low, if >= 0
        return torch.where(place >= 0, low[place.clamp(min=0)], t)

    def sampling_context(self, generators, device):
        # one label per image, uniform over the classes, from that image's own generator (after its initial noise);
        # the embedding does not depend on t: computed once, not at every sampler step
        labels = torch.cat([torch.randint(self.data.num_classes, (1,), generator=g) for g in generators]).to(device)
        embedding = self.embedding(labels)
        return lambda t: embedding

    def denoiser(self, generators, device):
        conditional = self.sampling_context(generators, device)
        null = torch.zeros_like(conditional(None))  # the reference's null condition: a zero embedding
        return guided_denoiser(self.unet, conditional, lambda t: null, self.options["guidance_weight"])

    def components(self):
        return {"unet": self.unet, "class_embedding": self.embedding}

    def record(self) -> dict[str, Any]:
        record = getattr(self, "stage1_record", {})
        return {**super().record(), "num_classes": self.data.num_classes, "mode": self.options["mode"],
                "classifier_holdout_accuracy": record.get("classifier_holdout_accuracy")}
