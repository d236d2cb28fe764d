"""flows/run_spec.py: which modes of a run go together is checked once, with the same one line for the flows
(parameter names), the CLIs (flag names, before Prefect starts) and the deployments."""

from __future__ import annotations

import pytest
import yaml

from flows.deployments import DEPLOYMENTS, FROM_GIT, PREFECT_YAML
from flows.run_spec import RunSpec, RunSpecError

EMPTY_REMOTE = ("git_remote is empty: set the Prefect variable dnnlab_git_remote to the git remote's URL "
                "(`prefect variable set dnnlab_git_remote URL`), then deploy or serve again")


@pytest.mark.parametrize(("flow", "flags", "modes", "line"), [
    ("pipeline", False, {"max_parallel": 0}, "max_parallel = 0: expected an integer >= 1"),
    ("pipeline", True, {"max_parallel": 0}, "--max-parallel 0: expected an integer >= 1"),
    ("pipeline", False, {"overrides": {"model.width": 8}, "record": True},
     "record commits results to git; a run with overrides is a DVC experiment (`dvc exp show`, `dvc exp apply`): "
     "use one or the other"),
    ("pipeline", False, {"git_remote": ""}, EMPTY_REMOTE),
    ("pipeline", False, {"git_remote": "file:///r.git", "repo": "/x"},
     "git_remote runs in a fresh clone: it takes neither repo nor overrides (a variation of the params is the "
     "study's business: `flows.study`)"),
    ("pipeline", False, {"git_remote": "file:///r.git", "overrides": {"seed": 1}},
     "git_remote runs in a fresh clone: it takes neither repo nor overrides (a variation of the params is the "
     "study's business: `flows.study`)"),
    ("study", False, {"jobs": 0}, "jobs = 0: expected an integer >= 1"),
    ("study", True, {"jobs": 0}, "--jobs 0: expected an integer >= 1"),
    ("study", False, {"attempts": "x"}, "attempts = 'x': expected an integer >= 1"),
    ("study", True, {"pool": "p", "attempts": 0}, "--attempts 0: expected an integer >= 1"),
    ("study", False, {"from_git": True, "git_remote": ""}, EMPTY_REMOTE),
    ("study", False, {"from_git": True, "git_remote": "file:///r.git"},
     "a study from git runs its variations on a work pool (its clone goes when it ends): pass pool, "
     "e.g. `-p pool=dnnlab`"),
    ("study", True, {"from_git": True, "git_remote": "file:///r.git"}, "--from-git needs --pool and --git-remote"),
    ("study", True, {"from_git": True, "pool": "p"}, "--from-git needs --pool and --git-remote"),
])
def test_modes_that_do_not_go_together_are_one_line(flow, flags, modes, line):
    with pytest.raises(RunSpecError) as error:
        RunSpec.for_flow(flow, flags=flags, **modes)
    assert str(error.value) == line


def test_the_pipeline_runs_in_a_clone_exactly_when_given_a_git_remote_and_the_study_only_from_git():
    assert RunSpec.for_flow("pipeline", git_remote="file:///r.git", record=True).from_git
    assert not RunSpec.for_flow("pipeline", repo="/x", overrides={"seed": 1}).from_git
    pooled = RunSpec.for_flow("study", pool="p", git_remote="file:///r.git")  # what the workers clone
    assert not pooled.from_git and pooled.parameters("study") == {"git_remote": "file:///r.git", "pool": "p"}
    # A flow gets only its own modes, those that differ from its defaults.
    assert RunSpec.for_flow("pipeline", max_parallel=2).parameters("pipeline") == {"max_parallel": 2}
    assert RunSpec.for_flow("study", jobs=1, from_git=False).parameters("study") == {"jobs": 1}


def test_the_deployments_are_run_specs_and_prefect_yaml_is_theirs():
    written = {entry["name"]: entry["parameters"] for entry in yaml.safe_load(PREFECT_YAML.read_text())["deployments"]}
    for deployment in DEPLOYMENTS:
        flow = deployment.entrypoint.rsplit(":", 1)[1]
        modes = {key: value for key, value in deployment.parameters.items() if key != "force_fetch"}
        spec = RunSpec.for_flow(flow, **modes)  # each deployment's parameters are a valid spec of its flow
        assert spec.from_git and spec.git_remote == FROM_GIT["git_remote"]
        assert written[deployment.name] == deployment.parameters
    # A deployment that could never run is refused when it is defined.
    from flows.deployments import from_git
    with pytest.raises(RunSpecError, match="pass pool"):
        from_git("study", from_git=True)


def test_the_clis_refuse_bad_modes_before_prefect_starts(capsys, monkeypatch):
    import flows.pipeline
    import flows.study.flow

    def no_server():
        raise AssertionError("the CLI started Prefect for a run it should have refused")

    monkeypatch.setattr(flows.pipeline, "prefect_server_for_run", no_server)
    monkeypatch.setattr(flows.study.flow, "prefect_server_for_run", no_server)
    with pytest.raises(SystemExit) as exit_:
        flows.pipeline.main(["--record", "--set", "model.width=8"])
    assert exit_.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        "python -m flows.pipeline: error: record commits results to git; a run with overrides is a DVC experiment "
        "(`dvc exp show`, `dvc exp apply`): use one or the other")
    assert flows.study.flow.main(["--from-git", "--pool", "p"]) == 2
    assert capsys.readouterr().err.strip() == "study: error: --from-git needs --pool and --git-remote"
