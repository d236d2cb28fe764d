"""The one door to DVC: every question flows/ asks DVC and every DVC command it runs goes through here.

(Not named flows/dvc.py: Prefect loads a deployment's entrypoint `flows/pipeline.py` with flows/ put
first on sys.path for good, where a flows/dvc.py would shadow the dvc package itself.)

Public interfaces where DVC has them: `dvc.api.exp_save`, the `--json` outputs of `dvc metrics diff`
and `dvc exp show`, the `dvc` command line for what runs stages (`repro`, `exp run --run-all`, `push`).
Where DVC has none, its internals, pinned by requirements.lock (dvc==3.67.1) and checked by
tests/test_dvc_adapter.py (names, signatures, behaviour on a tiny repo):
- the plan and staleness `dvc repro` uses: `dvc.repo.reproduce.collect_stages`, `get_active_graph`,
  `plan_repro`, `Stage.changed()`; the stages' outputs and dependencies (`repo.index.stages`);
- `-S` overrides as `dvc exp run` applies them: `dvc.utils.hydra.apply_overrides`;
- the run cache's entries and the objects they restore: `repo.stage_cache.push`, `get_used_objs`,
  `repo.cloud.push`; a stage made from a lock entry, as the run cache restores one
  (`repo.stage_cache._create_stage`, `dvc.stage.serialize.to_single_stage_lockfile`);
- the experiment queue and refs: `repo.experiments.run(queue=True)`, `celery_queue.iter_queued()`
  and `iter_active()`, `kill`, `remove` (`dvc queue kill/remove`), its workers' process records
  (`dvc_task`'s `ProcessInfo` files in `celery_queue.wdir`), `exp_refs_by_rev`, `exp_refs_by_baseline`
  (also at a git remote, as `dvc exp list REMOTE` reads it), `repo.experiments.remove`.
Nothing here reads DVC's human-readable output; a failing `dvc` command is reported by the last line
DVC logs with its `ERROR: ` prefix (DVC's stable log format), an in-process failure by its exception.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Iterator, Mapping, Optional, Sequence

from flows.processes import stop_process_tree_of, stream_command


class DvcError(Exception):
    """A DVC question or command failed: one line that says why."""


def _first_line(error: BaseException) -> str:
    return (str(error).strip().splitlines() or [type(error).__name__])[0]


# --- the `dvc` command line ---

# `python -m dvc`, with Ctrl-C counted once. DVC handles a KeyboardInterrupt in its command: it stops its
# stage, releases its locks and logs one line. An interrupted flow also signals the commands it started (they may
# not share its terminal), so a second SIGINT often follows the terminal's; it would land in DVC's clean-up or its
# usage report, outside DVC's handling, and end in a traceback. So the first SIGINT interrupts and the rest are
# ignored; one that arrives outside DVC's command (importing, or after its error line) ends it with 130.
_DVC_INTERRUPTED_ONCE = """\
import signal, sys

def once(signum, frame):
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    raise KeyboardInterrupt

signal.signal(signal.SIGINT, once)
try:
    from dvc.cli import main
    sys.argv[0] = "dvc"  # DVC writes its command line into its locks, and names it in "is busy" errors
    code = main(sys.argv[1:])
except KeyboardInterrupt:
    code = 130
sys.exit(code)
"""


def dvc_command(*args: str) -> list[str]:
    """`dvc ARGS` with this interpreter's DVC, however the flow was started, interrupted once by Ctrl-C."""
    return [sys.executable, "-c", _DVC_INTERRUPTED_ONCE, *args]


def error_line(lines: Sequence[str], fallback: str, first: bool = False) -> str:
    """Why a `dvc` command failed: the last line DVC logged with its `ERROR: ` prefix (not its closing
    "Having any troubles?" footer), else `fallback`. `first`: the first such line instead, for
    `dvc pull`/`push`, whose last line only counts the files that failed and whose first names why
    (`failed to connect to s3 (…) - Unable to locate credentials`)."""
    errors = [line.removeprefix("ERROR: ") for line in lines if line.startswith("ERROR: ")]
    return (errors or [fallback])[0 if first else -1]


