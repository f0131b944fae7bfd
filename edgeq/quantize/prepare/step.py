"""The one interface every post-training preparation step has (``order.py`` holds the ordered list).

A step fits its variants of the model on the *fit* samples and returns them; the pipeline (``ptq.py``)
quantizes each, scores it on the held-back samples the step never saw, and keeps the best variant only
when it beats the model so far there. A step works on one of two backends: the Keras graph (before
conversion, weights and BatchNorm visible as layers) or the calibrated float flatbuffer (after conversion,
ranges recorded, any source). Adding a step is one module with a ``Step`` and one line in ``order.steps()``.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, replace
from enum import Enum
from typing import Protocol

import numpy as np

from edgeq.errors import first_line
from edgeq.quantize.prepare.graph import clone


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


@dataclass(frozen=True)
class KerasStep:
    """A Keras graph step that is one in-place edit, ``fn(model, x) -> (model, n changed)``, run on a clone
    (``candidates`` must not change its input); one candidate, described by ``text`` with ``{n}`` filled in,
    when the edit changed something."""

    name: str  # reports and results key on it: keep it stable
    fn: Callable[[object, np.ndarray], tuple[object, int]]
    text: str  # e.g. "cross-layer equalization of {n} layer pairs"
    needs_held_back: bool = False
    backend: Backend = Backend.KERAS

    def candidates(self, model, fit: dict[str, np.ndarray]) -> list[Candidate]:
        changed, n = self.fn(clone(model), only_input(fit))
        return [Candidate(changed, self.text.format(n=n))] if n else []


def only_input(fit: dict[str, np.ndarray]) -> np.ndarray:
    """The single input's samples (the Keras graph steps take single-input models)."""
    (x,) = fit.values()
    return x


@dataclass(frozen=True)
class OneOf:
    """Steps that do the same job on one backend, run as one step: their candidates compete on the judging
    samples, each labelled with its step's name. One alternative failing leaves the others (its error goes
    into their detail); all failing raises the first error."""

    name: str
    alternatives: tuple[Step, ...]

    @property
    def backend(self) -> Backend:
        return self.alternatives[0].backend

    @property
    def needs_held_back(self) -> bool:
        return any(s.needs_held_back for s in self.alternatives)

    def candidates(self, model, fit: dict[str, np.ndarray]) -> list[Candidate]:
        found: list[Candidate] = []
        failed: list[tuple[str, Exception]] = []
        for step in self.alternatives:
            try:
                found += [replace(c, label=c.label or step.name) for c in step.candidates(model, fit)]
            except Exception as exc:  # noqa: BLE001 - an alternative may not apply where another does
                failed.append((step.name, exc))
        if failed and not found:
            raise failed[0][1]
        note = "".join(f"; {name} not applicable: {first_line(exc)[:100]}" for name, exc in failed)
        return [replace(c, detail=c.detail + note) for c in found]
