"""The hyperparameter study: choosing variations, the report's computed answers and table, and the
`study` flow end to end (DVC experiments in a temporary repo copy, tiny epochs)."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from flows.study.plan import StudyError, select_variations, set_params
from flows.study.results import experiments_of, failure_reason
from stages.core.params import StudyVariation
from stages.tasks import headline_choice, higher_is_better, load_params, load_task, significant
from stages.reporting.study import (StudyExperiment, TaskRun, answers, build_study_report, config_changes,
                                   epochs_to_reach, metrics_table_html)
from tests.conftest import REPO_ROOT, TINY_SEEDS, repo_env, run

PARAMS = load_params(REPO_ROOT / "params.yaml")
BASE_CONFIG = PARAMS.task("synthetic")


# --- choosing and queueing variations ---

VARIATIONS = (StudyVariation(name="baseline", overrides=()),
              StudyVariation(name="wide", overrides=(("synthetic.model.width", 128),)),
              StudyVariation(name="light-l2", overrides=(("synthetic.model.l2", 1e-4),)))


def test_only_keeps_the_named_variations_in_study_order():
    assert [v.name for v in select_variations(VARIATIONS, ["light-l2", "baseline"])] == ["baseline", "light-l2"]
    assert select_variations(VARIATIONS, None) == list(VARIATIONS)


def test_only_with_an_unknown_name_is_refused_naming_it_and_the_known_ones():
    with pytest.raises(StudyError, match=r"unknown study variation\(s\) wdie; .*has: baseline, wide, light-l2"):
        select_variations(VARIATIONS, ["wide", "wdie"])


def test_overrides_become_set_params_as_users_type_them():
    # As a user types them after `dvc exp run -S`: params.yaml holds every key, so no `+`/`++`.
    assert set_params(VARIATIONS[1]) == ["synthetic.model.width=128"]
    assert set_params(VARIATIONS[2]) == ["synthetic.model.l2=0.0001"]
    assert set_params(StudyVariation(name="two", overrides=(("seed", 7), ("model.activation", "tanh")))) == [
        "seed=7", "model.activation=tanh"]
    assert set_params(VARIATIONS[0]) == []


# (the queue's queued and running entries: tests/test_dvc_adapter.py, on DVC's own queue)


def test_experiments_of_reads_the_baseline_commits_named_experiments():
    def exp(name, rev, width, metrics=True, error=None):
        data = {"params": {"params.yaml": {"data": {"synthetic": {"model": {"width": width}}}}},
                "metrics": {"reports/headline/synthetic.json": {"data": {"synthetic/val_loss": 1.5}},
                            "reports/headline/heart.json": {"data": {"heart/roc_auc": 0.9}},
                            "reports/live/heart/metrics.json": {"data": {"heart/epoch": 37}}} if metrics else {}}
        return {"name": name, "revs": [{"rev": rev, "name": name, "data": data, "error": error}]}

    shown = [{"rev": "workspace", "data": {}},
             {"rev": "head", "name": "main", "experiments": [
                 exp("wide", "e1", 128), exp("no-metrics", "e2", 8, False),
                 exp("failed", "e4", 8, error={"msg": "Experiment run failed", "type": ""})]},
             {"rev": "older", "experiments": [exp("old", "e3", 64)]}]
    found = experiments_of(shown, "head")
    assert list(found) == ["wide"]
    assert found["wide"]["rev"] == "e1"
    assert found["wide"]["params"]["synthetic"]["model"]["width"] == 128
    assert found["wide"]["metrics"] == {"synthetic/val_loss": 1.5}
    assert found["wide"]["headline"] == {"synthetic/val_loss": 1.5, "heart/roc_auc": 0.9}  # every task's, no more


def test_a_failed_experiment_is_explained_by_its_own_stage_record():
    records = [{"stage": "train@synthetic", "experiment": "wide", "exit_code": 0, "line": ""},
               {"stage": "train@synthetic", "experiment": "deep", "exit_code": 2, "line": "train: error: deep one"},
               {"stage": "evaluate@synthetic", "experiment": "wide", "exit_code": 2, "line": "evaluate: error: wide one"}]
    assert failure_reason(records, "wide") == "evaluate: error: wide one"
    assert failure_reason(records, "deep") == "train: error: deep one"
    assert failure_reason(records, "other").startswith("no stage reported an error")


# --- the report's computed answers ---

SEEDS = (42, 43, 44, 45, 46)
PATTERN = (-1.0, -0.5, 0.0, 0.5, 1.0)  # each seed's offset, in units of `jitter`: the same seed, the same luck


def curve(epochs: int, tau: float, jitter: float, floor: float = 1.0) -> pd.DataFrame:
    """A decaying loss with alternating jitter: `tau` sets how fast it falls, `jitter` how noisy it is."""
    epoch = np.arange(1, epochs + 1)
    wiggle = jitter * np.where(epoch % 2 == 0, 1.0, -1.0)
    val = floor + 10 * np.exp(-epoch / tau) + wiggle
    return pd.DataFrame({"epoch": epoch, "train/loss": val - 0.2, "val/loss": val})


def over_seeds(values: dict[str, float], spread: float, pattern=PATTERN) -> dict[int, dict[str, float]]:
    """Each seed's metrics: `values` shifted by the seed's share of `spread` (relative)."""
    return {seed: {key: value * (1 + spread * offset) for key, value in values.items()}
            for seed, offset in zip(SEEDS, pattern)}


def task_run(name: str, values: dict[str, float], *, seeds: dict | None = None, spread: float = 0.02,
             pattern=PATTERN, loss_curve: pd.DataFrame | None = None, seed_curves: dict | None = None,
             config=None) -> TaskRun:
    seeds = seeds or over_seeds(values, spread, pattern)
    metrics = {key: float(np.mean([v[key] for v in seeds.values()])) for key in values}
    return TaskRun(title=load_task(name).TITLE, config=config or PARAMS.task(name), metrics=metrics, seeds=seeds,
                   curve=curve(2000, 100, 0.02) if loss_curve is None else loss_curve,
                   judged={m: higher_is_better(name, m) for m in headline_choice(name).values()},
                   seed_curves=seed_curves or {})


def experiment(name: str, overrides: dict | None = None, *, train: dict | None = None, model: dict | None = None,
               seed: int = 42, loss_curve: pd.DataFrame | None = None, seed_curves: dict | None = None,
               pattern=PATTERN, heart: TaskRun | None = None, **metrics: float) -> StudyExperiment:
    config = BASE_CONFIG.model_copy(update={"train": BASE_CONFIG.train.model_copy(update=train or {}),
                                            "model": BASE_CONFIG.model.model_copy(update=model or {})})
    values = {"train/loss": 0.9, "val/loss": 1.1, "test/relative_mse": 0.05, "domain/mse_vs_truth": 0.08,
              "ood/mse_vs_truth": 30.0, "train/epochs_run": 2000}
    values.update({key.replace("__", "/"): value for key, value in metrics.items()})
    grid = pd.DataFrame({"x": [-6.0, -4.0, 0.0, 4.0, 6.0], "y_true": [8.0, 5.0, 1.0, 5.0, 8.0],
                         "y_pred": [6.0, 5.1, 1.1, 4.9, 10.0],
                         "region": ["extrapolation", "domain", "domain", "domain", "extrapolation"]})
    tasks = {"synthetic": task_run("synthetic", values, pattern=pattern, loss_curve=loss_curve,
                                   seed_curves=seed_curves, config=config)}
    if heart is not None:
        tasks["heart"] = heart
    return StudyExperiment(name=name, rev=f"rev-{name}", overrides=overrides or {}, seed=seed, tasks=tasks,
                           predictions=grid)


def seed_curves(tau: float, jitter: float) -> dict[int, pd.DataFrame]:
    """Each seed's curve: its time constant `tau`, 5 % faster or slower by seed."""
    return {seed: curve(2000, tau * (1 + 0.05 * offset), jitter) for seed, offset in zip(SEEDS, PATTERN)}


