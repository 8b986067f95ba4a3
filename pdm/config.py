"""Experiment config: one YAML file, validated against `config.schema.yaml`, loaded into frozen dataclasses.

The schema is the single source of defaults. Each method's options schema lives with the method (its class's
`options_schema`) and is merged in under `methods` by `load_schema`, so adding a method never edits this package.
Errors name the key and the fix, and are raised before any training starts (the Snakefile calls `resolve_config`
when the workflow is built).
"""

from __future__ import annotations

import copy
import dataclasses
import difflib
import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from types import MappingProxyType
from typing import Any, Mapping

import jsonschema
import yaml

SCHEMA_PATH = Path(__file__).with_name("config.schema.yaml")


class ConfigError(ValueError):
    """A config problem, with the key that is wrong and how to fix it."""


@dataclass(frozen=True)
class DataConfig:
    dataset: str
    root: str | None
    resolution: int
    channels: int
    hflip: bool
    max_images: int | None
    holdout_fraction: float


@dataclass(frozen=True)
class ModelConfig:
    block_out_channels: tuple[int, ...]
    layers_per_block: int
    down_block_types: tuple[str, ...]
    up_block_types: tuple[str, ...]
    norm_num_groups: int
    attention_head_dim: int
    cross_attention_heads: int
    dropout: float

    @property
    def bottleneck_channels(self) -> int:
        return self.block_out_channels[-1]


@dataclass(frozen=True)
class DiffusionConfig:
    num_train_timesteps: int
    beta_schedule: str
    beta_start: float
    beta_end: float
    clip_sample: bool


@dataclass(frozen=True)
class TrainConfig:
    budget: str  # steps | flops | seconds: what every method of the experiment gets the same amount of
    steps: int
    flops: float | None
    seconds: float | None
    snapshots: tuple[float, ...]
    batch_size: int
    lr: float
    lr_schedule: str
    warmup_steps: int
    weight_decay: float
    betas: tuple[float, float]
    grad_clip: float | None
    ema_decay: float | None
    mixed_precision: str
    channels_last: bool  # pdm/speed.py; recorded, not in the training identity
    compile: bool  # torch.compile of the denoiser; recorded, not in the training identity
    checkpoint_every: int
    log_every: int
    max_seconds: float | None
    snapshots: tuple[float, ...]  # fractions of the budget saved besides the final weights (not in the training identity)


@dataclass(frozen=True)
class SampleConfig:
    sampler: str
    steps: int
    eta: float
    num_samples: int
    batch_size: int


@dataclass(frozen=True)
class EvalConfig:
    num_real: int
    kid_subset_size: int
    allow_is_download: bool
    grid_size: int
    bootstrap_samples: int
    clean_fid: bool


@dataclass(frozen=True)
class SweepConfig:
    """Samplers x step counts over trained models (FID against network evaluations); no sweep when either is empty."""

    models_from: str | None  # another experiment's models (never retrained), or None: this experiment's own
    methods: tuple[str, ...] | None
    samplers: tuple[str, ...]
    steps: tuple[int, ...]
    guidance_weights: tuple[float, ...]  # classifier-free guidance weights, with the experiment's `sample:` settings

    @property
    def enabled(self) -> bool:
        return bool(self.samplers and self.steps)


@dataclass(frozen=True)
class ReportConfig:
    """Report-only settings: they change the tables, never a job's output (no stage identity covers them)."""

    reference_method: str | None
    confidence: float


