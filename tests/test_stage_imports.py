"""No stage loads what it does not use: only train and evaluate import TensorFlow (and Keras)."""

from __future__ import annotations

import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import repo_env
from tests.test_dvc_deps import resolved_stages

# Runs a stage's command as `python -m` would, then prints the heavy packages it loaded.
PROBE = """
import json, runpy, sys
sys.argv = {argv!r}
try:
    runpy.run_module({module!r}, run_name="__main__", alter_sys=True)
except SystemExit as exit_:
    assert not exit_.code, exit_.code
print(json.dumps(sorted({{name.split('.')[0] for name in sys.modules}} & {{'tensorflow', 'keras'}})))
"""
WITHOUT_TENSORFLOW = ("generate", "fetch", "preprocess", "figures", "report")


@pytest.mark.parametrize("stage", [name for name in resolved_stages() if name.split("@")[0] in WITHOUT_TENSORFLOW])
def test_stages_before_training_and_the_report_load_no_tensorflow(workspace: Path, mirror: Path, stage: str):
    cmd, _ = resolved_stages(workspace)[stage]
    words = shlex.split(cmd)
    module = words[words.index("-m") + 1]
    probe = PROBE.format(argv=[module, *words[words.index("-m") + 2:]], module=module)
    result = subprocess.run([sys.executable, "-c", probe], cwd=workspace, env=repo_env(mirror),
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert json.loads(result.stdout.splitlines()[-1]) == [], f"{stage} imports TensorFlow or Keras"
