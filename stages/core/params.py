"""params.yaml, loaded once into frozen, validated config objects.

A wrong key or value fails here, before any data is touched, with one line naming the key
and what is allowed. Dataset sections may override any `model.*` key under
`<dataset>.model.*`; the resolved network config is what the stages see.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Mapping

import yaml

DATASETS = ("synthetic", "heart", "mnist")
ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "softplus", "leaky_relu", "linear")
ENGINES = ("compiled", "fit")


class ParamsError(ValueError):
    """A params.yaml key or value that the stages cannot use."""


@dataclass(frozen=True)
class ModelConfig:
    width: int
    depth: int
    activation: str
    l2: float
    dropout: float


@dataclass(frozen=True)
class TrainConfig:
    engine: str
    epochs: int
    batch_size: int
    learning_rate: float
    validation_split: float
    early_stopping_patience: int


@dataclass(frozen=True)
class SyntheticConfig:
    n: int
    domain: tuple[float, float]
    noise_sigma: float
    extrapolation: tuple[float, float]
    extrapolation_points: int
    test_size: float
    model: ModelConfig
    train: TrainConfig


@dataclass(frozen=True)
class HeartConfig:
    test_size: float
    deduplicate: bool
    model: ModelConfig
    train: TrainConfig


@dataclass(frozen=True)
class MnistConfig:
    model: ModelConfig
    train: TrainConfig


@dataclass(frozen=True)
class StudyVariation:
    name: str
    overrides: tuple[tuple[str, Any], ...]  # (dotted params key, value), in the order given


@dataclass(frozen=True)
class Params:
    seed: int
    synthetic: SyntheticConfig
    heart: HeartConfig
    mnist: MnistConfig
    study: tuple[StudyVariation, ...]

    def dataset(self, name: str) -> SyntheticConfig | HeartConfig | MnistConfig:
        if name not in DATASETS:
            raise ParamsError(f"unknown dataset {name!r}; allowed: {', '.join(DATASETS)}")
        return getattr(self, name)


# --- value checks: each returns the converted value or raises ParamsError naming the key ---

def _fail(key: str, value: Any, allowed: str) -> ParamsError:
    return ParamsError(f"params.yaml: {key} = {value!r} is invalid; allowed: {allowed}")


def _int(low: int | None = None) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool) or not isinstance(value, int) or (low is not None and value < low):
            raise _fail(key, value, f"an integer >= {low}" if low is not None else "an integer")
        return value
    return check


def _float(low: float, high: float, low_open: bool = False, high_open: bool = False) -> Callable[[str, Any], float]:
    def check(key: str, value: Any) -> float:
        ok = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        if ok:
            ok = (value > low if low_open else value >= low) and (value < high if high_open else value <= high)
        if not ok:
            lo = "(" if low_open else "["
            hi = ")" if high_open else "]"
            raise _fail(key, value, f"a number in {lo}{low}, {high}{hi}")
        return float(value)
    return check


def _choice(options: tuple[str, ...]) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if value not in options:
            raise _fail(key, value, ", ".join(options))
        return value
    return check


def _bool(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, value, "true or false")
    return value


def _interval(key: str, value: Any) -> tuple[float, float]:
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in value))
    if not ok or value[0] >= value[1]:
        raise _fail(key, value, "[low, high] with low < high")
    return float(value[0]), float(value[1])


_POSITIVE = _float(0.0, math.inf, low_open=True, high_open=True)

MODEL_SCHEMA: dict[str, Callable[[str, Any], Any]] = {
    "width": _int(1),
    "depth": _int(1),
    "activation": _choice(ACTIVATIONS),
    "l2": _float(0.0, math.inf, high_open=True),
    "dropout": _float(0.0, 1.0, high_open=True),
}
TRAIN_SCHEMA: dict[str, Callable[[str, Any], Any]] = {
    "engine": _choice(ENGINES),
    "epochs": _int(1),
    "batch_size": _int(1),
    "learning_rate": _POSITIVE,
    "validation_split": _float(0.0, 1.0, low_open=True, high_open=True),
    "early_stopping_patience": _int(0),
}
DATASET_SCHEMAS: dict[str, dict[str, Callable[[str, Any], Any]]] = {
    "synthetic": {
        "n": _int(10),
        "domain": _interval,
        "noise_sigma": _float(0.0, math.inf, high_open=True),
        "extrapolation": _interval,
        "extrapolation_points": _int(2),
        "test_size": _float(0.0, 1.0, low_open=True, high_open=True),
    },
    "heart": {
        "test_size": _float(0.0, 1.0, low_open=True, high_open=True),
        "deduplicate": _bool,
    },
    "mnist": {},
}


def _section(raw: Any, key: str) -> Mapping[str, Any]:
    if not isinstance(raw, Mapping):
        raise _fail(key, raw, "a mapping of keys to values")
    return raw


def _check_keys(section: Mapping[str, Any], prefix: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    for key in section:
        if key not in allowed:
            raise ParamsError(f"params.yaml: unknown key {prefix}{key}; allowed under "
                              f"{prefix.rstrip('.') or 'the top level'}: {', '.join(allowed)}")
    for key in required:
        if key not in section:
            raise ParamsError(f"params.yaml: missing key {prefix}{key}")


def _typed(section: Mapping[str, Any], prefix: str, schema: Mapping[str, Callable[[str, Any], Any]]) -> dict[str, Any]:
    return {key: check(prefix + key, section[key]) for key, check in schema.items() if key in section}


def _model(shared: dict[str, Any], override: Any, prefix: str) -> ModelConfig:
    override = _section(override if override is not None else {}, prefix.rstrip("."))
    _check_keys(override, prefix, tuple(MODEL_SCHEMA), ())
    return ModelConfig(**{**shared, **_typed(override, prefix, MODEL_SCHEMA)})


def _train(raw: Any, prefix: str) -> TrainConfig:
    section = _section(raw, prefix.rstrip("."))
    _check_keys(section, prefix, tuple(TRAIN_SCHEMA), tuple(TRAIN_SCHEMA))
    return TrainConfig(**_typed(section, prefix, TRAIN_SCHEMA))


def _study(raw: Any, base: Mapping[str, Any]) -> tuple[StudyVariation, ...]:
    """Named variations, each a set of params overrides; duplicates (same overrides) collapse."""
    section = _section(raw if raw is not None else {}, "study")
    _check_keys(section, "study.", ("variations",), ())
    entries = section.get("variations") or []
    if not isinstance(entries, list):
        raise _fail("study.variations", entries, "a list of {name, params} entries")
    variations: list[StudyVariation] = []
    seen_names: set[str] = set()
    seen_overrides: set[tuple] = set()
    for index, entry in enumerate(entries):
        where = f"study.variations[{index}]"
        if not isinstance(entry, Mapping) or set(entry) != {"name", "params"}:
            raise _fail(where, entry, "a mapping with exactly the keys name and params")
        name, overrides = entry["name"], entry["params"]
        if not isinstance(name, str) or not name.replace("-", "").replace("_", "").isalnum():
            raise _fail(f"{where}.name", name, "letters, digits, '-' and '_'")
        if name in seen_names:
            raise ParamsError(f"params.yaml: {where}.name {name!r} is used twice; names must be unique")
        if not isinstance(overrides, Mapping):
            raise _fail(f"{where}.params", overrides, "a mapping of dotted params keys to values")
        try:
            apply_overrides(base, overrides)
        except ParamsError as error:
            raise ParamsError(f"params.yaml: {where} ({name}): {str(error).removeprefix('params.yaml: ')}") from None
        key = tuple(sorted((k, repr(v)) for k, v in overrides.items()))
        seen_names.add(name)
        if key in seen_overrides:
            continue  # the same variation listed twice runs once
        seen_overrides.add(key)
        variations.append(StudyVariation(name=name, overrides=tuple(overrides.items())))
    return tuple(variations)


def parse_params(raw: Any, *, with_study: bool = True) -> Params:
    """Validate a params mapping (as read from params.yaml) into frozen config objects."""
    raw = _section(raw, "params.yaml")
    _check_keys(raw, "", ("seed", "model", *DATASETS, "study"), ("seed", "model", *DATASETS))
    seed = _int(0)("seed", raw["seed"])
    shared_raw = _section(raw["model"], "model")
    _check_keys(shared_raw, "model.", tuple(MODEL_SCHEMA), tuple(MODEL_SCHEMA))
    shared = _typed(shared_raw, "model.", MODEL_SCHEMA)

    configs: dict[str, Any] = {}
    for dataset, schema in DATASET_SCHEMAS.items():
        section = _section(raw[dataset], dataset)
        allowed = (*schema, "model", "train")
        _check_keys(section, f"{dataset}.", allowed, (*schema, "train"))
        fields = _typed(section, f"{dataset}.", schema)
        model = _model(shared, section.get("model"), f"{dataset}.model.")
        train = _train(section["train"], f"{dataset}.train.")
        configs[dataset] = {"synthetic": SyntheticConfig, "heart": HeartConfig, "mnist": MnistConfig}[dataset](
            **fields, model=model, train=train)

    synthetic: SyntheticConfig = configs["synthetic"]
    if synthetic.extrapolation[1] <= synthetic.domain[1] and synthetic.extrapolation[0] >= synthetic.domain[0]:
        raise _fail("synthetic.extrapolation", list(synthetic.extrapolation),
                    "an interval reaching outside synthetic.domain")
    study = _study(raw.get("study"), raw) if with_study else ()
    return Params(seed=seed, study=study, **configs)


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of a params mapping with dotted-key overrides applied, validated.

    Like `dvc exp run -S key=value`: the key must name an existing value or an allowed
    `<dataset>.model.*` override.
    """
    result = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        *parents, leaf = str(dotted).split(".")
        node: Any = result
        for depth, part in enumerate(parents):
            # `<dataset>.model` may be absent: it only holds overrides of the shared `model`.
            optional = depth == 1 and part == "model" and parents[0] in DATASETS
            if not isinstance(node, dict) or (part not in node and not optional):
                raise ParamsError(f"params.yaml: unknown key {dotted}")
            node = node.setdefault(part, {}) if optional else node[part]
        if not isinstance(node, dict):
            raise ParamsError(f"params.yaml: unknown key {dotted}")
        node[leaf] = value
    parse_params(result, with_study=False)
    return result


def read_params_file(path: str | Path = "params.yaml") -> dict[str, Any]:
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ParamsError(f"{path}: not found; run from the repository root or pass --params") from None
    except yaml.YAMLError as error:
        line = getattr(getattr(error, "problem_mark", None), "line", None)
        where = f" (line {line + 1})" if line is not None else ""
        raise ParamsError(f"{path}: not valid YAML{where}; fix the syntax") from None
    return raw


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate params.yaml."""
    return parse_params(read_params_file(path))
