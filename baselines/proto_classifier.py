"""ProtoDiffusion's stage-1 prototype classifier (Baykal et al., ACML 2023; github.com/ituvisionlab/ProtoDiffusion,
Models.py), itself the convolutional prototype learning of Yang et al. 2018 (arXiv 1805.03438): a ResNet-18 feature
extractor, one learnable centre per class, logits = minus squared distances to the centres ("dce"), trained with
cross entropy on scale * logits plus a small prototype loss (PL) that pulls each feature to its own class's centre.

Written here from the paper and the reference's structure (no code copied). Departures from the reference:
  * the ResNet-18 starts from random weights (the reference loads torchvision's ImageNet weights, which cannot be
    downloaded offline); `weights_path` takes a local torchvision resnet18 state_dict file instead;
  * the reference repo ships no classifier training script, so `train_classifier` is ours: Adam, `pl_weight` 0.01 by
    default (Yang et al. weight PL with a small lambda).
"""

from __future__ import annotations

import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from pdm.config import ConfigError
from pdm.data import BatchStream, ImageDataset

DEFAULT_PL_WEIGHT = 0.01  # Yang et al. 2018 use a small lambda for PL; the reference repo gives no value


def _resnet18(weights_path) -> nn.Module:
    from torchvision.models import resnet18

    net = resnet18(weights=None)  # reference: ImageNet-pretrained; no download possible offline
    if weights_path is not None:
        path = Path(weights_path).expanduser()
        if not path.is_file():
            raise ConfigError(f"weights_path: {path} is not a file; give a torchvision resnet18 state_dict file")
        state = torch.load(path, map_location="cpu", weights_only=True)
        if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
            state = state["state_dict"]
        expected = set(net.state_dict())
        got = set(state) if isinstance(state, dict) else set()
        if got != expected:
            missing, extra = sorted(expected - got)[:3], sorted(got - expected)[:3]
            raise ConfigError(f"weights_path: {path} is not a torchvision resnet18 state_dict (missing keys e.g. "
                              f"{missing}, unexpected keys e.g. {extra}); save one with torch.save(resnet18(...).state_dict())")
        net.load_state_dict(state)
    return net


class PrototypeClassifier(nn.Module):
    """ModifiedResNet (resnet18 -> 1000 outputs -> Linear(1000, d) -> ReLU) plus the dce head of the reference."""

    def __init__(self, in_channels: int, num_classes: int, dim: int = 128, scale: float = 2.0, weights_path=None):
        super().__init__()
        if in_channels not in (1, 3):
            raise ConfigError(f"data.channels: the prototype classifier takes 1 or 3 channels, not {in_channels}")
        self.in_channels, self.num_classes, self.dim, self.scale = in_channels, num_classes, dim, float(scale)
        self.backbone = _resnet18(weights_path)
        self.project = nn.Linear(1000, dim)  # reference: the resnet's 1000 ImageNet outputs -> d hidden units, ReLU
        # Reference dce layer: centres stored as a (d, K) parameter, kaiming-normal initialised.
        self.centres_param = nn.Parameter(torch.empty(dim, num_classes))
        nn.init.kaiming_normal_(self.centres_param)

    @property
    def centres(self) -> Tensor:
        """(K, d): the (d, K) parameter transposed, as the reference copies it into the diffusion model's embedding."""
        return self.centres_param.t()

    def features(self, x: Tensor) -> Tensor:
        if x.shape[1] == 1:
            x = x.repeat(1, 3, 1, 1)  # grey -> 3 channels for resnet18; x stays in the harness's [-1, 1] range
        return F.relu(self.project(self.backbone(x)))

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        f = self.features(x)
        # ||f - c||^2 expanded as |f|^2 + |c|^2 - 2 f.c, as in the reference's dce layer; logits are its negative.
        sq = f.pow(2).sum(1, keepdim=True) + self.centres_param.pow(2).sum(0, keepdim=True) - 2 * f @ self.centres_param
        return f, -sq


