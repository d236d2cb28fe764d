"""Shared results, with real servers: a built copy's data goes to a DVC remote (a local folder, or a
real S3-compatible server) and its git history to a bare git remote; a fresh clone then gets the
results with `dvc pull`, recomputing nothing. Experiments travel between clones with `dvc exp
push/pull`. A Prefect server on PostgreSQL records the pipeline flow's runs in its database.

Everything runs in throwaway copies; the servers listen on 127.0.0.1 (tests/servers.py)."""

from __future__ import annotations

import json
import sys
import urllib.request
from pathlib import Path

import pytest
import yaml

from flows.processes import stop_process_group
from tests.conftest import point_local_remote, repo_env, run, set_params
from tests.servers import PostgresServer, S3Server, free_port, start_prefect_server

EXPERIMENT = "three-epochs"


def publish(repo: Path, origin: Path, env: dict[str, str]) -> None:
    """`dvc push` the repo's data to its default DVC remote and `git push` its branch to a new bare repo."""
    run(["dvc", "push", "-q"], repo, env)
    run(["git", "init", "-q", "--bare", "-b", "main", str(origin)], repo.parent, env)
    run(["git", "remote", "add", "origin", str(origin)], repo, env)
    run(["git", "push", "-q", "origin", "main"], repo, env)


def dvc_json(repo: Path, env: dict[str, str], *args: str):
    return json.loads(run(["dvc", *args, "--json"], repo, env).stdout)


def output_files(repo: Path) -> dict[str, tuple[int, int]]:
    """(inode, mtime) of every file of every stage output in dvc.lock: a stage that runs, or a
    checkout, writes new files (stages rename temporary files into place), so both change."""
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    paths = [repo / out["path"] for stage in lock["stages"].values() for out in stage.get("outs", [])]
    files = [file for path in paths for file in ([path] if path.is_file() else sorted(path.rglob("*")))]
    return {str(file.relative_to(repo)): (file.stat().st_ino, file.stat().st_mtime_ns)
            for file in files if file.is_file()}


def assert_has_the_results_of(clone: Path, original: Path, env: dict[str, str]) -> None:
    """The clone is clean, `dvc repro` runs and checks out nothing there, and its report, dvc.lock
    and metrics are the original's."""
    assert dvc_json(clone, env, "status") == {}
    lock, outputs = (clone / "dvc.lock").read_bytes(), output_files(clone)
    run(["dvc", "repro"], clone, env)
    assert output_files(clone) == outputs, "`dvc repro` rewrote outputs in a clone that pulled everything"
    assert (clone / "dvc.lock").read_bytes() == lock == (original / "dvc.lock").read_bytes()
    assert dvc_json(clone, env, "status") == {}
    assert (clone / "reports/report.html").read_bytes() == (original / "reports/report.html").read_bytes()
    assert dvc_json(clone, env, "metrics", "diff", "HEAD") == {}
    assert dvc_json(clone, env, "metrics", "show") == dvc_json(original, env, "metrics", "show")


def without_aws(env: dict[str, str], tmp_path: Path, **extra: str) -> dict[str, str]:
    """`env` with no AWS credentials from anywhere (environment, ~/.aws, the EC2 metadata service)."""
    clean = {key: value for key, value in env.items() if not key.startswith("AWS_")}
    return {**clean, "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "no-aws-credentials"),
            "AWS_CONFIG_FILE": str(tmp_path / "no-aws-config"), "AWS_EC2_METADATA_DISABLED": "true", **extra}


def object_path(server: S3Server, prefix: str, md5: str) -> Path:
    """Where `rclone serve s3` keeps a DVC object: bucket = folder, key = path (DVC's files/md5/xx/yyyy)."""
    return server.root / server.bucket / prefix / "files" / "md5" / md5[:2] / md5[2:]


# --- DVC remotes: a local folder, a real S3-compatible server ---

