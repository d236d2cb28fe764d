"""params.schema.json: the JSON Schema of params.yaml, generated from the model the stages validate it with.

    python -m stages.params_schema           # rewrite params.schema.json after changing a model
    python -m stages.params_schema --check   # exit 1 if it is out of date (the tests run this check)

params.yaml names it in its first line (`# yaml-language-server: $schema=params.schema.json`),
so editors with a YAML language server complete keys, show each one's description and range,
and underline a misspelled key as you type. The model is `stages.tasks.params_model()` (fields and
descriptions in stages/core/params.py and each task's DataParams): there is nothing to keep in step.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from stages.tasks import params_model

SCHEMA_FILE = Path(__file__).resolve().parents[1] / "params.schema.json"


def params_schema() -> dict[str, Any]:
    """The whole file's schema: shared keys, one section per task module, the study."""
    return {"$schema": "https://json-schema.org/draft/2020-12/schema", **params_model().model_json_schema()}


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
