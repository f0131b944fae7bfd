"""Where fine-tuning starts: the graph edgeq's post-training INT8 prepared, not the raw float model.

The PTQ baseline (``edgeq.convert --mode int8``) measures its Keras graph steps and keeps those that help.
QAT replays the kept ones (BN folding first, then equalization, bias absorption, bias correction) on the
same calibration images, so the fake-quant model starts from the weights PTQ shipped; its activation ranges
then start from a calibration pass (``train.calibrate``), as PTQ's converter calibration does.
"""
from __future__ import annotations

import numpy as np

KERAS_STEPS = ("equalize", "bias_absorb", "bias_correction")


def prepared_start(keras_model, applied: list[str], calib_x: np.ndarray) -> tuple[object, list[str]]:
    """``keras_model`` flattened, with the Keras graph steps PTQ kept (``applied``) replayed; returns
    (model, steps replayed). With none kept, the model itself comes back (the QAT rewrite folds BN anyway)."""
    from edgeq.quantize.prepare.bias_absorb import absorb_biases
    from edgeq.quantize.prepare.bias_correction import correct_biases
    from edgeq.quantize.prepare.bn_fold import fold_batchnorm
    from edgeq.quantize.prepare.equalize import equalize
    from edgeq.quantize.prepare.flatten import flatten

    kept = [s for s in KERAS_STEPS if s in applied]
    if not kept:
        return keras_model, []
    model, n_bn = fold_batchnorm(flatten(keras_model).model)
    done = [f"bn_fold ({n_bn} layers)"]
    for name in kept:
        if name == "equalize":
            model, n = equalize(model, calib_x)
        elif name == "bias_absorb":
            model, n = absorb_biases(model, calib_x)
        else:
            model, n = correct_biases(model, calib_x, True)
        done.append(f"{name} ({n})")
    return model, done