def test_a_fresh_clone_gets_the_results_from_the_default_local_remote_without_recomputing(
        workspace: Path, mirror: Path, tmp_path: Path):
    home = tmp_path / "home"  # `~` here: .dvc/config's remote `local` is ~/.cache/dnnlab/dvc-remote
    env = repo_env(mirror, HOME=str(home))
    # The tests' copies push to a folder beside them (conftest's .dvc/config.local), never to `~`.
    run(["dvc", "push", "-q"], workspace, env)
    assert dvc_json(workspace, env, "status", "--cloud") == {} and not (home / ".cache" / "dnnlab").exists()

    # As a user's clones do: .dvc/config's own default, in `~`, shared by every clone on the machine.
    (workspace / ".dvc" / "config.local").unlink()
    publish(workspace, tmp_path / "origin.git", env)
    assert (home / ".cache" / "dnnlab" / "dvc-remote" / "files" / "md5").is_dir()
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(clone)], tmp_path, env)
    assert not (clone / "reports/report.html").exists()  # DVC-cached: not in git
    run(["dvc", "pull"], clone, env)

    assert_has_the_results_of(clone, workspace, env)


def test_a_fresh_clone_gets_the_results_from_an_s3_remote_with_its_own_credentials(
        workspace: Path, mirror: Path, s3_server: S3Server, tmp_path: Path):
    env = without_aws(repo_env(mirror), tmp_path)
    url = f"s3://{s3_server.bucket}/dnnlab"
    run(["dvc", "remote", "add", "-d", "s3store", url], workspace, env)
    run(["dvc", "remote", "modify", "s3store", "endpointurl", s3_server.endpoint], workspace, env)
    run(["dvc", "remote", "modify", "--local", "s3store", "access_key_id", s3_server.access_key], workspace, env)
    run(["dvc", "remote", "modify", "--local", "s3store", "secret_access_key", s3_server.secret_key], workspace, env)
    run(["git", "commit", "-qm", "a team S3 remote", "--", ".dvc/config"], workspace, env)
    publish(workspace, tmp_path / "origin.git", env)

    committed = run(["git", "show", "HEAD:.dvc/config"], workspace, env).stdout
    assert s3_server.endpoint in committed and s3_server.secret_key not in committed
    assert run(["git", "status", "--porcelain"], workspace, env).stdout == ""  # config.local is ignored
    report_md5 = yaml.safe_load((workspace / "dvc.lock").read_text())["stages"]["report"]["outs"][0]["md5"]
    assert object_path(s3_server, "dnnlab", report_md5).is_file()  # really in the server's bucket

    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(clone)], tmp_path, env)
    refused = run(["dvc", "pull"], clone, env, check=False)
    assert refused.returncode != 0 and not (clone / "reports/report.html").exists(), refused.stderr
    assert "credentials" in refused.stderr  # refused for want of credentials, not for another reason
    # AWS's environment variables are credentials too (for one command here: just the report).
    run(["dvc", "pull", "report"], clone, {**env, "AWS_ACCESS_KEY_ID": s3_server.access_key,
                                           "AWS_SECRET_ACCESS_KEY": s3_server.secret_key})
    assert (clone / "reports/report.html").is_file() and not (clone / "models/synthetic.keras").exists()
    # As a teammate would: their own credentials, in their clone's git-ignored config.local.
    run(["dvc", "remote", "modify", "--local", "s3store", "access_key_id", s3_server.access_key], clone, env)
    run(["dvc", "remote", "modify", "--local", "s3store", "secret_access_key", s3_server.secret_key], clone, env)
    run(["dvc", "pull"], clone, env)

    assert_has_the_results_of(clone, workspace, env)
    assert run(["git", "status", "--porcelain"], clone, env).stdout == ""


# --- experiments between clones ---

def experiment_metrics(exp_show: list[dict], name: str) -> dict:
    """The metrics files of experiment `name` in `dvc exp show --json` (baselines, then their experiments)."""
    for baseline in exp_show:
        for experiment in baseline.get("experiments") or []:
            for rev in experiment.get("revs") or []:
                if rev.get("name") == name:
                    return {path: found["data"] for path, found in rev["data"]["metrics"].items()}
    raise AssertionError(f"no experiment {name!r} in dvc exp show: {json.dumps(exp_show)[:2000]}")


