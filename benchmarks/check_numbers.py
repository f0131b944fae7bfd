"""Every measured number in README.md and docs/*.md, found in a committed results file, or reported.

What counts as a measured number: any number written with a decimal point or an exponent (90.90, +0.20,
0.259x, 1.19e-06), any percentage, every count written "N of M" or "N/M", and whole durations and ratios
(162 s, 17 ms, 198x). Other integers standing alone (300 images, 2,000 samples, 224x224) are settings and are
not checked; versions, addresses and file names are
skipped. A number that looks measured but is not (a goal such as "<= 0.27x", a constant) is listed in
NOT_MEASURED with the reason. A paragraph, table or code block whose numbers no benchmark reproduces (one
run's example output, a one-off investigation) is preceded by a line ``<!-- numbers: REASON -->`` and should
say so in its text too; the checker lists its numbers under that reason, and counts them.

Where it must be found: in the results files of the benchmarks its paragraph names (`bench_convert` ...), else
those its section names, else those the document names, else any ``benchmarks/results/*.json`` (the zoo's
too). A quote matches a value when the value written with as many decimals gives the same digits (sign
ignored: "drop +0.20 pt" and "drop_points: -0.2" are one fact told two ways), directly, x100 (a fraction
quoted as %), or /1024 and /1024^2 (a value whose key says bytes or size, quoted in KiB/MiB); numbers written
inside results strings (the markdown tables, captured tool output) or in the markdown a results file is
rendered into beside it (``zoo.md`` beside ``zoo.json``: the zoo report's gap intervals) match as written. A quote with one significant digit (or two, when no benchmark is named around it) must be
written in the results or equal a value exactly: a bare "0.05" would otherwise match some 0.0512 by chance.

``python -m benchmarks.check_numbers [--all]`` lists the numbers (all, or the mismatches) with their source;
exit code 1 on any mismatch.
"""
from __future__ import annotations

import json
import math
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SAMPLE_META = ROOT / "sample_models"  # */meta.json: what training measured for each sample (always searched)

# (file, the number as written, a piece of its line, why it is not a measurement)
NOT_MEASURED: tuple[tuple[str, str, str, str], ...] = (  # "*": every number on that line
    ("README.md", "*", "time  load ", "wall times of one `make demo` run (they vary run to run)"),
    ("README.md", "*", "ptq  calib SQNR", "the PTQ step report of one `make demo` run (bench_convert keeps size, top-1 "
                                         "and fidelity, not the step report)"),
    ("README.md", "0.5", "--max-drop 0.5", "an example flag value"),
    ("README.md", "0.1", "The 0.1 spellings", "a release number"),
    ("docs/qat.md", "*", "fixed int8 output range", "TFLite's fixed output ranges of LOGISTIC/TANH, constants"),
    ("README.md", "0.27", "INT8 <= 0.27x FP32", "the size goal, not a result"),
    ("docs/bench.md", "*", "# 7.25  'TfLiteGpuDelegateV2", "the parser's output on a test fixture"),
    ("docs/bench.md", "0.01", "`litert-benchmark`'s 0.01 ms", "litert-benchmark's print resolution"),
    ("README.md", "0.51", "FP16 <= 0.51x", "the size goal, not a result"),
    ("docs/devices.md", "3.9", "Python >= 3.9", "a requirement"),
    ("docs/devices.md", "1e-4", "float: 1e-4 of the output range", "the tolerance edgeq uses"),
    ("docs/qat.md", "1e-4", "default 1e-4", "the default learning rate"),
    ("docs/qat.md", "1/1", "epoch 1/1", "the epoch counter"),
    ("docs/qat.md", "18.7", "val top-1 (simulated int8)", "the epoch's wall time in the run the example shows"),
    ("docs/qat.md", "*", "time  load ", "wall times of the run the example shows"),
    ("docs/ptq.md", "1e-6", "max output difference ~1e-6", "checked when the sample was built (build.py)"),
    ("docs/mixed.md", "0.29", "~0.29 is ideal rounding", "the metric's value for ideal rounding (1/sqrt(12))"),
    ("docs/int16x8.md", "0/1", "0/1 mask values", "mask values, not a count"),
    ("docs/int16x8.md", "0.0", "a float `0.0`", "a constant's value"),
    ("docs/onnx.md", "1/256", "[1/256, 128]", "XNNPACK's int8 requantization limit, a constant of its delegate"),
    ("docs/onnx.md", "2.13", "PyTorch 2.13", "a version"),
    ("docs/onnx.md", "+0.5", "1/6 scale and +0.5", "HardSigmoid's constants"),
    ("docs/onnx.md", "1/6", "1/6 scale and +0.5", "HardSigmoid's constants"),
    ("docs/onnx.md", "-1e4", "", "the attention-mask constant of the exported encoder"),
    ("docs/onnx.md", "0.044715", "0.044715", "the tanh-GELU constant"),
    ("docs/onnx.md", "1.6e-28", "exp(-64)", "arithmetic: exp(-64)"),
    ("docs/onnx.md", "-3.4e38", "-3.4e38 attention-mask", "HF's float32-min mask constant"),
    ("docs/onnx.md", "2.5", "2.5x or more the 90th-percentile", "the outlier threshold edgeq uses"),
    ("docs/ptq.md", "0.1", "by more than 0.1 dB", "the keep threshold edgeq uses"),
    ("docs/ptq.md", "1e-5", "BN epsilon 1e-5", "PyTorch's default BN epsilon"),
    ("docs/ptq.md", "1/10", "[1/10, 10]", "the sample's construction (build.py)"),
    ("docs/ptq.md", "0.1", "0.1 pt is 2 images", "arithmetic: 2 of 2,000 images"),
    ("docs/your-model.md", "255", "range 255x too wide", "arithmetic: [0, 255] against [0, 1]"),
    ("docs/devices.md", "95", "80-95 s", "the device lab's from-scratch build, timed when it was built (make devicelab "
     "prints it; bench_devices starts from the cache)"),
)