def run_dvc(root: Path, args: Sequence[str], env: dict[str, str]) -> str:
    """`dvc ARGS`' stdout; a failure raises DvcError with DVC's error line."""
    result = subprocess.run(dvc_command(*args), cwd=root, env=env, capture_output=True, text=True)
    if result.returncode != 0:
        reason = error_line((result.stderr + result.stdout).splitlines(), "no output")
        raise DvcError(f"`dvc {' '.join(args)}` failed: {reason}")
    return result.stdout


def stream_dvc(root: Path, args: Sequence[str], env: dict[str, str], log: Any,
               label: Optional[str] = None) -> tuple[int, list[str], list[str]]:
    """`dvc ARGS` with its lines sent to `log` as they come; stopped with what it started if interrupted
    (`label`, default `dvc ARGS`, names it then)."""
    return stream_command(dvc_command(*args), root, env, log, label or f"dvc {' '.join(args)}")


def repro_args(stage: str, force: bool) -> list[str]:
    """One stage, as `dvc repro` runs it (lock, cache, run cache), not its upstream stages.

    Several may run at once: DVC holds its repository lock only to check, hash and record a stage
    and releases it while the stage's command runs (dvc/stage/run.py, `unlocked_repo`), and it
    keeps per-path read/write locks on the stage's deps and outs (`rwlock`) for the whole run.
    `--wait-for-lock` makes each process wait its turn for those short locked phases instead of
    failing after 3 s."""
    return ["--wait-for-lock", "repro", "--single-item", *(["--force"] if force else []), stage]


def run_queue_args(jobs: int) -> list[str]:
    return ["exp", "run", "--run-all", "-j", str(jobs)]


PUSH_ARGS = ["push"]  # not -q: it hides DVC's own ERROR line, the reason a push failed
PULL_ARGS = ["pull", "--allow-missing"]  # what the DVC remote lacks is rebuilt by its stage, not an error


def experiment_run_args(name: str, params: Sequence[str], targets: Sequence[str]) -> list[str]:
    """`dvc exp run -n NAME --pull --allow-missing -S … TARGETS` in a fresh clone: the data a stage that
    runs needs is pulled from the DVC remote, and a stage whose data is missing but whose inputs did not
    change is skipped (a variation of the synthetic task never downloads MNIST)."""
    return ["exp", "run", "-n", name, "--pull", "--allow-missing",
            *(arg for param in params for arg in ("-S", param)), *targets]


def experiment_push_args(git_remote: str, name: str) -> list[str]:
    """`dvc exp push --no-cache REMOTE NAME`: the experiment's ref only, once `dvc push` has sent its data
    (`exp push` with the cache sends the ref first and the data after it)."""
    return ["exp", "push", "--no-cache", git_remote, name]


def experiment_pull_args(git_remote: str, names: Sequence[str]) -> list[str]:
    """`dvc exp pull -f REMOTE NAME…`: the experiments' refs and data; `-f` replaces a local experiment of the
    same name (a local study's, for one)."""
    return ["exp", "pull", "-f", git_remote, *names]


def metrics_diff(root: Path, env: dict[str, str]) -> dict:
    """`dvc metrics diff HEAD --all --json`: the workspace's metrics against the last commit ({} before one).
    For a caller with no repository open (flows.first_run after `make pipeline`); a flow, which holds a
    DvcProject, asks its `metrics_diff` instead (the same JSON, tested, without a second `dvc` process)."""
    head = subprocess.run(["git", "rev-parse", "--verify", "-q", "HEAD^{commit}"], cwd=root, capture_output=True)
    if head.returncode != 0:
        return {}
    return json.loads(run_dvc(root, ["metrics", "diff", "HEAD", "--all", "--json"], env) or "{}")


