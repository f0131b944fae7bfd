"""Every number README and docs quote is in a committed results file, and no results file is older than the code
it describes (benchmarks/check_numbers.py, benchmarks/provenance.py)."""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from benchmarks import check_numbers, provenance

RESULTS = sorted(check_numbers.RESULTS.glob("*.json"))


def test_every_quoted_number_is_in_the_results():
    found = check_numbers.check()
    bad = [f"{f.quote.file}:{f.quote.line}: {f.quote.text} ({f.quote.context[:100]})"
           for f in found if f.source is None and f.exempt is None]
    assert len(found) > 300  # README and docs quote hundreds: an extractor that finds none proves nothing
    assert not bad, f"{len(bad)} quoted numbers in no results file:\n" + "\n".join(bad)


def test_every_not_measured_entry_still_exempts_a_quote():
    # an entry whose context no line holds any more (text reflowed or rewritten) silently stops exempting, and
    # its number is then matched, or renumbered, as if it were measured
    unused = check_numbers.unused_exemptions(check_numbers.check())
    assert not unused, f"NOT_MEASURED entries that match no quoted number: {unused}"


@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_results_record_commit_versions_and_sources(path):
    meta = json.loads(path.read_text()).get("_meta", {})
    assert re.fullmatch(r"[0-9a-f]{40}", meta.get("commit") or ""), f"{path.name}: no commit recorded"
    v = meta.get("versions", {})
    assert v.get("python") and v.get("ai-edge-litert") and v.get("tensorflow"), f"{path.name}: versions {v}"
    assert meta.get("sources") and meta.get("bench"), f"{path.name}: no source hashes"
    assert not meta.get("dirty_sources"), f"{path.name}: measured on uncommitted changes {meta['dirty_sources']}"


@pytest.mark.fresh_results  # `make numbers`, not `make test`: a code change makes results stale until `make bench`
@pytest.mark.parametrize("path", RESULTS, ids=[p.stem for p in RESULTS])
def test_results_are_not_older_than_their_code(path):
    meta = json.loads(path.read_text()).get("_meta", {})
    assert "sources" in meta, f"{path.name} records no source hashes: rerun `python -m benchmarks.run_all {path.stem}`"
    changed = provenance.stale(meta)
    assert not changed, (f"{path.name} was measured before these files changed: {', '.join(changed[:12])}; "
                         f"rerun `python -m benchmarks.run_all {meta['bench']}` and commit the results")


