"""params.yaml as typed, frozen pydantic models, and the one-line errors users see.

A wrong key or value fails here, before any data is touched, with one line naming the key and
what is allowed, e.g. `params.yaml: model.width = 0 is invalid; allowed: an integer >= 1`.
The file has a shared `model`, one section per task (`<task>.data`, `.model`, `.train`) and the
study, and the whole of it is one model (`params_model`), whose JSON Schema is params.schema.json
(stages/params_schema.py): the checks, the messages and what editors show come from the same fields.
A task's `data` model is declared by its task module (stages/tasks/<name>.py); this module takes
those models as arguments, so it knows no task by name. A task's `model` section overrides
any `model.*` key; the resolved network config is what the stages see. At the end, the limits:
rough memory estimates that refuse a value the machine cannot hold, naming its key.
"""

from __future__ import annotations

import copy
import functools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping, Optional, get_args, get_origin

import yaml
from pydantic import (AfterValidator, BaseModel, ConfigDict, Field, ValidationError, create_model, field_validator,
                      model_validator)
from pydantic.fields import FieldInfo
from pydantic_core import PydanticCustomError

# The choice lists, each defined once: the models, the schema and the messages all read these.
Activation = Literal["relu", "tanh", "sigmoid", "elu", "selu", "gelu", "swish", "softplus", "leaky_relu", "linear"]
ACTIVATIONS = get_args(Activation)
Engine = Literal["compiled", "fit"]
ENGINES = get_args(Engine)
# ASCII only: a study name becomes a DVC experiment's git ref (refs/exps/...), a Prefect run's name and a
# folder; `é` passes str.isalnum but is a different byte sequence in NFC and NFD (macOS), so it is refused.
STUDY_NAME = r"^[A-Za-z0-9_-]+$"


class ParamsError(ValueError):
    """A params.yaml key or value that the stages cannot use."""


@dataclass(frozen=True)
class Allowed:
    """What a field accepts, in words, where its type does not say it (`Annotated` metadata, read by allowed_text)."""

    text: str


class ParamsModel(BaseModel):
    """A section of params.yaml: no unknown keys, no silent conversions (2.5 is not an int), frozen."""

    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)


def _increasing(value: tuple[float, float]) -> tuple[float, float]:
    if not value[0] < value[1]:
        raise ValueError("low must be below high")
    return value


Finite = Annotated[float, Field(allow_inf_nan=False)]
# [low, high] in YAML; a list there, so the container is lax (the numbers are not).
Interval = Annotated[tuple[Finite, Finite], Field(strict=False), AfterValidator(_increasing),
                     Allowed("[low, high] with low < high")]
Share = Annotated[float, Field(gt=0, lt=1, allow_inf_nan=False)]
Seed = Annotated[int, Field(ge=0, description="data generation and splits, and the first training seed")]
# Training seeds, counted from `seed`. More than MAX_SEEDS is a typo, not a study: 5 already answer most questions.
MAX_SEEDS = 50
Seeds = Annotated[int, Field(ge=1, le=MAX_SEEDS, description="training seeds, counted from `seed`: each draws its "
                             "own initial weights, row orders and dropout masks; the data and splits stay those of `seed`")]


class ModelConfig(ParamsModel):
    """The dense network."""

    width: int = Field(ge=1, description="units per hidden layer")
    depth: int = Field(ge=1, description="number of hidden layers")
    activation: Activation = Field(description="activation of the hidden layers")
    l2: float = Field(ge=0, allow_inf_nan=False, description="L2 penalty on the hidden kernels")
    dropout: float = Field(ge=0, lt=1, allow_inf_nan=False, description="dropout rate after each hidden layer")


def _optional(field: FieldInfo) -> tuple[Any, FieldInfo]:
    """A ModelConfig field as an override: the same type, range and description, or null."""
    optional = FieldInfo.merge_field_infos(field, default=None)
    optional.annotation = Optional[field.annotation]
    return optional.annotation, optional


# A task's overrides of the shared `model`: ModelConfig's keys, each optional, so the two cannot drift apart.
ModelOverrides = create_model(
    "ModelOverrides", __base__=ParamsModel, __module__=__name__,
    __doc__="A task's overrides of the shared `model`: any of its keys, or none (null: as in `model`).",
    **{name: _optional(field) for name, field in ModelConfig.model_fields.items()})


