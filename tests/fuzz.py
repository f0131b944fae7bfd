"""Seeded fuzzing of edgeq's CLI with damaged real files: truncated and bit-flipped .tflite, .onnx,
.keras and .npz from sample_models/ (and a .tflite converted from them).

Every case must end with exit 0 or 2 (2: exactly one stderr line, no traceback), within a time limit,
with no file left behind (in the case's folder or in $TMPDIR) — never a signal, never exit 1.

Cases run in-process (``edgeq.cli.main.main``) inside a worker subprocess, so a crash is observed: the
parent records the case that was running when the worker died and starts a new worker after it.

    python -m tests.fuzz --cases 2000 --seed 1       # what `make fuzz` runs
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"
CNN = SAMPLES / "fashion_cnn"
# How often each kind of file is damaged (weights), and the command that reads it. ONNX and Keras cases that
# survive damage run a whole conversion, so they are rarer and mostly truncations / early flips.
KINDS = {"full": (("tflite", 50), ("npz", 30), ("keras", 12), ("onnx", 8)),
         # `make test`: the cheap readers mostly; ONNX only truncated (a damaged-but-valid graph converts for 30 s)
         "quick": (("tflite", 60), ("npz", 32), ("keras", 4), ("onnx", 4))}


@dataclass
class Outcome:
    case: int
    kind: str
    how: str
    argv: list[str]
    code: int | None = None  # None: the worker died (signal) or hung
    problem: str = ""
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problem


@dataclass
class Summary:
    outcomes: list[Outcome] = field(default_factory=list)

    @property
    def failures(self) -> list[Outcome]:
        return [o for o in self.outcomes if not o.ok]

    def counts(self) -> dict[str, int]:
        c: dict[str, int] = {}
        for o in self.outcomes:
            key = f"{o.kind} exit {o.code}" if o.ok else f"{o.kind} FAILED"
            c[key] = c.get(key, 0) + 1
        return dict(sorted(c.items()))


def corpus(work: Path) -> dict[str, Path]:
    """The undamaged files; the .tflite (full INT8 of fashion_cnn) and a small eval set are made once."""
    import numpy as np

    work.mkdir(parents=True, exist_ok=True)
    files = {"keras": CNN / "model.keras", "onnx": SAMPLES / "fashion_torch" / "model.onnx",
             "tflite": work / "cnn_int8.tflite", "npz": work / "eval64.npz"}
    if not files["npz"].exists():
        with np.load(CNN / "eval.npz") as z:
            np.savez(files["npz"], x=z["x"][:64], y=z["y"][:64])
    if not files["tflite"].exists():
        from edgeq.convert import convert
        from edgeq.modes import ConvertOptions, Mode, PtqChoice

        convert(CNN / "model.keras", ConvertOptions(mode=Mode.INT8, calib=CNN / "calib.npz", calib_samples=32,
                                                    ptq=PtqChoice.PLAIN), out=files["tflite"])
    return files


def mutate(data: bytes, rng: random.Random, kind: str, quick: bool = False) -> tuple[bytes, str]:
    """Truncate, flip bits or overwrite a run of bytes; ONNX damage stays in the graph (the file's head)."""
    b = bytearray(data)
    how = rng.choice(("truncate", "flip", "flip", "overwrite"))
    if quick and kind == "onnx":
        how = "truncate"
    span = len(b) if kind != "onnx" else max(64, len(b) // 20)
    if how == "truncate":
        n = rng.randrange(len(b))
        return bytes(b[:n]), f"truncate to {n}"
    if how == "flip":
        pos = sorted(rng.randrange(span) for _ in range(rng.randint(1, 8)))
        for i in pos:
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b), f"flip bits at {pos}"
    i = rng.randrange(8, span)
    n = min(rng.randint(1, 256), len(b) - i)
    b[i:i + n] = rng.randbytes(n)
    return bytes(b), f"overwrite {n} bytes at {i}"


def plan(files: dict[str, Path], n: int, seed: int, quick: bool) -> list[tuple[str, str, bytes, list[str]]]:
    """(kind, how, damaged bytes, argv with '{M}' for the damaged file and '{OUT}' for an output)."""
    rng = random.Random(seed)
    mix = KINDS["quick" if quick else "full"]
    kinds = [k for k, _ in mix]
    weights = [w for _, w in mix]
    cases = []
    originals = {k: p.read_bytes() for k, p in files.items()}
    for i in range(n):
        kind = rng.choices(kinds, weights)[0]
        data, how = mutate(originals[kind], rng, kind, quick)
        suffix = "." + kind
        if kind == "tflite":
            argv = (["bench", "{M}", "--runs", "1", "--warmup", "1", "--no-progress"] if i % 10 == 0 else
                    ["eval", "{M}", "--data", str(files["npz"]), "--no-progress"] if i % 2 else ["inspect", "{M}"])
        elif kind == "npz":
            argv = (["bench", str(files["tflite"]), "--inputs", "{M}", "--runs", "1", "--warmup", "1",
                     "--no-progress"] if i % 5 == 0 else ["eval", str(files["tflite"]), "--data", "{M}",
                                                          "--no-progress"])
        else:
            argv = ["convert", "{M}", "--mode", "fp32", "--out", "{OUT}", "--no-progress"]
        cases.append((kind, how, data, [a.replace("{M}", "{M}" + suffix) for a in argv]))
    return cases


def _check_case(folder: Path, tmpdir: Path, m: Path, out: Path, code: int, err: str) -> str:
    if code not in (0, 2):
        return f"exit {code}: {err.strip()[-300:]}"
    lines = [ln for ln in err.splitlines() if ln.strip() and not ln.startswith("edgeq: note")]
    if "Traceback" in err:
        return "traceback on stderr"
    if code == 2 and len(lines) != 1:
        return f"{len(lines)} stderr lines: {err.strip()[-300:]}"
    left = sorted(p.name for p in folder.iterdir() if p != m and not (code == 0 and p == out))
    if left:
        return f"stray files {left}"
    # TensorFlow's autograph keeps generated sources until the process exits (and removes them then)
    temp = sorted(p.name for p in tmpdir.iterdir() if not p.name.startswith("__autograph_generated_file"))
    if temp:
        return f"stray files in TMPDIR {temp}"
    return ""


def worker(work: Path, seed: int, start: int, n: int, quick: bool) -> None:
    """Run cases start..n-1 in this process; one JSON line before ('start') and after ('done') each."""
    from edgeq.cli.main import main

    files = corpus(work)
    tmpdir = Path(tempfile.gettempdir())
    _clear(tmpdir)  # what making the corpus left there is not a case's fault
    for i, (kind, how, data, argv) in enumerate(plan(files, n, seed, quick)):
        if i < start:
            continue
        folder = work / "case"
        shutil.rmtree(folder, ignore_errors=True)
        folder.mkdir()
        m, out = folder / f"m.{kind}", folder / "out.tflite"
        m.write_bytes(data)
        args = [a.replace("{M}." + kind, str(m)).replace("{OUT}", str(out)) for a in argv]
        print(json.dumps({"start": i, "kind": kind, "how": how, "argv": args}), flush=True)
        t = time.perf_counter()
        err = io.StringIO()
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
        problem = _check_case(folder, tmpdir, m, out, code, err.getvalue())
        if m.read_bytes() != data:
            problem = problem or "the input file was modified"
        _clear(tmpdir)  # don't let one case's leftovers fail the next
        print(json.dumps({"done": i, "code": code, "problem": problem, "seconds": time.perf_counter() - t}),
              flush=True)


def _clear(folder: Path) -> None:
    for p in folder.iterdir():
        shutil.rmtree(p, ignore_errors=True) if p.is_dir() else p.unlink()


def run(n: int, seed: int, work: Path, case_timeout: float = 180.0, log=None, quick: bool = False) -> Summary:
    """Run ``n`` seeded cases in worker subprocesses; a worker that dies or hangs fails that case."""
    work.mkdir(parents=True, exist_ok=True)
    tmpdir = work / "tmp"
    tmpdir.mkdir(exist_ok=True)
    env = dict(os.environ, TMPDIR=str(tmpdir), TF_CPP_MIN_LOG_LEVEL="3",
               PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    summary, start = Summary(), 0
    while start < n:
        proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz", "--worker", "--work", str(work), "--seed",
                                 str(seed), "--start", str(start), "--cases", str(n), *(["--quick"] if quick else [])],
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env, cwd=ROOT,
                                start_new_session=True)
        current: Outcome | None = None
        deadline = time.monotonic() + case_timeout + 120  # the first case also prepares the corpus
        died = None
        for line in _lines(proc, lambda: deadline):
            if line is None:  # hung
                os.killpg(proc.pid, signal.SIGKILL)
                died = f"no result within {case_timeout:.0f} s"
                break
            msg = json.loads(line)
            if "start" in msg:
                current = Outcome(msg["start"], msg["kind"], msg["how"], msg["argv"])
                deadline = time.monotonic() + case_timeout
            elif "done" in msg and current is not None:
                current.code, current.problem, current.seconds = msg["code"], msg["problem"], msg["seconds"]
                summary.outcomes.append(current)
                if log:
                    log(current)
                start, current = current.case + 1, None
        proc.wait()
        if current is not None:  # the worker died (or hung) in the middle of this case
            current.problem = died or f"worker died: {_how(proc.returncode)}"
            summary.outcomes.append(current)
            if log:
                log(current)
            start = current.case + 1
        elif proc.returncode != 0 and start < n:
            raise RuntimeError(f"fuzz worker failed outside a case ({_how(proc.returncode)})")
    return summary


