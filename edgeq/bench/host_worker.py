"""One benchmark of one model, run in a process of its own (``python -m edgeq.bench.host_worker``).

A fresh process per model keeps peak-memory numbers per model, keeps one model's crash (a segfault in a
delegate, an allocation abort) from taking the others down, and gives every model a cold start like an app
has. The parent writes a JSON spec on stdin; this process prints one JSON ``BenchResult`` line on stdout.
"""
from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgeq.bench.result import BenchResult, DelegateCoverage, LatencyStats
from edgeq.errors import first_line

RESULT_MARK = "EDGEQ_BENCH_RESULT "


@dataclass(frozen=True)
class WorkerSpec:
    model: str
    threads: int = 1
    runs: int = 50
    warmup: int = 5
    xnnpack: bool = True
    delegate_lib: str | None = None  # an external delegate .so (what --external_delegate_path is to benchmark_model)
    delegate_options: dict[str, str] | None = None
    inputs: str | None = None  # .npz with one array per input name (or 'x'); first sample used
    seed: int = 0
    target: str = "host"


def peak_rss_mb() -> float:
    """This process's peak resident set size (VmHWM), in MiB."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return kib / (1024.0 * 1024.0) if sys.platform == "darwin" else kib / 1024.0


def delegated_nodes(ops: list[dict]) -> set[int]:
    """Indices of the original nodes the DELEGATE nodes replaced: walking back from each partition's outputs
    to its inputs."""
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    producer = {t: o["index"] for o in originals for t in o["outputs"]}
    by_index = {o["index"]: o for o in originals}
    taken: set[int] = set()
    for k in (o for o in ops if o["op_name"] == "DELEGATE"):
        stop = {int(t) for t in k["inputs"]}
        todo = [int(t) for t in k["outputs"]]
        seen_t: set[int] = set()
        while todo:
            t = todo.pop()
            if t in seen_t or t in stop or t not in producer:
                continue
            seen_t.add(t)
            node = producer[t]
            if node not in taken:
                taken.add(node)
                todo.extend(int(i) for i in by_index[node]["inputs"] if i >= 0)
    return taken


def delegation(ops: list[dict], delegate_name: str) -> list[DelegateCoverage]:
    """Nodes each delegate kernel replaced, from the interpreter's node list after allocation.

    The node list keeps the original nodes and appends one DELEGATE node per partition. The original
    nodes a partition replaced are those found walking back from the partition's outputs to its inputs.
    """
    originals = [o for o in ops if o["op_name"] != "DELEGATE"]
    kernels = [o for o in ops if o["op_name"] == "DELEGATE"]
    if not kernels:
        return []
    taken = delegated_nodes(ops)
    left = tuple(sorted({o["op_name"] for o in originals if o["index"] not in taken}))
    return [DelegateCoverage(delegate=delegate_name, nodes_delegated=len(taken), nodes_total=len(originals),
                             partitions=len(kernels), not_delegated=left)]


def _feeds(interp, spec: WorkerSpec) -> dict[int, np.ndarray]:
    """Input arrays by tensor index: the first sample of --inputs, or random data in each input's range
    (unquantized integer inputs are ids or masks: 0/1, so an embedding lookup never reads out of bounds)."""
    from edgeq.runtime import quantize

    from edgeq.errors import DataError

    rng = np.random.default_rng(spec.seed)
    if spec.inputs:
        from edgeq.data import check_numpy_file

        check_numpy_file(Path(spec.inputs), "--inputs")
    try:
        arrays = _load_inputs(spec.inputs) if spec.inputs else {}
    except Exception as exc:  # a corrupt or pickled file: name it, not the model
        raise DataError(f"--inputs {spec.inputs}: not a readable .npz ({first_line(exc)[:120]}); save it with "
                        "numpy.savez(path, x=...)") from None
    feeds = {}
    details = interp.get_input_details()
    for d in details:
        dtype = np.dtype(d["dtype"])
        shape = [int(s) for s in d["shape"]]
        if spec.inputs:
            name_hits = [k for k in arrays if k == d["name"] or d["name"].startswith(f"serving_default_{k}:")]
            key = name_hits[0] if name_hits else ("x" if "x" in arrays and len(details) == 1 else None)
            if key is None:
                raise DataError(f"--inputs {spec.inputs}: no array for input '{d['name']}' (arrays: "
                                f"{sorted(arrays)}); store one array per input name, or 'x'")
            a = np.asarray(arrays[key][:1])
            if a.dtype.kind not in "biuf" or a.size != int(np.prod(shape)):
                raise DataError(f"--inputs {spec.inputs}: array '{key}' gives samples of shape {tuple(a.shape[1:])} "
                                f"({a.dtype}) but input '{d['name']}' takes {tuple(shape[1:])}; give data shaped "
                                "like the model's input")
            scale, zp = d["quantization"]
            if dtype.kind in "iu" and a.dtype.kind == "f" and scale:
                a = quantize(a, scale, zp, dtype)
            feeds[d["index"]] = a.astype(dtype).reshape(shape)
        elif dtype.kind in "iu" and d["quantization"][0]:  # quantized values: any of the type's range
            info = np.iinfo(dtype)
            feeds[d["index"]] = rng.integers(info.min, int(info.max) + 1, size=shape, dtype=dtype)
        elif dtype.kind in "iu":  # token ids, masks, indices: 0 and 1 are valid for any table or mask
            feeds[d["index"]] = rng.integers(0, 2, size=shape).astype(dtype)
        elif dtype.kind == "b":
            feeds[d["index"]] = rng.integers(0, 2, size=shape).astype(bool)
        else:
            feeds[d["index"]] = rng.uniform(-1.0, 1.0, size=shape).astype(dtype)
    return feeds


def run(spec: WorkerSpec) -> BenchResult:
    """Load, allocate, warm up and time ``spec.model``; errors become ``BenchResult.error``."""
    from edgeq.errors import EdgeqError
    from edgeq.nativeio import quiet_native_output

    delegate = spec.delegate_lib or ("xnnpack" if spec.xnnpack else "none")
    result = BenchResult(model=spec.model, target=spec.target, threads=spec.threads, delegate=delegate)
    result.device = {"machine": platform.machine(), "system": f"{platform.system()} {platform.release()}",
                     "python": platform.python_version(), "cpu_count": str(os.cpu_count())}
    try:
        from ai_edge_litert import interpreter as lr
        from ai_edge_litert.interpreter import OpResolverType

        result.device["runtime"] = f"ai-edge-litert {_version()}"
        result.device["rss_before_model_mb"] = f"{peak_rss_mb():.1f}"
        _check_file(Path(spec.model))
        kwargs: dict = {"model_path": spec.model, "num_threads": spec.threads}
        if not spec.xnnpack or spec.delegate_lib:
            kwargs["experimental_op_resolver_type"] = OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        with quiet_native_output():
            if spec.delegate_lib:
                try:
                    kwargs["experimental_delegates"] = [lr.load_delegate(spec.delegate_lib, spec.delegate_options or {})]
                except Exception as exc:
                    raise EdgeqError(f"delegate library {spec.delegate_lib} does not load "
                                     f"({first_line(exc)[:200]}); check the path and that it is built for "
                                     f"{platform.machine()}") from None
            t0 = time.perf_counter()
            try:
                interp = lr.Interpreter(**kwargs)
            except Exception as exc:
                raise EdgeqError(f"{spec.model}: LiteRT cannot load it ({first_line(exc)[:200]}); the file may be "
                                 "truncated or from a newer converter") from None
            try:
                interp.allocate_tensors()
            except Exception as exc:
                raise EdgeqError(f"{spec.model}: the interpreter cannot allocate it ({_prepare_failure(exc)}); "
                                 "convert it again or check its input shapes") from None
            result.init_ms = (time.perf_counter() - t0) * 1e3
        name = "TfLiteXNNPackDelegate" if delegate == "xnnpack" else Path(delegate).name
        result.delegation = delegation(interp._get_ops_details(), name)  # noqa: SLF001
        if delegate != "none" and not result.delegation:
            ops = interp._get_ops_details()  # noqa: SLF001
            result.delegation = [DelegateCoverage(name, 0, len(ops), 0, tuple(sorted({o["op_name"] for o in ops})))]
        for index, value in _feeds(interp, spec).items():
            interp.set_tensor(index, value)
        warm: list[float] = []
        for _ in range(max(1, spec.warmup)):  # the first run is always made: it is "first inference"
            t0 = time.perf_counter()
            interp.invoke()
            warm.append((time.perf_counter() - t0) * 1e3)
        result.first_inference_ms = warm[0]
        result.warmup = LatencyStats.from_samples(warm)
        times: list[float] = []
        for _ in range(spec.runs):
            t0 = time.perf_counter()
            interp.invoke()
            times.append((time.perf_counter() - t0) * 1e3)
        result.inference = LatencyStats.from_samples(times)
    except EdgeqError as exc:
        result.error = str(exc)
    except Exception as exc:  # the runtime's own errors: keep them to one line
        result.error = f"{spec.model}: {type(exc).__name__}: {first_line(exc)[:200]}"
    result.peak_memory_mb = peak_rss_mb()
    return result


def _load_inputs(path: str) -> dict[str, np.ndarray]:
    data = np.load(path, allow_pickle=False)
    if isinstance(data, np.ndarray):  # a .npy: one array, fed as 'x'
        return {"x": data}
    with data as z:
        return {k: z[k] for k in z.files}


def _check_file(p: Path) -> None:
    """The cheap checks before LiteRT sees the file (without building a second interpreter: memory counts)."""
    from edgeq.errors import ModelLoadError

    if not p.is_file():
        raise ModelLoadError(f"{p}: no such file; give a .tflite model")
    with open(p, "rb") as f:
        head = f.read(8)
    if len(head) < 8 or head[4:8] != b"TFL3":
        raise ModelLoadError(f"{p}: not a TFLite flatbuffer (no 'TFL3' identifier); give a .tflite file")


def _prepare_failure(exc: BaseException) -> str:
    """LiteRT glues the kernel's check and "Node number 0 (CONV_2D) failed to prepare." together: lead with the node."""
    import re

    text = " ".join(str(exc).split())
    node = re.search(r"Node number \d+ \(\w+\) failed to prepare", text)
    check = text.split("Node number")[0].strip()
    return f"{node.group(0)}: {check}"[:240] if node else first_line(exc)[:200]


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("ai-edge-litert")
    except PackageNotFoundError:
        return "unknown"


def main() -> int:
    spec = WorkerSpec(**json.loads(sys.stdin.read()))
    result = run(spec)
    sys.stdout.write(RESULT_MARK + json.dumps(result.to_dict()) + "\n")
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
