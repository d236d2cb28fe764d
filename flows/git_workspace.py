"""Runs that work from git, and a record that never lies.

A run from git takes its own fresh clone of the git remote (`fresh_clone`), pulls the data the
clone's `dvc.lock` names from the DVC remote, and leaves nobody's working tree touched. Recording
(`record_results`) commits `dvc.lock` and the git-tracked metrics and plot files only when every
pipeline input is committed, pushes the data first and then the commit, and pushes nothing if
the branch moved meanwhile with commits that touch the pipeline (a commit that only touches,
say, the README is rebased onto). So every pushed commit's `dvc.lock` is what its own params and
code give, and every file it names can be pulled.

Where the remote and its credentials come from is Prefect's business (deployment parameters,
variables, a Secret block): this module takes them as arguments.
"""

from __future__ import annotations

import contextlib
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping, Optional

from flows.dvc_adapter import (PULL_ARGS, PUSH_ARGS, DvcError, DvcProject, error_line, push_run_cache, stream_dvc,
                               within)

PUSH_ATTEMPTS = 3  # a branch that moves again between our fetch and our push: fetch, check, rebase, retry


class RecordRefused(Exception):
    """Nothing was recorded, and why: one line."""


class RemoteError(Exception):
    """The git or DVC remote could not be used: one line."""


@dataclass(frozen=True)
class GitSource:
    """A branch of a git remote, and the environment variables git and DVC need to reach the remotes."""

    url: str
    branch: str = "main"
    env: Mapping[str, str] = field(default_factory=dict)


def git_output(root: Path, *args: str, env: Optional[Mapping[str, str]] = None,
               error: Callable[[str], Exception] = lambda text: RuntimeError(f"record: {text}")) -> str:
    """`git ARGS`' output; a failure raises `error("git … failed: <git's last line>")`."""
    result = subprocess.run(["git", *args], cwd=root, capture_output=True, text=True,
                            env=None if env is None else dict(env))
    if result.returncode != 0:
        last = ((result.stderr or result.stdout).strip().splitlines() or ["(no output)"])[-1]
        raise error(f"git {args[0]} failed: {last}")
    return result.stdout


def credentials_env(block: Optional[str]) -> dict[str, str]:
    """The environment variables a Prefect Secret block holds (a JSON object of names to strings, e.g.
    AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY for an S3 remote); none without a block name."""
    if not block:
        return {}
    from prefect.blocks.system import Secret

    try:
        value = Secret.load(block).get()
    except ValueError:
        raise RemoteError(f"no Prefect Secret block {block!r}: create it with the credentials as a JSON object "
                          "of environment variables, e.g. Secret(value={\"AWS_ACCESS_KEY_ID\": …}).save("
                          f"{block!r})") from None
    if not (isinstance(value, dict) and all(isinstance(k, str) and isinstance(v, str) for k, v in value.items())):
        raise RemoteError(f"Prefect Secret block {block!r} must hold a JSON object of environment variable "
                          "names to strings, e.g. {\"AWS_ACCESS_KEY_ID\": \"…\", \"AWS_SECRET_ACCESS_KEY\": \"…\"}")
    return value


@contextlib.contextmanager
def fresh_clone(source: GitSource, env: Mapping[str, str], log: Any, commit: Optional[str] = None,
                pull_data: bool = True) -> Iterator[Path]:
    """A fresh clone of `source.branch` (or of `commit` on it) in a temporary folder, with the data its
    dvc.lock names pulled from its DVC remote (unless `pull_data` is false: a command that pulls what
    it needs itself, `dvc exp run --pull`); removed afterwards."""
    env = {**env, **source.env}
    with tempfile.TemporaryDirectory(prefix="dnnlab-run-") as folder:
        clone = Path(folder) / "repo"
        remote_error = lambda text: RemoteError(f"{source.url}: {text}")  # noqa: E731
        git_output(Path(folder), "clone", "-q", "--branch", source.branch, "--single-branch", source.url,
                   str(clone), env=env, error=remote_error)
        if commit:
            git_output(clone, "checkout", "-q", "--detach", commit, env=env, error=remote_error)
        log.info(f"cloned {source.url} ({commit or source.branch}) at "
                 f"{git_output(clone, 'rev-parse', 'HEAD', env=env).strip()[:10]} into {clone}")
        if pull_data and has_dvc_remote(clone):
            returncode, _, stderr = stream_dvc(clone, PULL_ARGS, env, log)
            if returncode != 0:
                raise RemoteError("`dvc pull` from the DVC remote failed: "
                                  f"{error_line(stderr, '(no output)', first=True)}")
        yield clone


