"""Plain DDPM (Ho et al. 2020): the shared U-Net without the bottleneck cross-attention; everything else identical."""

from pdm.methods.base import Method


class DDPM(Method):
    name = "ddpm"
    conditioning = "none"
    cross_attention = False
