"""After a rerun of `make bench`: propose the new value of every prose number ``check_numbers`` flags.

A quoted number that matched a value in the results before the rerun (a key path of one results file, maybe
scaled x100 or to KiB/MiB, or the k-th number inside a results string) is proposed as what that same place
holds now, written with as many decimals as the quote. Numbers with no old match, and places that vanished,
are listed for a human. So are numbers that still match, but at another place than before while their own
place changed: a stale value that some other result happens to equal. The prose around a number
(\"faster\", \"within noise\") is not read: review the diff.

``python -m benchmarks.renumber [OLD_RESULTS_DIR] [--apply]``: OLD_RESULTS_DIR holds the results files as
they were (default: the committed ones at HEAD); ``--apply`` rewrites the documents (atomically).
"""
from __future__ import annotations

import functools
import json
import re
import subprocess
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from benchmarks import check_numbers as cn
from edgeq.fileio import atomic_write_text

_WHERE = re.compile(r"^(?P<label>[^:]+): (?P<path>.*?)(?P<how> x100| /1024\^2| /1024)?$")


@dataclass(frozen=True)
class Proposal:
    quote: cn.Quote
    new: str | None  # None: no proposal (why says so)
    why: str
    review: bool = False  # a human decides (rematched): never applied


def _committed(tmp: Path) -> Path:
    for path in sorted(cn.RESULTS.glob("*.json")):
        rel = str(path.relative_to(cn.ROOT))
        text = subprocess.run(["git", "show", f"HEAD:{rel}"], cwd=cn.ROOT, capture_output=True, text=True).stdout
        if text:
            (tmp / path.name).write_text(text)
    return tmp


def _at(obj, path: str):
    """The value at a check_numbers key path ("a.b[2].c"), or KeyError."""
    for key, index in re.findall(r"([^.\[\]]+)|\[(\d+)\]", path):
        obj = obj[int(index)] if index else obj[key]
    return obj


def _format(value: float, like: str, before: float | None = None) -> str:
    """``value`` written the way ``like`` is: decimals, exponent, thousands commas, and a written sign kept in
    the same relation to the value's sign as it had to ``before`` ("drop -0.4" may store 0.4)."""
    plain = cn._plain(like)
    mant = plain.split("e")[0]
    decimals = len(mant.split(".")[1]) if "." in mant else 0
    if "e" in plain.lower():  # the exponent as the quote writes it: "8.6e-7", not "8.6e-07"
        mantissa, exponent = f"{abs(value):.{decimals}e}".split("e")
        text = f"{mantissa}e{int(exponent)}"
    else:
        text = f"{abs(value):,.{decimals}f}" if "," in like else f"{abs(value):.{decimals}f}"
    if like[0] not in "+-":
        return text
    flipped = before is not None and (before < 0) != (like[0] == "-")
    negative = (value < 0) != flipped and float(text.replace(",", "")) != 0
    return ("-" if negative else "+") + text


def _tokens(text: str, kind: str) -> list[tuple[str, int]]:
    """The numbers (or counts "a/b") of a results string, as written, with where each starts."""
    if kind == "count":
        return [(f"{m.group(1)}/{m.group(2)}", m.start()) for m in cn._COUNT.finditer(text)]
    return [(m.group(), m.start()) for m in cn._NUM.finditer(text)]


def _same(token: str, quote: cn.Quote) -> bool:
    return token == quote.text if quote.kind == "count" else cn._plain(token) == cn._plain(quote.text)


def _context(text: str, start: int) -> str:
    return re.sub(r"\d", "#", text[max(0, start - 24):start])


def _pick(old: str, new: str, quote: cn.Quote) -> str | None:
    """The new token at the old one's place: same position when both have as many numbers, else the one
    after the same words (digits masked)."""
    olds, news = _tokens(old, quote.kind), _tokens(new, quote.kind)
    hits = [i for i, (t, _) in enumerate(olds) if _same(t, quote)]
    if len(hits) != 1:
        return None
    if len(olds) == len(news):
        return news[hits[0]][0]
    ctx = _context(old, olds[hits[0]][1])
    same = [t for t, at in news if _context(new, at) == ctx]
    return same[0] if len(same) == 1 else None


