"""The one interface every post-training preparation step has (``order.py`` holds the ordered list).

A step fits its variants of the model on the *fit* samples and returns them; the pipeline (``ptq.py``)
quantizes each, scores it on the held-back samples the step never saw, and keeps the best variant only
when it beats the model so far there. A step works on one of two backends: the Keras graph (before
conversion, weights and BatchNorm visible as layers) or the calibrated float flatbuffer (after conversion,
ranges recorded, any source). Adding a step is one module with a ``Step`` and one line in ``order.steps()``.
"""
from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Protocol

import numpy as np


class Backend(str, Enum):
    KERAS = "keras"  # a Keras model in, a Keras model out (single-input Keras sources)
    CALIBRATED = "calibrated"  # a ``Calibrated`` flatbuffer in, one out (every source)


@dataclass(frozen=True)
class Candidate:
    """One variant a step proposes: the changed model, what was done, and (optionally) its INT8 bytes when
    the step quantized it already."""

    model: object
    detail: str
    label: str = ""  # which variant, when a step tries several ("alpha 0.5", "mse")
    content: bytes | None = None


class Step(Protocol):
    name: str
    backend: Backend
    needs_held_back: bool  # fits many parameters: never judged on the samples it fitted

    def candidates(self, model, fit: dict[str, np.ndarray]) -> list[Candidate]:
        """Variants of ``model`` fitted on ``fit`` (input name -> samples); empty when there is nothing to do.
        Must not change ``model``."""
        ...


def only_input(fit: dict[str, np.ndarray]) -> np.ndarray:
    """The single input's samples (the Keras graph steps take single-input models)."""
    (x,) = fit.values()
    return x
