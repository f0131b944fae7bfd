"""The PTQ diagnosis scripts (benchmarks/ptq_diagnosis) stay runnable as docs/ptq.md quotes them.

They are one-off measurements with no results file, so nothing else notices when a helper they import is
renamed or moved, or when their usage lines stop working (session 19 found every one written as
``python benchmarks/ptq_diagnosis/X.py``, which fails with ``No module named 'benchmarks'``). Nothing here runs a
measurement: the scripts need the zoo's cache and minutes each.
"""
from __future__ import annotations

import ast
import importlib
import re
import runpy
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "benchmarks" / "ptq_diagnosis").glob("[!_]*.py"))


def _local_imports(path: Path) -> list[tuple[str, str]]:
    """(module, name) of every ``from edgeq…/benchmarks… import name`` in the file, lazy ones included."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module \
                and node.module.split(".")[0] in ("edgeq", "benchmarks"):
            out += [(node.module, a.name) for a in node.names]
    return out


def _has_main_guard(path: Path) -> bool:
    return any(isinstance(n, ast.If) and "__main__" in ast.unparse(n.test) for n in ast.parse(path.read_text()).body)


def test_every_script_is_found():
    assert len(SCRIPTS) >= 10, [p.name for p in SCRIPTS]


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_what_a_script_imports_from_the_repo_exists(path):
    missing = []
    for module, name in _local_imports(path):
        mod = importlib.import_module(module)
        if not hasattr(mod, name):
            try:  # `from package import submodule`
                importlib.import_module(f"{module}.{name}")
            except ModuleNotFoundError:
                missing.append(f"{module}.{name}")
    assert not missing, f"{path.name} imports names that no longer exist: {missing}"


@pytest.mark.parametrize("path", SCRIPTS, ids=[p.stem for p in SCRIPTS])
def test_usage_lines_run_the_script_as_a_module(path):
    doc = ast.get_docstring(ast.parse(path.read_text())) or ""
    commands = re.findall(r"^\s*python3? (?:-m )?(\S+)", doc, re.MULTILINE)
    assert commands, f"{path.name}: its docstring shows no command line"
    assert set(commands) == {f"benchmarks.ptq_diagnosis.{path.stem}"}, (path.name, commands)


RUNNABLE = [p for p in SCRIPTS if _has_main_guard(p)]


@pytest.mark.parametrize("path", RUNNABLE, ids=[p.stem for p in RUNNABLE])
def test_help_exits_cleanly(path, monkeypatch, capsys):
    name = f"benchmarks.ptq_diagnosis.{path.stem}"
    monkeypatch.setattr(sys, "argv", [path.name, "--help"])
    monkeypatch.delitem(sys.modules, name, raising=False)  # run it fresh, as `python -m` does
    with pytest.raises(SystemExit) as done:
        runpy.run_module(name, run_name="__main__")
    assert done.value.code == 0
    assert "usage:" in capsys.readouterr().out
