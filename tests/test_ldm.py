"""LDM: the KL autoencoder (shapes, training, latent scale), stage 1 end to end, the frozen autoencoder in the harness."""

import dataclasses
import json
import shutil

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from baselines.ldm import LDM, autoencoder_loss, build_autoencoder, latent_channel_stats, latent_std, norm_groups
from pdm.config import ConfigError
from pdm.data import BatchStream, load_dataset
from pdm.methods.base import DataInfo

SMALL_AE = {"autoencoder_channels": [8, 16], "latent_channels": 2, "autoencoder_batch_size": 8, "autoencoder_lr": 0.002}


def ldm_cfg(make_cfg, data=None, **options):
    return make_cfg({"data": {"max_images": 48, **(data or {})}}, replace_methods={"ldm": {**SMALL_AE, **options}})


@pytest.mark.parametrize("factor, channels", [(2, [8, 16]), (4, [8, 16, 16])])
def test_autoencoder_round_trip_shapes(make_cfg, factor, channels):
    cfg = ldm_cfg(make_cfg, downsample_factor=factor, autoencoder_channels=channels, latent_channels=3)
    torch.manual_seed(0)
    method = LDM(cfg, DataInfo(1, 16, 10))
    assert (method.latent_channels, method.latent_size) == (3, 16 // factor)
    x = torch.rand(2, 1, 16, 16) * 2 - 1
    posterior = method.autoencoder.encode(x).latent_dist
    assert posterior.mean.shape == (2, 3, 16 // factor, 16 // factor)
    assert method.autoencoder.decode(posterior.sample()).sample.shape == x.shape
    assert all(not p.requires_grad for p in method.autoencoder.parameters())  # frozen from the start
    assert method.unet.unet.config.in_channels == 3 and method.unet.unet.config.sample_size == 16 // factor
    assert not method.diffusion_cfg.clip_sample  # latents are not images: no x0 clipping to [-1, 1]


def test_norm_groups_follow_the_channels():
    assert norm_groups([32, 64]) == 32 and norm_groups([8, 16]) == 8 and norm_groups([24, 48]) == 8
    assert norm_groups([6, 12]) == 2 and norm_groups([5]) == 1


def test_a_few_steps_reduce_reconstruction_error(make_cfg):
    cfg = ldm_cfg(make_cfg)
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    ae = build_autoencoder(1, 16, cfg.methods["ldm"])
    fixed = data.to_model_range(torch.arange(16))

    def error():
        with torch.no_grad():
            return autoencoder_loss(ae, fixed, 0.0, torch.Generator().manual_seed(0))[1]["rec_l1_per_pixel"].item()

    before = error()
    optimizer = torch.optim.Adam(ae.parameters(), lr=2e-3)
    stream, generator = BatchStream(data, 8, seed=0), torch.Generator().manual_seed(1)
    for step in range(25):
        loss, _ = autoencoder_loss(ae, stream.batch(step)[0], 1e-6, generator)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    after = error()
    assert after < 0.7 * before, (before, after)


def test_normalised_latents_have_zero_mean_and_unit_std_per_channel(make_cfg):
    cfg = ldm_cfg(make_cfg)
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    method = LDM(cfg, DataInfo.of(data))
    mean, std = latent_channel_stats(method.autoencoder, data, torch.Generator().manual_seed(3), "cpu")
    assert len(mean) == len(std) == cfg.methods["ldm"]["latent_channels"] and min(std) > 0
    method.scale_factor = 1.0  # what prepare() sets up from stage1.json, by hand
    method.latent_shift, method.latent_scale = (torch.tensor(v).view(1, -1, 1, 1) for v in (mean, std))
    x = data.to_model_range(torch.arange(len(data)))
    z = method.encode(x, torch.Generator().manual_seed(3)).transpose(0, 1).flatten(1)  # same draws as the measurement
    assert torch.allclose(z.mean(1), torch.zeros(len(mean)), atol=1e-3)
    assert torch.allclose(z.std(1), torch.ones(len(mean)), atol=1e-3)
    round_trip = method.decode(method.encode(x, torch.Generator().manual_seed(3)))
    plain = method.autoencoder.decode(method.autoencoder.encode(x).latent_dist.sample(torch.Generator().manual_seed(3)))
    assert torch.allclose(round_trip, plain.sample.clamp(-1, 1), atol=1e-5)  # decode undoes the normalisation


def fast_frechet(mu1, sigma1, mu2, sigma2):
    """Stand-in for the 2048x2048 matrix square roots (a minute on a busy CPU): a finite distance of the statistics."""
    return float(((mu1 - mu2) ** 2).sum() + abs(np.trace(sigma1) - np.trace(sigma2)))


def test_ldm_samples_unclipped_latents_on_its_own_schedule(make_cfg):
    """The x0 amplification 1 / sqrt(abar_T) was 156 on the shared linear schedule (samples drifted to latent std 13);
    LDM's scaled_linear 0.00085..0.012 keeps it near 15, without x0 clipping; other methods keep the shared schedule."""
    from pdm.diffusion import make_sampler
    from pdm.methods.registry import get_method_class

    cfg = ldm_cfg(make_cfg, num_train_timesteps=1000)
    method = LDM(cfg, DataInfo(1, 16, 10))
    assert (method.diffusion_cfg.beta_schedule, method.diffusion_cfg.beta_start, method.diffusion_cfg.beta_end) == (
        "scaled_linear", 0.00085, 0.012)
    assert 0.05 < method.train_scheduler.alphas_cumprod[-1].sqrt().item() < 0.08
    for name in ("ddpm", "ddim"):
        sampler = make_sampler(name, method.diffusion_cfg)
        assert not sampler.config.clip_sample and sampler.config.beta_schedule == "scaled_linear"
    ddpm_cfg = make_cfg({})  # the other methods keep the shared schedule
    assert get_method_class("ddpm")(ddpm_cfg, DataInfo(1, 16, 10)).diffusion_cfg == ddpm_cfg.diffusion_for("ddpm")
    assert cfg.diffusion.beta_schedule == "linear"
    shared = LDM(ldm_cfg(make_cfg, beta_schedule=None, beta_start=None, beta_end=None, num_train_timesteps=1000),
                 DataInfo(1, 16, 10))
    assert shared.diffusion_cfg == dataclasses.replace(cfg.diffusion_for("ldm"), clip_sample=False)
    assert shared.train_scheduler.alphas_cumprod[-1].sqrt().item() < 0.01  # the shared linear schedule: 0.0064


def test_stage1_end_to_end_then_the_harness(make_cfg, tmp_path, monkeypatch):
    from pdm.checkpoint import load_trained
    from pdm.metrics import scores
    from pdm.steps import stage1_step, storage
    from pdm.trainer import load_stage1, train

    monkeypatch.setattr(scores, "fid_torch_fidelity", fast_frechet)
    monkeypatch.setattr(scores, "fid_clean", fast_frechet)
    cfg = make_cfg({"data": {"max_images": 48}, "train": {"steps": 2, "batch_size": 4, "warmup_steps": 1}},
                   replace_methods={"ldm": {**SMALL_AE, "autoencoder_steps": 8}})
    stage1_dir = tmp_path / "stage1"
    record = stage1_step(cfg, "ldm", 0, stage1_dir)

    assert sorted(p.name for p in stage1_dir.iterdir()) == ["decoder.safetensors", "encoder.safetensors", "reconstructions.png",
                                                            "stage1.json"]
    assert json.loads((stage1_dir / "stage1.json").read_text())["scale_factor"] == record["scale_factor"]
    assert record["scale_factor"] > 0 and record["psnr"] > 0 and np.isfinite(record["rfid"])
    assert np.isfinite(record["rkid"]) and np.isfinite(record["rclean_fid"])
    assert record["holdout_images"] == 5 and record["train_images"] == 43
    assert record["sampling_files"] == ["decoder.safetensors"] and record["external_files"] == []
    assert record["latent_shape"] == [2, 8, 8] and record["seconds"] > 0
    assert set(load_file(str(stage1_dir / "decoder.safetensors"))) == {
        k for k in build_autoencoder(1, 16, cfg.methods["ldm"]).state_dict() if k.startswith(("decoder.", "post_quant_conv."))}

    # stage 2 through the harness: a finite loss; generation in latent space, decoded to image size
    data = load_dataset(cfg.data)
    torch.manual_seed(0)
    method = LDM(cfg, DataInfo.of(data))
    assert load_stage1(method, stage1_dir)["scale_factor"] == method.scale_factor
    loss, logs = method.loss(data.to_model_range(torch.arange(4)), None, torch.Generator().manual_seed(0))
    assert torch.isfinite(loss) and loss.requires_grad
    one = method.sample([0, 1, 2], "ddim", steps=3, batch_size=1)
    assert one.dtype == np.uint8 and one.shape == (3, 16, 16, 1)
    three = method.sample([0, 1, 2], "ddim", steps=3, batch_size=3)
    assert np.abs(one.astype(int) - three.astype(int)).max() <= 1  # image i depends only on seed i
    assert method.record()["scale_factor"] == record["scale_factor"] and method.record()["autoencoder_psnr"] == record["psnr"]

    # the shared trainer optimises only the U-Net; the autoencoder stays as stage 1 wrote it and is not re-saved
    model_dir = tmp_path / "model"
    trained = train(cfg, "ldm", 0, model_dir, stage1_dir=stage1_dir)
    assert trained["parameters_trained"] == sum(p.numel() for p in method.unet.parameters())
    assert sorted(p.name for p in (model_dir / "weights").glob("*.safetensors")) == ["unet.safetensors"]
    assert trained["stage1_seconds"] == record["seconds"]
    sizes = storage(model_dir, trained)
    assert sizes["stage1_weights_bytes"] == (stage1_dir / "decoder.safetensors").stat().st_size
    reloaded, _ = load_trained(cfg, "ldm", model_dir)
    saved = load_file(str(stage1_dir / "decoder.safetensors"))
    assert all(torch.equal(reloaded.autoencoder.state_dict()[k], v) for k, v in saved.items())
    assert reloaded.sample([5], "ddim", steps=2).shape == (1, 16, 16, 1)

    # broken stage-1 folders are clear errors
    broken = tmp_path / "broken"
    shutil.copytree(stage1_dir, broken)
    (broken / "decoder.safetensors").write_bytes(b"not a safetensors file")
    with pytest.raises(ValueError, match="re-run LDM's stage 1"):
        LDM(cfg, DataInfo.of(data)).prepare(broken)
    (broken / "decoder.safetensors").unlink()
    with pytest.raises(FileNotFoundError, match="re-run LDM's stage 1"):
        LDM(cfg, DataInfo.of(data)).prepare(broken)
    other = make_cfg({"data": {"max_images": 48}}, replace_methods={"ldm": {**SMALL_AE, "latent_channels": 3}})
    with pytest.raises(ValueError, match="other methods.ldm options"):
        LDM(other, DataInfo.of(data)).prepare(stage1_dir)
    with pytest.raises(RuntimeError, match="prepare"):
        LDM(cfg, DataInfo.of(data)).encode(torch.zeros(1, 1, 16, 16))


@pytest.mark.parametrize("override, options, key", [
    ({}, {"downsample_factor": 4, "autoencoder_channels": [32, 64]}, "autoencoder_channels"),
    ({"data": {"resolution": 12}}, {"downsample_factor": 8, "autoencoder_channels": [8, 8, 8, 8]},
     "does not divide data.resolution"),
    ({"model": {"block_out_channels": [32, 32, 32], "down_block_types": ["DownBlock2D"] * 3, "up_block_types": ["UpBlock2D"] * 3}},
     {"downsample_factor": 8, "autoencoder_channels": [8, 8, 8, 8]}, "latent side"),
])
def test_config_errors_name_the_key(make_cfg, override, options, key):
    with pytest.raises(ConfigError, match=key) as error:
        make_cfg(override, replace_methods={"ldm": options})
    assert "methods.ldm." in str(error.value)


def test_too_small_holdout_is_refused_before_training(make_cfg, tmp_path):
    cfg = ldm_cfg(make_cfg, data={"holdout_fraction": 0.01})
    with pytest.raises(ConfigError, match="holdout_fraction"):
        LDM.run_stage1(cfg, 0, tmp_path)
    assert not (tmp_path / "encoder.safetensors").exists()


def test_sampling_parameters_count_the_decoder_not_the_encoder(make_cfg):
    """LDM's 'params' column is what generation runs: the U-Net plus the frozen decoder."""
    method = LDM(make_cfg({"methods": {"ldm": {"autoencoder_channels": [16, 32], "latent_channels": 2}}}), DataInfo(1, 16, 10))
    count = lambda modules: sum(p.numel() for m in modules for p in m.parameters())  # noqa: E731
    ae = method.autoencoder
    assert count(method.sampling_modules()) == count([method.unet, ae.post_quant_conv, ae.decoder])
    assert count([ae.encoder]) > 0 and count(method.sampling_modules()) < count([method])


def test_rfid_images_scores_the_first_held_out_images_only(make_cfg, tmp_path, monkeypatch):
    from pdm.metrics import scores
    from pdm.steps import stage1_step

    monkeypatch.setattr(scores, "fid_torch_fidelity", fast_frechet)
    monkeypatch.setattr(scores, "fid_clean", fast_frechet)
    cfg = make_cfg({"data": {"max_images": 48}},
                   replace_methods={"ldm": {**SMALL_AE, "autoencoder_steps": 2, "rfid_images": 3}})
    record = stage1_step(cfg, "ldm", 0, tmp_path / "stage1")
    assert record["holdout_images"] == 3 and record["train_images"] == 43 and np.isfinite(record["rfid"])
