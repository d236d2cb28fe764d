"""Part 3 of the lab: an MLP on MNIST's handwritten digits.

Raw data (stage `fetch@mnist`): `keras.datasets.mnist`, or the four published IDX files in
`$DNNLAB_DATA_MIRROR/mnist/` (their sha256 checked); either way shapes, dtypes, labels and the
content hash of every array are checked, and the decoded arrays are written as `.npy`, so both
sources give the same bytes. Processed: the fixed 60k/10k split, each image one 784-byte
fixed-size binary cell, so all 70 000 load into numpy without a copy.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import zlib
from pathlib import Path
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa

from stages.core.contract import MIRROR_ENV
from stages.core.errors import StageError, download_error
from stages.core.params import ParamsModel
from stages.core.problem import Problem

TITLE = "MNIST"
LAB_PART = 3
PROBLEM = Problem("multiclass", 10)
HEADLINE_METRIC = "test/accuracy"
# What `dvc exp show` shows of this task, as `mnist/<short name>`: short name -> evaluate's metric.
HEADLINE_METRICS = {"accuracy": "test/accuracy", "val_loss": "val/loss"}
RAW_FILES = ("x_train.npy", "y_train.npy", "x_test.npy", "y_test.npy")
EVALUATION_SPLITS = ("test",)
REPORT_SPLITS = ("test",)
PLOT_COLUMNS = {"confusion.csv": ("index", "actual", "predicted"), "digit_accuracy.csv": ("digit", "accuracy")}

PIXELS = 28 * 28
SCHEMA = pa.schema([("image", pa.binary(PIXELS)), ("label", pa.uint8())])
# The four published IDX files: name -> (file, sha256 of the .gz, header bytes, shape).
IDX_FILES = {
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
ARRAY_SHA256 = {
    "x_train": "741c988805d008ac6e4c904b69001ba184c24b2c540a4ef403f4c71b676cf757",
    "y_train": "1feba77c54802fa5339a11837ea4b2866434b83314ec45192930f1df69120c13",
    "x_test": "6d87418db22cc8025d05968bec9bd5c3932904b23485740db143a061a2c9d161",
    "y_test": "ddeff807876a9661a1110d45c266c86239a3a1b7d37da0c3716a7a683c852ff5",
}


# keras/src/datasets/mnist.py (load_data): where Keras downloads MNIST from, and the file's sha256.
KERAS_MNIST_ORIGIN = "https://storage.googleapis.com/tensorflow/tf-keras-datasets/mnist.npz"
KERAS_MNIST_SHA256 = "731c5ac602752760c8e48fbffcf8c3b850d9dc2a2aedcf2cc48468fc17b673d1"


class DataParams(ParamsModel):
    """`mnist.data`: empty; MNIST comes with its own split."""


# --- raw data: the network boundary, the mirror, and the checks ---

def fetch(mirror: Path | None, force: bool) -> dict[str, bytes]:
    """The four arrays from the mirror's IDX files, else through keras.datasets; checked, as .npy bytes."""
    if mirror is not None:
        arrays, source = read_mirror(mirror), str(mirror / "mnist")
    else:
        arrays, source = download(Path(".cache"), force), "keras.datasets.mnist"
    check_arrays(arrays, source)
    return {f"{name}.npy": npy_bytes(array) for name, array in arrays.items()}


def download(cache_dir: Path, force: bool) -> dict[str, np.ndarray]:
    """MNIST's mnist.npz as keras.datasets.mnist.load_data fetches it (same file, same hash check), kept in
    `cache_dir`: passed to Keras' get_file, which load_data gives no way to set but KERAS_HOME."""
    keras_home = cache_dir.resolve() / "keras"
    from keras.utils import get_file
    try:
        (keras_home / "datasets").mkdir(parents=True, exist_ok=True)  # a cache we cannot write: one line
        path = get_file("mnist.npz", origin=KERAS_MNIST_ORIGIN, file_hash=KERAS_MNIST_SHA256, cache_dir=str(keras_home),
                        force_download=force)
        with np.load(path, allow_pickle=False) as npz:
            return {name: npz[name] for name in ("x_train", "y_train", "x_test", "y_test")}
    except Exception as error:  # sorted by cause: only network failures are retried
        raise download_error("MNIST through keras.datasets", error) from None


def read_mirror(mirror: Path) -> dict[str, np.ndarray]:
    """The four published IDX files of a mirror, checksummed and decoded."""
    folder = mirror / "mnist"
    arrays = {}
    for name, (file_name, *_rest) in IDX_FILES.items():
        try:
            content = (folder / file_name).read_bytes()
        except OSError as error:
            raise StageError(f"{folder / file_name}: cannot read it ({error.strerror}); check {MIRROR_ENV}") from None
        arrays[name] = decode_idx(content, name, str(folder / file_name))
    return arrays