_NUM = re.compile(r"(?<![\w.])[-+]?(?:\d{1,3}(?:,\d{3})+|\d+)\.\d+(?:e[-+]?\d+)?(?![\w.]*\.\d)"
                  r"|(?<![\w.])[-+]?\d+e[-+]?\d+(?![\w.])"
                  r"|(?<![\w.])[-+]?\d+(?=\s?%)"
                  r"|(?<![\w.,])\d+(?=\s?(?:s|ms|x)\b)")
_COUNT = re.compile(r"(?<![\w./])(\d+)(?: of |/)(\d+)(?![\w/]|\.\d)")
_SKIP = re.compile(r"(?<![\w.])\d+\.\d+\.\d+[\w.]*|(?:Python|TF|tensorflow|Keras|ai-edge-litert|onnx2tf|onnx|"
                   r"onnxruntime|qemu|qemu-user|numpy|Android|litert|opset|SDK|adbd|v)[ -]?\d+(?:\.\d+)*"
                   r"|https?://\S+|\]\([^)]*\)|[\w./-]+\.(?:py|md|json|toml|npz|tflite|onnx|keras|png|so)\b"
                   r"|\d+\.\d+\.\d+\.\d+(?::\d+)?", re.IGNORECASE)
_BENCH = re.compile(r"\b(bench_\w+|zoo)\b")
_MARK = re.compile(r"<!--\s*numbers:\s*(.*?)\s*-->")


@dataclass(frozen=True)
class Quote:
    file: str
    line: int
    text: str  # the number as written
    kind: str  # "number" | "count"
    context: str
    sources: tuple[str, ...] = ()  # results files (stems) named around it; empty: all
    marked: str | None = None  # why no benchmark reproduces the block it sits in (<!-- numbers: ... -->)
    column: int = 0  # where it starts in its line (a count: its first number)