def _row_key(line: str) -> str:
    """A table row by its first cell, other lines by their words (numbers masked)."""
    return line.split("|")[1].strip() if line.lstrip().startswith("|") and line.count("|") > 2 else \
        cn._NUM.sub("#", line)


def _in_string(old: str, new: str, quote: cn.Quote) -> str | None:
    """The quote's number in the new version of a results string: in a multi-line string (a markdown table,
    a tool's output) the line with the same key, else the whole string."""
    got = None
    if "\n" in old:
        lines = [line for line in old.splitlines() if any(_same(t, quote) for t, _ in _tokens(line, quote.kind))]
        if len(lines) == 1:
            key = _row_key(lines[0])
            # rows sharing a first cell (one model at 1 and 2 threads) pair up in order
            nth = [line for line in old.splitlines() if _row_key(line) == key].index(lines[0])
            match = [line for line in new.splitlines() if _row_key(line) == key]
            got = _pick(lines[0], match[nth], quote) if len(match) > nth else None
    got = got or _pick(old, new, quote)
    if got is None or quote.kind == "count":
        return got
    before = next(t for t, _ in _tokens(old, "number") if _same(t, quote))
    return _format(float(got.replace(",", "")), quote.text, float(before.replace(",", "")))


Index = tuple[dict[str, cn.FileIndex], list[cn.FileIndex]]  # _old_index: read once, shared by both passes


def _results(path: Path):
    """A results file parsed once per version of it: renumber reads the same few files for every quote."""
    return _parsed(path, path.stat().st_mtime_ns)


@functools.lru_cache(maxsize=32)
def _parsed(path: Path, _version: int):
    return json.loads(path.read_text())


def _old_index(old_dir: Path) -> Index:
    old = {p.stem: cn.FileIndex.read(p) for p in sorted(old_dir.glob("*.json"))}
    return old, [cn.FileIndex.read(p) for p in sorted(cn.SAMPLE_META.glob("*/meta.json"))]


def _matched_before(q: cn.Quote, old: dict[str, cn.FileIndex], meta: list[cn.FileIndex]) -> str | None:
    pool = [old[s] for s in q.sources if s in old] or list(old.values())
    return next((w for idx in pool + meta if (w := idx.find(q))), None)


def _place(where: str | None) -> tuple[str, str, str] | None:
    """(results file stem, key path, scaling) of a check_numbers match, whichever folder it was read from."""
    m = _WHERE.match(where or "")
    return (m["label"].rsplit("/", 1)[-1].removesuffix(".json"), m["path"], m["how"] or "") if m else None


def _follow(q: cn.Quote, where: str | None, old_dir: Path, new_dir: Path) -> Proposal:
    """The quote rewritten from what its old place (``where``, in ``old_dir``) holds in ``new_dir``."""
    place = _place(where)
    if not place:
        return Proposal(q, None, "matched nothing before the rerun either")
    stem, path, how = place
    try:
        before = _at(_results(old_dir / f"{stem}.json"), path)
        now = _at(_results(new_dir / f"{stem}.json"), path)
    except (KeyError, IndexError, TypeError, FileNotFoundError, ValueError):
        return Proposal(q, None, f"{where}: no longer in the results")
    if isinstance(before, str):
        new = _in_string(before, str(now), q)
        return Proposal(q, new, where if new else f"{where}: the string changed shape")
    if q.kind == "count":
        return Proposal(q, None, f"{where}: a share, rewrite the count by hand")
    scale = {" x100": 100, " /1024": 1 / 1024, " /1024^2": 1 / 1048576}.get(how, 1)
    return Proposal(q, _format(float(now) * scale, q.text, float(before)), where)


def propose(old_dir: Path, found: list[cn.Found] | None = None, new_dir: Path = cn.RESULTS, *,
            index: Index | None = None) -> list[Proposal]:
    """A proposal for every mismatched quote of ``check_numbers.check()`` (``found``), from where it matched
    in ``old_dir``'s results to the same place in ``new_dir``'s."""
    found = cn.check() if found is None else found
    old, meta = index or _old_index(old_dir)
    return [_follow(f.quote, _matched_before(f.quote, old, meta), old_dir, new_dir)
            for f in found if not (f.source or f.exempt)]


