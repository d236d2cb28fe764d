"""Stage `preprocess@{synthetic,heart,mnist}`: raw data to Parquet splits with explicit schemas.

- synthetic: a seeded train/test split of the domain draws, plus the truth grid (domain and
  extrapolation interval).
- heart: deduplicate (if asked), stratified train/test split, standard scaling fit on train
  only, one-hot of the categorical codes.
- mnist: the fixed 60k/10k split; each image one 784-byte fixed-size binary cell, so all
  70 000 load into numpy without a copy (stages.datasets.mnist_images).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from stages.core.errors import StageError, run_stage
from stages.core.io import parquet_bytes, write_outputs
from stages.core.params import HeartConfig, Params, SyntheticConfig, load_params
from stages.datasets import MNIST_PIXELS
from stages.generate import DOMAIN_SCHEMA, GRID_SCHEMA

HEART_SCALED = ("age", "trestbps", "chol", "thalach", "oldpeak")
HEART_BINARY = ("sex", "fbs", "exang")
HEART_CATEGORIES = {"cp": 4, "restecg": 3, "slope": 3, "ca": 5, "thal": 4}  # codes 0..k-1 (stages.fetch)
MNIST_SCHEMA = pa.schema([("image", pa.binary(MNIST_PIXELS)), ("label", pa.uint8())])


def heart_feature_names() -> list[str]:
    one_hot = [f"{column}_{code}" for column, count in HEART_CATEGORIES.items() for code in range(count)]
    return [*HEART_SCALED, *HEART_BINARY, *one_hot]


def heart_schema() -> pa.Schema:
    return pa.schema([*((name, pa.float32()) for name in heart_feature_names()), ("target", pa.int8())])


def preprocess_synthetic(domain: pd.DataFrame, grid: pd.DataFrame, config: SyntheticConfig,
                         seed: int) -> dict[str, pa.Table]:
    """A seeded train/test split of the draws; the truth grid passes through for evaluation."""
    train, test = train_test_split(domain, test_size=config.test_size, random_state=seed)
    tables = {name: pa.Table.from_pandas(frame, schema=DOMAIN_SCHEMA, preserve_index=False)
              for name, frame in {"train": train, "test": test}.items()}
    return {**tables, "grid": pa.Table.from_pandas(grid, schema=GRID_SCHEMA, preserve_index=False)}


def preprocess_heart(raw: pd.DataFrame, config: HeartConfig, seed: int) -> dict[str, pa.Table]:
    frame = raw.drop_duplicates() if config.deduplicate else raw
    try:
        train, test = train_test_split(frame, test_size=config.test_size, random_state=seed, stratify=frame["target"])
    except ValueError as error:
        raise StageError(f"heart: cannot split {len(frame)} rows with test_size={config.test_size} ({error}); "
                         "change heart.test_size") from None
    scaler = StandardScaler().fit(train[list(HEART_SCALED)])  # fit on train only: no test leakage

    def features(part: pd.DataFrame) -> pd.DataFrame:
        columns = dict(zip(HEART_SCALED, scaler.transform(part[list(HEART_SCALED)]).T))
        columns.update({name: part[name].to_numpy() for name in HEART_BINARY})
        for column, count in HEART_CATEGORIES.items():
            codes = part[column].to_numpy().astype(int)
            columns.update({f"{column}_{code}": (codes == code) for code in range(count)})
        out = pd.DataFrame(columns).astype(np.float32)
        return out.assign(target=part["target"].to_numpy().astype(np.int8))

    schema = heart_schema()
    return {name: pa.Table.from_pandas(features(part), schema=schema, preserve_index=False)
            for name, part in {"train": train, "test": test}.items()}


def preprocess_mnist(arrays: dict[str, np.ndarray]) -> dict[str, pa.Table]:
    def table(images: np.ndarray, labels: np.ndarray) -> pa.Table:
        flat = np.ascontiguousarray(images, dtype=np.uint8).reshape(-1)
        column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(MNIST_PIXELS), len(labels), [None, pa.py_buffer(flat)])
        return pa.Table.from_arrays([column, pa.array(labels, type=pa.uint8())], schema=MNIST_SCHEMA)

    return {"train": table(arrays["x_train"], arrays["y_train"]), "test": table(arrays["x_test"], arrays["y_test"])}


# --- readers of the raw stage outputs ---

def _read_parquet_frame(path: Path) -> pd.DataFrame:
    try:
        return pd.read_parquet(path)
    except FileNotFoundError:
        raise StageError(f"{path} is missing; run `dvc repro generate`") from None


def read_raw(dataset: str, raw: Path) -> dict:
    """The raw inputs of one dataset, as the preprocess core takes them."""
    if dataset == "synthetic":
        return {"domain": _read_parquet_frame(raw / "domain.parquet"), "grid": _read_parquet_frame(raw / "grid.parquet")}
    if dataset == "heart":
        from stages.fetch import check_heart_csv
        path = raw / "heart.csv"
        try:
            return {"raw": check_heart_csv(path.read_bytes(), str(path))}
        except FileNotFoundError:
            raise StageError(f"{path} is missing; run `dvc repro fetch@heart`") from None
    arrays = {}
    for name in ("x_train", "y_train", "x_test", "y_test"):
        path = raw / f"{name}.npy"
        try:
            arrays[name] = np.load(path, allow_pickle=False)
        except FileNotFoundError:
            raise StageError(f"{path} is missing; run `dvc repro fetch@mnist`") from None
        except ValueError as error:
            raise StageError(f"{path} is not a readable .npy file ({error}); run `dvc repro --force fetch@mnist`") from None
    from stages.fetch import check_mnist_arrays
    return {"arrays": check_mnist_arrays(arrays, str(raw))}


def preprocess(dataset: str, inputs: dict, params: Params) -> dict[str, pa.Table]:
    """Dispatch to the dataset's core."""
    if dataset == "synthetic":
        return preprocess_synthetic(inputs["domain"], inputs["grid"], params.synthetic, params.seed)
    if dataset == "heart":
        return preprocess_heart(inputs["raw"], params.heart, params.seed)
    return preprocess_mnist(inputs["arrays"])


def build_splits(dataset: str, params: Params, mirror: Path) -> dict[str, pa.Table]:
    """Generate or fetch (from a mirror) and preprocess in memory: for tests and benchmarks."""
    from stages import fetch, generate
    if dataset == "synthetic":
        inputs = generate.generate(params.synthetic, params.seed)
    elif dataset == "heart":
        path = mirror / "heart" / "heart.csv"
        inputs = {"raw": fetch.check_heart_csv(path.read_bytes(), str(path))}
    else:
        inputs = {"arrays": fetch.read_mirror_mnist(mirror)}
    return preprocess(dataset, inputs, params)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("dataset", choices=("synthetic", "heart", "mnist"))
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--raw", type=Path, required=True, help="the dataset's raw folder")
    parser.add_argument("--out", type=Path, required=True, help="folder for the Parquet splits")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    tables = preprocess(args.dataset, read_raw(args.dataset, args.raw), params)
    write_outputs({args.out / f"{name}.parquet": parquet_bytes(table) for name, table in tables.items()})


if __name__ == "__main__":
    run_stage("preprocess", main)
