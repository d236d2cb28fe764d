"""params.schema.json: the JSON Schema of params.yaml, generated from the params models.

    python -m stages.params_schema           # rewrite params.schema.json after changing a model
    python -m stages.params_schema --check   # exit 1 if it is out of date (the tests run this check)

params.yaml names it in its first line (`# yaml-language-server: $schema=params.schema.json`),
so editors with a YAML language server complete keys, show each one's description and range,
and underline a misspelled key as you type.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from pydantic import Field, create_model

from stages.core.params import ModelConfig, ModelOverrides, ParamsModel, TrainConfig
from stages.tasks import TASK_NAMES, load_task

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "params.schema.json"


class StudyEntry(ParamsModel):
    """One variation of the study: run as a DVC experiment named after it."""

    name: str = Field(pattern=r"^[A-Za-z0-9_-]+$", description="the experiment's name")
    params: dict[str, Any] = Field(description="dotted params keys and their values, as `dvc exp run -S` takes them")


class Study(ParamsModel):
    variations: list[StudyEntry] = Field(default_factory=list)


def params_schema() -> dict[str, Any]:
    """The whole file's schema: shared keys, one section per task module, the study."""
    sections = {}
    for name in TASK_NAMES:
        task = load_task(name)
        section = create_model(f"{name.title().replace('_', '')}Section", __base__=ParamsModel,
                               __doc__=f"Part {task.LAB_PART} of the lab: {task.TITLE}.",
                               data=(task.DataParams, ...), model=(ModelOverrides, ...), train=(TrainConfig, ...))
        sections[name] = (section, ...)
    file_model = create_model(
        "Params", __base__=ParamsModel, __doc__="dnnlab's params.yaml (stages/core/params.py, stages/tasks/*.py)",
        seed=(int, Field(ge=0, description="one seed for data, splits, initialisation and shuffling")),
        model=(ModelConfig, Field(description="the dense network shared by the tasks")),
        study=(Study, Field(default_factory=Study, description="python -m flows.study")), **sections)
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **file_model.model_json_schema()}


def schema_text() -> str:
    return json.dumps(params_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--check", action="store_true", help=f"fail if {SCHEMA_FILE.name} is out of date")
    args = parser.parse_args(argv)
    if args.check:
        if not SCHEMA_FILE.exists() or SCHEMA_FILE.read_text() != schema_text():
            print(f"params_schema: error: {SCHEMA_FILE.name} is out of date; run `python -m stages.params_schema`",
                  file=sys.stderr)
            return 1
        return 0
    SCHEMA_FILE.write_text(schema_text())
    print(f"wrote {SCHEMA_FILE}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
