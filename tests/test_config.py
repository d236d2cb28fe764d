"""params.yaml: the repo's own file is valid, and bad keys or values are refused by name."""

from __future__ import annotations

import json

import pytest
import yaml

from flows.study.plan import set_params
from stages.core.params import ParamsError, training_config
from stages.tasks import TASK_NAMES, apply_overrides, load_params, parse_params
from tests.conftest import REPO_ROOT


@pytest.fixture
def raw() -> dict:
    return yaml.safe_load((REPO_ROOT / "params.yaml").read_text())


def test_repo_params_load_with_lab_defaults():
    params = load_params(REPO_ROOT / "params.yaml")
    synthetic, heart, mnist = (params.task(name) for name in ("synthetic", "heart", "mnist"))
    assert synthetic.data.n == 1000 and synthetic.data.domain == (-5.0, 5.0)
    assert synthetic.train.epochs == 2000 and synthetic.train.batch_size == 32
    assert (mnist.model.width, mnist.model.depth) == (128, 3)
    assert (mnist.train.epochs, mnist.train.batch_size) == (50, 200)
    assert (synthetic.model.width, heart.model.depth) == (64, 2)
    assert heart.data.deduplicate is True and heart.data.test_size == 0.2


def test_dataset_model_overrides_the_shared_model_key_by_key(raw):
    params = parse_params(apply_overrides(raw, {"model.width": 32, "heart.model.dropout": 0.25}))
    synthetic, heart, mnist = (params.task(name) for name in ("synthetic", "heart", "mnist"))
    assert synthetic.model.width == 32 and heart.model.width == 32
    assert heart.model.dropout == 0.25 and synthetic.model.dropout == 0.0
    assert mnist.model.width == 128  # mnist overrides the width itself


@pytest.mark.parametrize(("overrides", "named"), [
    ({"model.width": 0}, "model.width"),
    ({"model.width": 2.5}, "model.width"),
    ({"model.activation": "relu6"}, "model.activation"),
    ({"synthetic.data.domain": [5, -5]}, "synthetic.data.domain"),
    ({"synthetic.data.domain": [1, 1]}, "synthetic.data.domain"),
    ({"synthetic.data.extrapolation": [-1, 1]}, "synthetic.data.extrapolation"),
    ({"synthetic.data.noise_sigma": float("nan")}, "synthetic.data.noise_sigma"),
    ({"mnist.data.test_size": 0.2}, "mnist.data.test_size"),
    ({"mnist.train.batch_size": 0}, "mnist.train.batch_size"),
    ({"heart.data.test_size": 0}, "heart.data.test_size"),
    ({"heart.data.test_size": 1.5}, "heart.data.test_size"),
    ({"heart.data.deduplicate": "yes"}, "heart.data.deduplicate"),
    ({"model.widht": 64}, "model.widht"),
    ({"synthetic.train.epoch": 5}, "synthetic.train.epoch"),
    ({"mnist.model.dropout": 1.0}, "mnist.model.dropout"),
    ({"synthetic.train.engine": "turbo"}, "synthetic.train.engine"),
    ({"seed": -1}, "seed"),
])
def test_bad_values_are_refused_naming_the_key_and_what_is_allowed(raw, overrides, named):
    with pytest.raises(ParamsError) as error:
        apply_overrides(raw, overrides)
    message = str(error.value)
    assert named in message and ("allowed" in message or "unknown" in message)
    assert "\n" not in message


def test_missing_section_is_named(raw):
    del raw["heart"]["train"]
    with pytest.raises(ParamsError, match="missing key heart.train"):
        parse_params(raw)


def test_study_entries_are_validated_and_duplicates_collapse(raw):
    raw["study"] = {"variations": [
        {"name": "wide", "params": {"synthetic.model.width": 128}},
        {"name": "wide-again", "params": {"synthetic.model.width": 128}},
        {"name": "deep", "params": {"synthetic.model.depth": 3}},
    ]}
    assert [variation.name for variation in parse_params(raw).study] == ["wide", "deep"]
    raw["study"]["variations"].append({"name": "typo", "params": {"synthetic.model.widht": 1}})
    with pytest.raises(ParamsError, match=r"study.variations\[3\] \(typo\)"):
        parse_params(raw)


