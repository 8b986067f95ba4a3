"""The ProtoDiffusion stage-1 prototype classifier (baselines/proto_classifier.py): dce head, losses, training, errors."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from baselines.proto_classifier import PrototypeClassifier, dce_loss, train_classifier
from pdm.config import ConfigError
from pdm.data import ImageDataset, load_dataset


def _small(seed: int = 0, num_classes: int = 4, dim: int = 8) -> PrototypeClassifier:
    torch.manual_seed(seed)
    return PrototypeClassifier(1, num_classes, dim=dim).eval()


def test_logits_are_minus_squared_distances():
    classifier = _small()
    x = torch.rand(6, 1, 16, 16) * 2 - 1
    with torch.no_grad():
        f, logits = classifier(x)
        direct = torch.cdist(f, classifier.centres) ** 2
    assert f.shape == (6, 8) and logits.shape == (6, 4)
    torch.testing.assert_close(logits, -direct, atol=1e-4, rtol=1e-4)
    assert torch.equal(classifier.centres, classifier.centres_param.t())
    assert classifier.centres.shape == (4, 8)


def test_pl_and_nll_terms():
    classifier = _small(dim=8)
    with torch.no_grad():  # move centres near the features so the PL term is not dominated by the init scale
        classifier.centres_param.mul_(0.1)
    x = torch.rand(8, 1, 16, 16) * 2 - 1
    labels = torch.tensor([0, 1, 2, 3, 3, 2, 1, 0])
    with torch.no_grad():
        total, logs = dce_loss(classifier, x, labels, pl_weight=0.5)
        f, logits = classifier(x)
        pl = ((f - classifier.centres_param.t()[labels]) ** 2).sum(1).mean()
        nll = F.cross_entropy(classifier.scale * logits, labels)
    assert logs["pl"] == pytest.approx(pl.item(), rel=1e-5)
    assert logs["nll"] == pytest.approx(nll.item(), rel=1e-5)
    assert total.item() == pytest.approx(nll.item() + 0.5 * pl.item(), rel=1e-5)
    assert logs["accuracy"] == pytest.approx((logits.argmax(1) == labels).float().mean().item())


def test_short_training_learns_and_is_deterministic(make_cfg):
    cfg = make_cfg({"data": {"max_images": 400}})  # 360 training, 40 held-out digits
    train, holdout = load_dataset(cfg.data), load_dataset(cfg.data, split="holdout")
    kwargs = dict(num_classes=10, dim=16, batch_size=32, lr=1e-3, pl_weight=0.01, scale=2.0, seed=0, device="cpu")
    # 100 steps: at 60 the eval-mode BatchNorm statistics still lag the weights (measured: 0.225 held out in eval mode,
    # 0.575 with batch statistics); at 100 steps 0.675 either way.
    classifier, record = train_classifier(train, holdout, steps=100, **kwargs)
    print("held-out accuracy after 100 steps:", record["classifier_holdout_accuracy"], record)
    assert not classifier.training
    assert record["classifier_steps"] == 100 and record["classifier_holdout_images"] == len(holdout) == 40
    assert record["classifier_holdout_accuracy"] > 0.3  # chance is 0.1
    # Same seed, bitwise identical centres (two short runs keep the test under 20 s on one core).
    first, _ = train_classifier(train, holdout, steps=10, **kwargs)
    second, _ = train_classifier(train, holdout, steps=10, **kwargs)
    assert torch.equal(first.centres, second.centres)
    assert not torch.equal(first.centres, classifier.centres)


def test_clear_errors(make_cfg, tiny_data, tmp_path):
    unlabelled = ImageDataset("tiny", tiny_data.images, None, ())
    with pytest.raises(ConfigError, match="labels"):
        train_classifier(unlabelled, unlabelled, num_classes=4, dim=8, steps=1, batch_size=4, lr=1e-3, pl_weight=0.01,
                         scale=2.0, seed=0, device="cpu")
    with pytest.raises(ConfigError, match="num_classes=5"):
        train_classifier(tiny_data, tiny_data, num_classes=5, dim=8, steps=1, batch_size=4, lr=1e-3, pl_weight=0.01,
                         scale=2.0, seed=0, device="cpu")
    bad = tmp_path / "not_resnet18.pt"
    torch.save({"conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(ConfigError, match="not_resnet18.pt"):
        PrototypeClassifier(1, 4, dim=8, weights_path=bad)
    with pytest.raises(ConfigError, match="missing.pt"):
        PrototypeClassifier(1, 4, dim=8, weights_path=tmp_path / "missing.pt")


def test_local_weights_file_loads(tmp_path):
    from torchvision.models import resnet18

    torch.manual_seed(1)
    good = tmp_path / "resnet18.pt"
    reference = resnet18(weights=None)
    torch.save(reference.state_dict(), good)
    classifier = PrototypeClassifier(3, 4, dim=8, weights_path=good)
    assert torch.equal(classifier.backbone.conv1.weight, reference.conv1.weight)


def test_stage1_flops_are_one_counted_step_times_the_steps_and_change_nothing(make_cfg):
    """The classifier counts one step and multiplies (no counter around its loop): the total equals counting every
    step, and the counted step leaves the training bitwise as it is uncounted."""
    from unittest import mock

    import baselines.proto_classifier as module
    from pdm.flops import ExactFlopCounter

    cfg = make_cfg({"data": {"max_images": 100}})
    train, holdout = load_dataset(cfg.data), load_dataset(cfg.data, split="holdout")
    kwargs = dict(num_classes=10, dim=8, steps=3, batch_size=16, lr=1e-3, seed=0, device="cpu")
    classifier, record = train_classifier(train, holdout, **kwargs)
    assert record["stage1_flops"] == 3 * record["classifier_step_flops"] > 0
    with mock.patch.object(module, "holdout_accuracy", return_value=0.0), ExactFlopCounter() as counter:
        with mock.patch.object(module, "classifier_step_flops", return_value=0):
            uncounted_first, _ = train_classifier(train, holdout, **kwargs)
    assert int(counter.get_total_flops()) == record["stage1_flops"]  # every step counted = one step x 3
    assert torch.equal(uncounted_first.centres, classifier.centres)
