"""One override syntax: `key=value` as `dvc exp run -S` takes it, the same in the pipeline flow's
`--set`, in the study's variations and in the tests, checked by the same params models first."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import yaml

from flows.dvc_adapter import apply_param_overrides, parse_param_overrides
from flows.pipeline import apply_overrides as flow_overrides
from flows.study.plan import set_params
from stages.core.params import ParamsError, StudyVariation
from stages.tasks import apply_overrides, load_params, parse_params
from tests.conftest import REPO_ROOT

OVERRIDES = {"synthetic.model.width": 128, "model.l2": 1.0e-4, "heart.data.test_size": 0.25,
             "synthetic.data.domain": [-3, 3]}
TEXTS = ["synthetic.model.width=128", "model.l2=0.0001", "heart.data.test_size=0.25", "synthetic.data.domain=[-3, 3]"]


@pytest.fixture
def params_copy(tmp_path: Path) -> Path:
    shutil.copy(REPO_ROOT / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def test_the_same_overrides_give_the_same_params_everywhere(params_copy: Path):
    raw = yaml.safe_load((REPO_ROOT / "params.yaml").read_text())
    in_tests = parse_params(apply_overrides(raw, OVERRIDES))                          # tests, study checks
    assert set_params(StudyVariation(name="v", overrides=tuple(OVERRIDES.items()))) == TEXTS  # study -> dvc -S
    assert parse_param_overrides(TEXTS) == OVERRIDES                                  # read as DVC reads -S
    apply_param_overrides(params_copy / "params.yaml", TEXTS)                        # `dvc exp run -S`'s own code
    by_dvc = load_params(params_copy / "params.yaml")
    shutil.copy(REPO_ROOT / "params.yaml", params_copy / "params.yaml")
    flow_overrides(params_copy, {text.split("=")[0]: text.split("=", 1)[1] for text in TEXTS})  # --set K=V
    by_flow = load_params(params_copy / "params.yaml")
    assert by_dvc.tasks == by_flow.tasks == in_tests.tasks
    assert by_flow.task("synthetic").model.width == 128 and by_flow.task("heart").data.test_size == 0.25


@pytest.mark.parametrize(("key", "value", "named"), [
    ("synthetic.model.widht", "128", "unknown key synthetic.model.widht"),
    ("heart.data.test_size", "1.5", "heart.data.test_size = 1.5 is invalid"),
])
def test_a_bad_override_is_refused_by_the_models_before_params_yaml_changes(params_copy: Path, key, value, named):
    before = (params_copy / "params.yaml").read_bytes()
    with pytest.raises(ValueError, match=named):
        flow_overrides(params_copy, {key: value})
    with pytest.raises(ParamsError, match=named):
        apply_overrides(yaml.safe_load(before), parse_param_overrides([f"{key}={value}"]))
    assert (params_copy / "params.yaml").read_bytes() == before