def show_experiments(root: Path, env: dict[str, str]) -> list[dict]:
    """`dvc exp show --json`: every commit's experiments with their params and metrics."""
    return json.loads(run_dvc(root, ["exp", "show", "--json"], env))


# --- the repository, in-process ---

def find_root(path: Path) -> Path:
    """The DVC repository holding path (so a flow may start in a subfolder, as `dvc repro` may)."""
    from dvc.repo import Repo

    try:
        return Path(Repo.find_root(str(path)))
    except Exception:  # not in a DVC repository: DvcProject says so
        return path


class DvcProject:
    """One in-process `dvc.repo.Repo`: the plan (as `dvc repro [targets]` orders it) and per-stage staleness."""

    def __init__(self, root: Path, targets: Optional[list[str]] = None):
        import networkx as nx
        from dvc.repo import Repo
        from dvc.repo.reproduce import collect_stages, get_active_graph, plan_repro

        self.root = root
        try:
            self.repo = Repo(str(root), _wait_for_lock=True)  # stages of this flow hold it for moments
        except Exception as error:  # not a DVC repository, unreadable config
            raise DvcError(f"dvc: {root}: {error}") from None
        try:
            selected = collect_stages(self.repo, targets) if targets else None
            graph = get_active_graph(self.repo.index.graph)
        except Exception as error:  # a bad target (StageNotFound & co), a broken dvc.yaml
            self.repo.close()
            raise DvcError(f"dvc: {error}") from None
        self.stages = {stage.addressing: stage for stage in plan_repro(graph, selected)}
        # DVC's graph points from a stage to the stages it depends on.
        self._upstream = {name: {other.addressing for other in nx.descendants(graph, stage)} & set(self.stages)
                          for name, stage in self.stages.items()}

    @property
    def order(self) -> list[str]:
        return list(self.stages)

    def upstream(self, name: str) -> set[str]:
        """The planned stages `name` needs first (transitively): it may start once they are done."""
        return self._upstream[name]

    def changed(self, name: str) -> bool:
        """What `dvc repro` asks before running a stage; up-to-date stages cost a few milliseconds."""
        with self.repo.lock:  # released before the stage's own `dvc repro` needs it
            return bool(self.stages[name].changed())

    def _relative(self, path: str) -> str:
        return os.path.relpath(path, self.root)

    def git_tracked_outputs(self) -> list[str]:
        """dvc.lock and every `cache: false` output (metrics, plot data): what `record` commits."""
        paths = ["dvc.lock"]
        for stage in self.repo.index.stages:
            paths += [self._relative(out.fs_path) for out in stage.outs if not out.use_cache]
        return sorted(set(paths), key=paths.index)

    def output_paths(self) -> list[str]:
        """Every stage output, cached by DVC or tracked by git."""
        return sorted({self._relative(out.fs_path) for stage in self.repo.index.stages for out in stage.outs})

    def git_tracked_inputs(self) -> list[str]:
        """The files and folders the stages read that git tracks (code, params files): their results are
        what we commit. A folder dep may also hold outputs (the report reads `reports/metrics`)."""
        paths = [self._relative(dep.fs_path) for stage in self.repo.index.stages for dep in stage.deps]
        paths = [path for path in paths if (self.root / path).exists()]
        outputs = self.output_paths()
        return sorted({path for path in paths if not path.startswith("..") and not within(path, outputs)})

    def default_remote(self) -> Optional[str]:
        """The default DVC remote as `NAME (URL)`, for messages; None without one."""
        name = self.repo.config.get("core", {}).get("remote")
        url = self.repo.config.get("remote", {}).get(name, {}).get("url") if name else None
        return f"{name} ({url})" if name else None

    def metrics_diff(self) -> dict:
        """`dvc metrics diff HEAD --all --json` in this process (a `dvc` process costs 0.6 s more): the
        workspace's metrics against the last commit, {} before one."""
        if self.repo.scm.no_commits:
            return {}
        return self.repo.metrics.diff(a_rev="HEAD", all=True).get("diff", {})

    def report_path(self) -> Optional[str]:
        stage = next((s for s in self.repo.index.stages if s.addressing == "report"), None)
        return self._relative(stage.outs[0].fs_path) if stage and stage.outs else None

    def has_remote(self) -> bool:
        return bool(self.repo.config.get("remote"))

    def close(self) -> None:
        self.repo.close()