def answer_to(question: str, experiments: list[StudyExperiment]) -> str:
    found = dict(answers(experiments))
    assert question in found, list(found)
    return " ".join(found[question])


BATCH = "Does a larger batch behave like a smaller learning rate?"
DEPTH = "Does depth help?"
LONGER = "Does training longer overfit?"
SYNTHETIC_CHANGES = "Synthetic regression: does each change help, hurt, or can we not tell?"
HEART_CHANGES = "Heart disease: does each change help, hurt, or can we not tell?"


def test_epochs_to_reach_is_the_first_epoch_at_or_below_the_level():
    frame = pd.DataFrame({"epoch": [1, 2, 3, 4], "val/loss": [5.0, 2.0, 3.0, 1.0]})
    assert epochs_to_reach(frame, 2.0) == 2
    assert epochs_to_reach(frame, 0.5) is None


def test_a_slower_smoother_large_batch_is_called_like_a_smaller_learning_rate():
    base = experiment("baseline", loss_curve=curve(2000, 100, 0.05), seed_curves=seed_curves(100, 0.05))
    big = experiment("batch-120", {"synthetic.train.batch_size": 120}, train={"batch_size": 120},
                     loss_curve=curve(2000, 300, 0.005), seed_curves=seed_curves(300, 0.005))
    text = answer_to(BATCH, [base, big])
    slower = float(re.search(r"takes ([\d.]+)× the epochs", text).group(1))
    assert 2.5 < slower < 3.5  # three times the time constant: about three times the epochs
    assert "smoother" in text and "So yes" in text and "3.75× fewer weight updates" in text
    assert re.search(r"log ratio \+[\d.]+ \[\+[\d.]+, \+[\d.]+\] over 5 seeds", text)  # its numbers shown


