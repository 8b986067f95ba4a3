"""Several experiments in one workflow: a config whose only own key is `experiments:`, a list of config files.

config/paper/all.yaml lists the five paper datasets' configs; the Snakefile loads each one as a Snakemake module
(workflow/experiment.smk, its rules prefixed with the module name). Keys beside `experiments` (from the file or from
`--config`, e.g. `--config seeds=[0]`) are merged on top of every listed experiment.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from pdm.config import ConfigError, load_raw, merge_config


def is_multi_experiment(raw: Mapping[str, Any]) -> bool:
    return "experiments" in raw


def module_name(experiment: str) -> str:
    """A Snakemake module / rule-name prefix for an experiment name (which may hold '.' and '-')."""
    return re.sub(r"\W", "_", experiment)


def experiment_configs(raw: Mapping[str, Any], search_dirs) -> dict[str, dict]:
    """{module name: raw config of that experiment, its `base:` merged and the shared keys on top}.

    Each listed file is looked up relative to `search_dirs` in turn (the folder of the config that lists it first).
    The configs are validated later, each by its module (pdm.preflight), so an error names the experiment's own key.
    """
    files = raw["experiments"]
    if not isinstance(files, list) or not files or not all(isinstance(f, str) for f in files):
        raise ConfigError(f"experiments: must be a non-empty list of config files, got {files!r}; "
                          "e.g. experiments: [cifar10.yaml, stl10.yaml]")
    shared = {k: v for k, v in raw.items() if k != "experiments"}
    configs: dict[str, dict] = {}
    sources: dict[str, Path] = {}
    for name in files:
        path = _find(name, search_dirs)
        loaded = load_raw(path)
        if is_multi_experiment(loaded):
            raise ConfigError(f"experiments: {path} lists experiments itself; list experiment configs only")
        merged = merge_config(loaded, shared)
        experiment = merged.get("experiment")
        if not isinstance(experiment, str):
            raise ConfigError(f"experiments: {path} has no `experiment:` name; add one (results/{{experiment}}/ holds "
                              "its outputs)")
        key = module_name(experiment)
        if key in configs:
            raise ConfigError(f"experiments: {sources[key]} and {path} both write results/{experiment}/ (experiment "
                              f"names '{configs[key]['experiment']}' and '{experiment}'); give each a distinct name")
        configs[key], sources[key] = merged, path
    return configs


def _find(name: str, search_dirs) -> Path:
    candidates = [Path(name)] if Path(name).is_absolute() else [Path(d) / name for d in search_dirs]
    for candidate in candidates:
        if candidate.is_file():
            return candidate.resolve()
    raise ConfigError(f"experiments: {name} is not a file (looked in {', '.join(map(str, candidates))}); give a path "
                      "relative to the config file that lists it")
