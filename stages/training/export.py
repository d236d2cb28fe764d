"""The trained network exported for an inference runtime: what evaluate and serving load.

LiteRT (`.tflite`, one flatbuffer): TensorFlow's own converter writes it (no extra package),
ai-edge-litert serves it with numpy alone (stages/evaluate.py), and the same weights give the same
bytes (no date, no random name inside), so dvc.lock keeps its hash like the `.keras` file's.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def exported_network(model: keras.Model) -> bytes:
    """`model`'s inference graph (dropout off) as a LiteRT flatbuffer, converted from its traced call.

    Not `model.export(format="litert")`: Keras writes a SavedModel to disk and converts that back, 0.6 s
    a network here against 0.1 s (a 5-seed heart run: 3 s of its train stage's 10 s), for the same
    outputs. The converter is given an empty tf.Module, not the Keras model, as the object that keeps
    the variables: given a Keras 3 model it converts the wrong weights (tests/test_export.py compares
    every export with Keras' predict)."""
    import tensorflow as tf

    (spec,) = model.inputs
    call = tf.function(lambda x: model(x, training=False),
                       input_signature=[tf.TensorSpec(spec.shape, spec.dtype)]).get_concrete_function()
    return tf.lite.TFLiteConverter.from_concrete_functions([call], tf.Module()).convert()
