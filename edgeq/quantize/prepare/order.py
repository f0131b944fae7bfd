"""The ordered list of preparation steps the PTQ pipeline runs (and QAT replays).

Kept apart from ``step.py`` because it imports every step module, and every step module imports the
interface from ``step.py``: here the imports can be plain top-level ones.
"""
from __future__ import annotations

from edgeq.quantize.prepare.bias_absorb import BIAS_ABSORB_STEP
from edgeq.quantize.prepare.bias_correction import bias_correction_step
from edgeq.quantize.prepare.block_reconstruction import BlockReconstructionStep
from edgeq.quantize.prepare.equalize import EQUALIZE_STEP
from edgeq.quantize.prepare.equalize_calibrated import EqualizeCalibratedStep
from edgeq.quantize.prepare.fold_affine import FoldAffineStep
from edgeq.quantize.prepare.range_search import RangeSearchStep
from edgeq.quantize.prepare.ranges import RangesStep
from edgeq.quantize.prepare.sequential_rounding import SequentialRoundingStep
from edgeq.quantize.prepare.step import OneOf, Step


def steps(per_channel: bool, learned: bool, blocks: bool = False) -> list[Step]:
    """The steps in the order they run: Keras graph steps, then flatbuffer steps. Learned rounding with
    bias correction runs last, on the activation grids the earlier steps chose; ``learned`` adds the slow
    end-to-end range search before it; ``blocks`` makes block reconstruction compete with it."""
    ordered: list[Step] = [EQUALIZE_STEP, BIAS_ABSORB_STEP, bias_correction_step(per_channel), FoldAffineStep(),
                           EqualizeCalibratedStep(), RangesStep()]
    rounding: Step = (OneOf("rounding", (SequentialRoundingStep(), BlockReconstructionStep())) if blocks
                      else SequentialRoundingStep())
    return ordered + ([RangeSearchStep()] if learned else []) + [rounding]