SharedModel = Annotated[ModelConfig, Field(description="the dense network shared by the tasks")]


class TrainConfig(ParamsModel):
    """How a task's network is trained (Adam)."""

    engine: Engine = Field(description="compiled (epoch loop in one TF function) or fit (model.fit)")
    epochs: int = Field(ge=1, description="passes over the training rows")
    batch_size: int = Field(ge=1, description="rows per gradient step")
    learning_rate: float = Field(gt=0, allow_inf_nan=False, description="Adam's step size")
    validation_split: Share = Field(description="the last share of the train rows, as Keras takes it")
    early_stopping_patience: int = Field(ge=0, description="epochs without val/loss improvement; 0 = off")
    seeds: Seeds = 1


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

    @property
    def training_seeds(self) -> list[int]:
        """`train.seeds` seeds counted from `seed`; the first trains the model a user scores with."""
        return list(range(self.seed, self.seed + self.train.seeds))


class StudyVariation(ParamsModel):
    name: str
    overrides: tuple[tuple[str, Any], ...]  # (dotted params key, value), in the order given
    seeds: Optional[int] = None  # study.seeds: every task's train.seeds, unless the variation sets it itself


class Params(ParamsModel):
    """params.yaml resolved, as the stages and flows use it: each task's network is the shared one with its overrides."""

    seed: int
    model: ModelConfig
    tasks: Mapping[str, TaskConfig]
    study: tuple[StudyVariation, ...] = ()

    def task(self, name: str) -> TaskConfig:
        if name not in self.tasks:
            raise ParamsError(f"unknown task {name!r}; allowed: {', '.join(self.tasks)}")
        return self.tasks[name]


# --- the file: one model for the whole of params.yaml (its JSON Schema is params.schema.json) ---

SECTION_SHAPE = "a mapping with the keys data, model and train"  # dvc.yaml lists all three: DVC needs them


class TaskSection(ParamsModel):
    """A task's section; `params_model` gives each task one with the task's own `data` model."""

    data: Any
    model: ModelOverrides
    train: TrainConfig

    @field_validator("data", "model", mode="before")
    @classmethod
    def _empty_if_null(cls, value: Any) -> Any:
        return {} if value is None else value  # `data:` or `model:` with nothing under it


class StudyEntry(ParamsModel):
    """One variation of the study: run as a DVC experiment named after it."""

    name: Annotated[str, Allowed("letters, digits, '-' and '_'")] = Field(
        pattern=STUDY_NAME, description="the experiment's name")
    params: Annotated[dict[str, Any], Allowed("a mapping of dotted params keys to values")] = Field(
        description="dotted params keys and their values, as `dvc exp run -S` takes them")

    @model_validator(mode="before")
    @classmethod
    def _exactly_name_and_params(cls, value: Any) -> Any:
        if not isinstance(value, Mapping) or set(value) != {"name", "params"}:
            raise PydanticCustomError("study_entry", "not a {name, params} entry")
        return value


class Study(ParamsModel):
    """Named variations of the params above (python -m flows.study)."""

    variations: Annotated[tuple[Annotated[StudyEntry, Allowed("a mapping with exactly the keys name and params")], ...],
                          Field(strict=False), Allowed("a list of {name, params} entries")] = Field(
        default=(), description="each runs as a DVC experiment named after it; the same params twice run once")
    seeds: Seeds = Field(default=5, description="training seeds of every task in every variation and the baseline, "
                                                "compared seed by seed")

    @model_validator(mode="before")
    @classmethod
    def _empty_if_null(cls, value: Any) -> Any:
        return {} if value is None else value

    @field_validator("variations", mode="before")
    @classmethod
    def _empty_list_if_null(cls, value: Any) -> Any:
        return () if value is None else value

    @model_validator(mode="after")
    def _unique_names(self) -> Study:
        seen: set[str] = set()
        for index, entry in enumerate(self.variations):
            if entry.name in seen:
                raise ParamsError(f"params.yaml: study.variations[{index}].name {entry.name!r} is used twice; "
                                  "names must be unique")
            seen.add(entry.name)
        return self