def test_a_large_batch_that_converges_as_fast_is_not_called_a_smaller_learning_rate():
    base = experiment("baseline", loss_curve=curve(2000, 100, 0.05), seed_curves=seed_curves(100, 0.05))
    big = experiment("batch-120", {"synthetic.train.batch_size": 120}, train={"batch_size": 120},
                     loss_curve=curve(2000, 100, 0.05), seed_curves=seed_curves(100, 0.05))
    text = answer_to(BATCH, [base, big])
    assert "takes 1× the epochs" in text and "So yes" not in text and "Cannot tell at 5 seeds" in text


def test_one_seed_cannot_tell_whatever_the_difference():
    one = {42: curve(2000, 100, 0.05)}
    base = experiment("baseline", loss_curve=one[42], seed_curves=one)
    big = experiment("batch-120", {"synthetic.train.batch_size": 120}, train={"batch_size": 120},
                     loss_curve=curve(2000, 300, 0.005), seed_curves={42: curve(2000, 300, 0.005)})
    text = answer_to(BATCH, [base, big])
    assert "So yes" not in text and "from one seed" in text


@pytest.mark.parametrize("domain_error, pattern, verdict", [
    (0.04, PATTERN, "helps"), (0.16, PATTERN, "hurts"),
    # the same mean as the baseline's give or take, each seed's luck reversed: the differences straddle zero
    (0.0801, PATTERN[::-1], "cannot be told apart from noise")])
def test_depth_verdict_follows_the_in_domain_error_seed_by_seed(domain_error, pattern, verdict):
    base = experiment("baseline")
    deep = experiment("depth-3", {"synthetic.model.depth": 3}, model={"depth": 3}, pattern=pattern,
                      domain__mse_vs_truth=domain_error)
    text = answer_to(DEPTH, [base, deep])
    assert f"the extra depth {verdict}" in text
    assert "0.08000 → " + f"{domain_error:#.4g}" in text
    if verdict == "helps":
        assert re.search(r"helps: -0.04 \[-0.04\d*, -0.0[34]\d*\] over 5 seeds", text), text