def has_dvc_remote(root: Path) -> bool:
    project = DvcProject(root)
    try:
        return project.has_remote()
    finally:
        project.close()


# --- recording ---

def pipeline_paths(project: DvcProject) -> list[str]:
    """Every git-tracked path whose change changes what the pipeline gives or records: the stages'
    deps (files and folders), dvc.yaml, dvc.lock and the git-tracked outputs, DVC's config."""
    paths = ["dvc.yaml", ".dvcignore", ".dvc/config", *project.git_tracked_outputs(), *project.git_tracked_inputs()]
    return sorted(set(paths))


def touches(changed: list[str], paths: list[str]) -> list[str]:
    """The changed files that are one of `paths` or lie in one of them (a folder dep)."""
    return [name for name in changed if within(name, paths)]


def uncommitted_inputs(project: DvcProject, env: Optional[Mapping[str, str]] = None) -> list[str]:
    """Pipeline inputs that differ from the last commit (modified, staged, new or deleted). A stage's
    output is a result even inside a folder another stage reads (`reports/metrics/heart.json` in the
    report's `reports/metrics`): results that changed are what a record commits, not a refusal."""
    inputs = [path for path in pipeline_paths(project) if path not in project.git_tracked_outputs()]
    status = git_output(project.root, "status", "--porcelain", "--untracked-files=all", "--", *inputs, env=env)
    outputs = project.output_paths()
    return [name for name in (line[3:] for line in status.splitlines()) if not within(name, outputs)]


def require_committed_inputs(project: DvcProject, env: Optional[Mapping[str, str]] = None) -> None:
    """Refuse to record results of inputs no commit holds: no commit could reproduce them."""
    changed = uncommitted_inputs(project, env)
    if changed:
        shown = ", ".join(changed[:4]) + (f" and {len(changed) - 4} more" if len(changed) > 4 else "")
        raise RecordRefused(f"record: uncommitted changes to pipeline inputs ({shown}): commit them, "
                            "or run without --record; nothing recorded")


def changed_results(project: DvcProject, env: Optional[Mapping[str, str]] = None) -> list[str]:
    """The git-tracked results (dvc.lock, metrics, plot data) that differ from the last commit."""
    present = [path for path in project.git_tracked_outputs() if (project.root / path).exists()]
    if not git_output(project.root, "status", "--porcelain", "--", *present, env=env).strip():
        return []
    return present


def record_results(project: DvcProject, message: str, log: Any, env: Mapping[str, str],
                   push_branch: Optional[str] = None) -> Optional[str]:
    """Commit the results if they changed (data pushed to the DVC remote first); with `push_branch`,
    push the commit there too. The new commit, or None when nothing changed."""
    root = project.root
    require_committed_inputs(project, env)
    results = changed_results(project, env)
    if not results:
        log.info("record: results unchanged, no commit")
        return None
    if push_branch:
        if not project.has_remote():
            raise RecordRefused("record: the clone has no DVC remote to push the data to (`dvc remote add -d …`, "
                                "committed in .dvc/config); nothing recorded")
        refuse_pipeline_moves(project, push_branch, git_output(root, "rev-parse", "HEAD", env=env).strip(), env)
    if project.has_remote():  # the data first: no commit may name data nobody can pull
        returncode, _, stderr = stream_dvc(root, PUSH_ARGS, dict(env), log)
        if returncode != 0:
            raise RecordRefused(f"record: `dvc push` to the DVC remote {project.default_remote()} failed, nothing "
                                f"recorded: {error_line(stderr, '(no output)', first=True)}")
        try:  # the run cache too: a teammate who repeats these params gets the outputs back, no training
            log.info(f"record: {push_run_cache(root, env=env)} run-cache object(s) pushed")
        except DvcError as error:
            raise RecordRefused(f"record: {error} (DVC remote {project.default_remote()}), nothing recorded") from None
    git_output(root, "add", "--", *results, env=env)
    git_output(root, "commit", "-q", "-m", message, "--", *results, env=env)
    if push_branch:
        push_commit(project, push_branch, env, log)
    sha = git_output(root, "rev-parse", "HEAD", env=env).strip()
    log.info(f"record: committed {sha[:10]} {message.splitlines()[0]!r}" + (f", pushed to {push_branch}"
                                                                              if push_branch else ""))
    return sha


