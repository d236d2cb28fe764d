"""What a task asks of the network: its kind of prediction and the width of its output layer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["regression", "binary", "multiclass"]


@dataclass(frozen=True)
class Problem:
    kind: Kind
    outputs: int   # units of the output layer

    @property
    def is_classifier(self) -> bool:
        return self.kind != "regression"
