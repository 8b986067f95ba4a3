"""The one map from the names used in configs and in the workflow's `{method}` wildcard to implementations.

Entries are import paths so that listing methods (config validation) imports no network code.
"""

from __future__ import annotations

import importlib

METHODS: dict[str, str] = {
    "pdm": "pdm.methods.pdm:PDM",
    "spdm": "pdm.methods.pdm:SupervisedPDM",
    "pdm_balanced": "pdm.methods.pdm_balanced:BalancedPDM",  # extension beyond the paper (an ablation of ours)
    "ddpm": "baselines.ddpm:DDPM",
    "cddpm": "baselines.cddpm:ClassConditionalDDPM",
    "protodiffusion": "baselines.protodiffusion:ProtoDiffusion",
    "ldm": "baselines.ldm:LDM",
    "rdm": "baselines.rdm:RDM",
}


def get_method_class(name: str):
    if name not in METHODS:
        raise KeyError(f"unknown method '{name}'; known methods: {', '.join(sorted(METHODS))}")
    module_name, class_name = METHODS[name].split(":")
    return getattr(importlib.import_module(module_name), class_name)
