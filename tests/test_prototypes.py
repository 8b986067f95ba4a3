"""The prototype losses against values computed by hand, and the sinusoidal table against the reference formula."""

import math

import pytest
import torch
import torch.nn.functional as F

from pdm.prototypes import (
    FeatureEncoder,
    PrototypeBank,
    nearest_prototype,
    sinusoidal_table,
    supervised_prototype_loss,
    unsupervised_prototype_loss,
)

# Two prototypes on the axes and two features, written out so every term can be checked by hand.
P = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
Z = torch.tensor([[1.0, 1.0], [0.0, 3.0]])
# distances: z0 -> (1, sqrt(2)), z1 -> (sqrt(10), 1); nearest: (0, 1)


def test_nearest_prototype_is_euclidean_argmin():
    assert nearest_prototype(Z, P).tolist() == [0, 1]


def test_unsupervised_terms_match_hand_computation():
    total, parts = unsupervised_prototype_loss(Z, P, tau=1.0, alpha=1.0, beta=1.0)
    # L_con: mean over rows of -log softmax(-d)[argmin]
    ce0 = -math.log(math.exp(-1) / (math.exp(-1) + math.exp(-math.sqrt(2))))
    ce1 = -math.log(math.exp(-1) / (math.exp(-math.sqrt(10)) + math.exp(-1)))
    assert parts["contrastive"].item() == pytest.approx((ce0 + ce1) / 2, abs=1e-6)
    # L_align: MSE(z, p_k*) over all 4 entries: z0 - p0 = (0, 1), z1 - p1 = (0, 1)
    assert parts["align"].item() == pytest.approx(2 / 4, abs=1e-7)
    # L_compact: prototypes are orthogonal, so cos = I and the term vanishes
    assert parts["compact"].item() == pytest.approx(0.0, abs=1e-7)
    assert total.item() == pytest.approx(parts["contrastive"].item() + 0.5, abs=1e-6)


def test_compact_term_counts_off_diagonal_cosines_twice():
    p = torch.tensor([[1.0, 0.0], [1.0, 1.0]])  # cos = 1/sqrt(2) off the diagonal
    _, parts = unsupervised_prototype_loss(torch.zeros(1, 2), p, beta=1.0)
    assert parts["compact"].item() == pytest.approx(2 * 0.5, abs=1e-6)


def test_weights_scale_their_terms():
    _, parts = unsupervised_prototype_loss(Z, P)
    total, _ = unsupervised_prototype_loss(Z, P, tau=1.0, alpha=3.0, beta=5.0)
    expected = parts["contrastive"] + 3 * parts["align"] + 5 * parts["compact"]
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)


def test_tau_sharpens_the_logits():
    _, parts = unsupervised_prototype_loss(Z, P, tau=2.0)
    expected = F.cross_entropy(-2.0 * torch.cdist(Z, P), torch.tensor([0, 1]))
    assert parts["contrastive"].item() == pytest.approx(expected.item(), abs=1e-6)


def test_supervised_loss_uses_labels_not_argmin():
    labels = torch.tensor([1, 0])  # the opposite of the nearest prototypes
    total, parts = supervised_prototype_loss(Z, P, labels, tau=1.0, alpha=1.0)
    ce0 = -math.log(math.exp(-math.sqrt(2)) / (math.exp(-1) + math.exp(-math.sqrt(2))))
    ce1 = -math.log(math.exp(-math.sqrt(10)) / (math.exp(-math.sqrt(10)) + math.exp(-1)))
    assert parts["contrastive"].item() == pytest.approx((ce0 + ce1) / 2, abs=1e-6)
    # z0 - p1 = (1, -1), z1 - p0 = (-1, 3): squared sum 1 + 1 + 1 + 9 = 12 over 4 entries
    assert parts["align"].item() == pytest.approx(3.0, abs=1e-6)
    assert "compact" not in parts
    assert total.item() == pytest.approx(parts["contrastive"].item() + 3.0, abs=1e-6)


def test_sinusoidal_table_golden_values():
    table = sinusoidal_table(2000, 8)
    assert table.shape == (2000, 8)
    t = 7
    for i in range(4):
        freq = math.exp(-(2 * i) * math.log(10000.0) / 8)
        assert table[t, 2 * i].item() == pytest.approx(math.sin(t * freq), abs=1e-6)
        assert table[t, 2 * i + 1].item() == pytest.approx(math.cos(t * freq), abs=1e-6)


def test_feature_encoder_shape_and_bank_init():
    torch.manual_seed(0)
    z = FeatureEncoder(in_channels=1, dim=32)(torch.randn(3, 1, 16, 16))
    assert z.shape == (3, 32)
    bank = PrototypeBank(5, 32)
    bound = math.sqrt(6 / ((1 + 0.1**2) * 32))  # kaiming_uniform_(a=0.1) bound with fan_in = d
    assert bank.prototypes.abs().max().item() <= bound
    assert bank.usage_counts.tolist() == [0.0] * 5
