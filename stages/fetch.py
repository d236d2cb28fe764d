"""Stage `fetch@<task>`: a downloaded task's raw data, from the internet or a local mirror.

    python -m stages.fetch TASK --out data/raw/TASK

Each task module's `fetch` downloads (heart: Kaggle through kagglehub; MNIST: keras.datasets)
or, when DNNLAB_DATA_MIRROR names a folder laid out like ../shared/data, reads the mirror
instead; either way the data is checked and the same data gives the same bytes, so switching
source reruns nothing downstream. DNNLAB_FORCE_DOWNLOAD=1 ignores the download caches.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from stages.core.contract import FORCE_DOWNLOAD_ENV, MIRROR_ENV
from stages.core.errors import StageError, run_stage
from stages.core.io import write_outputs
from stages.tasks import TASK_NAMES, load_task


def data_mirror() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    return Path(value) if value else None


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("task", choices=TASK_NAMES)
    parser.add_argument("--out", type=Path, required=True, help="folder for the raw files")
    args = parser.parse_args(argv)
    task = load_task(args.task)
    if not hasattr(task, "fetch"):
        raise StageError(f"task {args.task} is generated, not downloaded: its raw data comes from `generate`")
    files = task.fetch(data_mirror(), force=os.environ.get(FORCE_DOWNLOAD_ENV) == "1")
    write_outputs({args.out / name: content for name, content in files.items()})


if __name__ == "__main__":
    run_stage("fetch", main)
