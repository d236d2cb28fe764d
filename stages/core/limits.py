"""Refuse, before any work, a configuration that cannot fit in this machine's memory.

The estimates are deliberately rough (within a few times of what TensorFlow and pandas really
take): their job is to turn a value with a few zeros too many into one line naming its key,
in a second, instead of a MemoryError or an allocation failure minutes later.
"""

from __future__ import annotations

import os
from typing import Any

from stages.core.params import ModelConfig, ParamsError

FLOAT32 = 4
# Per network weight while training: the weight, its gradient, Adam's two moments, the best
# weights kept for early stopping, and room for TensorFlow's temporaries.
BYTES_PER_WEIGHT = 8 * FLOAT32
# Per unit of a hidden layer and row of a batch: the forward activation, its gradient, dropout's mask.
BYTES_PER_ACTIVATION = 4 * FLOAT32


def available_memory() -> int:
    """Bytes the kernel says a new allocation can have (MemAvailable), else the physical memory."""
    try:
        with open("/proc/meminfo") as meminfo:
            for line in meminfo:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _gib(size: float) -> str:
    return f"{size / 2 ** 30:.3g} GiB"


def require_memory(needed: float, key: str, value: Any, what: str) -> None:
    """A ParamsError naming `key` when `needed` bytes exceed what the machine has available."""
    available = available_memory()
    if needed > available:
        raise ParamsError(f"params.yaml: {key} = {value!r} needs about {_gib(needed)} of memory for {what}; "
                          f"this machine has {_gib(available)} available: use a smaller value")


def network_weights(model: ModelConfig, inputs: int, outputs: int) -> int:
    """The weights of the lab's dense network: `depth` hidden layers of `width` units, then the output layer."""
    hidden = inputs * model.width + model.width + (model.depth - 1) * (model.width * model.width + model.width)
    return hidden + model.width * outputs + outputs


def require_network_fits(task: str, model: ModelConfig, batch_size: int, inputs: int, outputs: int) -> None:
    """Refuse a network (or a batch) too large to train here, naming the key that makes it so."""
    weights_bytes = network_weights(model, inputs, outputs) * BYTES_PER_WEIGHT
    activations_bytes = batch_size * model.width * model.depth * BYTES_PER_ACTIVATION
    if weights_bytes >= activations_bytes:
        key, value = ("width", model.width) if model.width >= model.depth else ("depth", model.depth)
        require_memory(weights_bytes + activations_bytes, f"{task}.model.{key}", value,
                       f"a {model.width} x {model.depth} network on {inputs} inputs")
    else:
        require_memory(weights_bytes + activations_bytes, f"{task}.train.batch_size", batch_size,
                       f"batches of {batch_size} rows through {model.depth} layers of {model.width} units")
