"""Classifier-free guidance: the formula on a fake denoiser (golden numbers), the NFE it costs, the null-condition rate."""

import pytest
import torch

from pdm.guidance import evaluations_per_step, guided_denoiser, guided_epsilon, null_mask
from pdm.sampling import run_sampler


def fake_network(calls):
    """eps = x + context.mean(): the conditional context 1.0, the null context 0.0, so eps_c = x + 1, eps_null = x."""
    def network(x, t, context):
        calls.append(x.shape[0])
        return x + context.mean(dim=1).view(-1, 1, 1, 1)
    return network


def test_guided_epsilon_golden_numbers():
    eps_c, eps_null = torch.tensor([1.0, 2.0]), torch.tensor([0.5, -1.0])
    # (1 + w) eps_c - w eps_null with w = 1.8 (ProtoDiffusion's diffusion.py): 2.8 * eps_c - 1.8 * eps_null
    torch.testing.assert_close(guided_epsilon(eps_c, eps_null, 1.8), torch.tensor([1.9, 7.4]))
    torch.testing.assert_close(guided_epsilon(eps_c, eps_null, 0.0), eps_c)


@pytest.mark.parametrize("weight, expected_calls_per_step, expected_offset", [(0.0, 1, 1.0), (1.8, 2, 2.8), (3.0, 2, 4.0)])
def test_guided_denoiser_on_a_fake_network(weight, expected_calls_per_step, expected_offset):
    calls = []
    x = torch.zeros(3, 1, 2, 2)
    denoise = guided_denoiser(fake_network(calls), lambda t: torch.ones(3, 4), lambda t: torch.zeros(3, 4), weight)
    eps = denoise(x, torch.tensor([5, 5, 5]))
    # eps_c = 1, eps_null = 0 -> (1 + w) * 1 - w * 0 = 1 + w; one doubled batch when guided, the null pass skipped at 0
    torch.testing.assert_close(eps, torch.full_like(x, expected_offset))
    assert calls == [3 * expected_calls_per_step]
    assert evaluations_per_step(weight) == expected_calls_per_step


def test_the_sampling_loop_is_unchanged_by_guidance():
    """run_sampler only sees denoise(x_t, t): guided or not, it calls it once per step."""
    from pdm.config import DiffusionConfig
    from pdm.diffusion import make_sampler

    schedule = DiffusionConfig(num_train_timesteps=100, beta_schedule="linear", beta_start=1e-4, beta_end=0.02,
                               clip_sample=True)
    calls = []
    denoise = guided_denoiser(fake_network(calls), lambda t: torch.ones(2, 4), lambda t: torch.zeros(2, 4), 1.8)
    generators = [torch.Generator().manual_seed(i) for i in range(2)]
    run_sampler(denoise, make_sampler("ddim", schedule), torch.randn(2, 1, 2, 2), 7, generators)
    assert calls == [4] * 7  # 7 steps, each one network call on the doubled batch of 2 images


def test_null_mask_rate_and_determinism():
    mask = null_mask(20_000, 0.1, torch.Generator().manual_seed(0))
    assert mask.dtype == torch.bool and 0.09 < mask.float().mean().item() < 0.11  # binomial sd ~0.002
    assert torch.equal(mask, null_mask(20_000, 0.1, torch.Generator().manual_seed(0)))
    assert not null_mask(100, 0.0, torch.Generator()).any()


# --- opt-in guidance for the token-conditioned labelled methods (s-PDM, cddpm) -----------------------------------

def _token_method(make_cfg, name, **options):
    from pdm.methods.base import DataInfo
    from pdm.methods.registry import get_method_class

    cfg = make_cfg(replace_methods={name: options})
    return get_method_class(name)(cfg, DataInfo(1, 16, 4)).eval()


@pytest.mark.parametrize("name", ["spdm", "cddpm"])
def test_token_guidance_is_off_by_default_and_draws_nothing(make_cfg, name):
    method = _token_method(make_cfg, name)
    assert method.options["label_drop"] == 0.0 and method.options["guidance_weight"] == 0.0
    assert type(method).evaluations_per_step(method.options) == 1
    generator = torch.Generator().manual_seed(0)
    x0, labels, t = torch.zeros(8, 1, 16, 16), torch.arange(8) % 4, torch.full((8,), 7)
    tokens, _, logs = method.context(x0, labels, t, generator)
    assert "label_drop_fraction" not in logs
    assert torch.equal(generator.get_state(), torch.Generator().manual_seed(0).get_state())  # the stream untouched


@pytest.mark.parametrize("name", ["spdm", "cddpm"])
def test_token_label_drop_leaves_only_the_time_in_the_null_token(make_cfg, name):
    method = _token_method(make_cfg, name, label_drop=0.5)
    x0, labels, t = torch.zeros(400, 1, 16, 16), torch.arange(400) % 4, torch.arange(400) % 100
    with torch.no_grad():
        tokens, _, logs = method.context(x0, labels, t, torch.Generator().manual_seed(0))
    time_only = (tokens[:, 0] - method.time_table[t]).abs().amax(dim=1) == 0
    assert 0.4 < time_only.float().mean().item() < 0.6 and logs["label_drop_fraction"] == time_only.float().mean()


@pytest.mark.parametrize("name", ["spdm", "cddpm"])
def test_token_guidance_combines_the_class_and_the_null_token(make_cfg, name):
    """At w = 2 the denoiser is 3 eps(token) - 2 eps(time-only token), from one doubled U-Net batch."""
    method = _token_method(make_cfg, name, label_drop=0.1, guidance_weight=2.0)
    assert type(method).evaluations_per_step(method.options) == 2
    generators = [torch.Generator().manual_seed(i) for i in range(3)]
    x, t = torch.randn(3, 1, 16, 16, generator=torch.Generator().manual_seed(9)), torch.tensor([40, 40, 40])
    with torch.no_grad():
        guided = method.denoiser(generators, "cpu")(x, t)
        tokens = method.sampling_context([torch.Generator().manual_seed(i) for i in range(3)], "cpu")(t)
        eps_c, eps_null = method.unet(x, t, tokens), method.unet(x, t, method.time_table[t].unsqueeze(1))
    torch.testing.assert_close(guided, 3.0 * eps_c - 2.0 * eps_null, rtol=1e-4, atol=1e-5)


def test_guidance_without_a_trained_null_condition_is_refused(make_cfg):
    from pdm.config import ConfigError

    with pytest.raises(ConfigError, match=r"methods.cddpm.guidance_weight=1.5 needs .* methods.cddpm.label_drop > 0"):
        make_cfg(replace_methods={"cddpm": {"guidance_weight": 1.5}})
    sweep = {"sweep": {"guidance_weights": [0, 1], "methods": ["spdm"]}}
    with pytest.raises(ConfigError, match="none of the swept methods"):
        make_cfg(sweep, replace_methods={"spdm": {}})
    assert make_cfg(sweep, replace_methods={"spdm": {"label_drop": 0.1}}).guidance_methods == ("spdm",)
