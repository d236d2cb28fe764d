"""Part 1 of the lab: regression of f(x) = |x|(1 + sin^2 x) + 1 + eps on a domain, and how badly
the network extrapolates outside it.

Raw data (stage `generate`): `domain.parquet`, n uniform draws with noisy y and the truth y_true;
`grid.parquet`, an even grid of the true function across the domain and the extrapolation
interval, each point labelled with its region. Processed: a seeded train/test split of the
draws, and the grid passed through for evaluation.
"""

from __future__ import annotations

import io
from typing import Mapping

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import Field, ValidationInfo, field_validator
from pydantic_core import PydanticCustomError

from stages.core.errors import StageError
from stages.core.io import parquet_bytes
from stages.core.params import Interval, ParamsModel, Share, require_memory
from stages.core.problem import Problem

TITLE = "Synthetic regression"
LAB_PART = 1
PROBLEM = Problem("regression", 1)
HEADLINE_METRIC = "test/relative_mse"
# What `dvc exp show` shows of this task, as `synthetic/<short name>`: short name -> evaluate's metric.
HEADLINE_METRICS = {"rel_mse": "test/relative_mse", "ood_mse": "ood/mse_vs_truth", "val_loss": "val/loss"}
RAW_FILES = ("domain.parquet", "grid.parquet")
EVALUATION_SPLITS = ("test", "grid")
REPORT_SPLITS = ("train", "test")
PLOT_COLUMNS = {"predictions.csv": ("x", "y_true", "y_pred", "region")}

DOMAIN_SCHEMA = pa.schema([("x", pa.float64()), ("y", pa.float64()), ("y_true", pa.float64())])
GRID_SCHEMA = pa.schema([("x", pa.float64()), ("y_true", pa.float64()), ("region", pa.string())])
DOMAIN_GRID_POINTS = 401  # even grid on the domain, for drawing the fitted curve
# Per drawn point while generating, splitting and writing: three float64 columns, copied a few times.
BYTES_PER_POINT = 3 * 8 * 6


class DataParams(ParamsModel):
    """`synthetic.data`: what `generate` draws and how `preprocess` splits it."""

    n: int = Field(ge=10, description="points drawn uniformly on the domain")
    domain: Interval = Field(description="where the network is trained")
    noise_sigma: float = Field(ge=0, allow_inf_nan=False, description="standard deviation of eps")
    extrapolation: Interval = Field(description="the out-of-domain interval, to show extrapolation fails")
    extrapolation_points: int = Field(ge=2, description="evenly spaced grid points on that interval, per side")
    test_size: Share = Field(description="held-out share of the n points")

    @field_validator("extrapolation")
    @classmethod
    def _reaches_outside_the_domain(cls, value: tuple[float, float], info: ValidationInfo) -> tuple[float, float]:
        domain = info.data.get("domain")
        if domain and value[1] <= domain[1] and value[0] >= domain[0]:
            raise PydanticCustomError("outside", "inside the domain",
                                      {"allowed": "an interval reaching outside synthetic.data.domain"})
        return value


def true_function(x: np.ndarray) -> np.ndarray:
    return np.abs(x) * (1.0 + np.sin(x) ** 2) + 1.0


def generate_frames(data: DataParams, seed: int) -> dict[str, pd.DataFrame]:
    """The draws (`domain`) and the truth grid (`grid`), as frames."""
    require_memory(data.n * BYTES_PER_POINT, "synthetic.data.n", data.n, "the points to draw")
    require_memory(data.extrapolation_points * 2 * BYTES_PER_POINT, "synthetic.data.extrapolation_points",
                   data.extrapolation_points, "the extrapolation grid")
    rng = np.random.default_rng(seed)
    x = rng.uniform(*data.domain, size=data.n)
    y_true = true_function(x)
    domain = pd.DataFrame({"x": x, "y": y_true + rng.normal(0.0, data.noise_sigma, size=data.n), "y_true": y_true})

    # f is even, so the interval and its mirror image are both out of domain: show both sides.
    low, high = data.extrapolation
    outside = np.linspace(low, high, data.extrapolation_points)
    outside = np.concatenate([-outside, outside])
    outside = outside[(outside < data.domain[0]) | (outside > data.domain[1])]
    inside = np.linspace(*data.domain, DOMAIN_GRID_POINTS)
    x_grid = np.unique(np.concatenate([inside, outside]))
    region = np.where((x_grid >= data.domain[0]) & (x_grid <= data.domain[1]), "domain", "extrapolation")
    grid = pd.DataFrame({"x": x_grid, "y_true": true_function(x_grid), "region": region})
    return {"domain": domain, "grid": grid}


def generate(data: DataParams, seed: int) -> dict[str, bytes]:
    """The raw files: domain.parquet and grid.parquet."""
    frames = generate_frames(data, seed)
    return {"domain.parquet": parquet_bytes(frames["domain"], DOMAIN_SCHEMA),
            "grid.parquet": parquet_bytes(frames["grid"], GRID_SCHEMA)}


def read_raw(files: Mapping[str, bytes], source: str) -> dict[str, pd.DataFrame]:
    try:
        return {name.removesuffix(".parquet"): pq.read_table(io.BytesIO(files[name])).to_pandas() for name in RAW_FILES}
    except pa.ArrowInvalid as error:
        raise StageError(f"{source}: not readable Parquet ({error}); run `dvc repro --force generate`") from None


def preprocess(raw: Mapping[str, pd.DataFrame], data: DataParams, seed: int) -> dict[str, pa.Table]:
    """A seeded train/test split of the draws; the truth grid passes through for evaluation."""
    from sklearn.model_selection import train_test_split

    train, test = train_test_split(raw["domain"], test_size=data.test_size, random_state=seed)
    tables = {name: pa.Table.from_pandas(frame, schema=DOMAIN_SCHEMA, preserve_index=False)
              for name, frame in {"train": train, "test": test}.items()}
    return {**tables, "grid": pa.Table.from_pandas(raw["grid"], schema=GRID_SCHEMA, preserve_index=False)}


def features_and_target(table: pa.Table) -> tuple[np.ndarray, np.ndarray]:
    x = table.column("x").to_numpy().astype(np.float32).reshape(-1, 1)
    return x, table.column("y").to_numpy().astype(np.float32)


def evaluate(predict, splits: Mapping[str, pa.Table]) -> tuple[dict, dict[str, pd.DataFrame]]:
    """Test MSE (and the lab's relative MSE), and the error against the truth in and out of the domain."""
    test, grid = splits["test"], splits["grid"]
    x_test, y_test = features_and_target(test)
    y_pred = predict(x_test).reshape(-1)
    mse = float(np.mean((y_pred - y_test) ** 2))
    x_grid = grid.column("x").to_numpy()
    grid_frame = pd.DataFrame({"x": x_grid, "y_true": grid.column("y_true").to_numpy(),
                               "y_pred": predict(x_grid.astype(np.float32).reshape(-1, 1)).reshape(-1),
                               "region": grid.column("region").to_pylist()})
    squared_error = (grid_frame["y_pred"] - grid_frame["y_true"]) ** 2
    metrics = {
        "test/mse": mse,
        "test/relative_mse": mse / float(np.mean(y_test)) ** 2,  # the lab's MSE / mean(y)^2
        "test/mse_vs_truth": float(np.mean((y_pred - test.column("y_true").to_numpy()) ** 2)),
        "domain/mse_vs_truth": float(squared_error[grid_frame["region"] == "domain"].mean()),
        "ood/mse_vs_truth": float(squared_error[grid_frame["region"] == "extrapolation"].mean()),
    }
    return metrics, {"predictions.csv": grid_frame}