class ParamsFile(ParamsModel):
    """The base of the whole file's model (`params_model` adds the fields); each study variation is checked
    against the rest of the file, as `dvc exp run -S` would apply it."""

    TASKS: ClassVar[tuple[tuple[str, type[BaseModel], str], ...]] = ()  # (name, data model, title) checked here
    OTHER_TASKS: ClassVar[tuple[str, ...]] = ()  # sections that may be there, left alone

    @model_validator(mode="wrap")
    @classmethod
    def _variations_apply(cls, raw: Any, handler: Any) -> ParamsFile:
        file = handler(raw)
        if isinstance(getattr(file, "study", None), Study):
            plain = params_model(cls.TASKS, cls.OTHER_TASKS, with_study=False)
            for index, entry in enumerate(file.study.variations):
                try:
                    apply_overrides(raw, entry.params, plain)
                except ParamsError as error:
                    raise ParamsError(f"params.yaml: study.variations[{index}] ({entry.name}): "
                                      f"{str(error).removeprefix('params.yaml: ')}") from None
        return file


@functools.cache
def _section(name: str, data_model: type[BaseModel], title: str) -> type[TaskSection]:
    return create_model(f"{name.title().replace('_', '')}Section", __base__=TaskSection, __module__=__name__,
                        __doc__=title, data=(data_model, ...))


@functools.cache
def params_model(tasks: tuple[tuple[str, type[BaseModel], str], ...], other_tasks: tuple[str, ...] = (),
                 with_study: bool = True) -> type[ParamsFile]:
    """The model of the whole params.yaml: `tasks` are (name, its `data` model, its title) and are checked;
    the sections of `other_tasks` may be there and are left alone (a stage checks only the task it runs);
    without `with_study`, so is `study`."""
    sections = {name: (Annotated[_section(name, data, title), Allowed(SECTION_SHAPE)], ...)
                for name, data, title in tasks}
    others = {name: (Any, None) for name in other_tasks if name not in sections}
    study = (Study, Field(default_factory=Study, description="python -m flows.study")) if with_study else (Any, None)
    model = create_model(
        "Params", __base__=ParamsFile, __module__=__name__,
        __doc__="dnnlab's params.yaml (stages/core/params.py, stages/tasks/*.py)",
        seed=(Seed, ...), model=(SharedModel, ...), **sections, **others, study=study)
    model.TASKS, model.OTHER_TASKS = tasks, other_tasks
    return model


# --- errors: a pydantic error becomes one line naming the key, the value and what is allowed ---

def _fail(key: str, value: Any, allowed: str) -> ParamsError:
    return ParamsError(f"params.yaml: {key} = {value!r} is invalid; allowed: {allowed}")


def _bounds(info: FieldInfo) -> dict[str, float]:
    return {name: getattr(item, name) for item in info.metadata for name in ("ge", "gt", "le", "lt")
            if getattr(item, name, None) is not None}


def allowed_text(info: FieldInfo) -> str:
    """What a field accepts, in words: `an integer >= 1`, `a number in [0.0, 1.0)`, `relu, tanh`."""
    said = [item.text for item in info.metadata if isinstance(item, Allowed)]
    if said:
        return said[-1]
    annotation = info.annotation
    options = tuple(option for option in getattr(annotation, "__args__", ()) if option is not type(None))
    if len(options) == 1 and getattr(options[0], "__args__", None):  # Optional[Literal[...]]
        options = options[0].__args__
    if annotation is bool:
        return "true or false"
    if options and all(isinstance(option, str) for option in options):
        return ", ".join(options)
    bounds = _bounds(info)
    if annotation is int or int in options:
        low, high = bounds.get("ge"), bounds.get("le")
        if low is not None and high is not None:
            return f"an integer from {low} to {high}"
        return f"an integer >= {low}" if low is not None else "an integer"
    low = float(bounds.get("ge", bounds.get("gt", -math.inf)))
    high = float(bounds.get("le", bounds.get("lt", math.inf)))
    return (f"a number in {'(' if 'gt' in bounds or low == -math.inf else '['}{low}, "
            f"{high}{')' if 'lt' in bounds or high == math.inf else ']'}")


def _is_model(annotation: Any) -> bool:
    return isinstance(annotation, type) and issubclass(annotation, BaseModel)