def test_longer_training_that_lowers_train_and_raises_val_loss_is_called_overfitting():
    base = experiment("baseline")
    longer = experiment("epochs-5000", {"synthetic.train.epochs": 5000}, train={"epochs": 5000},
                        train__loss=0.8, val__loss=1.25, loss_curve=curve(5000, 100, 0.02))
    text = answer_to(LONGER, [base, longer])
    assert "train loss falls by 0.1 [" in text and "validation loss rises by 0.15 [" in text and "So yes" in text


def test_longer_training_that_still_lowers_val_loss_is_not_called_overfitting():
    base = experiment("baseline")
    longer = experiment("epochs-5000", {"synthetic.train.epochs": 5000}, train={"epochs": 5000},
                        train__loss=0.8, val__loss=1.0, loss_curve=curve(5000, 100, 0.02))
    assert "No: the validation loss still improves" in answer_to(LONGER, [base, longer])


def test_longer_training_within_the_seeds_noise_is_not_called_anything():
    base = experiment("baseline")
    longer = experiment("epochs-5000", {"synthetic.train.epochs": 5000}, train={"epochs": 5000},
                        pattern=PATTERN[::-1], loss_curve=curve(5000, 100, 0.02))
    text = answer_to(LONGER, [base, longer])
    assert "No overfitting beyond the seeds' noise" in text and "cannot tell at 5 seeds" in text


def test_answers_compare_against_the_variation_without_overrides_and_list_the_others_by_task():
    heart_values = {"test/roc_auc": 0.89, "test/accuracy": 0.8, "val/loss": 0.4}
    base = experiment("baseline", heart=task_run("heart", heart_values))
    wide = experiment("width-128", {"synthetic.model.width": 128}, model={"width": 128}, val__loss=1.0,
                      heart=task_run("heart", heart_values))
    heart_config = PARAMS.task("heart")
    wider = heart_config.model_copy(update={"model": heart_config.model.model_copy(update={"width": 128})})
    heart_wide = experiment("heart-width-128", {"heart.model.width": 128},
                            heart=task_run("heart", {**heart_values, "test/roc_auc": 0.91}, config=wider))
    found = dict(answers([wide, base, heart_wide]))
    assert found[BATCH][0].startswith("Not asked")
    (line,) = found[SYNTHETIC_CHANGES]
    assert line.startswith("width-128 (model.width 64 → 128)") and "val/loss 1.100 → 1.000 (helps: -0.1 [" in line
    (line,) = found[HEART_CHANGES]  # only the variation that changed heart
    assert line.startswith("heart-width-128 (model.width 64 → 128)"), line
    assert "test/roc_auc 0.8900 → 0.9100 (helps: +0.02 [" in line and "test/accuracy 0.8000 → 0.8000 (cannot tell" in line
    assert config_changes(base, experiment("seed-7", {"seed": 7}, seed=7, heart=task_run("heart", heart_values))) \
        == {"seed": (42, 7)}
    assert dict(answers([wide]))["Answers need the baseline"]


def test_a_change_without_seeds_in_common_is_not_compared():
    heart_values = {"test/roc_auc": 0.89, "test/accuracy": 0.8, "val/loss": 0.4}
    base = experiment("baseline", heart=task_run("heart", heart_values))
    moved = {seed + 100: values for seed, values in over_seeds(heart_values, 0.02).items()}
    other = experiment("seed-142", {"seed": 142}, seed=142, heart=task_run("heart", heart_values, seeds=moved))
    assert "no seed in common with the baseline: not comparable" in answer_to(HEART_CHANGES, [base, other])


# --- the page ---

def test_metrics_table_is_sorted_by_validation_loss_best_first():
    table = metrics_table_html([experiment("a", val__loss=1.3), experiment("b", val__loss=1.1),
                                experiment("c", val__loss=1.2)])
    names = re.findall(r'<th scope="row">(?:<strong>)?([abc])<', table)
    assert names == ["b", "c", "a"]
    assert "<strong>b</strong>" in table


