"""params.yaml as typed, frozen pydantic models, and the one-line errors users see.

A wrong key or value fails here, before any data is touched, with one line naming the key and
what is allowed, e.g. `params.yaml: model.width = 0 is invalid; allowed: an integer >= 1`.
The file has a shared `model`, one section per task (`<task>.data`, `.model`, `.train`) and the
study. A task's `data` model is declared by its task module (stages/tasks/<name>.py); this module
takes those models as arguments, so it knows no task by name. A task's `model` section overrides
any `model.*` key; the resolved network config is what the stages see. At the end, the limits:
rough memory estimates that refuse a value the machine cannot hold, naming its key.
"""

from __future__ import annotations

import copy
import math
import os
from pathlib import Path
from typing import Annotated, Any, Literal, Mapping, get_origin

import yaml
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError
from pydantic.fields import FieldInfo

ACTIVATIONS = ("relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "softplus", "leaky_relu", "linear")
ENGINES = ("compiled", "fit")
SECTIONS = ("data", "model", "train")  # of every task


class ParamsError(ValueError):
    """A params.yaml key or value that the stages cannot use."""


class ParamsModel(BaseModel):
    """A section of params.yaml: no unknown keys, no silent conversions (2.5 is not an int), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _increasing(value: tuple[float, float]) -> tuple[float, float]:
    if not value[0] < value[1]:
        raise ValueError("low must be below high")
    return value


Finite = Annotated[float, Field(allow_inf_nan=False)]
# [low, high] in YAML; a list there, so the container is lax (the numbers are not).
Interval = Annotated[tuple[Finite, Finite], Field(strict=False),
                     AfterValidator(_increasing)]
Share = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]


class ModelConfig(ParamsModel):
    """The dense network."""

    width: int = Field(ge=1, description="units per hidden layer")
    depth: int = Field(ge=1, description="number of hidden layers")
    activation: Literal[ACTIVATIONS] = Field(description="activation of the hidden layers")
    l2: float = Field(ge=0, allow_inf_nan=False, description="L2 penalty on the hidden kernels")
    dropout: float = Field(ge=0, lt=1, allow_inf_nan=False, description="dropout rate after each hidden layer")


class ModelOverrides(ParamsModel):
    """A task's overrides of the shared `model`: any of its keys, or none."""

    width: int | None = Field(None, ge=1)
    depth: int | None = Field(None, ge=1)
    activation: Literal[ACTIVATIONS] | None = None
    l2: float | None = Field(None, ge=0, allow_inf_nan=False)
    dropout: float | None = Field(None, ge=0, lt=1, allow_inf_nan=False)


class TrainConfig(ParamsModel):
    """How a task's network is trained (Adam)."""

    engine: Literal[ENGINES] = Field(description="compiled (epoch loop in one TF function) or fit (model.fit)")
    epochs: int = Field(ge=1, description="passes over the training rows")
    batch_size: int = Field(ge=1, description="rows per gradient step")
    learning_rate: float = Field(gt=0, allow_inf_nan=False, description="Adam's step size")
    validation_split: Share = Field(description="the last share of the train rows, as Keras takes it")
    early_stopping_patience: int = Field(ge=0, description="epochs without val/loss improvement; 0 = off")


class TaskConfig(ParamsModel):
    """One task's resolved config: its data params, the network (shared model + overrides), training."""

    data: Any
    model: ModelConfig
    train: TrainConfig


class TrainingConfig(ParamsModel):
    """What train@<task> reads, resolved: the seed, the task's network (shared `model` + overrides), training.

    configure@<task> writes it as the train stage's config file, so that a shared `model.*` value a task
    overrides leaves the file's bytes, and so the task's training, alone."""

    seed: int
    model: ModelConfig
    train: TrainConfig


class StudyVariation(ParamsModel):
    name: str
    overrides: tuple[tuple[str, Any], ...]  # (dotted params key, value), in the order given


class Params(ParamsModel):
    seed: int
    model: ModelConfig
    tasks: Mapping[str, TaskConfig]
    study: tuple[StudyVariation, ...] = ()

    def task(self, name: str) -> TaskConfig:
        if name not in self.tasks:
            raise ParamsError(f"unknown task {name!r}; allowed: {', '.join(self.tasks)}")
        return self.tasks[name]


# --- errors: a pydantic error becomes one line naming the key, the value and what is allowed ---

def _fail(key: str, value: Any, allowed: str) -> ParamsError:
    return ParamsError(f"params.yaml: {key} = {value!r} is invalid; allowed: {allowed}")


def _bounds(info: FieldInfo) -> dict[str, float]:
    return {name: getattr(item, name) for item in info.metadata for name in ("ge", "gt", "le", "lt")
            if getattr(item, name, None) is not None}


def allowed_text(info: FieldInfo) -> str:
    """What a field accepts, in words: `an integer >= 1`, `a number in [0.0, 1.0)`, `relu, tanh`."""
    annotation = info.annotation
    if get_origin(annotation) is tuple:
        return "[low, high] with low < high"
    options = tuple(option for option in getattr(annotation, "__args__", ()) if option is not type(None))
    if len(options) == 1 and getattr(options[0], "__args__", None):  # Optional[Literal[...]]
        options = options[0].__args__
    if annotation is bool:
        return "true or false"
    if options and all(isinstance(option, str) for option in options):
        return ", ".join(options)
    bounds = _bounds(info)
    if annotation is int or int in options:
        low = bounds.get("ge")
        return f"an integer >= {low}" if low is not None else "an integer"
    low = float(bounds.get("ge", bounds.get("gt", -math.inf)))
    high = float(bounds.get("le", bounds.get("lt", math.inf)))
    return (f"a number in {'(' if 'gt' in bounds or low == -math.inf else '['}{low}, "
            f"{high}{')' if 'lt' in bounds or high == math.inf else ']'}")


def _field_at(model: type[BaseModel], loc: tuple) -> tuple[FieldInfo | None, int]:
    """The field a pydantic error location points into, and how many loc parts name it."""
    info, depth = None, 0
    for depth, part in enumerate(loc, start=1):
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return info, depth - 1
        info = field
        annotation = field.annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return info, depth
        model = annotation
    return info, depth


def _value_at(raw: Any, loc: tuple) -> Any:
    for part in loc:
        raw = raw[part] if isinstance(raw, Mapping) and part in raw else None
    return raw


def params_error(error: ValidationError, model: type[BaseModel], raw: Any, prefix: str = "") -> ParamsError:
    """The first error of a section's validation, as one line (key with `prefix`, value, what is allowed)."""
    first = error.errors()[0]
    info, depth = _field_at(model, first["loc"])
    loc = first["loc"][:depth]
    key = prefix + ".".join(str(part) for part in loc)
    parent = prefix + ".".join(str(part) for part in first["loc"][:depth]) if depth else prefix.rstrip(".")
    if first["type"] == "extra_forbidden":
        inner = _inner_model(model, loc) or model
        unknown = prefix + ".".join(str(part) for part in first["loc"])
        return ParamsError(f"params.yaml: unknown key {unknown}; allowed under "
                           f"{parent or 'the top level'}: {', '.join(inner.model_fields) or 'no keys'}")
    if first["type"] == "missing" and depth == len(first["loc"]):
        return ParamsError(f"params.yaml: missing key {prefix}{'.'.join(str(part) for part in first['loc'])}")
    if info is None or (isinstance(info.annotation, type) and issubclass(info.annotation, BaseModel)):
        return _fail(key or "params.yaml", _value_at(raw, loc), "a mapping of keys to values")
    allowed = (first.get("ctx") or {}).get("allowed") or allowed_text(info)
    return _fail(key, _value_at(raw, loc), allowed)


def _inner_model(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    for part in loc:
        annotation = model.model_fields[part].annotation
        if not (isinstance(annotation, type) and issubclass(annotation, BaseModel)):
            return None
        model = annotation
    return model


def validate_section(model: type[BaseModel], raw: Any, prefix: str) -> Any:
    """`model` validated from `raw` (the section at dotted `prefix`), or a one-line ParamsError."""
    if not isinstance(raw, Mapping):
        raise _fail(prefix.rstrip(".") or "params.yaml", raw, "a mapping of keys to values")
    try:
        return model.model_validate(dict(raw))
    except ValidationError as error:
        raise params_error(error, model, raw, prefix) from None


# --- the whole file ---

def _require_keys(section: Mapping[str, Any], prefix: str, allowed: tuple[str, ...], required: tuple[str, ...]) -> None:
    for key in section:
        if key not in allowed:
            raise ParamsError(f"params.yaml: unknown key {prefix}{key}; allowed under "
                              f"{prefix.rstrip('.') or 'the top level'}: {', '.join(allowed)}")
    for key in required:
        if key not in section:
            raise ParamsError(f"params.yaml: missing key {prefix}{key}")


def resolved_model(shared: ModelConfig, overrides: ModelOverrides) -> ModelConfig:
    """The shared network with a task's non-null overrides: how `<task>.model` resolves."""
    return shared.model_copy(update=overrides.model_dump(exclude_none=True))


def parse_task(raw: Mapping[str, Any], name: str, data_model: type[BaseModel], shared: ModelConfig) -> TaskConfig:
    """One task's section: its `data` by the task's own model, `model` overrides on the shared network."""
    section = raw.get(name)
    if not isinstance(section, Mapping):
        raise _fail(name, section, "a mapping with the keys data, model and train")
    _require_keys(section, f"{name}.", SECTIONS, SECTIONS)  # dvc.yaml lists all three, so DVC needs them
    data = validate_section(data_model, section["data"] if section["data"] is not None else {}, f"{name}.data.")
    overrides = validate_section(ModelOverrides, section.get("model") or {}, f"{name}.model.")
    model = resolved_model(shared, overrides)
    train = validate_section(TrainConfig, section["train"], f"{name}.train.")
    return TaskConfig(data=data, model=model, train=train)


def parse_params(raw: Any, data_models: Mapping[str, type[BaseModel]], *, other_tasks: tuple[str, ...] = (),
                 with_study: bool = True) -> Params:
    """Validate a params mapping (as read from params.yaml): the shared keys and the tasks in `data_models`.

    The sections of `other_tasks` may be there and are left alone: a stage checks only the task it runs.
    """
    if not isinstance(raw, Mapping):
        raise _fail("params.yaml", raw, "a mapping of keys to values")
    names = tuple(dict.fromkeys((*data_models, *other_tasks)))
    _require_keys(raw, "", ("seed", "model", *names, "study"), ("seed", "model", *data_models))
    seed = parse_seed(raw["seed"])
    shared = validate_section(ModelConfig, raw["model"], "model.")
    tasks = {name: parse_task(raw, name, model, shared) for name, model in data_models.items()}
    study = parse_study(raw.get("study"), raw, data_models) if with_study else ()
    return Params(seed=seed, model=shared, tasks=tasks, study=study)


def parse_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise _fail("seed", seed, "an integer >= 0")
    return seed


def training_config(raw: Any, name: str) -> TrainingConfig:
    """Task `name`'s TrainingConfig from a params mapping: only the keys it resolves from are read
    (seed, model, <name>.model, <name>.train: what dvc.yaml lists for configure@<name>)."""
    if not isinstance(raw, Mapping):
        raise _fail("params.yaml", raw, "a mapping of keys to values")
    for key in ("seed", "model", name):
        if key not in raw:
            raise ParamsError(f"params.yaml: missing key {key}")
    section = raw[name]
    if not isinstance(section, Mapping):
        raise _fail(name, section, "a mapping with the keys data, model and train")
    if "train" not in section:
        raise ParamsError(f"params.yaml: missing key {name}.train")
    shared = validate_section(ModelConfig, raw["model"], "model.")
    overrides = validate_section(ModelOverrides, section.get("model") or {}, f"{name}.model.")
    return TrainingConfig(seed=parse_seed(raw["seed"]), model=resolved_model(shared, overrides),
                          train=validate_section(TrainConfig, section["train"], f"{name}.train."))


def parse_study(raw: Any, base: Mapping[str, Any],
                data_models: Mapping[str, type[BaseModel]]) -> tuple[StudyVariation, ...]:
    """Named variations, each a set of params overrides; duplicates (same overrides) collapse."""
    section = raw if raw is not None else {}
    if not isinstance(section, Mapping):
        raise _fail("study", section, "a mapping of keys to values")
    _require_keys(section, "study.", ("variations",), ())
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
            apply_overrides(base, overrides, data_models)
        except ParamsError as error:
            raise ParamsError(f"params.yaml: {where} ({name}): {str(error).removeprefix('params.yaml: ')}") from None
        key = tuple(sorted((k, repr(v)) for k, v in overrides.items()))
        seen_names.add(name)
        if key in seen_overrides:
            continue  # the same variation listed twice runs once
        seen_overrides.add(key)
        variations.append(StudyVariation(name=name, overrides=tuple(overrides.items())))
    return tuple(variations)


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any],
                    data_models: Mapping[str, type[BaseModel]]) -> dict[str, Any]:
    """Return a copy of a params mapping with dotted-key overrides applied, validated.

    Like `dvc exp run -S key=value`: the key must name an existing value or an allowed
    `<task>.model.*` override.
    """
    result = copy.deepcopy(dict(raw))
    for dotted, value in overrides.items():
        *parents, leaf = str(dotted).split(".")
        node: Any = result
        for depth, part in enumerate(parents):
            # `<task>.model` may be absent or empty: it only holds overrides of the shared `model`.
            optional = depth == 1 and part == "model" and parents[0] in data_models
            if not isinstance(node, dict) or (part not in node and not optional):
                raise ParamsError(f"params.yaml: unknown key {dotted}")
            node = node.setdefault(part, {}) if optional and node.get(part) is None else node[part]
        if not isinstance(node, dict):
            raise ParamsError(f"params.yaml: unknown key {dotted}")
        node[leaf] = value
    parse_params(result, data_models, with_study=False)
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


