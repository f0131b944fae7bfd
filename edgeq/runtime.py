"""Run a .tflite model on batches of data with ai-edge-litert, handling quantized inputs and outputs.

Callers feed float (or integer id) arrays by input name and get float outputs back: int8/uint8/int16
inputs are quantized and outputs dequantized with the model's own scale and zero point.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

from edgeq.errors import DataError, ModelLoadError, first_line
from edgeq.modelinfo import open_interpreter
from edgeq.nativeio import quiet_native_output


def quantize(x: np.ndarray, scale: float, zero_point: int, dtype: np.dtype) -> np.ndarray:
    """Float -> integer as TFLite's QUANTIZE op does: round to nearest, then clamp."""
    info = np.iinfo(dtype)
    return np.clip(np.round(x / scale) + zero_point, info.min, info.max).astype(dtype)


def dequantize(q: np.ndarray, scale: float, zero_point: int) -> np.ndarray:
    return ((q.astype(np.float32) - zero_point) * scale).astype(np.float32)


def join_rows(parts: list[np.ndarray], per_sample: bool) -> np.ndarray:
    """Per-batch outputs as one array with samples on axis 0. In one-sample-per-run mode, an output without
    a batch axis (a recurrent state ``[2, 1, 128]``) gets one rather than being concatenated."""
    if per_sample and any(p.ndim == 0 or p.shape[0] != 1 for p in parts):
        return np.stack(parts)
    return np.concatenate(parts)


class TFLiteRunner:
    """A LiteRT interpreter that takes named float batches and returns float outputs."""

    def __init__(self, path: Path | None = None, content: bytes | None = None, num_threads: int | None = None):
        self.interp = open_interpreter(path, content, num_threads=num_threads)
        self.where = str(path) if path is not None else "<converted model>"
        self.input_details = self.interp.get_input_details()
        self.output_details = self.interp.get_output_details()
        self._batch: int | None = None
        self._alloc_error: str | None = None
        sig = self.interp._get_full_signature_list().get("serving_default") if hasattr(  # noqa: SLF001
            self.interp, "_get_full_signature_list") else None
        by_index = {d["index"]: d for d in self.input_details}
        # Signature names ('image') are what users and FloatModels call inputs; tensor names differ.
        self.input_names = ({name: by_index[idx] for name, idx in sig["inputs"].items()} if sig
                            else {d["name"]: d for d in self.input_details})
        out_by_index = {d["index"]: d for d in self.output_details}
        self.output_names = ([name for name, _ in sorted(sig["outputs"].items())] if sig
                             else [d["name"] for d in self.output_details])
        self._outputs = ([out_by_index[idx] for _, idx in sorted(sig["outputs"].items())] if sig
                         else list(self.output_details))

    def _resolve(self, feeds: dict[str, np.ndarray]) -> list[tuple[dict, np.ndarray]]:
        if set(feeds) == set(self.input_names):
            return [(self.input_names[k], v) for k, v in feeds.items()]
        if len(feeds) == len(self.input_details) == 1:
            return [(self.input_details[0], next(iter(feeds.values())))]
        raise DataError(f"{self.where}: inputs {sorted(self.input_names)} do not match data arrays {sorted(feeds)}")

    def _prepare(self, batch: int) -> bool:
        if self._batch == batch:
            return True
        try:
            with quiet_native_output():  # the XNNPACK delegate announces itself on allocation
                for d in self.input_details:
                    self.interp.resize_tensor_input(d["index"], [batch, *d["shape"][1:]], strict=False)
                self.interp.allocate_tensors()
        except Exception as exc:  # noqa: BLE001 - a fixed-batch model refuses other batch sizes
            self._alloc_error = first_line(exc)[:160]
            if batch == 1:  # nothing smaller to try: the model itself cannot be prepared
                why = ("it needs an op this LiteRT does not have" if "custom op" in self._alloc_error
                       else "convert it again or check its input shapes")
                raise ModelLoadError(f"{self.where}: the interpreter cannot allocate it ({self._alloc_error}); "
                                     f"{why}") from None
            return False
        self.input_details = self.interp.get_input_details()
        self._batch = batch
        return True

    def run(self, feeds: dict[str, np.ndarray], batch_size: int = 64, progress_step=None) -> list[np.ndarray]:
        """Outputs (float32, signature order) for all samples in ``feeds``."""
        n = len(next(iter(feeds.values())))
        if self._static_batch_one():
            batch_size = 1  # resizing a static graph can "work" and compute garbage (RESHAPE to [1, N])
        results: list[list[np.ndarray]] = []
        start = 0
        while start < n:
            b = min(batch_size, n - start)
            if not self._prepare(b):
                batch_size = b = 1  # a model with a fixed batch of 1 (_prepare(1) raises if even that fails)
                self._prepare(1)
            chunk = {k: v[start:start + b] for k, v in feeds.items()}
            results.append(self._invoke(chunk))
            start += b
            if progress_step is not None:
                progress_step.advance(b)
        per_sample = batch_size == 1
        return [join_rows([r[i] for r in results], per_sample) for i in range(len(self._outputs))]

    def _static_batch_one(self) -> bool:
        """True when the model was converted with a fixed batch of 1 (edgeq's default for deployment)."""
        sigs = [d.get("shape_signature") for d in self.input_details]
        return bool(sigs) and all(s is not None and len(s) and int(s[0]) == 1 for s in sigs)

    def _invoke(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        by_index = {d["index"]: d for d in self.input_details}
        for d, x in self._resolve(feeds):
            d = by_index[d["index"]]
            dtype = np.dtype(d["dtype"])
            scale, zp = d["quantization"]
            if dtype.kind in "iu" and scale != 0.0 and np.asarray(x).dtype.kind == "f":
                x = quantize(x, scale, zp, dtype)
            self.interp.set_tensor(d["index"], np.asarray(x).astype(dtype, copy=False))
        try:
            self.interp.invoke()
        except RuntimeError as exc:  # kernels (and XNNPACK, which prepares on first run) reject damaged models here
            raise ModelLoadError(f"{self.where}: LiteRT cannot run it ({' '.join(first_line(exc).split())[:160]}); "
                                 "the file may be damaged: convert it again") from None
        outs = []
        for d in self._outputs:
            y = self.interp.get_tensor(d["index"])
            scale, zp = d["quantization"]
            if scale != 0.0:
                y = dequantize(y, scale, zp)
            elif y.dtype.kind == "f":
                y = y.astype(np.float32, copy=False)
            outs.append(y.copy())
        return outs