@dataclass(frozen=True)
class ExperimentConfig:
    experiment: str
    seeds: tuple[int, ...]
    device: str
    threads_per_job: int
    data: DataConfig
    model: ModelConfig
    diffusion: DiffusionConfig
    train: TrainConfig
    sample: SampleConfig
    eval: EvalConfig
    report: ReportConfig
    sweep: SweepConfig
    methods: Mapping[str, Mapping[str, Any]]
    resolved: Mapping[str, Any]  # the validated dict with every default filled in

    def method_options(self, name: str) -> Mapping[str, Any]:
        if name not in self.methods:
            raise ConfigError(f"method '{name}' is not in this config's `methods`; add it or pick one of {sorted(self.methods)}")
        return self.methods[name]

    def diffusion_for(self, name: str) -> DiffusionConfig:
        """A method may override the number of training timesteps (the reference uses 2000 for PDM, 1000 for s-PDM)."""
        override = self.method_options(name).get("num_train_timesteps")
        return dataclasses.replace(self.diffusion, num_train_timesteps=override) if override else self.diffusion

    def train_for(self, name: str) -> TrainConfig:
        """A method may override the learning rate (a reference's own setting); the rest of `train` is shared."""
        override = self.method_options(name).get("lr")
        return dataclasses.replace(self.train, lr=override) if override else self.train

    def model_for(self, name: str) -> ModelConfig:
        """A method may override the U-Net's dropout (a reference's own setting); the architecture is shared."""
        override = self.method_options(name).get("dropout")
        return dataclasses.replace(self.model, dropout=override) if override is not None else self.model

    @property
    def hash(self) -> str:
        return config_hash(self.resolved)

    def with_sampling(self, sampler: str, steps: int) -> "ExperimentConfig":
        """This config with another sampler and step count (one point of a sweep), everything else unchanged; its
        sampling and evaluation identities follow from it as for any config edit."""
        resolved = copy.deepcopy(dict(self.resolved))
        resolved["sample"] = {**resolved["sample"], "sampler": sampler, "steps": int(steps)}
        sample = dataclasses.replace(self.sample, sampler=sampler, steps=int(steps))
        return dataclasses.replace(self, sample=sample, resolved=resolved)

    def with_method_options(self, method: str, **options) -> "ExperimentConfig":
        """This config with some of one method's options replaced (a guidance weight of a sweep), else unchanged."""
        resolved = copy.deepcopy(dict(self.resolved))
        resolved["methods"] = {**resolved["methods"], method: {**resolved["methods"][method], **options}}
        methods = MappingProxyType({**self.methods, method: MappingProxyType({**self.methods[method], **options})})
        return dataclasses.replace(self, methods=methods, resolved=resolved)

    @property
    def guidance_methods(self) -> tuple[str, ...]:
        """The swept methods with classifier-free guidance: a `guidance_weight` option and a model trained with the
        null condition (`label_drop` > 0; s-PDM and cddpm have it off by default)."""
        return tuple(m for m in self.sweep_methods if "guidance_weight" in self.method_options(m)
                     and self.method_options(m).get("label_drop", 0) > 0)

    @property
    def models_experiment(self) -> str:
        """The experiment whose results/{...}/models/ this config samples from (another one's with sweep.models_from)."""
        return self.sweep.models_from or self.experiment

    @property
    def trains(self) -> bool:
        """Whether this experiment trains its own models (False: it only re-samples another experiment's)."""
        return self.models_experiment == self.experiment

    @property
    def sweep_methods(self) -> tuple[str, ...]:
        return self.sweep.methods or tuple(self.methods)


@functools.lru_cache(maxsize=1)
def _merged_schema() -> str:
    from pdm.methods.base import COMMON_OPTIONS
    from pdm.methods.registry import METHODS, get_method_class

    schema = yaml.safe_load(SCHEMA_PATH.read_text())
    methods = schema["properties"]["methods"]
    methods["additionalProperties"] = False
    for name in METHODS:
        cls = get_method_class(name)
        node = {"type": ["object", "null"], "additionalProperties": False, "default": {},
                "properties": {**copy.deepcopy(cls.options_schema), **COMMON_OPTIONS}}
        if cls.description:
            node["description"] = cls.description
        methods["properties"][name] = node
    return json.dumps(schema)


def load_schema() -> dict[str, Any]:
    """The config schema: pdm/config.schema.yaml with every registered method's options schema under `methods`."""
    return json.loads(_merged_schema())


