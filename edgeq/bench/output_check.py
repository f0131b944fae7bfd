"""``--check-outputs``: the same inputs through the model on the host and on the device, max difference.

Catches kernels that compute differently on ARM (a different XNNPACK micro-kernel, FMA contraction, an int8
rounding path). Tolerance: float outputs may differ by 1e-4 of the reference's largest magnitude (at least
1e-4 absolute: float summation order differs between micro-kernels); integer outputs by one quantization
step (rounding of a tie may go either way between kernels). Anything beyond is reported as a mismatch.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

FLOAT_RTOL = 1e-4
INT_STEPS = 1


@dataclass(frozen=True)
class OutputCheck:
    max_abs_diff: float  # in the model's real (dequantized) output units
    max_steps: int | None  # largest difference in quantization steps (integer outputs only)
    tolerance: str
    ok: bool

    def as_facts(self) -> dict[str, str]:
        facts = {"outputs_max_abs_diff": f"{self.max_abs_diff:.3g}", "outputs_tolerance": self.tolerance,
                 "outputs_match": "yes" if self.ok else "NO"}
        if self.max_steps is not None:
            facts["outputs_max_steps"] = str(self.max_steps)
        return facts


def _interpreter(model: Path):
    from ai_edge_litert import interpreter as lr

    from edgeq.nativeio import quiet_native_output

    with quiet_native_output():
        it = lr.Interpreter(model_path=str(model), num_threads=1)
        it.allocate_tensors()
    return it


def make_inputs(model: Path, dest: Path, seed: int = 0) -> Path:
    """Seeded random inputs spanning each input's range, saved as in0, in1, ... (.npz)."""
    it = _interpreter(model)
    rng = np.random.default_rng(seed)
    arrays = {}
    for i, d in enumerate(it.get_input_details()):
        dt, shape = np.dtype(d["dtype"]), [int(s) for s in d["shape"]]
        if dt.kind in "iu":
            arrays[f"in{i}"] = rng.integers(np.iinfo(dt).min, np.iinfo(dt).max, size=shape, endpoint=True).astype(dt)
        else:
            arrays[f"in{i}"] = rng.uniform(-1.0, 1.0, size=shape).astype(dt)
    np.savez(dest, **arrays)
    return dest


def host_outputs(model: Path, inputs: Path) -> dict[str, np.ndarray]:
    it = _interpreter(model)
    feeds = dict(np.load(inputs))
    for i, d in enumerate(it.get_input_details()):
        it.set_tensor(d["index"], feeds[f"in{i}"])
    it.invoke()
    return {f"out{i}": it.get_tensor(d["index"]).copy() for i, d in enumerate(it.get_output_details())}


def compare(model: Path, reference: dict[str, np.ndarray], device: dict[str, np.ndarray]) -> OutputCheck:
    """Max difference over every output, in real units, against the tolerance above."""
    details = _interpreter(model).get_output_details()
    worst, worst_steps, ok, tol_text = 0.0, None, True, []
    for i, d in enumerate(details):
        ref, dev = reference[f"out{i}"], device.get(f"out{i}")
        if dev is None or dev.shape != ref.shape:
            return OutputCheck(float("inf"), None, "shapes must match", False)
        scale = float(d["quantization"][0] or 0.0)
        if ref.dtype.kind in "iu":
            steps = int(np.max(np.abs(ref.astype(np.int64) - dev.astype(np.int64)))) if ref.size else 0
            worst_steps = max(worst_steps or 0, steps)
            worst = max(worst, steps * (scale or 1.0))
            ok &= steps <= INT_STEPS
            tol_text.append(f"{INT_STEPS} step")
        else:
            diff = float(np.max(np.abs(ref.astype(np.float64) - dev.astype(np.float64)))) if ref.size else 0.0
            bound = FLOAT_RTOL * max(1.0, float(np.max(np.abs(ref)))) if ref.size else FLOAT_RTOL
            worst = max(worst, diff)
            ok &= bool(np.isfinite(diff)) and diff <= bound
            tol_text.append(f"{bound:.1g}")
    return OutputCheck(worst, worst_steps, ",".join(sorted(set(tol_text))), ok)