def _copied(f: cn.Found, new_dir: Path) -> bool:
    """Whether the quote's line is a line of a string of the results file it matches (a table or tool
    output that sync_tables keeps as the results have it)."""
    place = _place(f.source)
    try:
        data = _results(new_dir / f"{place[0]}.json") if place else None
    except (FileNotFoundError, ValueError):
        return False
    return any(isinstance(v, str) and f.quote.context in v for _, v in cn._walk(data))


def rematched(old_dir: Path, found: list[cn.Found] | None = None, new_dir: Path = cn.RESULTS, *,
              index: Index | None = None) -> list[Proposal]:
    """Quotes that still match after the rerun, but at another place than before, while their old place now
    holds another value: a stale number some other result happens to equal (check_numbers cannot tell).
    Each comes with its old place's new value, for a human to judge; ``apply`` never writes these, since
    the old match may have been the chance one."""
    found = cn.check() if found is None else found
    old, meta = index or _old_index(old_dir)
    out = []
    for f in found:
        if not f.source or f.exempt:
            continue
        where = _matched_before(f.quote, old, meta)
        if where is None or _place(where) == _place(f.source) or _copied(f, new_dir):
            continue
        p = _follow(f.quote, where, old_dir, new_dir)
        if p.new and p.new != f.quote.text:
            out.append(Proposal(f.quote, p.new, f"{p.why}; now matches {f.source}", review=True))
    return out


def _edit(line: str, quote: cn.Quote, new: str) -> str:
    """``line`` with the quote replaced by ``new``; a count keeps how it was written ("58 of 60")."""
    if quote.kind == "count":
        m = re.match(r"(\d+)( of |/)(\d+)", line[quote.column:])
        a, b = new.split("/")
        return line[:quote.column] + f"{a}{m.group(2)}{b}" + line[quote.column + m.end():]
    return line[:quote.column] + new + line[quote.column + len(quote.text):]


def apply(proposals: list[Proposal]) -> list[Path]:
    """Write the proposals into the documents (each a whole-file atomic replace)."""
    by_file: dict[str, list[Proposal]] = {}
    for p in proposals:
        if p.new and p.new != p.quote.text and not p.review:
            by_file.setdefault(p.quote.file, []).append(p)
    written = []
    for rel, props in by_file.items():
        path = cn.ROOT / rel
        lines = path.read_text().splitlines(keepends=True)
        # right to left within a line, so each edit leaves the columns of the ones still to do
        for p in sorted(props, key=lambda p: (p.quote.line, p.quote.column), reverse=True):
            lines[p.quote.line - 1] = _edit(lines[p.quote.line - 1], p.quote, p.new)
        written.append(atomic_write_text(path, "".join(lines)))
    return written


def main(argv: list[str]) -> int:
    args = [a for a in argv if not a.startswith("--")]
    with tempfile.TemporaryDirectory() as tmp:
        old_dir = Path(args[0]) if args else _committed(Path(tmp))
        found, index = cn.check(), _old_index(old_dir)
        proposals, review = propose(old_dir, found, index=index), rematched(old_dir, found, index=index)
    for p in proposals:
        q = p.quote
        print(f"{q.file}:{q.line}: {q.text} -> {p.new or '?'}  ({p.why})  | {q.context[:100]}")
    if "--apply" in argv:
        for path in apply(proposals):
            print(f"rewrote {path.relative_to(cn.ROOT)}")
    left = sum(1 for p in proposals if not p.new)
    print(f"{len(proposals)} mismatched numbers: {len(proposals) - left} proposed, {left} left for a human")
    for p in review:
        q = p.quote
        print(f"{q.file}:{q.line}: {q.text} -> {p.new}?  ({p.why})  | {q.context[:100]}")
    print(f"{len(review)} numbers match another place than before the rerun, while theirs changed: check each "
          "by hand (not applied)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
