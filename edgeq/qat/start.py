"""Where fine-tuning starts: the graph edgeq's post-training INT8 prepared, not the raw float model.

The PTQ baseline (``edgeq.convert --mode int8``) measures its steps and keeps those that help. QAT replays
the kept ones that have a Keras form (BN folding first, then equalization, bias absorption, bias correction,
and the flatbuffer's activation-aware equalization through ``equalize_activations``) on the same calibration
images, so the fake-quant model starts from the weights PTQ shipped; its activation ranges then start from a
calibration pass (``train.calibrate``), as PTQ's converter calibration does. Learned rounding, a flatbuffer
step with no Keras form, is not replayed: fine-tuning moves the weights it would round.
"""
from __future__ import annotations

import numpy as np

def prepared_start(keras_model, ptq_steps: list[dict], calib_x: np.ndarray) -> tuple[object, list[str]]:
    """``keras_model`` flattened, with the steps PTQ kept (``ptq_steps``: the report's ``ptq.steps``) that have
    a Keras form replayed; returns (model, steps replayed). With none kept, the model itself comes back (the
    QAT rewrite folds BN anyway).

    Keras graph steps are replayed as they are; ``equalize_calibrated`` (a flatbuffer step) through its Keras
    form (``equalize_activations``) with the migration strength PTQ chose."""
    from edgeq.quantize.prepare.bn_fold import fold_batchnorm
    from edgeq.quantize.prepare.equalize_activations import equalize_activations
    from edgeq.quantize.prepare.flatten import flatten
    from edgeq.quantize.prepare.order import steps
    from edgeq.quantize.prepare.step import Backend

    kept_steps = {s["name"]: s for s in ptq_steps if s.get("applied")}
    kept = [s for s in steps(per_channel=True, learned=False) if s.backend is Backend.KERAS and s.name in kept_steps]
    alpha = _alpha(kept_steps.get("equalize_calibrated"))
    if not kept and alpha is None:
        return keras_model, []
    model, n_bn = fold_batchnorm(flatten(keras_model).model)
    done = [f"bn_fold ({n_bn} layers)"]
    for step in kept:  # the same steps PTQ ran, in its order, on all the calibration images
        candidates = step.candidates(model, {"x": calib_x})
        if candidates:
            model = candidates[0].model
        done.append(f"{step.name} ({candidates[0].detail if candidates else 'nothing to do'})")
    if alpha is not None:  # after the Keras steps, as in PTQ (flatbuffer steps run after conversion)
        model, n = equalize_activations(model, calib_x, alpha)
        done.append(f"equalize_calibrated ({n} chains, alpha {alpha:g}, on the Keras layers)")
    return model, done


def _alpha(step: dict | None) -> float | None:
    try:
        return float(step["label"]) if step else None
    except (KeyError, TypeError, ValueError):
        return None