def _walk(model: type[BaseModel], loc: tuple) -> list[tuple[Any, FieldInfo]]:
    """The (loc part, field) pairs a pydantic error location names: model fields, and items of their lists."""
    steps: list[tuple[Any, FieldInfo]] = []
    annotation: Any = model
    for part in loc:
        if isinstance(part, str) and _is_model(annotation) and part in annotation.model_fields:
            info = annotation.model_fields[part]
        elif isinstance(part, int) and get_origin(annotation) is tuple:
            info = FieldInfo.from_annotation(get_args(annotation)[0])
        else:
            break
        steps.append((part, info))
        annotation = info.annotation
    return steps


def _key(prefix: str, loc: tuple) -> str:
    text = "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc)
    return prefix + text.removeprefix(".") if text else prefix.rstrip(".")


def _value_at(raw: Any, loc: tuple) -> Any:
    for part in loc:
        if isinstance(raw, Mapping) and part in raw:
            raw = raw[part]
        elif isinstance(raw, list) and isinstance(part, int) and part < len(raw):
            raw = raw[part]
        else:
            return None
    return raw


def _first(errors: list[dict]) -> dict:
    """The error to tell: an unknown, then a missing key of the top level first, else the first one."""
    rank = {"extra_forbidden": 0, "missing": 1}
    return min(errors, key=lambda error: rank.get(error["type"], 2) if len(error["loc"]) == 1 else 2)


def params_error(error: ValidationError, model: type[BaseModel], raw: Any, prefix: str = "") -> ParamsError:
    """A validation's error as one line: the key (under dotted `prefix`), its value, and what is allowed."""
    first = _first(error.errors())
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, ParamsError):  # a check across keys (stages/core: Study, ParamsFile) says it all
        return cause
    steps = _walk(model, first["loc"])
    loc = first["loc"][:len(steps)]
    if first["type"] == "extra_forbidden":
        inner = steps[-1][1].annotation if steps and _is_model(steps[-1][1].annotation) else model
        return ParamsError(f"params.yaml: unknown key {_key(prefix, first['loc'])}; allowed under "
                           f"{_key(prefix, loc) or 'the top level'}: {', '.join(inner.model_fields) or 'no keys'}")
    if first["type"] == "missing" and len(loc) == len(first["loc"]):
        return ParamsError(f"params.yaml: missing key {_key(prefix, loc)}")
    value = _value_at(raw, loc)
    if not steps or _is_model(steps[-1][1].annotation):
        said = [item.text for item in (steps[-1][1].metadata if steps else ()) if isinstance(item, Allowed)]
        return _fail(_key(prefix, loc) or "params.yaml", value, said[-1] if said else "a mapping of keys to values")
    allowed = (first.get("ctx") or {}).get("allowed") or allowed_text(steps[-1][1])
    return _fail(_key(prefix, loc), value, allowed)


def validate_section(model: type[BaseModel], raw: Any, prefix: str) -> Any:
    """`model` validated from `raw` (the section at dotted `prefix`), or a one-line ParamsError."""
    if not isinstance(raw, Mapping):
        raise _fail(prefix.rstrip(".") or "params.yaml", raw, "a mapping of keys to values")
    try:
        return model.model_validate(dict(raw))
    except ValidationError as error:
        raise params_error(error, model, raw, prefix) from None


# --- the whole file, resolved ---

def resolved_model(shared: ModelConfig, overrides: ModelOverrides) -> ModelConfig:
    """The shared network with a task's non-null overrides: how `<task>.model` resolves."""
    return shared.model_copy(update=overrides.model_dump(exclude_none=True))


def distinct_variations(entries: tuple[StudyEntry, ...], seeds: Optional[int] = None) -> tuple[StudyVariation, ...]:
    """The study's entries in order, each trained on `seeds` seeds; one listed again with the same params runs once."""
    seen: set[tuple] = set()
    variations = []
    for entry in entries:
        key = tuple(sorted((k, repr(v)) for k, v in entry.params.items()))
        if key not in seen:
            seen.add(key)
            variations.append(StudyVariation(name=entry.name, overrides=tuple(entry.params.items()), seeds=seeds))
    return tuple(variations)