# --- limits: refuse, before any work, what cannot fit in this machine's memory ---
# The estimates are deliberately rough (within a few times of what TensorFlow and pandas really
# take): their job is to turn a value with a few zeros too many into one line naming its key,
# in a second, instead of a MemoryError or an allocation failure minutes later.

FLOAT32 = 4
# Per network weight while training: the weight, its gradient, Adam's two moments, the best
# weights kept for early stopping, and room for TensorFlow's temporaries.
BYTES_PER_WEIGHT = 8 * FLOAT32
# Per unit of a hidden layer and row of a batch: the forward activation, its gradient, dropout's mask.
BYTES_PER_ACTIVATION = 4 * FLOAT32


def available_memory() -> int:
    """Bytes the kernel says a new allocation can have (MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(size: float) -> str:
    return f"{size / 2 ** 30:.3g} GiB"


def require_memory(needed: float, key: str, value: Any, what: str) -> None:
    """A ParamsError naming `key` when `needed` bytes exceed what the machine has available."""
    available = available_memory()
    if needed > available:
        raise ParamsError(f"params.yaml: {key} = {value!r} needs about {_gib(needed)} of memory for {what}; "
                          f"this machine has {_gib(available)} available: use a smaller value")


def network_weights(model: ModelConfig, inputs: int, outputs: int) -> int:
    """The weights of the lab's dense network: `depth` hidden layers of `width` units, then the output layer."""
    hidden = inputs * model.width + model.width + (model.depth - 1) * (model.width * model.width + model.width)
    return hidden + model.width * outputs + outputs


def require_network_fits(task: str, model: ModelConfig, batch_size: int, inputs: int, outputs: int) -> None:
    """Refuse a network (or a batch) too large to train here, naming the key that makes it so."""
    weights_bytes = network_weights(model, inputs, outputs) * BYTES_PER_WEIGHT
    activations_bytes = batch_size * model.width * model.depth * BYTES_PER_ACTIVATION
    if weights_bytes >= activations_bytes:
        key, value = ("width", model.width) if model.width >= model.depth else ("depth", model.depth)
        require_memory(weights_bytes + activations_bytes, f"{task}.model.{key}", value,
                       f"a {model.width} x {model.depth} network on {inputs} inputs")
    else:
        require_memory(weights_bytes + activations_bytes, f"{task}.train.batch_size", batch_size,
                       f"batches of {batch_size} rows through {model.depth} layers of {model.width} units")