@dataclass(frozen=True)
class Found:
    quote: Quote
    source: str | None
    exempt: str | None = None


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def _paragraphs(lines: list[str]):
    """(first line number, lines, heading, marker reason) per paragraph, table or code block."""
    heading, para, start, in_code, mark, pending = "", [], 0, False, None, None

    def flush():
        nonlocal para, mark
        if para:
            yield start, para, heading, mark
        para, mark = [], None

    for i, line in enumerate(lines, 1):
        if line.startswith("```"):
            yield from flush()
            if not in_code:
                start, mark, pending = i + 1, pending, None
            in_code = not in_code
            continue
        if in_code:
            para.append(line)
            continue
        m = _MARK.search(line)
        if m:
            yield from flush()
            pending = m.group(1)
            continue
        new = not line.strip() or line.startswith("#") or re.match(r"\s*(?:[-*] |\d+\. )", line)
        was_table = bool(para) and para[-1].lstrip().startswith("|")
        if new or was_table != line.lstrip().startswith("|"):
            yield from flush()
        if line.startswith("#"):
            heading = line
        elif line.strip():
            if not para:
                start, mark, pending = i, pending, None
            para.append(line)
    yield from flush()


def quotes(path: Path, known: set[str]) -> list[Quote]:
    out = []
    rel = str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)
    lines = path.read_text().splitlines()
    section: dict[str, set[str]] = {}
    for _, para, heading, _ in _paragraphs(lines):  # benchmarks each section names anywhere, heading included
        section.setdefault(heading, set()).update(n for n in _BENCH.findall(" ".join([heading, *para])) if n in known)
    document = set().union(*section.values()) if section else set()
    before: set[str] = set()
    for start, para, heading, mark in _paragraphs(lines):
        own = {n for n in _BENCH.findall(" ".join(para)) if n in known}
        table = para[0].lstrip().startswith("|") or start > 1 and lines[start - 2].startswith("```")
        # a table or code block belongs to the paragraph that introduces it
        named = own or (before if table else set()) or section.get(heading, set()) or document
        before = own if own or not table else before
        for k, line in enumerate(para):
            masked = _SKIP.sub(lambda m: " " * len(m.group()), line)
            hits = [(m.group(), "number", m.start()) for m in _NUM.finditer(masked)]
            hits += [(f"{m.group(1)}/{m.group(2)}", "count", m.start()) for m in _COUNT.finditer(masked)]
            out += [Quote(rel, start + k, t, kind, line.strip(), tuple(sorted(named)), mark, column)
                    for t, kind, column in hits]
    return out


def _walk(obj, path: str = ""):
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _walk(v, f"{path}.{k}" if path else str(k))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _walk(v, f"{path}[{i}]")
    else:
        yield path, obj


def _plain(text: str) -> str:
    return text.lstrip("+-").replace(",", "")


def _sig_digits(text: str) -> int:
    mant = _plain(text).split("e")[0].replace(".", "").lstrip("0")
    return len(mant)