def decode_idx(content: bytes, name: str, source: str) -> np.ndarray:
    """One gzip'd IDX file, checked against its published checksum, as a uint8 array."""
    _file_name, sha256, header, shape = IDX_FILES[name]
    digest = hashlib.sha256(content).hexdigest()
    if digest != sha256:
        raise StageError(f"{source}: sha256 {digest[:12]}… differs from the published {sha256[:12]}…; "
                         "the file is corrupt or truncated: replace it with the published one")
    try:
        raw = gzip.decompress(content)
    except (OSError, EOFError, zlib.error) as error:
        raise StageError(f"{source}: not a readable gzip file ({error}); replace it") from None
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def check_arrays(arrays: Mapping[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Shapes, dtypes, label range and the content hash of every array."""
    for name, (_, _, _, shape) in IDX_FILES.items():
        array = arrays.get(name)
        if array is None:
            raise StageError(f"{source}: {name} is missing")
        if array.dtype != np.uint8 or array.shape != shape:
            raise StageError(f"{source}: {name} is {array.dtype} {array.shape}; expected uint8 {shape}")
        if name.startswith("y") and array.max() > 9:
            raise StageError(f"{source}: {name} holds label {int(array.max())}; labels are 0..9")
    for name, array in arrays.items():
        digest = hashlib.sha256(np.ascontiguousarray(array).tobytes()).hexdigest()
        if digest != ARRAY_SHA256[name]:
            raise StageError(f"{source}: {name} differs from published MNIST (sha256 {digest[:12]}…); "
                             "the data is corrupt: delete the cache or fix the mirror")
    return dict(arrays)


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def read_raw(files: Mapping[str, bytes], source: str) -> dict[str, np.ndarray]:
    arrays = {}
    for file_name in RAW_FILES:
        try:
            arrays[file_name.removesuffix(".npy")] = np.load(io.BytesIO(files[file_name]), allow_pickle=False)
        except ValueError as error:
            raise StageError(f"{source}/{file_name} is not a readable .npy file ({error}); "
                             "run `dvc repro --force fetch@mnist`") from None
    return check_arrays(arrays, source)


# --- processing ---

def preprocess(raw: Mapping[str, np.ndarray], data: DataParams, seed: int) -> dict[str, pa.Table]:
    def table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
        flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(-1)
        column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(PIXELS), len(labels), [None, pa.py_buffer(flat)])
        return pa.Table.from_arrays([column, pa.array(labels, type=pa.uint8())], schema=SCHEMA)

    return {"train": table(raw["x_train"], raw["y_train"]), "test": table(raw["x_test"], raw["y_test"])}


def images(table: pa.Table) -> np.ndarray:
    """The `image` column (fixed-size binary of 784 bytes) as a (n, 28, 28) uint8 array, zero-copy."""
    column = table.column("image").combine_chunks()
    if column.type != pa.binary(PIXELS):
        raise StageError(f"MNIST column image is {column.type}, not fixed_size_binary[{PIXELS}]; "
                         "run `dvc repro` to rebuild it")
    data = np.frombuffer(column.buffers()[1], dtype=np.uint8)
    start = column.offset * PIXELS
    return data[start:start + len(column) * PIXELS].reshape(-1, 28, 28)


def features_and_target(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    x = images(table).reshape(len(table), PIXELS).astype(np.float32) / 255.0
    return x, table.column("label").to_numpy().astype(np.int64)


# --- evaluation ---

def evaluate(predict, splits: Mapping[str, pa.Table]) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Accuracy and macro F1; the (index, actual, predicted) rows for the report and the accuracy per digit
    (a plot, not ten more `dvc exp show` columns)."""
    x_test, y_test = features_and_target(splits["test"])
    y_pred = predict(x_test).argmax(axis=1)
    metrics = {"test/accuracy": float(np.mean(y_test == y_pred)), "test/macro_f1": macro_f1(y_test, y_pred)}
    # `index` is the row in the test split: the report shows the mispredicted images.
    confusion = pd.DataFrame({"index": np.arange(len(y_test)), "actual": y_test, "predicted": y_pred})
    return metrics, {"confusion.csv": confusion, "digit_accuracy.csv": digit_accuracy(confusion)}


def macro_f1(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    """The mean F1 over every class found in y_true or y_pred, as sklearn's f1_score(average="macro")
    (tests/test_scores.py; in numpy: scikit-learn's import costs evaluate seconds)."""
    y_true, y_pred = np.asarray(y_true), np.asarray(y_pred)
    f1 = [2 * np.sum((y_true == label) & (y_pred == label)) / (np.sum(y_true == label) + np.sum(y_pred == label))
          for label in np.union1d(y_true, y_pred)]
    return float(np.mean(np.asarray(f1, dtype=np.float64)))


def digit_accuracy(confusion: pd.DataFrame) -> pd.DataFrame:
    """The share of each digit's test images predicted right: columns digit, accuracy."""
    right = confusion["actual"] == confusion["predicted"]
    accuracy = right.groupby(confusion["actual"]).mean()
    return pd.DataFrame({"digit": accuracy.index.astype(int), "accuracy": accuracy.to_numpy(dtype=float)})