def fetch_branch(root: Path, branch: str, env: Mapping[str, str]) -> str:
    git_output(root, "fetch", "-q", "origin", branch, env=env)
    return git_output(root, "rev-parse", "FETCH_HEAD", env=env).strip()


def refuse_pipeline_moves(project: DvcProject, branch: str, base: str, env: Mapping[str, str]) -> str:
    """The remote branch's head; refused if it moved past `base` with commits that touch the pipeline."""
    remote_head = fetch_branch(project.root, branch, env)
    if remote_head == base:
        return remote_head
    if git_output(project.root, "merge-base", base, remote_head, env=env).strip() != base:
        raise RecordRefused(f"record: {branch} was rewritten during the run (no longer contains {base[:10]}); "
                            "nothing recorded")
    changed = git_output(project.root, "diff", "--name-only", base, remote_head, env=env).split()
    touched = touches(changed, pipeline_paths(project))
    if touched:
        count = git_output(project.root, "rev-list", "--count", f"{base}..{remote_head}", env=env).strip()
        raise RecordRefused(f"record: {branch} moved during the run ({count} commit(s) changing "
                            f"{', '.join(touched[:4])}): these results are of the old inputs; nothing recorded, "
                            "the next run starts from the new ones")
    return remote_head


def push_commit(project: DvcProject, branch: str, env: Mapping[str, str], log: Any) -> None:
    """Push HEAD (one new commit) to `branch`, rebased onto commits that moved it meanwhile if they
    leave the pipeline alone."""
    root = project.root
    refusal = ""
    for _ in range(PUSH_ATTEMPTS):
        base = git_output(root, "rev-parse", "HEAD~1", env=env).strip()
        remote_head = refuse_pipeline_moves(project, branch, base, env)
        if remote_head != base:
            git_output(root, "rebase", "-q", remote_head, env=env)
            log.info(f"record: {branch} moved during the run without touching the pipeline; rebased onto "
                     f"{remote_head[:10]}")
        elif refusal:  # refused, and not because the branch moved
            url = git_output(root, "remote", "get-url", "origin", env=env).strip()
            raise RemoteError(f"record: git push to {branch} at {url} was refused: {refusal}; nothing recorded "
                              "(the data did reach the DVC remote)")
        pushed = subprocess.run(["git", "push", "-q", "origin", f"HEAD:refs/heads/{branch}"], cwd=root,
                                capture_output=True, text=True, env=dict(env))
        if pushed.returncode == 0:
            return
        refusal = push_refusal(pushed.stderr or pushed.stdout)
    raise RecordRefused(f"record: {branch} kept moving; gave up after {PUSH_ATTEMPTS} tries, nothing recorded")


def push_refusal(output: str) -> str:
    """Why git refused a push, in one line: what the remote said (a pre-receive hook's own message,
    git's `remote: ` lines) and the reason git gives for the ref (`pre-receive hook declined`), not
    the closing `error: failed to push some refs`."""
    lines = [line.strip() for line in output.splitlines()]
    remote = [line.removeprefix("remote:").strip() for line in lines if line.startswith("remote:")]
    reasons = [line.rsplit("(", 1)[-1].rstrip(")") for line in lines
               if line.startswith("! [") and line.endswith(")")]
    said = [text for text in remote + reasons if text]
    return "; ".join(said) if said else (lines[-1] if lines else "(no output)")

