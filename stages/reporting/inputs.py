"""Reading the evaluate stages' outputs for the report: metrics JSON and plot CSVs, checked, each
problem one StageError naming the file and `dvc repro`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Sequence

from stages.core.errors import StageError

if TYPE_CHECKING:  # the report stage reads only JSON: pandas (0.25 s) is loaded where a CSV is read
    import pandas as pd

REBUILD = "run `dvc repro` to rebuild it"


def read_metrics_document(path: Path) -> dict:
    """Evaluate's metrics file: {"mean": {metric: value}, "spread": …, "seeds": {seed: {metric: value}}}."""
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to build it") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise StageError(f"{path} is not valid JSON ({error}); {REBUILD}") from None
    flat = [data.get("mean"), *(data.get("seeds") or {}).values()] if isinstance(data, dict) else [None]
    if not isinstance(data, dict) or not data.get("seeds") or not all(isinstance(values, dict) and values and all(
            isinstance(v, (int, float)) and not isinstance(v, bool) for v in values.values()) for values in flat) \
            or not _spread_of_each(data):
        raise StageError(f"{path} is not evaluate's metrics over seeds (numbers under mean and seeds, and each "
                         f"one's spread); {REBUILD}")
    return data


def _spread_of_each(data: dict) -> bool:
    """A spread (sd, low, high, n) for each mean, as stages/spread.py's metrics_over_seeds writes it."""
    spreads = data.get("spread")
    return isinstance(spreads, dict) and set(spreads) == set(data["mean"]) and all(
        isinstance(over, dict) and set(over) == {"sd", "low", "high", "n"} for over in spreads.values())


def read_csv(path: Path, columns: Sequence[str]) -> pd.DataFrame:
    import pandas as pd

    try:
        frame = pd.read_csv(path)
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to build it") from None
    except (ValueError, UnicodeDecodeError) as error:  # pandas' ParserError and EmptyDataError are ValueErrors
        raise StageError(f"{path} is not readable CSV ({str(error).splitlines()[0]}); {REBUILD}") from None
    return check_columns(frame, columns, path)


def check_columns(frame: pd.DataFrame, columns: Sequence[str], path: Path) -> pd.DataFrame:
    import pandas as pd

    missing = [column for column in columns if column not in frame.columns]
    if missing:
        raise StageError(f"{path} lacks column(s) {', '.join(missing)}; {REBUILD}")
    numeric = [column for column in columns if column != "region"]
    if len(frame) == 0:
        raise StageError(f"{path} has no rows; {REBUILD}")
    if not all(pd.api.types.is_numeric_dtype(frame[column]) for column in numeric):
        raise StageError(f"{path} has non-numeric values in {', '.join(numeric)}; {REBUILD}")
    return frame