def within(path: str, paths: Sequence[str]) -> bool:
    """Whether `path` is one of `paths` or lies in one of them (a folder)."""
    return any(path == other or path.startswith(other.rstrip("/") + "/") for other in paths)


@contextlib.contextmanager
def environment(env: Optional[Mapping[str, str]]) -> Iterator[None]:
    """`env`'s variables in this process's environment for a block, then as they were: in-process DVC reads a
    remote's credentials (AWS_*) from os.environ, not from the env a flow hands its `dvc` subprocesses. Only
    the variables that differ are touched (other threads of the flow read the environment too)."""
    changed = {key: value for key, value in (env or {}).items() if os.environ.get(key) != value}
    saved = {key: os.environ.get(key) for key in changed}
    os.environ.update(changed)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def push_run_cache(root: Path, remote: Optional[str] = None, env: Optional[Mapping[str, str]] = None) -> int:
    """`dvc push --run-cache` and the outputs its entries restore; how many objects were sent.

    DVC 3.67's push sends the run cache's entries (.dvc/cache/runs) but not the objects they name
    (dvc/repo/push.py counts `used_run_cache` and drops it): a `cache: false` output (metrics, plot
    data), copied into the local cache by the run cache, is then on no remote, and a clone retrains
    instead of restoring. `StageCache.get_used_objs` lists those objects (its stages treat every
    output as cached); they go up with the rest. A clone restores with `dvc pull --run-cache` and
    `dvc repro --pull` (or `dvc exp run --pull`)."""
    from dvc.repo import Repo

    from dvc.exceptions import DvcException

    # The entries' stages are made from paths relative to the working directory, as under `dvc push`.
    with environment(env), contextlib.chdir(root), Repo(str(root)) as repo:
        try:
            entries = repo.stage_cache.push(remote)
            sent = 0
            for odb, objects in repo.stage_cache.get_used_objs(entries, remote=remote).items():
                result = repo.cloud.push(objects, remote=remote, odb=odb)
                if result.failed:
                    raise DvcError(f"dvc push --run-cache: {len(result.failed)} object(s) could not be sent")
                sent += len(result.transferred)
        except (DvcException, OSError) as error:  # an unreachable remote, missing credentials
            raise DvcError(f"dvc push --run-cache: {_first_line(error)}") from None
        return sent