def test_study_report_is_self_contained_and_the_same_bytes_for_the_same_experiments():
    experiments = [experiment("baseline"),
                   experiment("batch-120", {"synthetic.train.batch_size": 120}, train={"batch_size": 120},
                              loss_curve=curve(2000, 300, 0.005))]
    page = build_study_report(experiments, "0123456789abcdef")
    assert page == build_study_report(experiments, "0123456789abcdef")
    assert page.count("data:image/png;base64,") == 2
    assert not re.search(r"<script|<link|src=\"http", page)
    for text in ("baseline", "batch-120", "synthetic.train.batch_size=120", "0123456789", BATCH.replace("'", "&#x27;")):
        assert text in page


# --- the flow, end to end ---

def study_params(repo: Path, variations: list[dict]) -> None:
    path = repo / "params.yaml"
    params = yaml.safe_load(path.read_text())
    params["study"] = {"seeds": TINY_SEEDS, "variations": variations}  # the built copy's seeds: no baseline retrain
    path.write_text(yaml.safe_dump(params, sort_keys=False))


def study_cli(repo: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return run([sys.executable, "-m", "flows.study", *args], repo, env, check=False)


def experiments_at_head(repo: Path, env: dict[str, str]) -> dict[str, dict]:
    head = run(["git", "rev-parse", "HEAD"], repo, env).stdout.strip()
    shown = json.loads(run(["dvc", "exp", "show", "--json"], repo, env).stdout)
    return {exp["name"]: exp["revs"][0] for commit in shown if commit["rev"] == head
            for exp in (commit.get("experiments") or [])}


def test_study_of_two_tasks_on_three_seeds_runs_its_experiments_and_answers_for_each_task(workspace: Path,
                                                                                           mirror: Path):
    env = repo_env(mirror)
    study_params(workspace, [{"name": "baseline", "params": {}},
                             {"name": "narrow", "params": {"synthetic.model.width": 16}},
                             {"name": "narrow-again", "params": {"synthetic.model.width": 16}},  # runs once
                             {"name": "heart-narrow", "params": {"heart.model.width": 8}}])
    run(["git", "commit", "-qam", "a study of two tasks"], workspace, env)
    params_before = (workspace / "params.yaml").read_bytes()

    result = study_cli(workspace, env, "--json", "--jobs", "2")
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads(result.stdout.strip().splitlines()[-1])
    assert [exp["name"] for exp in summary["experiments"]] == ["baseline", "narrow", "heart-narrow"]
    assert summary["experiments"][1]["params"] == {"synthetic.model.width": 16}
    assert summary["experiments"][0]["metrics"]["train/epochs_run"] == 20
    assert summary["report"] == "reports/study.html" and summary["seconds"] > 0

    shown = experiments_at_head(workspace, env)
    assert set(shown) == {"baseline", "narrow", "heart-narrow"}
    narrow = shown["narrow"]["data"]
    assert narrow["params"]["params.yaml"]["data"]["synthetic"]["model"]["width"] == 16
    assert narrow["params"]["params.yaml"]["data"]["heart"]["train"]["seeds"] == TINY_SEEDS  # study.seeds
    # `dvc exp show` has the headline, the mean over the seeds, to 4 digits, and its margin; the study read every
    # metric from DVC's cache.
    headline = narrow["metrics"]["reports/headline/synthetic.json"]["data"]
    assert headline["synthetic/val_loss"] == significant(summary["experiments"][1]["metrics"]["val/loss"])
    assert headline["synthetic/rel_mse±"] > 0

    page = (workspace / "reports/study.html").read_text()
    rows = re.findall(r'<tr><th scope="row">(?:<strong>)?([\w-]+)<', page)
    assert sorted(rows) == ["baseline", "baseline", "heart-narrow", "heart-narrow", "narrow"]  # heart's table too
    assert "synthetic.model.width=16" in page and "Final metrics, Heart disease" in page
    heart_answer = re.search(r"<h3>Heart disease: does each change help, hurt, or can we not tell\?</h3>\s*"
                             r"<ul><li>(.*?)</li></ul>", page, re.S)
    assert heart_answer and heart_answer.group(1).startswith("heart-narrow (model.width 64 → 8)"), page[:3000]
    assert re.search(r"test/roc_auc [\d.]+ → [\d.]+ \((helps|hurts|cannot tell at 3 seeds): [-+]", heart_answer.group(1))

    # The queue ran the experiments in temporary copies: the workspace is as it was.
    assert (workspace / "params.yaml").read_bytes() == params_before
    assert run(["dvc", "status", "--json"], workspace, env).stdout.strip() == "{}"

    diff = json.loads(run(["dvc", "plots", "diff", "baseline", "narrow", "--json"], workspace, env).stdout)
    (curves,) = [plot for name, plots in diff["data"].items() if name.startswith("Learning curves, synthetic")
                 for plot in plots]
    assert curves["revisions"] == ["baseline", "narrow"]
    assert {row["rev"] for row in curves["content"]["data"]["values"]} == {"baseline", "narrow"}

    # A re-run replaces this commit's experiment of the same name.
    again = study_cli(workspace, env, "--only", "narrow")
    assert again.returncode == 0, again.stderr[-3000:]
    rerun = experiments_at_head(workspace, env)
    assert set(rerun) == {"baseline", "narrow", "heart-narrow"}
    assert rerun["narrow"]["data"]["metrics"] == shown["narrow"]["data"]["metrics"]  # deterministic


@pytest.mark.parametrize("entry, args, message", [
    ({"name": "typo", "params": {"synthetic.model.widht": 16}}, [],
     r"study\.variations\[1\] \(typo\): unknown key synthetic\.model\.widht"),
    ({"name": "zero-batch", "params": {"synthetic.train.batch_size": 0}}, [],
     r"study\.variations\[1\] \(zero-batch\): synthetic\.train\.batch_size = 0 is invalid"),
    ({"name": "fine", "params": {"synthetic.model.width": 16}}, ["--only", "fien"],
     r"unknown study variation\(s\) fien; .*has: baseline, fine"),
])
def test_bad_entry_or_name_is_refused_with_nothing_queued(workspace: Path, mirror: Path, entry, args, message):
    env = repo_env(mirror)
    study_params(workspace, [{"name": "baseline", "params": {}}, entry])

    result = study_cli(workspace, env, *args)
    assert result.returncode != 0
    errors = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(errors) == 1 and errors[0].startswith("study: error: "), result.stderr
    assert re.search(message, errors[0]), errors[0]
    assert "No experiment tasks in the queue" in run(["dvc", "queue", "status"], workspace, env).stdout
    assert experiments_at_head(workspace, env) == {}
    assert not (workspace / "reports/study.html").exists()


def test_results_git_does_not_track_are_refused_with_nothing_queued(workspace: Path, mirror: Path):
    # Queued experiments start from git's view: an untracked result would be rebuilt in every one of them.
    env = repo_env(mirror)
    run(["git", "rm", "-q", "--cached", "reports/headline/heart.json", "reports/plots/mnist/learning_curve.csv"],
        workspace, env)
    run(["git", "commit", "-qm", "results out of git"], workspace, env)

    result = study_cli(workspace, env)
    assert result.returncode != 0
    assert re.search(r"^study: error: git does not track the pipeline results reports/headline/heart\.json, "
                     r"reports/plots/mnist/learning_curve\.csv: .*commit them first", result.stderr, re.M), \
        result.stderr[-2000:]
    assert "No experiment tasks in the queue" in run(["dvc", "queue", "status"], workspace, env).stdout
    assert experiments_at_head(workspace, env) == {}
