"""Where fine-tuning starts: the graph edgeq's post-training INT8 prepared, not the raw float model.

The PTQ baseline (``edgeq.convert --mode int8``) measures its Keras graph steps and keeps those that help.
QAT replays the kept ones (BN folding first, then equalization, bias absorption, bias correction) on the
same calibration images, so the fake-quant model starts from the weights PTQ shipped; its activation ranges
then start from a calibration pass (``train.calibrate``), as PTQ's converter calibration does.
"""
from __future__ import annotations

import numpy as np

def prepared_start(keras_model, applied: list[str], calib_x: np.ndarray) -> tuple[object, list[str]]:
    """``keras_model`` flattened, with the Keras graph steps PTQ kept (``applied``) replayed; returns
    (model, steps replayed). With none kept, the model itself comes back (the QAT rewrite folds BN anyway)."""
    from edgeq.quantize.prepare.bn_fold import fold_batchnorm
    from edgeq.quantize.prepare.flatten import flatten
    from edgeq.quantize.prepare.order import steps
    from edgeq.quantize.prepare.step import Backend

    kept = [s for s in steps(per_channel=True, learned=False) if s.backend is Backend.KERAS and s.name in applied]
    if not kept:
        return keras_model, []
    model, n_bn = fold_batchnorm(flatten(keras_model).model)
    done = [f"bn_fold ({n_bn} layers)"]
    for step in kept:  # the same steps PTQ ran, in its order, on all the calibration images
        candidates = step.candidates(model, {"x": calib_x})
        if candidates:
            model = candidates[0].model
        done.append(f"{step.name} ({candidates[0].detail if candidates else 'nothing to do'})")
    return model, done