def test_an_experiment_pushed_from_one_clone_shows_with_its_metrics_in_another(
        workspace: Path, mirror: Path, tmp_path: Path):
    env = repo_env(mirror)
    store = tmp_path / "dvc-remote"
    point_local_remote(workspace, store)
    publish(workspace, tmp_path / "origin.git", env)
    other = tmp_path / "other"
    run(["git", "clone", "-q", str(tmp_path / "origin.git"), str(other)], tmp_path, env)
    point_local_remote(other, store)

    run(["dvc", "exp", "run", "-q", "-n", EXPERIMENT, "-S", "synthetic.train.epochs=3"], workspace, env)
    made = experiment_metrics(dvc_json(workspace, env, "exp", "show"), EXPERIMENT)
    assert made["reports/live/synthetic/metrics.json"]["synthetic/epoch"] == 3
    run(["dvc", "exp", "push", "origin", EXPERIMENT], workspace, env)  # git refs, and the data to the DVC remote

    with pytest.raises(AssertionError, match="no experiment"):
        experiment_metrics(dvc_json(other, env, "exp", "show"), EXPERIMENT)
    run(["dvc", "exp", "pull", "origin", EXPERIMENT], other, env)
    assert experiment_metrics(dvc_json(other, env, "exp", "show"), EXPERIMENT) == made
    # Its data came too: applied, the experiment's model and report are there and up to date.
    run(["dvc", "exp", "apply", EXPERIMENT], other, env)
    assert dvc_json(other, env, "status") == {}
    assert json.loads((other / "reports/metrics/synthetic.json").read_text())["mean"]["train/epochs_run"] == 3
    assert (other / "models/synthetic.keras").is_file() and (other / "reports/report.html").is_file()


# --- a team Prefect server on PostgreSQL ---

def api_post(api: str, path: str, body: dict) -> list[dict]:
    request = urllib.request.Request(f"{api}/{path}", data=json.dumps(body).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def test_the_pipeline_flow_reports_to_a_prefect_server_that_keeps_its_runs_in_postgresql(
        workspace: Path, mirror: Path, postgresql: PostgresServer, tmp_path: Path):
    port = free_port()
    api = f"http://127.0.0.1:{port}/api"
    server_env = repo_env(mirror, PREFECT_HOME=str(tmp_path / "prefect-server"),
                          PREFECT_API_DATABASE_CONNECTION_URL=postgresql.url(),
                          PREFECT_SERVER_ANALYTICS_ENABLED="false")
    server = start_prefect_server(server_env, port, tmp_path / "prefect-server.log")
    try:
        set_params(workspace, {"synthetic.train.epochs": 3})  # its config, the synthetic training and what follows rerun
        result = run([sys.executable, "-m", "flows.pipeline", "--json"], workspace,
                     repo_env(mirror, PREFECT_API_URL=api, PREFECT_HOME=str(tmp_path / "prefect-client")))
        summary = json.loads(result.stdout.strip().splitlines()[-1])
        ran = {stage["name"] for stage in summary["stages"] if stage["status"] == "ran"}
        assert ran == {"configure@synthetic", "train@synthetic", "evaluate@synthetic", "figures@synthetic", "report"}

        [pipeline] = api_post(api, "flow_runs/filter", {"flows": {"name": {"any_": ["pipeline"]}}})
        assert pipeline["state_type"] == "COMPLETED"
        children = api_post(api, "flow_runs/filter", {"flow_runs": {"parent_flow_run_id": {"any_": [pipeline["id"]]}}})
        assert {(child["name"], child["state_type"]) for child in children} == {(name, "COMPLETED") for name in ran}

        # The server's database is the PostgreSQL one: the same runs, parent and children, are rows there.
        rows = postgresql.psql("SELECT child.name, child.state_type FROM flow_run child "
                               "JOIN task_run parent_task ON child.parent_task_run_id = parent_task.id "
                               f"WHERE parent_task.flow_run_id = '{pipeline['id']}'")
        assert {tuple(row.split("|")) for row in rows.splitlines()} == {(name, "COMPLETED") for name in ran}
        assert postgresql.psql(f"SELECT name FROM flow_run WHERE id = '{pipeline['id']}'").strip() == pipeline["name"]
    finally:
        stop_process_group(server, grace_s=30)