@pytest.mark.parametrize(("study", "line"), [
    (5, "params.yaml: study = 5 is invalid; allowed: a mapping of keys to values"),
    ({"variation": []}, "params.yaml: unknown key study.variation; allowed under study: variations, seeds"),
    ({"seeds": 0}, "params.yaml: study.seeds = 0 is invalid; allowed: an integer from 1 to 50"),
    ({"seeds": 2.5}, "params.yaml: study.seeds = 2.5 is invalid; allowed: an integer from 1 to 50"),
    ({"variations": [{"name": "a", "params": {"heart.model.widht": 8}}]},
     "params.yaml: study.variations[0] (a): unknown key heart.model.widht; allowed under heart.model: width, depth, "
     "activation, l2, dropout"),
    ({"variations": {"name": "x"}}, "params.yaml: study.variations = {'name': 'x'} is invalid; "
                                    "allowed: a list of {name, params} entries"),
    ({"variations": [{"name": "x"}]}, "params.yaml: study.variations[0] = {'name': 'x'} is invalid; "
                                      "allowed: a mapping with exactly the keys name and params"),
    ({"variations": [{"name": "x y", "params": {}}]}, "params.yaml: study.variations[0].name = 'x y' is invalid; "
                                                      "allowed: letters, digits, '-' and '_'"),
    ({"variations": [{"name": 7, "params": {}}]}, "params.yaml: study.variations[0].name = 7 is invalid; "
                                                  "allowed: letters, digits, '-' and '_'"),
    ({"variations": [{"name": "a", "params": {}}, {"name": "a", "params": {"seed": 1}}]},
     "params.yaml: study.variations[1].name 'a' is used twice; names must be unique"),
    ({"variations": [{"name": "a", "params": [1]}]}, "params.yaml: study.variations[0].params = [1] is invalid; "
                                                     "allowed: a mapping of dotted params keys to values"),
    ({"variations": [{"name": "a", "params": {}}, {"name": "b", "params": {"model.width": 0}}]},
     "params.yaml: study.variations[1] (b): model.width = 0 is invalid; allowed: an integer >= 1"),
])
def test_study_messages_word_for_word(raw, study, line):
    raw["study"] = study
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert str(error.value) == line


@pytest.mark.parametrize(("value", "allowed"), [(0, "an integer from 1 to 50"), (-3, "an integer from 1 to 50"),
                                                 (2.5, "an integer from 1 to 50"), (1000, "an integer from 1 to 50"),
                                                 ("five", "an integer from 1 to 50")])
def test_train_seeds_out_of_range_are_one_line_naming_the_key(raw, value, allowed):
    raw["heart"]["train"]["seeds"] = value
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert str(error.value) == f"params.yaml: heart.train.seeds = {value!r} is invalid; allowed: {allowed}"


def test_seeds_count_from_seed_and_the_study_applies_its_count_to_every_task(raw):
    raw["seed"], raw["mnist"]["train"]["seeds"] = 7, 3
    assert training_config(raw, "mnist").training_seeds == [7, 8, 9]
    raw["study"] = {"seeds": 4, "variations": [{"name": "base", "params": {}},
                                               {"name": "one", "params": {"heart.train.seeds": 1}}]}
    base, one = parse_params(raw).study
    assert set_params(base) == [f"{task}.train.seeds=4" for task in TASK_NAMES]
    assert set_params(one) == ["heart.train.seeds=1", *(f"{task}.train.seeds=4" for task in TASK_NAMES
                                                      if task != "heart")]  # its own count wins


@pytest.mark.parametrize(("edit", "line"), [
    (lambda raw: raw.update(elsewhere={}), "params.yaml: unknown key elsewhere; allowed under the top level: "
                                           "seed, model, heart, mnist, synthetic, study"),
    (lambda raw: raw.pop("seed"), "params.yaml: missing key seed"),
    (lambda raw: raw.update(seed=True), "params.yaml: seed = True is invalid; allowed: an integer >= 0"),
    (lambda raw: raw.update(mnist=None),
     "params.yaml: mnist = None is invalid; allowed: a mapping with the keys data, model and train"),
    (lambda raw: raw["synthetic"].update(extra=1),
     "params.yaml: unknown key synthetic.extra; allowed under synthetic: data, model, train"),
    (lambda raw: raw.update(study=None, mnist={"data": None, "model": None, "train": None}),
     "params.yaml: mnist.train = None is invalid; allowed: a mapping of keys to values"),
])
def test_top_level_and_section_messages_word_for_word(raw, edit, line):
    edit(raw)
    with pytest.raises(ParamsError) as error:
        parse_params(raw)
    assert str(error.value) == line


def test_invalid_yaml_names_the_line(tmp_path):
    path = tmp_path / "params.yaml"
    path.write_text("seed: 1\nmodel: [unclosed\n")
    with pytest.raises(ParamsError, match="not valid YAML"):
        load_params(path)


@pytest.mark.parametrize(("overrides", "line"), [
    ({"model.width": 0}, "params.yaml: model.width = 0 is invalid; allowed: an integer >= 1"),
    ({"heart.data.test_size": 1.5}, "params.yaml: heart.data.test_size = 1.5 is invalid; allowed: a number in (0.0, 1.0)"),
    ({"model.widht": 64}, "params.yaml: unknown key model.widht; allowed under model: width, depth, activation, l2, dropout"),
    ({"synthetic.data.domain": [5, -5]}, "params.yaml: synthetic.data.domain = [5, -5] is invalid; "
                                         "allowed: [low, high] with low < high"),
])
def test_messages_name_the_key_the_value_and_what_is_allowed_word_for_word(raw, overrides, line):
    with pytest.raises(ParamsError) as error:
        apply_overrides(raw, overrides)
    assert str(error.value) == line


