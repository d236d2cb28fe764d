"""No stage loads what it does not use: only train imports TensorFlow (and Keras); evaluate serves the
exported network with LiteRT; configure, which writes one JSON file, reads no data and loads no
pandas or pyarrow; only the figures stages draw, with matplotlib alone (seaborn would load scipy.stats,
about 1 s); scikit-learn (and the scipy it brings) only where preprocess fits a scaler or splits; the
report, which assembles JSON, no pandas."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import repo_env
from tests.test_dvc_deps import resolved_stages

# Runs a stage's command as `python -m` would, then prints the packages it loaded of those watched.
PROBE = """
import json, runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as exit_:
    assert not exit_.code, exit_.code
print(json.dumps(sorted({{name.split('.')[0] for name in sys.modules}} & {watched!r})))
"""
TENSORFLOW = {"tensorflow", "keras"}
DRAWING = {"matplotlib", "seaborn"}
SCIKIT = {"sklearn", "scipy"}
# What each stage must not load (train, which trains with TensorFlow, is not probed: it runs minutes).
NOT_LOADED = {
    "generate": TENSORFLOW | DRAWING,
    "fetch": TENSORFLOW | DRAWING | SCIKIT,
    "preprocess": TENSORFLOW | DRAWING,
    "configure": TENSORFLOW | DRAWING | SCIKIT | {"pandas", "pyarrow"},
    "evaluate": TENSORFLOW | DRAWING | SCIKIT,
    "figures": TENSORFLOW | SCIKIT | {"seaborn"},
    "report": TENSORFLOW | DRAWING | SCIKIT | {"pandas", "pyarrow"},  # it assembles the figures@<task> fragments
}


@pytest.mark.parametrize("stage", [name for name in resolved_stages() if name.split("@")[0] in NOT_LOADED])
def test_each_stage_loads_only_the_packages_it_uses(workspace: Path, mirror: Path, stage: str):
    cmd, _ = resolved_stages(workspace)[stage]
    words = shlex.split(cmd)
    module = words[words.index("-m") + 1]
    forbidden = NOT_LOADED[stage.split("@")[0]]
    probe = PROBE.format(argv=[module, *words[words.index("-m") + 2:]], module=module, watched=forbidden)
    result = subprocess.run([sys.executable, "-c", probe], cwd=workspace, env=repo_env(mirror),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == [], f"{stage} loads what it does not use"


def test_keras_loads_for_training_without_scikit_learn_or_matplotlib_which_stay_importable():
    """stages/training marks them absent while Keras loads (its estimator wrappers and image gallery would
    import them: 1.1 s of the train stage's start-up), and only then."""
    probe = ("import sys\n"
             "import stages.training.core\n"
             "loaded = sorted({name.split('.')[0] for name in sys.modules} & {'sklearn', 'matplotlib', 'keras'})\n"
             "import sklearn.preprocessing, matplotlib.figure\n"
             "print(loaded)")
    result = subprocess.run([sys.executable, "-c", probe], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[-1] == "['keras']"
