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
