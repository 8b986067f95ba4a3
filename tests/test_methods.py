"""PDM, s-PDM and DDPM on the shared harness: gradient flow as in the reference, label routing, the cross-attention."""

import pytest
import torch

from pdm.methods.base import DataInfo
from pdm.methods.registry import get_method_class
from pdm.unet import ConditionedUNet

INFO = DataInfo(channels=1, resolution=16, num_classes=4)


def build(cfg, name):
    torch.manual_seed(0)
    return get_method_class(name)(cfg, INFO)


def batch():
    generator = torch.Generator().manual_seed(1)
    return torch.rand(6, 1, 16, 16, generator=generator) * 2 - 1, torch.tensor([0, 1, 2, 3, 0, 1])


def grads(module):
    return [p.grad for p in module.parameters()]


def test_pdm_gradient_flow_matches_reference(make_cfg):
    """Prototypes get gradients from both losses; f_phi none from the diffusion loss (the token is an index)."""
    method = build(make_cfg(), "pdm")
    x0, labels = batch()
    z0 = method.encode(x0)
    from pdm.diffusion import training_targets

    z_t, t, noise = training_targets(method.train_scheduler, z0, torch.Generator().manual_seed(0))
    tokens, aux, _ = method.context(x0, labels, t, torch.Generator())
    diffusion = torch.nn.functional.mse_loss(method.unet(z_t, t, tokens), noise)

    diffusion.backward(retain_graph=True)
    assert all(g is None or g.abs().sum() == 0 for g in grads(method.f_phi))
    assert method.bank.prototypes.grad is not None and method.bank.prototypes.grad.abs().sum() > 0
    from_diffusion = method.bank.prototypes.grad.clone()

    method.zero_grad()
    aux.backward()
    assert method.bank.prototypes.grad.abs().sum() > 0
    assert sum(g.abs().sum() for g in grads(method.f_phi) if g is not None) > 0
    assert not torch.allclose(from_diffusion, method.bank.prototypes.grad)
    assert all(p.grad is None or p.grad.abs().sum() == 0 for p in method.unet.parameters())


def test_spdm_routes_labels_to_prototypes(make_cfg):
    method = build(make_cfg(), "spdm")
    assert method.bank.prototypes.shape[0] == INFO.num_classes
    x0, labels = batch()
    t = torch.zeros(6, dtype=torch.long)
    tokens, _, _ = method.context(x0, labels, t, torch.Generator())
    expected = method.bank.prototypes[labels] + method.time_table[0]
    torch.testing.assert_close(tokens[:, 0], expected)


def test_spdm_needs_labels_and_k_equal_classes(make_cfg):
    from pdm.config import ConfigError

    with pytest.raises(ConfigError, match="class labels"):
        get_method_class("spdm")(make_cfg(), DataInfo(1, 16, 0))
    with pytest.raises(ConfigError, match="number of classes"):
        get_method_class("spdm")(make_cfg({"methods": {"spdm": {"num_prototypes": 3}}}), INFO)


def test_cross_attention_with_one_token_is_a_residual(make_cfg):
    cfg = make_cfg()
    torch.manual_seed(0)
    net = ConditionedUNet(cfg.model, 1, 16, cross_attention=True)
    x, t = torch.randn(2, 1, 16, 16), torch.tensor([3, 50])
    token = torch.randn(2, 1, cfg.model.bottleneck_channels)
    out = net(x, t, token)
    assert out.shape == x.shape
    # with the attention's output projection zeroed, the branch adds nothing: the plain U-Net path remains
    with torch.no_grad():
        net.bottleneck_attn.out_proj.weight.zero_()
        net.bottleneck_attn.out_proj.bias.zero_()
    torch.manual_seed(0)
    plain = ConditionedUNet(cfg.model, 1, 16, cross_attention=False)  # same seed: same backbone weights
    torch.testing.assert_close(net(x, t, token), plain(x, t))
    assert not torch.allclose(out, plain(x, t))
    with pytest.raises(ValueError, match="context must be"):
        net(x, t, None)


def test_one_token_attention_output_is_the_projected_value(make_cfg):
    """With a single key, softmax is 1: MHA returns out_proj(W_v token) at every position."""
    cfg = make_cfg()
    torch.manual_seed(0)
    net = ConditionedUNet(cfg.model, 1, 16, cross_attention=True)
    mha = net.bottleneck_attn
    c = cfg.model.bottleneck_channels
    query, token = torch.randn(2, 16, c), torch.randn(2, 1, c)
    out, _ = mha(query, token, token)
    w_v, b_v = mha.in_proj_weight[2 * c :], mha.in_proj_bias[2 * c :]
    expected = mha.out_proj(token @ w_v.T + b_v).expand(-1, 16, -1)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_ddpm_has_no_cross_attention_and_same_initial_unet(make_cfg):
    cfg = make_cfg()
    ddpm, pdm = build(cfg, "ddpm"), build(cfg, "pdm")
    assert ddpm.unet.bottleneck_attn is None
    ddpm_state, pdm_state = ddpm.unet.unet.state_dict(), pdm.unet.unet.state_dict()
    assert all(torch.equal(ddpm_state[k], pdm_state[k]) for k in ddpm_state)  # fair start: same seed, same backbone


def test_finalize_counts_prototype_usage(make_cfg, tiny_data):
    method = build(make_cfg(), "pdm")
    method.finalize(tiny_data)
    assert method.bank.usage_counts.sum().item() == len(tiny_data)
    spdm = build(make_cfg(), "spdm")
    spdm.finalize(tiny_data)
    assert spdm.bank.usage_counts.tolist() == [4.0, 4.0, 4.0, 4.0]


def test_frequency_sampling_only_draws_used_prototypes(make_cfg):
    method = build(make_cfg(), "pdm")
    method.bank.usage_counts.copy_(torch.tensor([0.0, 5.0, 0.0, 1.0]))
    from pdm.sampling import image_generators

    tokens_for = method.sampling_context(image_generators(range(64)), "cpu")
    tokens = tokens_for(torch.zeros(64, dtype=torch.long))[:, 0] - method.time_table[0]
    index = torch.cdist(tokens, method.bank.prototypes).argmin(1)
    assert set(index.tolist()) <= {1, 3} and 1 in index.tolist()


def test_per_step_quirk_redraws_prototypes_each_step(make_cfg):
    cfg = make_cfg({"methods": {"pdm": {"prototype_sampling": "per_step_uniform"}}})
    method = build(cfg, "pdm")
    from pdm.sampling import image_generators

    tokens_for = method.sampling_context(image_generators(range(32)), "cpu")
    t = torch.zeros(32, dtype=torch.long)
    assert not torch.equal(tokens_for(t), tokens_for(t))
    fixed = build(make_cfg({"methods": {"pdm": {"prototype_sampling": "uniform"}}}), "pdm")
    tokens_for = fixed.sampling_context(image_generators(range(32)), "cpu")
    assert torch.equal(tokens_for(t), tokens_for(t))


def test_frequency_sampling_refuses_missing_counts(make_cfg):
    method = build(make_cfg(), "pdm")
    with pytest.raises(RuntimeError, match="usage frequencies"):
        method.sampling_context([torch.Generator()], "cpu")
