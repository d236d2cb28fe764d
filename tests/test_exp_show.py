"""`dvc exp show` at a glance (issue 18, item 4), with real DVC on a tiny built copy: the headline
metrics of every task and an experiment's changed params fit 200 columns; `dvc exp diff` and the flow's
`pipeline-metrics` artifact list the headline metrics only, to 4 significant digits, changed ones first."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest

from flows.study import results as study
from flows.dvc_adapter import metrics_diff
from flows.pipeline import metric_rows
from stages.tasks import TASK_NAMES, headline_choice, headline_metrics, headline_name, load_task, significant
from tests.conftest import repo_env, run

# The documented command (docs: "Compare experiments"): every headline column kept, the other columns
# only where an experiment differs, the dependencies' hash columns left out.
GLANCE = ["dvc", "exp", "show", "--no-pager", "--only-changed",
          "--keep", r"(synthetic|heart|mnist)/(?!epoch)[^±]*$", "--drop", r"(data|models|reports|stages)/|.*±"]
# Its companion: each task's headline metric's margin over the seeds, and the changed params.
MARGINS = ["dvc", "exp", "show", "--no-pager", "--only-changed",
           "--keep", r".*±", "--drop", r"(data|models|reports|stages)/|(synthetic|heart|mnist)/"]


EPOCHS = [f"{task}/epoch" for task in TASK_NAMES]  # reports/live/<task>/metrics.json


def headline_names(tasks=TASK_NAMES, margins: bool = True) -> list[str]:
    """Each task's headline columns, and (`margins`) its headline metric's margin over the seeds."""
    names = []
    for task in tasks:
        for short, metric in headline_choice(task).items():
            names.append(headline_name(task, short))
            if margins and metric == load_task(task).HEADLINE_METRIC:
                names.append(f"{headline_name(task, short)}±")
    return names


def significant_digits(text: str) -> int:
    """4 for `0.04913`, `31.83`, `1.148`, `-0.1235`: the digits after leading zeros, sign and point."""
    return len(text.lstrip("-").replace(".", "").lstrip("0"))


def test_headline_values_are_rounded_and_named_uniquely():
    metrics = {"test/relative_mse": 0.049125447812, "ood/mse_vs_truth": 31.834140382, "val/loss": 1.14757,
               "test/mse": 1.2117, "train/loss": 0.919}
    assert significant(0.049125447812) == 0.04913 and significant(20) == 20  # counts stay as they are
    assert headline_metrics("synthetic", metrics) == {
        "synthetic/rel_mse": 0.04913, "synthetic/ood_mse": 31.83, "synthetic/val_loss": 1.148}
    # Over seeds: the headline metric's margin (its mean's 95 % interval's half-width, 2 digits) beside it, and
    # only its: one column more per task. None where one seed leaves it unknown.
    margins = {"test/relative_mse": 0.000612345, "ood/mse_vs_truth": 2.3456, "val/loss": 0.01}
    assert headline_metrics("synthetic", metrics, margins) == {
        "synthetic/rel_mse": 0.04913, "synthetic/rel_mse±": 0.00061, "synthetic/ood_mse": 31.83,
        "synthetic/val_loss": 1.148}
    assert headline_metrics("synthetic", metrics, {"test/relative_mse": None}) == headline_metrics("synthetic", metrics)
    names = headline_names()
    assert len(names) == len(set(names))  # unique: DVC names the columns without their file's path
    for task in TASK_NAMES:  # a run's one-line summary (flows.pipeline.headline) shows it
        assert load_task(task).HEADLINE_METRIC in headline_choice(task).values(), task
    with pytest.raises(KeyError, match=r"stages/tasks/synthetic.py HEADLINE_METRICS names ood/mse_vs_truth"):
        headline_metrics("synthetic", {"test/relative_mse": 0.05, "val/loss": 1.1})  # evaluate: one line, exit 1
    # The study follows its variations by these, in `dvc exp show`.
    assert set(study.HEADLINE) <= set(headline_choice("synthetic").values())


@pytest.fixture(scope="module")
def narrow(built_repo: Path, mirror: Path, tmp_path_factory) -> tuple[Path, dict[str, str]]:
    """A copy of the built repo that ran one experiment, `-S model.width=8` (its results in the workspace),
    and its environment: the tests below only read it."""
    workspace = Path(shutil.copytree(built_repo, tmp_path_factory.mktemp("narrow") / "repo", symlinks=True))
    env = repo_env(mirror, COLUMNS="200")
    run(["dvc", "exp", "run", "-n", "narrow", "-S", "model.width=8"], workspace, env)
    yield workspace, env
    shutil.rmtree(workspace.parent, ignore_errors=True)


def test_exp_show_at_200_columns_shows_every_headline_metric_and_the_changed_param(narrow):
    workspace, env = narrow

    table = run(GLANCE, workspace, env).stdout
    print(table)
    lines = table.splitlines()
    assert "…" not in table and max(map(len, lines)) <= 200, table
    header = lines[1].split()
    assert header[:2] == ["Experiment", "Created"]
    assert set(header[2:]) == {*headline_names(margins=False), "model.width"}, header  # no other column
    columns = header[2:]
    row = dict(zip(columns, next(line.split() for line in lines if "[narrow]" in line)[-len(columns):]))
    shown = json.loads((workspace / "reports/headline/synthetic.json").read_text())  # the experiment's results
    assert row["model.width"] == "8" and float(row["synthetic/rel_mse"]) == shown["synthetic/rel_mse"], row

    margins = run(MARGINS, workspace, env).stdout
    print(margins)
    lines = margins.splitlines()
    assert "…" not in margins and max(map(len, lines)) <= 200, margins
    header = lines[1].split()
    assert set(header[2:]) == {*(name for name in headline_names() if name.endswith("±")), "model.width"}, header
    row = dict(zip(header[2:], next(line.split() for line in lines if "[narrow]" in line)[-len(header) + 2:]))
    assert float(row["synthetic/rel_mse±"]) == shown["synthetic/rel_mse±"] > 0, row
    # Plain `dvc exp show` has them too, only more besides: no metric column holds detail.
    plain = json.loads(run(["dvc", "exp", "show", "--json"], workspace, env).stdout)
    metric_names = {name for commit in plain for data in [commit.get("data") or {}]
                    for found in (data.get("metrics") or {}).values() for name in found["data"]}
    assert metric_names == {*headline_names(), *EPOCHS}


def test_exp_diff_and_the_metrics_artifact_list_headline_metrics_rounded_changed_first(narrow):
    workspace, env = narrow

    # `dvc exp diff`: the workspace (the experiment's results) against HEAD, changed metrics only.
    diff = run(["dvc", "exp", "diff"], workspace, env).stdout
    rows = [line.split() for line in diff.splitlines() if re.match(r"\s*reports/headline/", line)]
    changed = headline_names(["synthetic", "heart"])  # MNIST has its own width: nothing of it changed
    assert sorted(row[1] for row in rows) == sorted(changed), diff
    for _, _, old, new, change in rows:
        assert significant_digits(old) <= 4 and significant_digits(new) <= 4 and float(change) != 0, diff
    every = run(["dvc", "exp", "diff", "--all"], workspace, env).stdout
    assert sorted(row.split()[1] for row in every.splitlines() if re.match(r"\s*reports/headline/", row)) == \
        sorted(headline_names())

    # The flow's `pipeline-metrics` table, from the same real `dvc metrics diff HEAD --all`: the headline
    # metrics and the epochs each task ran (dvclive's one metric), changed ones first, 4 significant digits.
    table = metric_rows(metrics_diff(workspace, env))
    assert sorted(row["metric"] for row in table) == sorted([*headline_names(), *EPOCHS])
    flags = [bool(row["change"]) for row in table]
    assert flags == sorted(flags, reverse=True) and {row["metric"] for row in table if row["change"]} >= set(changed)
    assert all(significant_digits(repr(row[key])) <= 4 for row in table for key in ("old", "new", "change")
               if isinstance(row[key], float))


def test_the_experiment_shows_in_exp_show_json_and_metrics_diff_with_its_param_and_new_results(narrow):
    workspace, env = narrow
    before = json.loads(run(["git", "show", "HEAD:reports/headline/synthetic.json"], workspace, env).stdout)
    shown = json.loads(run(["dvc", "exp", "show", "--json"], workspace, env).stdout)
    experiments = [exp for commit in shown for exp in (commit.get("experiments") or [])]
    data = next(exp for exp in experiments if exp.get("name") == "narrow")["revs"][0]["data"]
    assert data["params"]["params.yaml"]["data"]["model"]["width"] == 8
    synthetic = data["metrics"]["reports/headline/synthetic.json"]["data"]
    assert synthetic["synthetic/rel_mse"] != before["synthetic/rel_mse"]

    # `dvc exp run` leaves the experiment's results in the workspace: diff them against HEAD.
    diff = json.loads(run(["dvc", "metrics", "diff", "--json"], workspace, env).stdout)
    moved = diff["reports/headline/synthetic.json"]["synthetic/rel_mse"]
    assert (moved["old"], moved["new"]) == (before["synthetic/rel_mse"], synthetic["synthetic/rel_mse"])