def dce_loss(classifier: PrototypeClassifier, x: Tensor, labels: Tensor, pl_weight: float = DEFAULT_PL_WEIGHT):
    """NLL of log_softmax(scale * logits) + pl_weight * PL, PL = batch mean of ||f - c_y||^2 (Yang et al. eq. for PL)."""
    f, logits = classifier(x)
    nll = F.nll_loss(F.log_softmax(classifier.scale * logits, dim=1), labels)
    pl = (f - classifier.centres[labels]).pow(2).sum(1).mean()
    accuracy = (logits.argmax(1) == labels).float().mean()
    total = nll + pl_weight * pl
    return total, {"nll": nll.item(), "pl": pl.item(), "accuracy": accuracy.item()}


def classifier_step_flops(classifier: PrototypeClassifier, stream: BatchStream, pl_weight: float, device) -> int:
    """FLOPs of one training step (forward + backward; shapes alone decide them), counted on step 0's batch with the
    classifier put back bitwise after: counting every step under the counter costs ~25% of the classifier's time."""
    from pdm.flops import ExactFlopCounter, preserved_state

    x, labels, _ = stream.batch(0)
    with preserved_state(classifier), ExactFlopCounter() as counter:
        loss, _ = dce_loss(classifier, x.to(device), labels.to(device), pl_weight)
        loss.backward()
    return int(counter.get_total_flops())


def _check_labels(dataset: ImageDataset, num_classes: int, split: str) -> None:
    if dataset.labels is None:
        raise ConfigError(f"the prototype classifier needs class labels, but the {split} split of '{dataset.name}' has "
                          "none; use a labelled dataset (e.g. an imagefolder root with one sub-folder per class)")
    present = torch.unique(dataset.labels)
    if int(present.min()) < 0 or int(present.max()) >= num_classes or (split == "train" and len(present) != num_classes):
        raise ConfigError(f"num_classes={num_classes} does not match the labels of the {split} split of '{dataset.name}' "
                          f"({len(present)} classes, labels {int(present.min())}..{int(present.max())}); set the "
                          f"number of prototypes to the dataset's class count")


@torch.no_grad()
def holdout_accuracy(classifier: PrototypeClassifier, holdout: ImageDataset, device, batch_size: int = 256) -> float:
    was_training = classifier.training
    classifier.eval()
    correct = 0
    for start in range(0, len(holdout), batch_size):
        index = torch.arange(start, min(start + batch_size, len(holdout)))
        _, logits = classifier(holdout.to_model_range(index).to(device))
        correct += int((logits.argmax(1).cpu() == holdout.labels[index]).sum())
    classifier.train(was_training)
    return correct / max(len(holdout), 1)


def train_classifier(train_set: ImageDataset, holdout: ImageDataset, *, num_classes: int, dim: int, steps: int,
                     batch_size: int, lr: float, pl_weight: float = DEFAULT_PL_WEIGHT, scale: float = 2.0, seed: int,
                     device, weights_path=None) -> tuple[PrototypeClassifier, dict]:
    """Adam on dce_loss over BatchStream(train_set, batch_size, seed); returns the classifier in eval mode + a record."""
    _check_labels(train_set, num_classes, "train")
    if len(holdout):
        _check_labels(holdout, num_classes, "holdout")
    stream = BatchStream(train_set, batch_size, seed)
    torch.manual_seed(seed)
    classifier = PrototypeClassifier(train_set.images.shape[1], num_classes, dim, scale, weights_path).to(device)
    optimiser = torch.optim.Adam(classifier.parameters(), lr=lr)
    classifier.train()
    step_flops = classifier_step_flops(classifier, stream, pl_weight, device)
    accuracies = []
    start = time.perf_counter()
    for step in range(steps):
        x, labels, _ = stream.batch(step)
        loss, logs = dce_loss(classifier, x.to(device), labels.to(device), pl_weight)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        accuracies.append(logs["accuracy"])
    seconds = time.perf_counter() - start
    classifier.eval()
    last = accuracies[-25:]
    record = {
        "classifier_steps": steps,
        "classifier_step_flops": step_flops,
        "stage1_flops": steps * step_flops,  # the training steps; the held-out accuracy is a measurement, not a cost
        "classifier_train_seconds": seconds,
        "classifier_train_accuracy": sum(last) / len(last) if last else float("nan"),
        "classifier_holdout_accuracy": holdout_accuracy(classifier, holdout, device) if len(holdout) else float("nan"),
        "classifier_holdout_images": len(holdout),
    }
    return classifier, record
