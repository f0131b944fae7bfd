"""Does block reconstruction beat layer-by-layer rounding on a real model? (docs/ptq.md)

Converts a zoo model with ``--ptq auto`` on the zoo's calibration split, with its last step (sequential
rounding) replaced by one of:
  sequential  the step as it is (the reference)
  block       edgeq.quantize.prepare.block_reconstruction from the nearest rounding
  refine      sequential rounding, then block reconstruction starting from its integers and biases
(``--ranges``: block reconstruction also fits the activation ranges)
and scores the result on the zoo's eval split, as bench_ptq does. Prints every block's output-error change on
the samples it fitted and on the quarter it held back:
    python -m benchmarks.ptq_diagnosis.block_reconstruction efficientnet_lite0 --variant block refine
"""
import argparse
import re
import tempfile
import time
from pathlib import Path


class _Block:
    """The rounding step replaced by block reconstruction (from nearest, or from sequential rounding's result)."""

    name, needs_held_back = "rounding", True

    def __init__(self, variant: str, max_samples: int, drop: float = 0.0, ranges: bool = False):
        from edgeq.quantize.prepare.step import Backend

        self.variant, self.max_samples, self.backend, self.fits = variant, max_samples, Backend.CALIBRATED, ()
        self.drop, self.ranges = drop, ranges

    def candidates(self, cal, fit):
        from edgeq.quantize.prepare.block_reconstruction import reconstruct
        from edgeq.quantize.prepare.sequential_rounding import corrected
        from edgeq.quantize.prepare.step import Candidate

        start = corrected(cal, fit).calibrated if self.variant == "refine" else None
        done = reconstruct(cal, fit, start=start, max_samples=self.max_samples, drop=self.drop, ranges=self.ranges)
        if done is None:
            return []
        self.fits = done.fits
        return [Candidate(done.calibrated, f"{self.variant}: {done.blocks} blocks kept", self.variant, done.content)]


def _zoo_and_opencv(z, cache: Path, work: Path) -> Path:
    """calib_photos.py's largest set (6 crops of each of 8 + 23 photos) as an edgeq calibration file."""
    from PIL import Image

    from benchmarks.ptq_diagnosis.calib_photos import opencv_photos
    from benchmarks.ptq_diagnosis.calib_size import write_calib
    from benchmarks.zoo import data

    _, _, h, w = z.inputs[0].shape
    images = [data._photo(cache, n) for n in data.CALIB_PHOTOS] + [Image.open(p).convert("RGB")
                                                                    for p in opencv_photos(cache)]
    return write_calib(z, data.image_crops(images, 6, (h, w), data.SEED + 206), work / "calib.npz")


def main() -> None:
    from benchmarks.zoo import data, manifest
    from edgeq.api import convert
    from edgeq.modes import ConvertOptions, Mode, PtqChoice
    from edgeq.quantize.prepare import order
    from edgeq.quantize.prepare.sequential_rounding import SequentialRoundingStep

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model", help="zoo model with photo data, e.g. efficientnet_lite0")
    ap.add_argument("--variant", nargs="+", default=["sequential", "block", "refine"],
                    choices=["sequential", "block", "refine"])
    ap.add_argument("--calib", choices=["zoo", "zoo+opencv"], default="zoo",
                    help="the zoo's 48 calibration crops, or 6 crops of each of its 8 + OpenCV's 23 photos (186)")
    ap.add_argument("--max-samples", type=int, default=64, help="fit samples block reconstruction uses at most")
    ap.add_argument("--drop", type=float, default=0.0,
                    help="QDrop: the share of a block's input values fed float instead of int8 while fitting")
    ap.add_argument("--ranges", action="store_true",
                    help="also fit the activation ranges of each block (conv, depthwise, dense and add outputs)")
    ap.add_argument("--per-tensor", action="store_true", help="one weight scale per tensor (the zoo's int8_per_tensor)")
    a = ap.parse_args()
    cache = manifest.cache_dir()
    z = manifest.load().model(a.model)
    where = data.ready_dir(z, cache)
    work = Path(tempfile.mkdtemp(prefix="block_reconstruction-"))
    calib = where / "calib_edgeq.npz"
    if a.calib == "zoo+opencv":
        calib = _zoo_and_opencv(z, cache, work)
    default = order.steps
    for variant in a.variant:
        step = _Block(variant, a.max_samples, a.drop, a.ranges)
        order.steps = default if variant == "sequential" else (  # noqa: E731 - a diagnosis swaps one step
            lambda pc, learned, **kw: [step if isinstance(s, SequentialRoundingStep) else s
                                       for s in default(pc, learned, **kw)])
        t = time.perf_counter()
        opts = ConvertOptions(mode=Mode.INT8, calib=calib, ptq=PtqChoice.AUTO, per_channel=not a.per_tensor)
        r = convert(z.path(cache), opts,
                    out=work / f"{variant}.tflite", eval_data=where / "eval_edgeq.npz", input_shapes=dict(z.input_shapes))
        v = r.accuracy.vs_float
        for k, f in enumerate(step.fits):
            print(f"  block {k:2d}: {f.weights:8d} weights, {f.moved:7d} moved, output error {f.fit_db:+.2f} dB fitted, "
                  f"{f.held_db:+.2f} dB held back, {'kept' if f.kept else 'not kept'}")
        rounding = re.findall(r"(?:sequential_rounding|rounding) (?:kept|skipped)[^,;]*",
                              r.extra.get("ptq", {}).get("summary", ""))
        print(f"{a.model} {variant}: eval agreement {v.agreement:.3f}, SQNR {v.sqnr_db:.2f} dB; "
              f"{', '.join(rounding)}; {time.perf_counter() - t:.0f} s", flush=True)
    order.steps = default
    paired(z, cache, {v: work / f"{v}.tflite" for v in a.variant})


def paired(z, cache: Path, tflites: dict[str, Path]) -> None:
    """Each model's agreement gain over the first one on the zoo's eval crops, with the zoo report's interval
    (paired, resampling photos)."""
    from benchmarks.zoo import item, spread

    hits = {name: spread.parse_hits(item.measure(z, path, cache)[1]) for name, path in tflites.items()}
    first, *rest = tflites
    for name in rest:
        iv = spread.gap_interval(hits[name], hits[first], spread.eval_groups(z))
        print(f"{name} - {first}: {iv.point:+.1f} points of agreement [{iv.low:+.1f}, {iv.high:+.1f}] (95%)")


if __name__ == "__main__":
    main()
