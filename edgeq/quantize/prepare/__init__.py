"""Float-graph preparation before post-training INT8 (issue 8): one algorithm per module.

``bn_fold`` -> ``equalize`` -> ``bias_absorb`` -> ``bias_correction`` edit a Keras functional model's
weights (the float function is kept); ``fold_affine`` folds per-channel MUL/ADD constants into the conv/dense
before them and ``ranges`` edits activation ranges, both in the converter's calibrated flatbuffer (any source);
``ptq`` runs them, measures each on the calibration data and keeps only what helps.
"""