def config_hash(resolved: Mapping[str, Any]) -> str:
    canonical = json.dumps(resolved, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def load_config(path: str | Path) -> ExperimentConfig:
    return resolve_config(load_raw(path))


def _read_yaml(path: Path) -> dict:
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file (see config/default.yaml)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys (experiment, data, methods, ...)")
    return raw


def load_raw(path: str | Path) -> dict:
    """A config file as a dict, with its `base:` chain merged in (see merge_base)."""
    path = Path(path)
    return merge_base(_read_yaml(path), [path.parent])


def merge_config(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict:
    """`override` on top of `base`: mappings merge key by key (recursively), everything else (lists too) is replaced."""
    out = copy.deepcopy(dict(base))
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = merge_config(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def merge_base(raw: Mapping[str, Any], search_dirs, _seen: tuple[Path, ...] = ()) -> dict:
    """Config inheritance: `base: other.yaml` loads that file first and merges this one on top (merge_config).

    The base is looked up relative to each of `search_dirs` in turn (the folder of the file that names it, first);
    a base may name its own base. A config without `base` comes back unchanged. Used for experiments that must share
    another one's settings exactly, e.g. a sweep over the default's trained models (config/sweep_default.yaml).
    """
    raw = dict(raw)
    name = raw.pop("base", None)
    if name is None:
        return raw
    if not isinstance(name, str):
        raise ConfigError(f"base: must be the path of a config file, got {name!r}")
    candidates = [Path(d) / name for d in search_dirs] if not Path(name).is_absolute() else [Path(name)]
    path = next((c.resolve() for c in candidates if c.is_file()), None)
    if path is None:
        raise ConfigError(f"base: {name} is not a file (looked in {', '.join(str(c) for c in candidates)}); give a "
                          "path relative to the config file that names it")
    if path in _seen:
        raise ConfigError(f"base: {path} inherits from itself ({' -> '.join(map(str, (*_seen, path)))}); break the cycle")
    parent = merge_base(_read_yaml(path), [path.parent], (*_seen, path))
    return merge_config(parent, raw)


def resolve_config(raw: Mapping[str, Any]) -> ExperimentConfig:
    """Validate a config dict, fill defaults from the schema, check cross-field rules, return the frozen config."""
    schema = load_schema()
    resolved = copy.deepcopy(dict(raw))
    if "base" in resolved:
        raise ConfigError(f"base: {resolved['base']!r} was not merged in; load the file with pdm.config.load_config "
                          "(or `pdm-bench --config`, or snakemake --configfile), which resolves it against the file's folder")
    _check_method_names(resolved, schema)
    if isinstance(resolved.get("methods"), dict):  # `pdm:` with no options is allowed and means all defaults
        resolved["methods"] = {k: ({} if v is None else v) for k, v in resolved["methods"].items()}
    errors = sorted(jsonschema.Draft202012Validator(schema).iter_errors(resolved), key=lambda e: list(e.path))
    if errors:
        raise ConfigError("invalid config:\n" + "\n".join(f"  - {_describe(e)}" for e in errors))
    explicit_reference = (resolved.get("report") or {}).get("reference_method")  # before the default fills it
    _fill_defaults(resolved, schema)
    cfg = _build(resolved)
    _check_rules(cfg)
    _check_reference_method(cfg, explicit_reference)
    return cfg


def _check_budget(tc: "TrainConfig") -> None:
    """The budget mode's own value is required, the other modes' values are refused (never silently ignored).

    train.steps always has a value (a schema default) and only counts in steps mode. In the flops and seconds modes
    the steps a method gets are known when its training starts; the trainer checks warmup_steps against them there.
    """
    needed = {"flops": "flops", "seconds": "seconds"}.get(tc.budget)
    if needed and getattr(tc, needed) is None:
        example = "1.0e12" if needed == "flops" else "600"
        raise ConfigError(f"train.{needed} is required with train.budget: {tc.budget} (the {needed} every method of "
                          f"the experiment may spend); set it, e.g. train.{needed}: {example}, or use train.budget: steps")
    for key in ("flops", "seconds"):
        if key != needed and getattr(tc, key) is not None:
            raise ConfigError(f"train.{key} is set but train.budget is '{tc.budget}', so it would be ignored; set "
                              f"train.budget: {key}, or remove train.{key}")
    if tc.budget == "steps" and tc.warmup_steps > tc.steps:
        raise ConfigError(f"train.warmup_steps={tc.warmup_steps} exceeds the budget train.steps={tc.steps}")


BOOTSTRAP_KERNEL_LIMIT_BYTES = 4 * 2**30  # KID's kernel matrices for the bootstrap, float64


def _check_bootstrap_size(cfg: "ExperimentConfig") -> None:
    """The bootstrap holds KID's kernel matrices (samples x samples, samples x real, real x real) in memory and
    recomputes a Fréchet distance per replicate; at paper scale (50,000 vs 50,000) that is ~56 GiB and hours, and the
    within-seed interval is negligible there anyway: refuse before any job rather than fail after training."""
    n, m = cfg.sample.num_samples, cfg.eval.num_real
    need = 8 * (n * n + n * m + m * m)
    if cfg.eval.bootstrap_samples and need > BOOTSTRAP_KERNEL_LIMIT_BYTES:
        raise ConfigError(f"eval.bootstrap_samples={cfg.eval.bootstrap_samples} with {n} samples and {m} real images "
                          f"needs {need / 2**30:.0f} GiB of kernel matrices (limit 4 GiB); set eval.bootstrap_samples: 0 "
                          "(the tables then give intervals across seeds only) or score fewer samples")


def _check_sweep(cfg: "ExperimentConfig") -> None:
    """The sweep names methods of this config, step counts every swept method's schedule has, and something to do."""
    sweep = cfg.sweep
    if bool(sweep.samplers) != bool(sweep.steps):
        given, missing = ("samplers", "steps") if sweep.samplers else ("steps", "samplers")
        raise ConfigError(f"sweep.{given} is set but sweep.{missing} is empty; give both (e.g. samplers: [ddim, dpmpp], "
                          "steps: [10, 20, 50]) or neither")
    for name in sweep.methods or ():
        if name not in cfg.methods:
            raise ConfigError(f"sweep.methods: '{name}' is not one of this config's methods ({', '.join(cfg.methods)})"
                              f"{_suggest(name, cfg.methods)}")
    for name in cfg.sweep_methods if sweep.enabled else ():
        timesteps = cfg.diffusion_for(name).num_train_timesteps
        too_many = [s for s in sweep.steps if s > timesteps]
        if too_many:
            raise ConfigError(f"sweep.steps: {too_many} exceed {name}'s {timesteps} training timesteps (a sampler cannot "
                              f"take more steps than the schedule has); use at most {timesteps}")
    if sweep.guidance_weights and not cfg.guidance_methods:
        raise ConfigError(f"sweep.guidance_weights is set, but none of the swept methods ({', '.join(cfg.sweep_methods)}) "
                          "was trained for classifier-free guidance; sweep protodiffusion, or s-PDM / cddpm with "
                          "label_drop > 0, or drop sweep.guidance_weights")
    if not cfg.trains and not sweep.enabled and not sweep.guidance_weights and not cfg.train.snapshots:
        raise ConfigError(f"sweep.models_from: {sweep.models_from} is set, but there is nothing to do with its models: "
                          "give sweep.samplers and sweep.steps, sweep.guidance_weights (or train.snapshots for a "
                          "training curve)")


def _check_reference_method(cfg: "ExperimentConfig", explicit: str | None) -> None:
    """An explicitly named reference method must be one of the config's methods. The default (ddpm) may be absent:
    then the report leaves the paired-difference columns out and says so in its note."""
    if explicit is None or explicit in cfg.methods:
        return
    raise ConfigError(f"report.reference_method: '{explicit}' is not one of this config's methods "
                      f"({', '.join(cfg.methods)}){_suggest(explicit, cfg.methods)}; set it to one of them, or to null "
                      "to leave the paired differences out of the report")


def coerce_overrides(config: dict, overrides: Mapping[str, Any]) -> None:
    """Give `--config key=value` overrides their YAML types, in place, where the schema wants no string.

    Snakemake parses nested command-line values with YAML's BaseLoader, so `--config seeds=[0,1]` arrives as
    ['0', '1'] and `sample={steps: 7}` as {'steps': '7'}. Only the keys the command line set are touched: a string in
    a config file stays an error that names the key.
    """
    schema = load_schema()

    def allows_string(node: Mapping[str, Any]) -> bool:
        kinds = node.get("type", "string")
        return "string" in (kinds if isinstance(kinds, list) else [kinds])

    def convert(value, node: Mapping[str, Any]):
        if isinstance(value, dict):
            props = node.get("properties", {})
            return {k: convert(v, props.get(k, {})) for k, v in value.items()}
        if isinstance(value, list):
            return [convert(v, node.get("items", {})) for v in value]
        if isinstance(value, str) and not allows_string(node):
            try:
                return yaml.safe_load(value)
            except yaml.YAMLError:
                return value  # the schema reports it
        return value

    def walk(target: dict, override: Mapping[str, Any], node: Mapping[str, Any]) -> None:
        props = node.get("properties", {})
        for key, value in override.items():
            sub = props.get(key, {})
            if isinstance(value, dict) and isinstance(target.get(key), dict):
                walk(target[key], value, sub)
            elif key in target:
                target[key] = convert(target[key], sub)

    walk(config, overrides, schema)


def _check_method_names(raw: Mapping[str, Any], schema: Mapping[str, Any]) -> None:
    from pdm.methods.registry import METHODS

    methods = raw.get("methods")
    if not isinstance(methods, dict):
        return  # the schema reports it
    for name in methods:
        if name not in METHODS:
            raise ConfigError(f"methods: unknown method '{name}'{_suggest(name, METHODS)}; known methods: {', '.join(sorted(METHODS))}")


def _describe(error: jsonschema.ValidationError) -> str:
    where = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        unknown = sorted(set(error.instance) - set(known))
        hints = "; ".join(f"unknown key '{k}'{_suggest(k, known)}" for k in unknown)
        return f"{where}: {hints} (allowed keys: {', '.join(known)})"
    if error.validator == "required":
        return f"{where}: {error.message}; add it (see config/default.yaml)"
    if error.validator == "type" and isinstance(error.instance, str) and _is_float_text(error.instance):
        return (f"{where}: {error.message}; YAML reads {error.instance} as text: write the exponent with its sign "
                f"(e.g. 6.0e+10) or as a plain number")
    return f"{where}: {error.message}"


def _is_float_text(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _suggest(word: str, choices) -> str:
    close = difflib.get_close_matches(word, list(choices), n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


def _fill_defaults(node: dict, schema: Mapping[str, Any], add_missing: bool = True) -> None:
    for key, sub in schema.get("properties", {}).items():
        if add_missing and key not in node and "default" in sub:
            node[key] = copy.deepcopy(sub["default"])
        if isinstance(node.get(key), dict) and "properties" in sub:
            # under `methods`, only the methods the user listed run: fill their options, never add methods
            _fill_defaults(node[key], sub, add_missing=key != "methods")


def _build(resolved: dict) -> ExperimentConfig:
    def section(cls, values):
        return cls(**{k: tuple(v) if isinstance(v, list) else v for k, v in values.items()})

    frozen_methods = MappingProxyType({name: MappingProxyType(dict(opts)) for name, opts in resolved["methods"].items()})
    return ExperimentConfig(
        experiment=resolved["experiment"],
        seeds=tuple(resolved["seeds"]),
        device=resolved["device"],
        threads_per_job=resolved["threads_per_job"],
        data=section(DataConfig, resolved["data"]),
        model=section(ModelConfig, resolved["model"]),
        diffusion=section(DiffusionConfig, resolved["diffusion"]),
        train=section(TrainConfig, resolved["train"]),
        sample=section(SampleConfig, resolved["sample"]),
        eval=section(EvalConfig, resolved["eval"]),
        report=section(ReportConfig, resolved["report"]),
        sweep=section(SweepConfig, resolved["sweep"]),
        methods=frozen_methods,
        resolved=resolved,
    )


def _suggest_norm_groups(block_out_channels) -> int:
    """The largest group count that divides every level and leaves each group at least 4 channels (1 if none)."""
    fits = [g for g in range(1, min(block_out_channels) // 4 + 1) if all(c % g == 0 for c in block_out_channels)]
    return max(fits, default=1)


def _check_rules(cfg: ExperimentConfig) -> None:
    """Rules that span several keys, which a JSON schema cannot say."""
    m = cfg.model
    levels = len(m.block_out_channels)
    if not (len(m.down_block_types) == len(m.up_block_types) == levels):
        raise ConfigError(
            f"model: block_out_channels has {levels} entries but down_block_types has {len(m.down_block_types)} and "
            f"up_block_types {len(m.up_block_types)}; give one block type per level in each"
        )
    for channels in m.block_out_channels:
        if channels % m.norm_num_groups:
            raise ConfigError(f"model.block_out_channels: {channels} is not divisible by model.norm_num_groups={m.norm_num_groups}")
        if channels == m.norm_num_groups:
            # diffusers' ResnetBlock2D adds the time (and class) embedding as a per-channel constant just before its
            # second GroupNorm; a group of one channel subtracts that constant again, so the block cannot see t.
            raise ConfigError(
                f"model.norm_num_groups={m.norm_num_groups} gives the {channels}-channel level one channel per GroupNorm "
                f"group, which cancels the time embedding (README, 'GroupNorm groups of one channel'); set "
                f"model.norm_num_groups to a divisor of every block_out_channels entry that leaves at least 2 channels "
                f"per group (4 or more recommended), e.g. {_suggest_norm_groups(m.block_out_channels)}"
            )
    if m.bottleneck_channels % m.cross_attention_heads:
        raise ConfigError(
            f"model.cross_attention_heads={m.cross_attention_heads} must divide the bottleneck channels {m.bottleneck_channels}"
        )
    if cfg.data.resolution % 2 ** (levels - 1):
        raise ConfigError(f"data.resolution={cfg.data.resolution} must be divisible by 2**{levels - 1} (one halving per level)")
    if len(set(cfg.seeds)) != len(cfg.seeds):
        raise ConfigError(f"seeds: {list(cfg.seeds)} has repeats; list each seed once")
    _check_budget(cfg.train)
    _check_bootstrap_size(cfg)
    _check_sweep(cfg)
    from pdm.methods.registry import get_method_class

    for name, options in cfg.methods.items():
        get_method_class(name).check_config(cfg, options)
