"""The trained network as the train stage exports it (LiteRT, `.tflite`), served without TensorFlow.

train@<task> writes `models/<task>.tflite` beside the `.keras` file (stages/training/export.py);
evaluate@<task> and anyone scoring new rows load it here with ai-edge-litert's interpreter, which
starts in a tenth of a second where TensorFlow takes seconds. Its outputs equal Keras' `predict`
up to float32 rounding (tests/test_export_parity.py).
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np

from stages.core.errors import StageError

SUFFIX = ".tflite"   # what Keras' `model.export(format="litert")` requires of the path
RUNTIME = "ai-edge-litert"
INSTALL = f"pip install -c requirements.lock {RUNTIME}"   # `make setup` installs it too


def _interpreter_class():
    try:
        from ai_edge_litert.interpreter import Interpreter
    except ImportError:
        raise StageError(f"the LiteRT runtime is not installed; run `{INSTALL}` in the project's "
                         "virtual environment (or `make setup`)") from None
    return Interpreter


def load_exported(path: str | Path) -> Callable[[np.ndarray], np.ndarray]:
    """`predict(x)`: the exported network's outputs for the float32 rows x (a batch of any size).

    A missing or damaged file, or no runtime, is a StageError saying what to do."""
    path = Path(path)
    interpreter_class = _interpreter_class()
    if not path.is_file():
        raise StageError(f"{path} is missing; run `dvc repro` to train and export the network")
    try:
        # One thread: the same float sums in the same order on every machine and run.
        interpreter = interpreter_class(model_path=str(path), num_threads=1)
    except ValueError as error:
        raise StageError(f"{path} is not a LiteRT model ({error}); rebuild it with `dvc repro --force`") from None
    (inputs,), (outputs,) = interpreter.get_input_details(), interpreter.get_output_details()
    width = int(inputs["shape_signature"][-1])

    def predict(x: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 2 or x.shape[1] != width:
            raise StageError(f"{path} takes rows of {width} features, not {x.shape[1:]}; "
                             "the model and the data come from different runs: run `dvc repro`")
        interpreter.resize_tensor_input(inputs["index"], x.shape)
        interpreter.allocate_tensors()
        interpreter.set_tensor(inputs["index"], x)
        interpreter.invoke()
        return interpreter.get_tensor(outputs["index"])

    return predict
