"""Typed experiment configs: YAML files composed in order, then `--set key=value` overrides.

    config = load_config(["experiments/configs/musicslots/cpu.yaml"], ["train.lr=3e-4"])

A config has four parts: `data` (which data set), `model` (a family's own
config, chosen by `model.family`), `train` (the schedule and resources) and
`sweep` (what a Tune run varies). Everything is validated at load time, before
any compute, and errors name the key, the bad value and what is allowed.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator, model_validator

from components.data.catalog import PIANO_DOMAINS, SLAKH_LIKE, DataConfig
from components.errors import PartitaError
from components.models.registry import FAMILY_NAMES, get_family
from components.models.base import ModelConfig
from components.probes import ProbeConfig
from components.schema import StrictModel


class TrainConfig(StrictModel):
    steps: int = Field(1000, gt=0)
    batch_size: int = Field(32, gt=0, description="global batch, split across workers")
    lr: float = Field(1e-4, gt=0)
    warmup_steps: int = Field(0, ge=0)
    decay_steps: int = Field(0, ge=0, description="cosine decay length after warm-up; 0 = constant")
    grad_clip: float | None = Field(1.0, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    eval_every: int = Field(500, gt=0, description="steps between validation passes (and checkpoints)")
    log_every: int = Field(50, gt=0)
    eval_examples: int | None = Field(None, gt=0, description="cap on validation examples; None = whole split")
    seed: int = 0
    num_workers: int = Field(1, gt=0)
    cpus_per_worker: int = Field(1, gt=0)
    data_actors: int = Field(1, gt=0, description="Ray Data CPU actors making (and featurising) examples of multi-track views")
    use_gpu: bool = False
    amp: bool = Field(True, description="bf16 autocast when on GPU (ignored on CPU)")
    channels_last: bool = Field(
        False,
        description="convolution weights in channels-last layout (oneDNN's fast path on CPU); the numbers do not change, the speed does: partita bench train",
    )
    max_failures: int = Field(0, ge=0, description="worker-failure restarts from the last checkpoint")
    capacity_wait_s: float = Field(600, ge=0, description="on a joined cluster, how long to wait for the CPUs/GPUs the workers need (nodes joining)")
    storage_path: str | None = Field(None, description="Ray Train storage (default $PARTITA_HOME/runs); s3:// or a shared mount on clusters")

    @model_validator(mode="after")
    def _batch_divides(self) -> "TrainConfig":
        if self.batch_size % self.num_workers:
            raise ValueError(f"batch_size {self.batch_size} must be a multiple of num_workers {self.num_workers}")
        return self


class OptunaParam(StrictModel):
    type: Literal["loguniform", "uniform", "int", "categorical"]
    low: float | None = None
    high: float | None = None
    choices: list[Any] | None = None

    @model_validator(mode="after")
    def _bounds(self) -> "OptunaParam":
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("categorical parameters need choices")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError(f"{self.type} parameters need low < high")
        elif self.type == "loguniform" and self.low <= 0:
            raise ValueError("loguniform parameters need low > 0")
        return self


class SweepConfig(StrictModel):
    search: Literal["grid", "optuna"] = "grid"
    variants: dict[str, dict[str, Any]] = Field(
        default_factory=dict, description="named sets of dotted overrides (e.g. whole model sections), crossed with grid and seeds"
    )
    probe: bool = Field(False, description="after training, run the note-property probe (families with a representation)")
    metric: str | None = Field(None, description="what Optuna optimises (default val/<family selection metric>)")
    mode: Literal["min", "max"] | None = None
    seeds: list[int] = Field(default_factory=lambda: [0, 1, 2, 3, 4])
    grid: dict[str, list[Any]] = Field(default_factory=dict, description="dotted config key -> values, crossed with seeds")
    space: dict[str, OptunaParam] = Field(default_factory=dict, description="optuna: dotted key -> distribution")
    num_samples: int = Field(8, gt=0, description="optuna trials")
    max_concurrent_trials: int | None = Field(None, gt=0, description="default: cluster CPUs (or GPUs) / per-trial need")

    @field_validator("seeds")
    @classmethod
    def _seeds(cls, seeds: list[int]) -> list[int]:
        if not seeds:
            raise ValueError("needs at least one seed")
        return seeds


class ExperimentConfig(StrictModel):
    experiment: str = Field("partita", description="MLflow experiment name")
    data: DataConfig
    model: ModelConfig
    train: TrainConfig = TrainConfig()
    probe: ProbeConfig = ProbeConfig()
    sweep: SweepConfig = SweepConfig()

    @field_validator("model", mode="before")
    @classmethod
    def _family_config(cls, value: Any) -> ModelConfig:
        if isinstance(value, ModelConfig):
            return value
        if not isinstance(value, dict) or "family" not in value:
            raise ValueError(f"model needs a 'family' key, one of {', '.join(sorted(FAMILY_NAMES))}")
        if value["family"] not in FAMILY_NAMES:
            raise ValueError(f"unknown model family {value['family']!r}; choose one of {', '.join(sorted(FAMILY_NAMES))}")
        return get_family(value["family"]).config_class.model_validate(value)

    @model_validator(mode="after")
    def _data_kind(self) -> "ExperimentConfig":
        """A family with a multi-track view trains on the slakh-like set, one with its own data set (Kelz) on that set, the rest on chord sets."""
        family = get_family(self.model.family)
        required = family.dataset or (SLAKH_LIKE if family.view(self.model) is not None else None)
        if required is not None and self.data.name != required:
            what = "multi-track pieces" if required == SLAKH_LIKE else f"the {required} set"
            raise ValueError(f"model family {self.model.family} cannot train on {self.data.name}; it needs {what}: pass --dataset {required}")
        if required is None and self.data.name in (SLAKH_LIKE, PIANO_DOMAINS):
            raise ValueError(f"model family {self.model.family} cannot train on {self.data.name}; it needs another data set: pass the one it trains on, e.g. --dataset jsb-multi")
        return self

    @model_validator(mode="after")
    def _sweep_values_valid(self) -> "ExperimentConfig":
        """Every swept key exists and every grid value is valid there: fail before any trial runs."""
        for key in [*self.sweep.grid, *self.sweep.space]:
            if key.split(".")[0] not in ("data", "model", "train"):
                raise ValueError(f"sweep key {key!r} must be under data, model or train")
            _check_key(self.to_dict(), key)
        trials = [({key: value}, f"grid value {value!r} of {key!r}") for key, values in self.sweep.grid.items() for value in values]
        trials += [(overrides, f"variant {name!r}") for name, overrides in self.sweep.variants.items()]
        for overrides, what in trials:
            tree = self.to_dict() | {"sweep": {}}
            for key, value in overrides.items():
                if key != "model":
                    _check_key(tree, key)
                set_key(tree, key, value)
            try:
                ExperimentConfig.model_validate(tree)
            except ValidationError as err:
                raise ValueError(f"{what} is invalid: {_describe(err).removeprefix('config error: ')}") from None
        return self

    def to_dict(self) -> dict:
        return self.model_dump(mode="json", serialize_as_any=True)

    def with_values(self, values: dict[str, Any]) -> "ExperimentConfig":
        """A copy with dotted keys set (as a sweep trial does), validated again."""
        tree = self.to_dict()
        for key, value in values.items():
            set_key(tree, key, value)
        return validate(tree)


# --- loading ----------------------------------------------------------------------


def load_config(files: list[str | Path], overrides: list[str] = (), base: dict | None = None) -> ExperimentConfig:
    """Merge `base`, then each YAML file in order, then `key=value` overrides; validate."""
    tree: dict = copy.deepcopy(base or {})
    for file in files:
        _merge(tree, read_yaml(file))
    for override in overrides:
        key, value = parse_override(override)
        _check_key(_schema_tree(tree), key)
        set_key(tree, key, value)
    return validate(tree)


def load_data_config(fields: dict, overrides: list[str] = ()) -> DataConfig:
    """A data config alone (the `partita data` commands), with `key=value` overrides."""
    tree = {k: v for k, v in fields.items() if v is not None}
    for override in overrides:
        key, value = parse_override(override)
        _check_key(_field_tree(DataConfig), key)
        set_key(tree, key, value)
    try:
        return DataConfig.model_validate(tree)
    except ValidationError as err:
        raise PartitaError(_describe(err).replace("config error: ", "config error: data."), _fix(err)) from None


def read_yaml(path: str | Path) -> dict:
    path = Path(path)
    try:
        content = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise PartitaError(f"config file {str(path)!r} does not exist", "check the path") from None
    except yaml.YAMLError as err:
        where = getattr(err, "problem_mark", None)
        at = f" at line {where.line + 1}, column {where.column + 1}" if where else ""
        raise PartitaError(f"config file {str(path)!r} is not valid YAML{at}: {getattr(err, 'problem', err)}", "fix the YAML syntax") from None
    if content is None:
        return {}
    if not isinstance(content, dict):
        raise PartitaError(f"config file {str(path)!r} must hold a mapping of sections, not {type(content).__name__}", "start it with keys such as data:, model:, train:")
    return content


def parse_override(text: str) -> tuple[str, Any]:
    if "=" not in text:
        raise PartitaError(f"override {text!r} is not key=value", "write it like --set train.lr=3e-4")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw) if raw.strip() else ""
    except yaml.YAMLError:
        value = raw
    return key.strip(), value


def validate(tree: dict) -> ExperimentConfig:
    try:
        return ExperimentConfig.model_validate(tree)
    except ValidationError as err:
        raise PartitaError(_describe(err), _fix(err)) from None


def _describe(err: ValidationError) -> str:
    problems = []
    for e in err.errors():
        key = ".".join(str(p) for p in e["loc"])
        if e["type"] == "extra_forbidden":
            problems.append(f"unknown key {key!r}")
        elif e["type"] == "missing":
            problems.append(f"missing key {key!r}")
        else:
            message = e["msg"].removeprefix("Value error, ")
            problems.append(f"{key} = {e.get('input')!r}: {message}" if key else message)
    return "config error: " + "; ".join(problems)


def _fix(err: ValidationError) -> str:
    first = err.errors()[0]
    if first["type"] == "extra_forbidden":
        return "remove or correct the key (see the config files under experiments/configs for valid keys)"
    if first["type"] == "missing":
        return "add the key to the config file or pass --set"
    return "set an allowed value in the config file or with --set"


def _schema_tree(tree: dict) -> dict:
    """Every key an override may address: the schema's fields, the chosen family's included."""
    family = tree.get("model", {}).get("family") if isinstance(tree.get("model"), dict) else None
    keys = _field_tree(ExperimentConfig)
    keys["model"] = _field_tree(get_family(family).config_class) if family in FAMILY_NAMES else {"family": None}
    return keys


def _field_tree(cls: type[BaseModel]) -> dict:
    return {
        name: _field_tree(field.annotation)
        if isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        else None
        for name, field in cls.model_fields.items()
    }


# mappings whose keys are free (dotted config keys themselves)
_FREE_FORM = ("sweep.grid", "sweep.space", "sweep.variants")


def _check_key(tree: dict, key: str) -> None:
    node: Any = tree
    parts = key.split(".")
    for depth, part in enumerate(parts):
        if ".".join(parts[:depth]) in _FREE_FORM:
            return
        if not isinstance(node, dict) or part not in node:
            here = ".".join(parts[:depth]) or "the top level"
            allowed = ", ".join(sorted(node)) if isinstance(node, dict) else "(none: it is a value)"
            raise PartitaError(f"config key {key!r} does not exist ({part!r} is not under {here})", f"use one of: {allowed}")
        node = node[part]


def set_key(tree: dict, key: str, value: Any) -> None:
    for free in _FREE_FORM:  # sweep.grid.model.mask_norm -> grid["model.mask_norm"]
        if key.startswith(free + "."):
            set_key(tree, free, {**_get(tree, free), key[len(free) + 1 :]: value})
            return
    parts = key.split(".")
    node = tree
    for part in parts[:-1]:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise PartitaError(f"cannot set {key!r}: {part!r} is a value, not a section", "check the key")
    node[parts[-1]] = value


def _get(tree: dict, key: str) -> dict:
    node: Any = tree
    for part in key.split("."):
        node = node.get(part, {}) if isinstance(node, dict) else {}
    return node if isinstance(node, dict) else {}


def _merge(into: dict, update: dict) -> dict:
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(into.get(key), dict):
            _merge(into[key], value)
        else:
            into[key] = copy.deepcopy(value)
    return into


def flatten(tree: dict, prefix: str = "") -> dict[str, Any]:
    """{'a': {'b': 1}} -> {'a.b': 1}; lists and values stay leaves (MLflow params are flat)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            flat.update(flatten(value, name + "."))
        else:
            flat[name] = value
    return flat
