"""Part 2 of the lab: a classifier on the Kaggle heart-disease data.

Raw data (stage `fetch@heart`): `heart.csv` from Kaggle through kagglehub, or from
`$DNNLAB_DATA_MIRROR/heart/heart.csv`; checked (exact header, 14 numeric columns, value
ranges) and written byte for byte. Processed: deduplicated (the file repeats 302 patients to
1025 rows), a stratified train/test split, standard scaling fit on train only, one-hot codes;
the fitted preprocessing is written beside the splits (`preprocessing.json`) so that the model
can score a raw patient row (`encode`).
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
from pydantic import Field

from stages.core.contract import MIRROR_ENV
from stages.core.errors import StageError, download_error
from stages.core.params import ParamsModel, Share
from stages.core.problem import Problem

TITLE = "Heart disease"
LAB_PART = 2
PROBLEM = Problem("binary", 1)
HEADLINE_METRIC = "test/roc_auc"
# What `dvc exp show` shows of this task, as `heart/<short name>`: short name -> evaluate's metric.
HEADLINE_METRICS = {"roc_auc": "test/roc_auc", "accuracy": "test/accuracy", "val_loss": "val/loss"}
RAW_FILES = ("heart.csv",)
EVALUATION_SPLITS = ("test",)
REPORT_SPLITS = ()
PLOT_COLUMNS = {"roc.csv": ("fpr", "tpr"), "confusion.csv": ("actual", "predicted")}
CLASS_NAMES = {0: "no disease", 1: "disease"}  # the `target` column's codes

KAGGLE_HANDLE = "johnsmith88/heart-disease-dataset"
COLUMNS = ("age", "sex", "cp", "trestbps", "chol", "fbs", "restecg", "thalach",
           "exang", "oldpeak", "slope", "ca", "thal", "target")
# Inclusive value ranges of the published file (UCI Cleveland coding, Kaggle's 0-based cp/thal).
DOMAINS = {
    "age": (1, 120), "sex": (0, 1), "cp": (0, 3), "trestbps": (50, 250), "chol": (50, 700),
    "fbs": (0, 1), "restecg": (0, 2), "thalach": (50, 250), "exang": (0, 1), "oldpeak": (0, 10),
    "slope": (0, 2), "ca": (0, 4), "thal": (0, 3), "target": (0, 1),
}
SCALED = ("age", "trestbps", "chol", "thalach", "oldpeak")
BINARY = ("sex", "fbs", "exang")
CATEGORIES = {"cp": 4, "restecg": 3, "slope": 3, "ca": 5, "thal": 4}  # codes 0..k-1
PREPROCESSING = "preprocessing.json"


class DataParams(ParamsModel):
    """`heart.data`: how `preprocess@heart` splits the patients."""

    test_size: Share = Field(description="held-out share of the patients (stratified)")
    deduplicate: bool = Field(description="keep the repeated patients out of both splits")


# --- raw data: the network boundary, and the checks ---

def fetch(mirror: Path | None, force: bool) -> dict[str, bytes]:
    """heart.csv from the mirror, else from Kaggle via kagglehub (public: no credentials), checked."""
    if mirror is not None:
        source = mirror / "heart" / "heart.csv"
        try:
            content = source.read_bytes()
        except OSError as error:
            raise StageError(f"{source}: cannot read it ({error.strerror}); check {MIRROR_ENV}") from None
    else:
        source, content = f"kaggle:{KAGGLE_HANDLE}", download(Path(".cache"), force)
    read_raw({"heart.csv": content}, str(source))
    return {"heart.csv": content}


def download(cache_dir: Path, force: bool) -> bytes:
    """heart.csv through kagglehub, kept in `cache_dir` (passed to kagglehub, not set in the environment)."""
    import kagglehub
    try:
        folder = Path(kagglehub.dataset_download(KAGGLE_HANDLE, force_download=force,
                                                 output_dir=str(cache_dir.resolve() / "kagglehub" / KAGGLE_HANDLE)))
    except Exception as error:  # sorted by cause: only network failures are retried
        raise download_error(f"{KAGGLE_HANDLE} from Kaggle", error) from None
    return (folder / "heart.csv").read_bytes()


def read_raw(files: Mapping[str, bytes], source: str) -> pd.DataFrame:
    """The exact header, 14 numeric columns, values inside their domains; the parsed frame."""
    try:
        text = files["heart.csv"].decode("utf-8")
    except UnicodeDecodeError:
        raise StageError(f"{source}: not UTF-8 text; expected the Kaggle heart.csv") from None
    header = text.splitlines()[0].strip() if text else ""
    if header != ",".join(COLUMNS):
        raise StageError(f"{source}: header is {header!r}; expected {','.join(COLUMNS)!r} "
                         "(a column is missing, renamed or reordered)")
    frame = pd.read_csv(io.StringIO(text))
    for column in COLUMNS:
        frame[column] = _checked_column(frame[column], column, source)
    if len(frame) == 0:
        raise StageError(f"{source}: no data rows")
    return frame


def _checked_column(raw: pd.Series, column: str, source: str) -> pd.Series:
    values = pd.to_numeric(raw, errors="coerce")
    bad = values.isna()
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0])
        raise StageError(f"{source}: column {column!r}, data row {row + 1}: {raw.iloc[row]!r} "
                         "is not a number; fix or replace the file")
    low, high = DOMAINS[column]
    outside = (values < low) | (values > high)
    if outside.any():
        row = int(np.flatnonzero(outside.to_numpy())[0])
        raise StageError(f"{source}: column {column!r}, data row {row + 1}: {values.iloc[row]} is outside "
                         f"[{low}, {high}]; fix or replace the file")
    return values


# --- processing: the fitted preprocessing, and raw rows to features with it ---

def feature_names() -> list[str]:
    one_hot = [f"{column}_{code}" for column, count in CATEGORIES.items() for code in range(count)]
    return [*SCALED, *BINARY, *one_hot]


def schema() -> pa.Schema:
    return pa.schema([*((name, pa.float32()) for name in feature_names()), ("target", pa.int8())])


def fit_preprocessing(train: pd.DataFrame) -> dict[str, Any]:
    """Standard scaling fit on the train rows only (no test leakage), and the feature order."""
    from sklearn.preprocessing import StandardScaler

    scaler = StandardScaler().fit(train[list(SCALED)])
    return {"scaled": {name: {"mean": float(mean), "scale": float(scale)}
                       for name, mean, scale in zip(SCALED, scaler.mean_, scaler.scale_)},
            "binary": list(BINARY), "categories": CATEGORIES, "features": feature_names()}


def encode(rows: pd.DataFrame, preprocessing: Mapping[str, Any]) -> pd.DataFrame:
    """Raw patient rows (the columns of heart.csv, target optional) as the model's float32 features."""
    columns = {name: (rows[name].to_numpy(np.float64) - stats["mean"]) / stats["scale"]
               for name, stats in preprocessing["scaled"].items()}
    columns.update({name: rows[name].to_numpy() for name in preprocessing["binary"]})
    for column, count in preprocessing["categories"].items():
        codes = rows[column].to_numpy().astype(int)
        columns.update({f"{column}_{code}": (codes == code) for code in range(count)})
    return pd.DataFrame(columns)[preprocessing["features"]].astype(np.float32)