def restore_recorded_outputs(root: Path, stage_names: Optional[Sequence[str]] = None) -> list[str]:
    """Put back the outputs dvc.lock records for these stages (their last good run) from the local cache, as
    DVC's run cache restores a stage (dvc/stage/cache.py: `StageCache.restore`: a stage made from the lock
    entry, whose outputs all count as cached, git-tracked metrics and plots included). DVC removes a
    stage's outputs before running it, so a stage stopped midway has none; one stopped after its command
    wrote them but before DVC recorded them has new ones that dvc.lock does not describe. Without names:
    every stage with an output missing or unlike its record (an interrupted or killed run's). The stages
    restored."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.stage.serialize import to_single_stage_lockfile

    restored = []
    with contextlib.chdir(root), Repo(str(root)) as repo, repo.lock:
        stages = {stage.addressing: stage for stage in repo.index.stages}
        if stage_names is None:
            stage_names = [name for name, stage in stages.items()
                           if any(not out.exists or (out.hash_info and out.changed_checksum()) for out in stage.outs)]
        for name in stage_names:
            stage = stages.get(name)
            if stage is None or not stage.outs or not all(out.hash_info for out in stage.outs):
                continue  # not a stage, or never recorded: nothing to put back
            try:
                recorded = repo.stage_cache._create_stage(to_single_stage_lockfile(stage), wdir=stage.wdir)
                if recorded.outs_cached():
                    recorded.checkout(force=True)  # over an unrecorded output, without DVC's "remove it?" prompt
                    restored.append(name)
            except DvcException:  # an object gone from the cache (`dvc gc`): the rerun rebuilds it
                continue
    return restored


def apply_param_overrides(params_file: Path, overrides: list[str]) -> None:
    """Edit a params file as `dvc exp run -S key=value` does (Hydra's override grammar)."""
    from dvc.utils.hydra import apply_overrides

    apply_overrides(params_file, overrides)


def override_text(key: str, value: Any) -> str:
    """`key=value` in the grammar of `dvc exp run -S` (strings pass through as typed on a command line)."""
    return f"{key}={value if isinstance(value, str) else json.dumps(value)}"


def parse_param_overrides(overrides: list[str]) -> dict[str, Any]:
    """`key=value` texts, typed as `dvc exp run -S` reads them (Hydra's grammar, which DVC uses):
    `model.l2=1e-4` is the number 0.0001, `synthetic.data.domain=[-3,3]` a list."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(list(overrides))
    except Exception as error:  # Hydra's OverrideParseException, with its grammar's explanation
        raise ValueError(f"cannot read {' '.join(overrides)}: {str(error).splitlines()[0]}") from None
    return {override.key_or_group: override.value() for override in parsed}


# --- experiments ---

def save_experiment(root: Path, name: str) -> str:
    """`dvc.api.exp_save`: the workspace as an experiment named `name` (DVC picks one if it is taken); its name."""
    from dvc.api import exp_save
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.experiments.exceptions import ExperimentExistsError
    from dvc.repo.experiments.utils import exp_refs_by_rev

    with contextlib.chdir(root):  # dvc.api.exp_save works on the repository of the working directory
        try:
            try:
                rev = exp_save(name=name)
            except ExperimentExistsError:
                rev = exp_save()
        except DvcException as error:
            raise DvcError(f"dvc exp save failed: {_first_line(error)}") from None
    with Repo(str(root)) as repo:
        refs = list(exp_refs_by_rev(repo.scm, rev))
    return refs[0].name if refs else rev


def queue_experiment(root: Path, targets: Sequence[str], params: list[str], name: str) -> None:
    """`dvc exp run --queue -n NAME -S PARAM... TARGETS`, in-process (half a second, not a `dvc` process's 2-3 s)."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    try:
        with Repo(str(root)) as repo:
            repo.experiments.run(list(targets), params=params, queue=True, name=name)
    except DvcException as error:
        raise DvcError(f"cannot queue {name}: {_first_line(error)}") from None


def busy_queue_entries(root: Path) -> list[str]:
    """The experiments queued or running in DVC's queue: their names, else their task ids."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        queue = repo.experiments.celery_queue
        entries = [*queue.iter_active(), *queue.iter_queued()]
    return [entry.name or entry.stash_rev[:7] for entry in entries]


def remote_experiments(root: Path, git_remote: str, baseline: str) -> list[str]:
    """The names of commit `baseline`'s experiments at a git remote (URL or remote name), as `dvc exp list
    REMOTE --rev BASELINE` lists them (that command has no `--json`; this is its own function)."""
    from dvc.repo import Repo
    from dvc.repo.experiments.utils import exp_refs_by_baseline

    try:
        with Repo(str(root)) as repo:
            refs = exp_refs_by_baseline(repo.scm, {baseline}, git_remote).get(baseline, [])
    except Exception as error:  # an unreachable remote: scmrepo's SCMError, dulwich's, an OSError
        raise DvcError(f"cannot list the experiments at {git_remote}: {_first_line(error)}") from None
    return sorted(ref.name for ref in refs)


def remove_experiments(root: Path, baseline: str, names: Sequence[str]) -> list[str]:
    """Remove the experiments of commit `baseline` with these names (`dvc exp remove`); the names removed."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo
    from dvc.repo.experiments.utils import exp_refs_by_baseline

    try:
        with Repo(str(root)) as repo:
            refs = [ref for ref in exp_refs_by_baseline(repo.scm, {baseline}).get(baseline, []) if ref.name in names]
            if refs:
                repo.experiments.remove(exp_names=[str(ref) for ref in refs])
    except DvcException as error:
        raise DvcError(f"cannot remove earlier experiments: {_first_line(error)}") from None
    return [ref.name for ref in refs]


# --- a quiet `dvc pull` for a first run ---

class _ErrorLines(logging.Handler):
    """Error records as the one line DVC would print: `failed to connect to s3 (…) - Unable to locate credentials`."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.lines: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        cause = record.exc_info[1] if record.exc_info else None
        self.lines.append(record.getMessage() + (f" - {_first_line(cause)}" if cause else ""))


def cached_outputs_in_workspace(repo: Any) -> dict[str, bool]:
    """Every cached stage output (data, models) -> whether the workspace holds it as dvc.lock records it."""
    return {str(out): not out.status() for stage in repo.index.stages for out in stage.outs if out.use_cache}


def pull_what_the_remote_has(root: Path) -> tuple[int, int, str]:
    """`dvc pull --allow-missing`, in-process and quiet: (outputs it brought, outputs still missing, the
    default remote's name). What the remote lacks is left to `dvc repro`; DVC's list of the missing
    files' md5s (a warning of dvc_data/index/fetch.py: _log_missing) is not shown, the count is what we say."""
    from dvc.exceptions import DvcException
    from dvc.repo import Repo

    fetch_log = logging.getLogger("dvc_data.index.fetch")  # also why a remote failed: kept for our one line
    level, propagate, reasons = fetch_log.level, fetch_log.propagate, _ErrorLines()
    fetch_log.setLevel(logging.ERROR)
    fetch_log.propagate = False
    fetch_log.addHandler(reasons)
    try:
        with Repo(str(root)) as repo:
            remote = repo.config["core"].get("remote", "")
            before = cached_outputs_in_workspace(repo)
            repo.pull(allow_missing=True)
            after = cached_outputs_in_workspace(repo)
    except DvcException as error:  # an unreachable remote, missing credentials: the first reason DVC logged
        raise DvcError((reasons.lines or [_first_line(error)])[0]) from None
    finally:
        fetch_log.removeHandler(reasons)
        fetch_log.setLevel(level)
        fetch_log.propagate = propagate
    pulled = sum(after[out] and not before.get(out) for out in after)
    return pulled, sum(not present for present in after.values()), remote


# --- the local queue, as a study follows it ---

def running_queue_entries(root: Path) -> list[str]:
    """The names of the experiments DVC's queue is running now (started, not yet done)."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        return [entry.name or entry.stash_rev[:7] for entry in repo.experiments.celery_queue.iter_active()]


# DVC's local queue is Celery on kombu's filesystem broker, which has no host by design: kombu's
# `No hostname was supplied. Reverting to default 'localhost'` warning (kombu/connection.py) in every
# process that opens the queue says nothing to act on.
logging.getLogger("kombu.connection").setLevel(logging.ERROR)


def stop_queue_entries(root: Path, names: Sequence[str], timeout_s: float = 10.0) -> list[str]:
    """Stop the experiments of these names in DVC's queue, as `dvc queue kill NAME…` does (Ctrl-C to each
    run's process group: its stage stops, DVC cleans up), remove those still waiting (`dvc queue remove`),
    and wait for the killed runs to end and, once nothing else is queued, for the idle workers to end.
    The queue's workers and runs live in sessions of their own (DVC daemonizes them), so nothing else
    stops them. The names stopped or removed."""
    from dvc.repo import Repo

    wanted, stopped = set(names), []
    deadline = time.monotonic() + timeout_s
    with Repo(str(root)) as repo:
        queue = repo.experiments.celery_queue
        while time.monotonic() < deadline:
            waiting = [entry.name for entry in queue.iter_queued() if entry.name in wanted]
            if waiting:
                queue.remove(waiting)
            running = [entry.name for entry in queue.iter_active() if entry.name in wanted]
            to_kill = [name for name in running if name not in stopped]
            if to_kill:  # a worker may have taken a waiting one meanwhile: the next round sees it
                with contextlib.suppress(Exception):  # one that ended meanwhile
                    queue.kill(to_kill)
            stopped += [name for name in waiting + to_kill if name not in stopped]
            if not waiting and not running:
                break
            time.sleep(0.5)
        if not any(queue.iter_active()) and not any(queue.iter_queued()):
            # DVC's workers end after 10 s without work. Not `dvc queue stop`: after it, the next study's new
            # worker stopped after one experiment (its shutdown broadcast seems to linger). A worker still ending
            # counts as running: `dvc exp run --run-all` would start none, and nothing would run what is
            # queued next; so wait for the workers' processes (dvc_task's records of them).
            while _queue_workers_alive(queue) and time.monotonic() < deadline + 2 * timeout_s:
                time.sleep(0.5)
    return stopped


def _queue_workers_alive(queue: Any) -> bool:
    return bool(_queue_workers(queue))


def _queue_workers(queue: Any) -> list:
    """The workers DVC spawned for its queue that still run, as psutil processes (dvc_task's record of each:
    `dvc-exp-worker-N.json` in the queue's folder, as `LocalCeleryQueue._spawn_worker` names them)."""
    import psutil
    from dvc_task.proc.process import ProcessInfo

    workers = []
    for record in Path(queue.wdir).glob("dvc-exp-worker-*.json"):
        try:
            info = ProcessInfo.load(str(record))
            if info.returncode is None:
                workers.append(psutil.Process(info.pid))
        except (OSError, ValueError, psutil.NoSuchProcess):  # it ended (and removed its record) while we looked
            pass
    return workers


QUEUE_HANG_GRACE_S = 15.0  # the last experiment's end to the follower's: a second or two when it does not hang


def follow_queue(root: Path, jobs: int, names: Sequence[str], env: dict[str, str], log: Any, label: str,
                 grace_s: float = QUEUE_HANG_GRACE_S) -> tuple[int, list[str], bool]:
    """`dvc exp run --run-all -j N`, its lines sent to `log` as they come: (exit code, stderr lines, hung).

    DVC's follower can hang once every experiment has ended: seen once in about five CI runs, both
    experiments done in `dvc queue status` and the follower and one idle worker still running an hour
    later. So once none of `names` has been queued or running for `grace_s`, the follower is stopped
    (the experiments' results are DVC's already: the worker records them before it marks them done)
    and `hung` is True. Either way, the queue's idle workers are not left behind."""
    wanted = set(names)
    drained_since: list[float] = []  # when the queue was first seen without any of `names`
    gave_up: list[bool] = []  # set once hung() has said so: stream_command then stopped the follower

    def hung() -> bool:
        try:
            busy = wanted & set(busy_queue_entries(root))
        except Exception:  # the queue's state unreadable for a moment: ask again later
            return False
        if busy:
            drained_since.clear()
            return False
        drained_since[:] = drained_since or [time.monotonic()]
        if time.monotonic() - drained_since[0] >= grace_s:
            gave_up.append(True)
        return bool(gave_up)

    returncode, _, stderr = stream_command(dvc_command(*run_queue_args(jobs)), root, env, log, label, give_up=hung)
    stop_idle_queue_workers(root)
    return returncode, stderr, bool(gave_up)


def stop_idle_queue_workers(root: Path) -> None:
    """Once nothing is queued or running, stop the queue's workers (Ctrl-C: Celery's warm shutdown) rather
    than wait the 15 s or more they take to end by themselves, or forever when one hangs."""
    from dvc.repo import Repo

    with Repo(str(root)) as repo:
        queue = repo.experiments.celery_queue
        if any(queue.iter_active()) or any(queue.iter_queued()):
            return
        for worker in _queue_workers(queue):
            stop_process_tree_of(worker)
