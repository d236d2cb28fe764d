"""Stage `generate`: the lab's synthetic data, y = f(x) + eps with f(x) = |x|(1 + sin^2 x) + 1."""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from stages.core.errors import run_stage
from stages.core.io import parquet_bytes, write_outputs
from stages.core.params import SyntheticConfig, load_params

DOMAIN_SCHEMA = pa.schema([("x", pa.float64()), ("y", pa.float64()), ("y_true", pa.float64())])
GRID_SCHEMA = pa.schema([("x", pa.float64()), ("y_true", pa.float64()), ("region", pa.string())])
SCHEMAS = {"domain": DOMAIN_SCHEMA, "grid": GRID_SCHEMA}
DOMAIN_GRID_POINTS = 401  # even grid on the domain, for drawing the fitted curve


def true_function(x: np.ndarray) -> np.ndarray:
    return np.abs(x) * (1.0 + np.sin(x) ** 2) + 1.0


def generate(config: SyntheticConfig, seed: int) -> dict[str, pd.DataFrame]:
    """`domain`: n uniform draws with noisy y; `grid`: an even grid of the true function across
    the domain and the extrapolation interval, each point labelled with its region."""
    rng = np.random.default_rng(seed)
    x = rng.uniform(*config.domain, size=config.n)
    y_true = true_function(x)
    domain = pd.DataFrame({"x": x, "y": y_true + rng.normal(0.0, config.noise_sigma, size=config.n), "y_true": y_true})

    # f is even, so the interval and its mirror image are both out of domain: show both sides.
    low, high = config.extrapolation
    outside = np.linspace(low, high, config.extrapolation_points)
    outside = np.concatenate([-outside, outside])
    outside = outside[(outside < config.domain[0]) | (outside > config.domain[1])]
    inside = np.linspace(*config.domain, DOMAIN_GRID_POINTS)
    x_grid = np.unique(np.concatenate([inside, outside]))
    region = np.where((x_grid >= config.domain[0]) & (x_grid <= config.domain[1]), "domain", "extrapolation")
    grid = pd.DataFrame({"x": x_grid, "y_true": true_function(x_grid), "region": region})
    return {"domain": domain, "grid": grid}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--out", type=Path, required=True, help="folder for domain.parquet and grid.parquet")
    args = parser.parse_args(argv)
    params = load_params(args.params)
    frames = generate(params.synthetic, params.seed)
    write_outputs({args.out / f"{name}.parquet": parquet_bytes(frame, SCHEMAS[name]) for name, frame in frames.items()})


if __name__ == "__main__":
    run_stage("generate", main)