def preprocess(raw: pd.DataFrame, data: DataParams, seed: int) -> dict[str, pa.Table | dict]:
    from sklearn.model_selection import train_test_split

    frame = raw.drop_duplicates() if data.deduplicate else raw
    try:
        train, test = train_test_split(frame, test_size=data.test_size, random_state=seed, stratify=frame["target"])
    except ValueError as error:
        raise StageError(f"heart: cannot split {len(frame)} rows with test_size={data.test_size} ({error}); "
                         "change heart.data.test_size") from None
    preprocessing = fit_preprocessing(train)
    tables = {name: pa.Table.from_pandas(encode(part, preprocessing).assign(
                  target=part["target"].to_numpy().astype(np.int8)), schema=schema(), preserve_index=False)
              for name, part in {"train": train, "test": test}.items()}
    return {**tables, PREPROCESSING: preprocessing}


def features_and_target(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    features = [name for name in table.column_names if name != "target"]
    x = np.column_stack([table.column(name).to_numpy() for name in features]).astype(np.float32)
    return x, table.column("target").to_numpy().astype(np.float32)


# --- evaluation ---

# The scores in numpy, as scikit-learn computes them (tests/test_scores.py: equal to the last bit):
# `import sklearn.metrics` loads scipy.stats, seconds of evaluate's start-up for a few lines of work.

def _ratio(numerator: int, denominator: int) -> float:
    return float(numerator / denominator) if denominator else 0.0  # sklearn's zero_division=0


def binary_scores(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """Accuracy, and precision, recall and F1 of the positive class (1), 0 where undefined."""
    true, predicted = np.asarray(y_true) == 1, np.asarray(y_pred) == 1
    tp, true_sum, pred_sum = int(np.sum(true & predicted)), int(np.sum(true)), int(np.sum(predicted))
    return {"accuracy": float(np.mean(np.asarray(y_true) == np.asarray(y_pred))),
            "precision": _ratio(tp, pred_sum), "recall": _ratio(tp, true_sum),
            "f1": _ratio(2 * tp, true_sum + pred_sum)}


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(fpr, tpr, thresholds) as sklearn.metrics.roc_curve gives them (drop_intermediate=True): one point per
    distinct score, highest first, the points inside a straight run dropped, (0, 0) at threshold inf first."""
    order = np.argsort(-np.asarray(score, dtype=np.float64), kind="stable")
    score, y_true = np.asarray(score, dtype=np.float64)[order], np.asarray(y_true)[order]
    last = np.r_[np.flatnonzero(np.diff(score)), y_true.size - 1]
    tps = np.cumsum(y_true == 1, dtype=np.float64)[last]
    fps, thresholds = 1 + last - tps, score[last]
    if len(fps) > 2:
        corners = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thresholds = fps[corners], tps[corners], thresholds[corners]
    tps, fps, thresholds = np.r_[0.0, tps], np.r_[0.0, fps], np.r_[np.inf, thresholds]
    fpr = fps / fps[-1] if fps[-1] > 0 else np.full(fps.shape, np.nan)
    tpr = tps / tps[-1] if tps[-1] > 0 else np.full(tps.shape, np.nan)
    return fpr, tpr, thresholds


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """The area under roc_curve (trapezoids); nan when y_true holds one class only."""
    if len(np.unique(y_true)) != 2:
        return float("nan")
    fpr, tpr, _ = roc_curve(y_true, score)
    return float(np.trapezoid(tpr, fpr))


def evaluate(predict, splits: Mapping[str, pa.Table]) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Accuracy, precision, recall, F1 and ROC AUC at threshold 0.5; the ROC curve and the confusion pairs."""
    x_test, y_test = features_and_target(splits["test"])
    y_test = y_test.astype(int)
    probability = predict(x_test).reshape(-1)
    y_pred = (probability >= 0.5).astype(int)
    metrics = {**{f"test/{name}": value for name, value in binary_scores(y_test, y_pred).items()},
               "test/roc_auc": roc_auc(y_test, probability), "test/rows": int(len(y_test))}
    fpr, tpr, thresholds = roc_curve(y_test, probability)
    roc = pd.DataFrame({"fpr": fpr, "tpr": tpr, "threshold": np.minimum(thresholds, 1.0)})
    confusion = pd.DataFrame({"actual": y_test, "predicted": y_pred})
    return metrics, {"roc.csv": roc, "confusion.csv": confusion}