@dataclass
class FileIndex:
    """The numbers of one results file, as values and as written text."""

    name: str
    values: list[tuple[float, str, bool]] = field(default_factory=list)  # value, where, is a byte count
    texts: dict[str, str] = field(default_factory=dict)
    counts: dict[str, str] = field(default_factory=dict)

    @classmethod
    def read(cls, path: Path) -> FileIndex:
        idx = cls(path.stem if path.parent == RESULTS else f"{path.parent.name}/{path.name}")
        for where, v in _walk(json.loads(path.read_text())):
            where = f"{idx.name}.json: {where}" if path.parent == RESULTS else f"{idx.name}: {where}"
            if isinstance(v, bool) or v is None:
                continue
            if isinstance(v, (int, float)):
                idx.values.append((float(v), where, bool(re.search(r"bytes|size", where.rsplit(".", 1)[-1]))))
            elif isinstance(v, str):
                for m in _NUM.finditer(v):
                    idx.texts.setdefault(m.group().replace(",", ""), where)
                    idx.texts.setdefault(_plain(m.group()), where)
                for m in _COUNT.finditer(v):
                    idx.counts.setdefault(f"{m.group(1)}/{m.group(2)}", where)
        rendered = path.with_suffix(".md")
        if path.parent == RESULTS and rendered.exists():  # zoo.md: written with zoo.json by the same run, from it
            for n, line in enumerate(rendered.read_text().splitlines(), 1):
                for m in _NUM.finditer(line):  # as written only, like a results string (e.g. the gap intervals)
                    idx.texts.setdefault(m.group().replace(",", ""), f"{rendered.name}:{n}")
                    idx.texts.setdefault(_plain(m.group()), f"{rendered.name}:{n}")
        return idx

    def find(self, q: Quote) -> str | None:
        if q.kind == "count":  # "60 of 64" as written, or a share equal to 60/64 (e.g. neighbour_agreement)
            a, b = (int(x) for x in q.text.split("/"))
            share = next((w for v, w, _ in self.values if b and 0 < a < b and abs(v - a / b) < 1e-9), None)
            return self.counts.get(q.text) or share
        text = _plain(q.text)
        signed = q.text[0] in "+-"  # a sign written in a table is checked: "+0.20" is not "-0.20"
        if (q.text.replace(",", "") if signed else text) in self.texts:
            return self.texts[q.text.replace(",", "") if signed else text]
        exact_only = _sig_digits(text) < (2 if q.sources else 3)  # short: a value equal to it, not rounding to it
        mant = text.split("e")[0]
        decimals = len(mant.split(".")[1]) if "." in mant else 0
        exp = "e" in text.lower()
        if exact_only:
            return next((w for v, w, _ in self.values if abs(abs(v) - float(text)) < 1e-9), None)
        for v, where, is_bytes in self.values:
            scalings = [(v, "")] + ([(v * 100, " x100")] if abs(v) <= 1 else []) + (
                [(v / 1024, " /1024"), (v / 1048576, " /1024^2")] if is_bytes else [])
            for scaled, how in scalings:
                if not math.isfinite(scaled):
                    continue
                if exp and f"{abs(scaled):.{decimals}e}" == f"{float(text):.{decimals}e}":
                    return where + how
                if not exp and f"{abs(scaled):.{decimals}f}" == mant:
                    return where + how
        return None


def _exempts(entry: tuple[str, str, str, str], q: Quote) -> bool:
    """Whether a NOT_MEASURED entry covers the quote (its file, its text or "*", its context on the line)."""
    f, t, ctx, _ = entry
    return f == q.file and t in (q.text, "*") and ctx in q.context


def unused_exemptions(found: list[Found]) -> list[tuple[str, str, str, str]]:
    """NOT_MEASURED entries that cover no quote of ``found`` (their text was rewritten or reflowed)."""
    return [e for e in NOT_MEASURED if not any(_exempts(e, x.quote) for x in found)]


def check(results: list[Path] | None = None, docs: list[Path] | None = None) -> list[Found]:
    files = {p.stem: FileIndex.read(p) for p in (sorted(RESULTS.glob("*.json")) if results is None else results)}
    meta = [FileIndex.read(p) for p in sorted(SAMPLE_META.glob("*/meta.json"))]
    out = []
    for doc in documents() if docs is None else docs:
        for q in quotes(doc, set(files)):
            exempt = q.marked or next((e[3] for e in NOT_MEASURED if _exempts(e, q)), None)
            pool = ([files[s] for s in q.sources] or list(files.values())) + meta
            src = None if exempt else next((w for f in pool if (w := f.find(q))), None)
            out.append(Found(q, src, exempt))
    return out


def main(argv: list[str]) -> int:
    found = check()
    bad = [f for f in found if f.source is None and f.exempt is None]
    for f in found if "--all" in argv else bad:
        q = f.quote
        src = f.source or (f"not measured: {f.exempt}" if f.exempt else
                           f"MISMATCH: in none of {', '.join(q.sources) or 'the results files'}")
        print(f"{q.file}:{q.line}: {q.text}  <- {src}" + ("" if f.source or f.exempt else f"  | {q.context[:120]}"))
    print(f"{len(found)} numbers in README.md and docs/*.md: {sum(1 for f in found if f.source)} found in "
          f"benchmarks/results/*.json, {sum(1 for f in found if f.exempt)} marked not measured, {len(bad)} mismatches")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
