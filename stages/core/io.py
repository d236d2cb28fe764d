"""Atomic output writing and the byte formats of stage outputs (Parquet, JSON, CSV)."""

from __future__ import annotations

import io
import json
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Mapping

from stages.core.errors import StageError, storage_error

if TYPE_CHECKING:  # imported where used: configure writes JSON only and loads neither
    import pandas as pd
    import pyarrow as pa


def _umask_mode() -> int:
    umask = os.umask(0)
    os.umask(umask)
    return 0o666 & ~umask


def parquet_bytes(table: pa.Table | pd.DataFrame, schema: pa.Schema | None = None) -> bytes:
    """Serialise a table to Parquet in memory, with an explicit schema when given."""
    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    if isinstance(table, pd.DataFrame):
        table = pa.Table.from_pandas(table, schema=schema, preserve_index=False)
    elif schema is not None:
        table = table.cast(schema)
    buffer = io.BytesIO()
    pq.write_table(table, buffer, compression="zstd")
    return buffer.getvalue()


def json_bytes(data: Mapping) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def csv_bytes(frame: pd.DataFrame) -> bytes:
    return frame.to_csv(index=False, lineterminator="\n", float_format="%.6g").encode()


@contextmanager
def staged_path(final: Path) -> Iterator[Path]:
    """A temp path beside `final` for writers that need a file name (Keras); renamed on success."""
    final.parent.mkdir(parents=True, exist_ok=True)
    handle, temp = tempfile.mkstemp(dir=final.parent, prefix=f".{final.name}.", suffix=final.suffix)
    os.close(handle)
    temp_path = Path(temp)
    temp_path.chmod(_umask_mode())  # mkstemp makes 0600; outputs get the usual permissions
    try:
        yield temp_path
        os.replace(temp_path, final)
    except Exception as error:
        name_the_path(error, final)
        raise
    finally:
        temp_path.unlink(missing_ok=True)


def name_the_path(error: BaseException, path: Path) -> None:
    """A failed write's OSError names no file (ENOSPC from write(), a library's wrapped error): name the output."""
    os_error = storage_error(error)
    if os_error is not None and not os_error.filename:
        os_error.filename = str(path)


def write_outputs(outputs: Mapping[str | Path, bytes]) -> None:
    """Write every output to a temp file in its folder first, then rename them all.

    A failure while writing leaves the earlier outputs untouched.
    """
    staged: list[tuple[Path, Path]] = []
    try:
        for path, content in outputs.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
            staged.append((Path(temp), path))
            try:
                with os.fdopen(handle, "wb") as file:
                    file.write(content)
            except OSError as error:
                name_the_path(error, path)
                raise
            Path(temp).chmod(_umask_mode())  # mkstemp makes 0600; outputs get the usual permissions
        for temp, path in staged:
            os.replace(temp, path)
    finally:
        for temp, _ in staged:
            temp.unlink(missing_ok=True)


def read_split(folder: str | Path, split: str) -> pa.Table:
    """A processed split (`<folder>/<split>.parquet`); missing or unreadable is a StageError saying what to do."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    path = Path(folder) / f"{split}.parquet"
    try:
        return pq.read_table(path)
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro` to build it") from None
    except pa.ArrowInvalid as error:
        raise StageError(f"{path} is not readable Parquet ({error}); rebuild it with `dvc repro --force`") from None
