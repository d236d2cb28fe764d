"""The dense network of the lab, built by one small function from config."""

from __future__ import annotations

import keras

from stages.core.params import ModelConfig
from stages.core.problem import Problem

OUTPUT_ACTIVATION = {"regression": None, "binary": "sigmoid", "multiclass": "softmax"}
LOSS = {"regression": "mse", "binary": "binary_crossentropy", "multiclass": "sparse_categorical_crossentropy"}


def build_model(config: ModelConfig, input_dim: int, problem: Problem, seed: int) -> keras.Model:
    """Dense layers of `config.width` units, `config.depth` of them, then the problem's output layer."""
    regularizer = keras.regularizers.L2(config.l2) if config.l2 > 0 else None
    layers: list[keras.layers.Layer] = [keras.Input(shape=(input_dim,))]
    for index in range(config.depth):
        layers.append(keras.layers.Dense(
            config.width, activation=config.activation, kernel_regularizer=regularizer,
            kernel_initializer=keras.initializers.GlorotUniform(seed=seed + index), name=f"hidden_{index + 1}"))
        if config.dropout > 0:
            layers.append(keras.layers.Dropout(config.dropout, seed=seed + 1000 + index, name=f"dropout_{index + 1}"))
    layers.append(keras.layers.Dense(
        problem.outputs, activation=OUTPUT_ACTIVATION[problem.kind],
        kernel_initializer=keras.initializers.GlorotUniform(seed=seed + 999), name="output"))
    return keras.Sequential(layers, name=f"dense_{config.width}x{config.depth}")