def parse_params(raw: Any, model: type[ParamsFile]) -> Params:
    """Validate a params mapping (as read from params.yaml) by the file's `model` (params_model), resolved."""
    file = validate_section(model, raw, "")
    tasks = {}
    for name, _, _ in model.TASKS:
        section = getattr(file, name)
        tasks[name] = TaskConfig(data=section.data, model=resolved_model(file.model, section.model),
                                 train=section.train)
    study = distinct_variations(file.study.variations, file.study.seeds) if isinstance(file.study, Study) else ()
    return Params(seed=file.seed, model=file.model, tasks=tasks, study=study)


class TrainingInputs(ParamsModel):
    """The keys one task's training resolves from; the others are not its inputs, so they are left alone."""

    model_config = ConfigDict(extra="ignore")


class TrainingSection(TrainingInputs):
    """What configure@<task> reads of a task's section: its `model` overrides and `train`, not its `data`."""

    model: ModelOverrides = Field(default_factory=ModelOverrides)
    train: TrainConfig

    @field_validator("model", mode="before")
    @classmethod
    def _empty_if_null(cls, value: Any) -> Any:
        return {} if value is None else value


@functools.cache
def training_model(name: str) -> type[BaseModel]:
    """The part of params.yaml task `name`'s training resolves from (seed, model, <name>.model, <name>.train:
    what dvc.yaml lists for configure@<name>): other keys are not its inputs, so they are left alone."""
    return create_model(f"{name.title().replace('_', '')}Training", __base__=TrainingInputs, __module__=__name__,
                        seed=(Seed, ...), model=(SharedModel, ...),
                        **{name: (Annotated[TrainingSection, Allowed(SECTION_SHAPE)], ...)})


def training_config(raw: Any, name: str) -> TrainingConfig:
    """Task `name`'s TrainingConfig from a params mapping, validated by training_model(name)."""
    checked = validate_section(training_model(name), raw, "")
    section = getattr(checked, name)
    return TrainingConfig(seed=checked.seed, model=resolved_model(checked.model, section.model), train=section.train)


def apply_overrides(raw: Mapping[str, Any], overrides: Mapping[str, Any], model: type[ParamsFile]) -> dict[str, Any]:
    """Return a copy of a params mapping with dotted-key overrides applied, validated by `model`.

    Like `dvc exp run -S key=value`: the key must name an existing value or an allowed
    `<task>.model.*` override.
    """
    result = copy.deepcopy(dict(raw))
    tasks = {name for name, _, _ in model.TASKS}
    for dotted, value in overrides.items():
        *parents, leaf = str(dotted).split(".")
        node: Any = result
        for depth, part in enumerate(parents):
            # `<task>.model` may be absent or empty: it only holds overrides of the shared `model`.
            optional = depth == 1 and part == "model" and parents[0] in tasks
            if not isinstance(node, dict) or (part not in node and not optional):
                raise ParamsError(f"params.yaml: unknown key {dotted}")
            node = node.setdefault(part, {}) if optional and node.get(part) is None else node[part]
        if not isinstance(node, dict):
            raise ParamsError(f"params.yaml: unknown key {dotted}")
        node[leaf] = value
    parse_params(result, params_model(model.TASKS, model.OTHER_TASKS, with_study=False))
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


def require_network_fits(task: str, model: ModelConfig, batch_size: int, inputs: int, outputs: int,
                         replicas: int = 1) -> None:
    """Refuse a network (or a batch) too large to train here, naming the key that makes it so; `replicas`
    networks trained side by side (seeds) need that many times the memory."""
    weights_bytes = network_weights(model, inputs, outputs) * BYTES_PER_WEIGHT * replicas
    activations_bytes = batch_size * model.width * model.depth * BYTES_PER_ACTIVATION * replicas
    side_by_side = f", {replicas} seeds side by side" if replicas > 1 else ""
    if weights_bytes >= activations_bytes:
        key, value = ("width", model.width) if model.width >= model.depth else ("depth", model.depth)
        require_memory(weights_bytes + activations_bytes, f"{task}.model.{key}", value,
                       f"a {model.width} x {model.depth} network on {inputs} inputs{side_by_side}")
    else:
        require_memory(weights_bytes + activations_bytes, f"{task}.train.batch_size", batch_size,
                       f"batches of {batch_size} rows through {model.depth} layers of {model.width} units"
                       f"{side_by_side}")
