"""Stages `fetch@heart` and `fetch@mnist`: the raw data, from the internet or a local mirror.

Heart comes from Kaggle through kagglehub, MNIST through `keras.datasets.mnist`. When
DNNLAB_DATA_MIRROR names a folder (layout of ../shared/data: heart/heart.csv,
mnist/*-ubyte.gz) both are read from there instead. Either way the data is checked and the
stage writes the same bytes for the same data, so switching source reruns nothing downstream.
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import os
import zlib
from pathlib import Path

import numpy as np
import pandas as pd

from stages.core.errors import StageError, run_stage
from stages.core.io import write_outputs
from stages.core.contract import FORCE_DOWNLOAD_ENV, MIRROR_ENV, NETWORK_EXIT_CODE

CACHE_DIR = Path(".cache")  # pinned download caches (git-ignored), relative to the repository root
KAGGLE_HANDLE = "johnsmith88/heart-disease-dataset"

HEART_COLUMNS = ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach",
                 "exang", "oldpeak", "slope", "ca", "thal", "target")
# Inclusive value ranges of the published file (UCI Cleveland coding, Kaggle's 0-based cp/thal).
HEART_DOMAINS = {
    "age": (1, 120), "sex": (0, 1), "cp": (0, 3), "trestbps": (50, 250), "chol": (50, 700),
    "fbs": (0, 1), "restecg": (0, 2), "thalach": (50, 250), "exang": (0, 1), "oldpeak": (0, 10),
    "slope": (0, 2), "ca": (0, 4), "thal": (0, 3), "target": (0, 1),
}

# The four published IDX files: name -> (sha256 of the .gz, header bytes, shape).
MNIST_FILES = {
    "x_train": ("train-images-idx3-ubyte.gz",
                "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 16, (60000, 28, 28)),
    "y_train": ("train-labels-idx1-ubyte.gz",
                "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 8, (60000,)),
    "x_test": ("t10k-images-idx3-ubyte.gz",
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 16, (10000, 28, 28)),
    "y_test": ("t10k-labels-idx1-ubyte.gz",
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 8, (10000,)),
}
# sha256 of each decoded uint8 array: the same for the IDX files and Keras' mnist.npz.
MNIST_ARRAY_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}


class NetworkError(StageError):
    """The download failed and no mirror is set: possibly transient, so the flow retries it."""

    exit_code = NETWORK_EXIT_CODE


def _no_network(what: str, error: Exception) -> NetworkError:
    return NetworkError(f"could not download {what} ({type(error).__name__}: {error}); offline? "
                        f"set {MIRROR_ENV} to a folder laid out like ../shared/data")


# --- the network boundary: the only functions that reach the internet ---

def download_heart_csv(cache_dir: Path, force: bool) -> bytes:
    """heart.csv from Kaggle via kagglehub (a public dataset: no credentials needed)."""
    os.environ["KAGGLEHUB_CACHE"] = str(cache_dir.resolve() / "kagglehub")
    import kagglehub
    try:
        folder = Path(kagglehub.dataset_download(KAGGLE_HANDLE, force_download=force))
    except Exception as error:  # kagglehub raises many types for one cause: no connection
        raise _no_network(f"{KAGGLE_HANDLE} from Kaggle", error) from None
    return (folder / "heart.csv").read_bytes()


def download_mnist(cache_dir: Path, force: bool) -> dict[str, np.ndarray]:
    """MNIST through keras.datasets (which checks the file hash of mnist.npz)."""
    target = cache_dir.resolve() / "keras" / "mnist.npz"
    target.parent.mkdir(parents=True, exist_ok=True)
    if force:
        target.unlink(missing_ok=True)
    import keras
    try:
        (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data(path=str(target))
    except Exception as error:
        raise _no_network("MNIST through keras.datasets", error) from None
    return {"x_train": x_train, "y_train": y_train, "x_test": x_test, "y_test": y_test}


# --- pure checks ---

def check_heart_csv(content: bytes, source: str) -> pd.DataFrame:
    """The exact header, 14 numeric columns, values inside their domains; the parsed frame."""
    try:
        text = content.decode("utf-8")
    except UnicodeDecodeError:
        raise StageError(f"{source}: not UTF-8 text; expected the Kaggle heart.csv") from None
    header = text.splitlines()[0].strip() if text else ""
    if header != ",".join(HEART_COLUMNS):
        raise StageError(f"{source}: header is {header!r}; expected {','.join(HEART_COLUMNS)!r} "
                         "(a column is missing, renamed or reordered)")
    frame = pd.read_csv(io.BytesIO(content))
    for column in HEART_COLUMNS:
        values = pd.to_numeric(frame[column], errors="coerce")
        bad = values.isna()
        if bad.any():
            row = int(np.flatnonzero(bad.to_numpy())[0])
            raise StageError(f"{source}: column {column!r}, data row {row + 1}: {frame[column].iloc[row]!r} "
                             "is not a number; fix or replace the file")
        low, high = HEART_DOMAINS[column]
        outside = (values < low) | (values > high)
        if outside.any():
            row = int(np.flatnonzero(outside.to_numpy())[0])
            raise StageError(f"{source}: column {column!r}, data row {row + 1}: {values.iloc[row]} is outside "
                             f"[{low}, {high}]; fix or replace the file")
        frame[column] = values
    if len(frame) == 0:
        raise StageError(f"{source}: no data rows")
    return frame


def decode_idx(content: bytes, name: str, source: str) -> np.ndarray:
    """One gzip'd IDX file, checked against its published checksum, as a uint8 array."""
    file_name, sha256, header, shape = MNIST_FILES[name]
    digest = hashlib.sha256(content).hexdigest()
    if digest != sha256:
        raise StageError(f"{source}: sha256 {digest[:12]}… differs from the published {sha256[:12]}…; "
                         "the file is corrupt or truncated: replace it with the published one")
    try:
        raw = gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as error:
        raise StageError(f"{source}: not a readable gzip file ({error}); replace it") from None
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def check_mnist_arrays(arrays: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Shapes, dtypes, label range and the content hash of every array."""
    for name, (_, _, _, shape) in MNIST_FILES.items():
        array = arrays.get(name)
        if array is None:
            raise StageError(f"{source}: {name} is missing")
        if array.dtype != np.uint8 or array.shape != shape:
            raise StageError(f"{source}: {name} is {array.dtype} {array.shape}; expected uint8 {shape}")
        if name.startswith("y") and array.max() > 9:
            raise StageError(f"{source}: {name} holds label {int(array.max())}; labels are 0..9")
    for name, array in arrays.items():
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        if digest != MNIST_ARRAY_SHA256[name]:
            raise StageError(f"{source}: {name} differs from published MNIST (sha256 {digest[:12]}…); "
                             "the data is corrupt: delete the cache or fix the mirror")
    return arrays


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


# --- I/O shells ---

def _mirror() -> Path | None:
    value = os.environ.get(MIRROR_ENV)
    return Path(value) if value else None


def _read_mirror_file(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise StageError(f"{path}: cannot read it ({error.strerror}); check {MIRROR_ENV}") from None


def fetch_heart(out: Path, mirror: Path | None, force: bool = False) -> None:
    if mirror is not None:
        source = mirror / "heart" / "heart.csv"
        content = _read_mirror_file(source)
    else:
        source = Path(f"kaggle:{KAGGLE_HANDLE}")
        content = download_heart_csv(CACHE_DIR, force)
    check_heart_csv(content, str(source))
    write_outputs({out / "heart.csv": content})


def read_mirror_mnist(mirror: Path) -> dict[str, np.ndarray]:
    """The four published IDX files of a mirror, checksummed and decoded."""
    folder = mirror / "mnist"
    return {name: decode_idx(_read_mirror_file(folder / file_name), name, str(folder / file_name))
            for name, (file_name, *_rest) in MNIST_FILES.items()}


def fetch_mnist(out: Path, mirror: Path | None, force: bool = False) -> None:
    if mirror is not None:
        arrays, source = read_mirror_mnist(mirror), str(mirror / "mnist")
    else:
        arrays, source = download_mnist(CACHE_DIR, force), "keras.datasets.mnist"
    check_mnist_arrays(arrays, source)
    write_outputs({out / f"{name}.npy": npy_bytes(array) for name, array in arrays.items()})


FETCHERS = {"heart": fetch_heart, "mnist": fetch_mnist}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=sorted(FETCHERS))
    parser.add_argument("--out", type=Path, required=True, help="folder for the raw files")
    args = parser.parse_args(argv)
    FETCHERS[args.dataset](args.out, _mirror(), force=os.environ.get(FORCE_DOWNLOAD_ENV) == "1")


if __name__ == "__main__":
    run_stage("fetch", main)