def _lines(proc: subprocess.Popen, deadline):
    """stdout lines of ``proc``; None once ``deadline()`` passes without a line."""
    import selectors

    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ)
    while True:
        if not sel.select(timeout=max(0.0, deadline() - time.monotonic())):
            yield None
            return
        line = proc.stdout.readline()
        if not line:
            return
        if line.startswith("{"):
            yield line


def _how(code: int | None) -> str:
    if code is not None and code < 0:
        return signal.Signals(-code).name
    return f"exit {code}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--cases", type=int, default=2000)
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--work", type=Path, default=None, help="work folder (default: a temporary one)")
    p.add_argument("--quick", action="store_true", help="the cheap mix `make test` runs")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--start", type=int, default=0, help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        worker(a.work, a.seed, a.start, a.cases, a.quick)
        return 0
    with tempfile.TemporaryDirectory(prefix="edgeq-fuzz-") as tmp:
        work = a.work or Path(tmp)

        def log(o: Outcome) -> None:
            if not o.ok:
                print(f"FAIL case {o.case} {o.kind} ({o.how}): {' '.join(o.argv)}: {o.problem}", flush=True)

        t = time.perf_counter()
        s = run(a.cases, a.seed, work, log=log, quick=a.quick)
        print(f"{len(s.outcomes)} cases in {time.perf_counter() - t:.0f} s, seed {a.seed}: {s.counts()}")
        print(f"{len(s.failures)} failures")
        return 1 if s.failures else 0


if __name__ == "__main__":
    sys.exit(main())
