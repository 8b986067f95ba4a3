"""pdm-bench: Prototype Diffusion Models (arXiv 2508.09922) and the shared benchmarking harness."""

__version__ = "0.1.0"
