"""What `make pipeline` says around `dvc repro` (flows.first_run): one line before, for an empty,
missing or partly filled DVC remote, no md5 lists; one line after, when the results differ from the
committed ones. Real DVC on a tiny built repo copy; no training."""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
from pathlib import Path

from dvc.repo import Repo

from flows.first_run import difference_line, metric_changes, pull_line
from tests.conftest import REPO_ROOT, point_local_remote, repo_env, run

HEART_DATA_STAGES = ["fetch@heart", "preprocess@heart"]


def first_run(repo: Path, mirror: Path, step: str) -> list[str]:
    """`python -m flows.first_run STEP` in repo: every line it printed, stdout and stderr."""
    # No credentials anywhere, and no asking the EC2 metadata address for some: an S3 remote fails at once.
    env = repo_env(mirror, PYTHONPATH=str(REPO_ROOT), AWS_EC2_METADATA_DISABLED="true",
                   AWS_SHARED_CREDENTIALS_FILE=str(repo / "no-credentials"), AWS_CONFIG_FILE=str(repo / "no-config"))
    result = run([sys.executable, "-m", "flows.first_run", step], repo, env)
    return (result.stdout + result.stderr).splitlines()


def cached_outputs(repo: Path, stages: list[str] | None = None) -> int:
    """How many outputs of these stages (default: all) DVC caches (data, models)."""
    with contextlib.chdir(repo), Repo(".") as dvc:  # stage names are relative to the working directory
        return sum(out.use_cache for stage in dvc.index.stages for out in stage.outs
                   if stages is None or stage.addressing in stages)


def forget_the_data(repo: Path) -> None:
    """A fresh clone: code, dvc.lock and the committed metrics, none of the data or models."""
    for folder in (".dvc/cache", "data", "models"):
        shutil.rmtree(repo / folder, ignore_errors=True)


def test_a_first_run_says_in_one_line_what_it_pulls_and_what_it_computes(workspace: Path, mirror: Path, tmp_path):
    total = cached_outputs(workspace)
    pushed = cached_outputs(workspace, HEART_DATA_STAGES)
    env = repo_env(mirror)
    point_local_remote(workspace, tmp_path / "team-remote")
    run(["dvc", "push", "-q", *HEART_DATA_STAGES], workspace, env)  # what a teammate pushed so far
    forget_the_data(workspace)

    point_local_remote(workspace, tmp_path / "no-remote-yet")  # missing: nobody pushed anything
    assert first_run(workspace, mirror, "pull") == [pull_line(0, total, "local")]
    assert first_run(workspace, mirror, "pull")[0].startswith("dvc pull: nothing to pull yet from the DVC remote")

    (workspace / ".dvc" / "config.local").write_text("['remote \"local\"']\n    url = s3://dnnlab-team/dvc\n")
    (line,) = first_run(workspace, mirror, "pull")  # unreachable: DVC's reason, and the pipeline goes on
    assert line.startswith("dvc pull: nothing pulled (failed to connect to s3 ") and "credentials" in line, line

    point_local_remote(workspace, tmp_path / "team-remote")
    assert first_run(workspace, mirror, "pull") == [pull_line(pushed, total - pushed, "local")]
    assert 0 < pushed < total and (workspace / "data/processed/heart").is_dir()

    assert first_run(workspace, mirror, "compare") == []  # the committed results, untouched
    metrics = workspace / "reports/headline/heart.json"
    values = json.loads(metrics.read_text())
    name = next(iter(values))
    metrics.write_text(json.dumps({**values, name: values[name] * 1.0004}))  # the last digits of another CPU
    (line,) = first_run(workspace, mirror, "compare")
    assert f"1 metric(s) of 1 file(s) (largest: {name} in reports/headline/heart.json, 0.04 % relative" in line
    assert "`dvc metrics diff`" in line


def test_the_pull_line_for_each_state_of_the_remote():
    assert pull_line(0, 10, "local") == "dvc pull: nothing to pull yet from the DVC remote 'local': " \
                                        "`dvc repro` computes the 10 output(s)"
    assert pull_line(2, 8, "team") == "dvc pull: 2 output(s) pulled from the DVC remote 'team'; " \
                                      "`dvc repro` computes the other 8"
    assert pull_line(10, 0, "team").startswith("dvc pull: 10 output(s) pulled") and "nothing left" in pull_line(10, 0, "")
    assert pull_line(0, 0, "team") == "dvc pull: every output is already here; nothing to compute"


def test_changed_metrics_are_counted_by_file_and_the_largest_relative_change_named():
    diff = {"reports/metrics/mnist.json": {"test/accuracy": {"old": 0.9788, "new": 0.9795, "diff": 0.0007},
                                           "test/macro_f1": {"old": 0.97, "new": 0.97, "diff": 0}},
            "reports/metrics/heart.json": {"train/loss": {"old": 0.30000001, "new": 0.30000002, "diff": 1e-8}},
            "reports/metrics/synthetic.json": {"test/mse": {"old": 1.0, "new": 1.0, "diff": 0}}}
    assert sorted(name for _, name, _ in metric_changes(diff)) == ["test/accuracy", "train/loss"]
    line = difference_line(diff)
    assert line.startswith("Your results differ from the committed ones in 2 metric(s) of 2 file(s) "
                           "(largest: test/accuracy in reports/metrics/mnist.json, 0.072 % relative change)")
    assert difference_line({"reports/metrics/synthetic.json": diff["reports/metrics/synthetic.json"]}) is None
    new = {"reports/metrics/heart.json": {"test/roc_auc": {"new": 0.9}}}  # no committed value
    assert "(largest: test/roc_auc in reports/metrics/heart.json, new)" in difference_line(new)
