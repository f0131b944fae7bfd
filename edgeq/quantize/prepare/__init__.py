"""Float-graph preparation before post-training INT8 (issue 8): one algorithm per module.

``bn_fold`` -> ``equalize`` -> ``bias_absorb`` -> ``bias_correction`` edit a Keras functional model's
weights (the float function is kept); ``ranges`` edits the converter's calibrated activation ranges;
``ptq`` runs them, measures each on the calibration data and keeps only what helps.
"""