def test_a_stage_of_one_task_checks_only_that_task(raw, tmp_path):
    raw["heart"]["data"]["test_size"] = 7
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(raw))
    assert load_params(path, ["synthetic"]).task("synthetic").data.n == 1000
    with pytest.raises(ParamsError, match="heart.data.test_size"):
        load_params(path, ["heart"])


# --- params.schema.json: what editors check params.yaml against ---

def schema_validator():
    import json

    import jsonschema

    schema = json.loads((REPO_ROOT / "params.schema.json").read_text())
    jsonschema.Draft202012Validator.check_schema(schema)  # a valid JSON Schema
    return jsonschema.Draft202012Validator(schema)


def test_the_schema_is_generated_from_the_models_and_current():
    from stages.params_schema import main

    assert main(["--check"]) == 0, "params.schema.json is stale: run `python -m stages.params_schema`"
    assert (REPO_ROOT / "params.yaml").read_text().startswith("# yaml-language-server: $schema=params.schema.json")


def test_the_schema_accepts_params_yaml_and_refuses_what_the_models_refuse(raw):
    validator = schema_validator()
    assert list(validator.iter_errors(raw)) == []
    for overrides in ({"model.widht": 64}, {"heart.data.test_size": 1.5}, {"synthetic.train.engine": "turbo"}):
        edited = yaml.safe_load(yaml.safe_dump(raw))
        *parents, leaf = next(iter(overrides)).split(".")
        node = edited
        for part in parents:
            node = node[part]
        node[leaf] = next(iter(overrides.values()))
        assert list(validator.iter_errors(edited)), f"the schema accepts {overrides}"
        with pytest.raises(ParamsError):
            parse_params(edited)


def test_every_key_in_the_schema_says_what_it_is():
    import json

    schema = json.loads((REPO_ROOT / "params.schema.json").read_text())
    undocumented = [f"{name}.{key}" for name, definition in schema["$defs"].items()
                    for key, field in definition.get("properties", {}).items()
                    if name in ("ModelConfig", "TrainConfig") or name.endswith("DataParams")
                    if "description" not in field]
    assert undocumented == []


@pytest.mark.parametrize(("name", "valid"), [("baseline", True), ("l2-1e-4", True), ("wide_2", True),
                                             ("é-1", False), ("ﬁve", False), ("a.b", False), ("", False)])
def test_the_model_and_the_schema_agree_on_study_names(raw, name, valid):
    """One rule for both: ASCII letters, digits, '-' and '_' (a name is a git ref, a run name, a folder)."""
    raw["study"] = {"variations": [{"name": name, "params": {}}]}
    schema_errors = list(schema_validator().iter_errors(raw))
    if valid:
        assert schema_errors == [] and [v.name for v in parse_params(raw).study] == [name]
        return
    assert schema_errors, f"the schema accepts {name!r}"
    with pytest.raises(ParamsError, match=r"study.variations\[0\].name = .* allowed: letters, digits"):
        parse_params(raw)


def test_each_choice_list_and_range_is_declared_once():
    from typing import get_args

    from stages.core.params import ACTIVATIONS, ENGINES, ModelConfig, ModelOverrides, TrainConfig

    schema = json.loads((REPO_ROOT / "params.schema.json").read_text())["$defs"]
    assert schema["TrainConfig"]["properties"]["engine"]["enum"] == list(ENGINES)
    assert schema["ModelConfig"]["properties"]["activation"]["enum"] == list(ACTIVATIONS)
    assert get_args(TrainConfig.model_fields["engine"].annotation) == ENGINES
    # The overrides are ModelConfig's fields made optional: same keys, ranges and descriptions.
    for name, field in ModelConfig.model_fields.items():
        override = ModelOverrides.model_fields[name]
        assert (override.metadata, override.description, override.default) == (field.metadata, field.description, None)
    assert list(ModelOverrides.model_fields) == list(ModelConfig.model_fields)


@pytest.mark.parametrize(("edit", "line"), [
    (lambda raw: raw.pop("seed"), "params.yaml: missing key seed"),
    (lambda raw: raw["synthetic"].pop("train"), "params.yaml: missing key synthetic.train"),
    (lambda raw: raw.update(synthetic=3),
     "params.yaml: synthetic = 3 is invalid; allowed: a mapping with the keys data, model and train"),
    (lambda raw: raw["synthetic"]["model"].update(width=0),
     "params.yaml: synthetic.model.width = 0 is invalid; allowed: an integer >= 1"),
    (lambda raw: raw["synthetic"]["data"].update(n="many"), None),  # not an input of the training
    (lambda raw: raw.pop("heart"), None),
])
def test_a_tasks_training_reads_only_its_inputs_with_the_same_messages(raw, edit, line):
    from stages.core.params import training_config

    edit(raw)
    if line is None:
        assert training_config(raw, "synthetic").model.width == raw["model"]["width"]
        return
    with pytest.raises(ParamsError) as error:
        training_config(raw, "synthetic")
    assert str(error.value) == line