def _doc(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "doc.md"
    p.write_text(text)
    return p


def test_checker_finds_a_real_number_and_flags_a_wrong_one(tmp_path):
    text = (check_numbers.RESULTS / "bench_convert.json").read_text()
    data = json.loads(text)
    size = data["samples"]["fashion_cnn"]["int8"]["size_bytes"] / 1024
    # a wrong size that no value of the file states, as written or as bytes in KiB (223.7 KiB is another
    # mode's real size in one run): the checker must find the right one and flag this one
    kib = {f"{int(v) / 1024:.1f}" for v in re.findall(r"\b\d{5,}\b", text)}
    right = f"{size:.1f}"
    wrong = next(w for d in (0.3, 0.7, 1.3, 2.9, 5.1, 9.7) if (w := f"{size + d:.1f}") not in text and w not in kib)
    doc = _doc(tmp_path, f"From `bench_convert`: the int8 CNN is {right} KiB, not {wrong} KiB; 7 of 11 nodes.\n")
    found = {f.quote.text: f for f in check_numbers.check(docs=[doc])}
    assert (found[right].source or "").startswith("bench_convert.json: ")
    assert found[wrong].source is None and found["7/11"].source is None  # no results file says 7 of 11 there
    example = _doc(tmp_path, "<!-- numbers: example output of one run -->\n```\ntime 4.67s\n```\n")
    [f] = check_numbers.check(docs=[example])
    assert f.exempt == "example output of one run" and f.source is None


def test_checker_reads_the_markdown_a_results_file_is_rendered_into(tmp_path, monkeypatch):
    # the zoo report's gap intervals are computed from zoo.json's per-sample hits and written only into
    # zoo.md beside it; a doc quoting them is checked against that markdown, as written
    results = tmp_path / "results"
    results.mkdir()
    (results / "zoo.json").write_text(json.dumps({"rows": [{"value": 0.96}]}))
    (results / "zoo.md").write_text("| efficientnet_lite0 | 3.0 [1.5, 4.5] | open |\n")
    monkeypatch.setattr(check_numbers, "RESULTS", results)
    doc = _doc(tmp_path, "From the zoo: INT8 0.960, gap 3.0 points, interval 1.5 to 4.5, not 2.5 to 4.5.\n")
    found = {f.quote.text: f for f in check_numbers.check(results=[results / "zoo.json"], docs=[doc])}
    assert found["1.5"].source == "zoo.md:1" and found["4.5"].source == "zoo.md:1"
    assert found["2.5"].source is None
    (results / "zoo.md").unlink()
    found = {f.quote.text: f for f in check_numbers.check(results=[results / "zoo.json"], docs=[doc])}
    assert found["1.5"].source is None


def test_staleness_names_the_changed_file():
    meta = provenance.stamp("bench_ptq")
    assert provenance.stale(meta) == []
    assert "edgeq/quantize/prepare/equalize.py" in meta["sources"]  # reached through imports, not listed by hand
    edited = dict(meta, sources=dict(meta["sources"], **{"edgeq/convert.py": "0" * 16}))
    assert provenance.stale(edited) == ["edgeq/convert.py"]


def test_docs_tables_are_the_benchmarks_tables():
    from benchmarks import sync_tables

    candidates = sync_tables.result_tables()
    copied = [(p, s, m) for p in sync_tables.DOCS for s, t in sync_tables.tables(p.read_text())
              if (m := sync_tables.match(t, candidates)) is not None]
    assert len(copied) >= 8  # bench_host, _devices, _mixed, _onnx, _ptq, _qat tables in docs
    stale = [f"{p.name}:{s + 1} vs {m.source}" for p, s, m in copied
             if m.lines != next(t for s2, t in sync_tables.tables(p.read_text()) if s2 == s).lines]
    assert not stale, f"run `python -m benchmarks.sync_tables`: {stale}"
    outputs = sync_tables.recorded_outputs()
    assert len(outputs) >= 2  # bench_host records `edgeq bench` and `edgeq compare` with their output
    quoted = 0
    for p in sync_tables.DOCS:
        lines = p.read_text().splitlines()
        quoted += sum(1 for line in lines if line.startswith("$ ") and line[2:].strip() in outputs)
        assert not sync_tables.refresh_outputs(lines, outputs)[1], f"run `python -m benchmarks.sync_tables`: {p.name}"
    assert quoted >= 2


def test_sync_tables_replaces_a_stale_copy_and_leaves_other_tables(tmp_path, monkeypatch):
    from benchmarks import sync_tables

    [fresh] = [t for t in sync_tables.result_tables() if t.source == "bench_ptq"][:1]
    stale_rows = [fresh.lines[2].replace("|", "| 9.99 |", 1)] + list(fresh.lines[3:])  # one row edited
    other = "| a | b |\n|---|---|\n| x | 1.5 |"
    doc = tmp_path / "doc.md"
    doc.write_text("intro\n\n" + "\n".join([*fresh.lines[:2], *stale_rows]) + "\n\ntext\n\n" + other + "\n")
    monkeypatch.setattr(sync_tables, "ROOT", tmp_path)
    assert sync_tables.sync(doc, [fresh]) == ["doc.md:3: table from bench_ptq"]
    assert "\n".join(fresh.lines) in doc.read_text() and other in doc.read_text() and "9.99" not in doc.read_text()
    doc.write_text("```\n$ edgeq bench m.tflite\nold line\n```\n")
    assert sync_tables.sync(doc, [], {"edgeq bench m.tflite": ("bench_host", "new 1\nnew 2")})
    assert doc.read_text() == "```\n$ edgeq bench m.tflite\nnew 1\nnew 2\n```\n"


def test_whole_seconds_and_ratios_are_checked_but_settings_are_not(tmp_path):
    # "took 119 s" survived a rerun that measured 162 s: integer durations and ratios are measured numbers
    text = (check_numbers.RESULTS / "bench_ptq.json").read_text()
    wall = json.loads(text)["zoo"][1]["wall_s"]
    right = f"{wall:.0f}"
    wrong = next(w for k in (0.7, 0.6, 1.3, 1.45) if not re.search(rf"\b{(w := f'{wall * k:.0f}')}(\.|\b)", text))
    doc = _doc(tmp_path, f"In `bench_ptq` auto took {right} s, not {wrong} s, on 300 images of 224x224.\n")
    found = {f.quote.text: f for f in check_numbers.check(docs=[doc])}
    assert (found[right].source or "").startswith("bench_ptq.json: ")
    assert found[wrong].source is None
    assert "300" not in found and "224" not in found


def test_renumber_carries_each_quote_to_where_it_was_measured(tmp_path):
    # after a rerun, a quoted number is rewritten from the same place of the results: a value (sign relation
    # kept: "+0.20" told a drop stored as -0.2), a number inside a results string, a count
    from benchmarks import renumber

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    (old / "bench_x.json").write_text(json.dumps({"a": {"ms": 1.234, "drop_points": -0.2},
                                                  "markdown": "took 12 s, 40/50 passed, 7 of 9 kept"}))
    (new / "bench_x.json").write_text(json.dumps({"a": {"ms": 2.345, "drop_points": -0.3},
                                                  "markdown": "took 15 s, 41/50 passed, 8 of 9 kept"}))
    doc = _doc(tmp_path, "In `bench_x` latency is 1.23 ms, a drop of +0.20 pt; it took 12 s and 40/50 "
                         "passed; 1.23 ms again; 7 of 9 kept.\n")
    found = check_numbers.check(results=[new / "bench_x.json"], docs=[doc])
    proposals = renumber.propose(old, found, new_dir=new)
    assert sorted((p.quote.text, p.new) for p in proposals) == [
        ("+0.20", "+0.30"), ("1.23", "2.35"), ("1.23", "2.35"), ("12", "15"), ("40/50", "41/50"), ("7/9", "8/9")]
    renumber.apply(proposals)
    assert doc.read_text() == ("In `bench_x` latency is 2.35 ms, a drop of +0.30 pt; it took 15 s and 41/50 "
                               "passed; 2.35 ms again; 8 of 9 kept.\n")
    assert not [f for f in check_numbers.check(results=[new / "bench_x.json"], docs=[doc]) if f.source is None]


def test_renumber_pairs_table_rows_that_share_a_first_cell(tmp_path):
    # one model at 1 and 2 threads: two rows named alike; the k-th of them before is the k-th after, even when
    # the table gained numbers elsewhere and the words before the value changed width
    from benchmarks import renumber

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    (old / "bench_x.json").write_text(json.dumps({"markdown": "| m | 1 | 4.5 | 4.3 |\n| m | 2 | 3.1 | 2.8 |\n"
                                                              "| n | 1 | 9.5 |"}))
    (new / "bench_x.json").write_text(json.dumps({"markdown": "| m | 1 | 4.9 | 4.6 |\n| m | 2 | 13.0 | 2.7 |\n"
                                                              "| n | 1 | 9.5 | 8.5 |"}))
    doc = _doc(tmp_path, "In `bench_x` at two threads the low end is 2.8 ms.\n")
    found = check_numbers.check(results=[new / "bench_x.json"], docs=[doc])
    assert [(p.quote.text, p.new) for p in renumber.propose(old, found, new_dir=new)] == [("2.8", "2.7")]


def test_renumber_lists_a_stale_number_that_now_matches_another_result_by_chance(tmp_path):
    # "142 s" was a.s before the rerun; a.s is now 144.1 and b.s happens to be 142: check_numbers passes
    # the stale quote, renumber must list it for review (and never write it)
    from benchmarks import renumber

    old, new = tmp_path / "old", tmp_path / "new"
    old.mkdir(), new.mkdir()
    # a table row copied from a results string (sync_tables keeps it) is not listed, though its 7.5 moved
    (old / "bench_x.json").write_text(json.dumps({"a": {"s": 142.3}, "b": {"s": 7.5}, "c": {"ms": 3.25},
                                                  "markdown": "| m | 1.25 |"}))
    (new / "bench_x.json").write_text(json.dumps({"a": {"s": 144.1}, "b": {"s": 142.0}, "c": {"ms": 3.25},
                                                  "markdown": "| m | 7.5 |"}))
    text = "In `bench_x` auto took 142 s; one run is 3.25 ms.\n\n| m | 7.5 |\n"
    doc = _doc(tmp_path, text)
    found = check_numbers.check(results=[new / "bench_x.json"], docs=[doc])
    assert all(f.source for f in found)  # the checker alone sees nothing wrong
    assert renumber.propose(old, found, new_dir=new) == []
    review = renumber.rematched(old, found, new_dir=new)
    assert [(p.quote.text, p.new, p.review) for p in review] == [("142", "144", True)]
    assert "a.s" in review[0].why and "b.s" in review[0].why
    assert renumber.apply(review) == [] and doc.read_text() == text


def test_renumber_writes_numbers_the_way_the_quote_does():
    from benchmarks.renumber import _format

    assert _format(1.1e-06, "8.6e-7") == "1.1e-6"  # not Python's "1.1e-06"
    assert _format(1.234e-10, "1.0e-9") == "1.2e-10"
    assert _format(-0.3, "+0.20", before=-0.2) == "+0.30"  # a drop told with a plus, stored negative
    assert _format(12345.6, "1,234.5") == "12,345.6"
