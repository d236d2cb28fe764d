"""The trained network exported for an inference runtime: what evaluate and serving load.

LiteRT (`.tflite`, one flatbuffer): TensorFlow converts it itself (Keras' `model.export(format=
"litert")`, no extra package), ai-edge-litert serves it with numpy alone (stages/evaluate.py), and
the same weights give the same bytes (no date, no random name inside), so dvc.lock keeps its hash
like the `.keras` file's.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import keras


def export_network(model: keras.Model, path: Path) -> None:
    """Write `model`'s inference graph (dropout off) to `path`, whose name ends in
    stages.core.contract.EXPORT_SUFFIX."""
    model.export(str(path), format="litert", verbose=False)
