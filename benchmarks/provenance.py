"""What a results file was measured on: the commit, the package versions, and a hash of the code it depends on.

A benchmark's results describe the code that produced them. That code is the bench module, every module of this
repo it imports (followed through ``import`` statements, lazy ones included, to a fixed point), any extra files
it names in a module-level ``DEPENDS`` tuple (data, scripts it runs by path), and the sample models. If any of
those files changes, the committed numbers no longer describe the code: ``stale()`` says which files changed.
A pure refactor makes results stale too, on purpose: only a rerun shows it changed no number.
"""
from __future__ import annotations

import ast
import hashlib
import platform
import subprocess
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("tensorflow", "keras", "ai-edge-litert", "numpy", "onnx", "onnxruntime", "onnx2tf", "torch")
LOCAL_ROOTS = ("edgeq", "benchmarks", "tests", "sample_models")
DATA_DIRS = ("sample_models",)  # model files and their calib/eval data: retraining one changes every number


def _module_file(name: str) -> Path | None:
    parts = name.split(".")
    if parts[0] not in LOCAL_ROOTS:
        return None
    base = ROOT.joinpath(*parts)
    for cand in (base.with_suffix(".py"), base / "__init__.py"):
        if cand.is_file():
            return cand
    return None


def _imports(path: Path) -> set[str]:
    """Every module name an ``import`` in the file may load (``from a import b`` may mean module a.b)."""
    rel = path.relative_to(ROOT).with_suffix("")
    package = list(rel.parts[:-1])  # a/b/c.py and a/b/__init__.py both sit in package a.b
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = package[: len(package) - node.level + 1] if node.level else []
            mod = ".".join(base + ([node.module] if node.module else []))
            names.add(mod)
            names.update(f"{mod}.{a.name}" for a in node.names)
    return names


def _declared(bench: Path) -> set[Path]:
    """A bench module's ``DEPENDS``: files or folders it uses without importing them (a CLI run as a
    subprocess, a script copied to a device)."""
    out: set[Path] = set()
    for node in ast.parse(bench.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "DEPENDS" for t in node.targets):
            for rel in ast.literal_eval(node.value):
                p = ROOT / rel
                out |= set(p.rglob("*.py")) if p.is_dir() else {p}
    return out


def dependencies(bench: str) -> list[Path]:
    """The files whose content the results of ``benchmarks/<bench>.py`` depend on, sorted."""
    start = ROOT / "benchmarks" / f"{bench}.py"
    seen = {start} | _declared(start)
    todo = [p for p in seen if p.suffix == ".py"]
    while todo:
        path = todo.pop()
        names = _imports(path)
        # importing a.b.c runs a/__init__.py and a/b/__init__.py too
        names |= {".".join(n.split(".")[:i]) for n in names for i in range(1, n.count(".") + 1)}
        for name in names:
            f = _module_file(name)
            if f and f not in seen:
                seen.add(f)
                todo.append(f)
    for d in DATA_DIRS:
        seen |= {p for p in (ROOT / d).rglob("*") if p.is_file() and "__pycache__" not in p.parts}
    return sorted(p for p in seen if "__pycache__" not in p.parts)


def file_hashes(bench: str) -> dict[str, str]:
    """Relative path -> first 16 hex digits of its sha256 (symlinks hashed by target path, as git stores them)."""
    out = {}
    for p in dependencies(bench):
        data = str(p.readlink()).encode() if p.is_symlink() else p.read_bytes()
        out[str(p.relative_to(ROOT))] = hashlib.sha256(data).hexdigest()[:16]
    return out


def digest(hashes: dict[str, str]) -> str:
    return hashlib.sha256("".join(f"{k}\0{v}\n" for k, v in sorted(hashes.items())).encode()).hexdigest()[:16]


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": platform.python_version()}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def _git(*args: str) -> str:
    # rstrip, not strip: a porcelain status line starts with a space (" M path")
    return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True).stdout.rstrip()


def stamp(bench: str) -> dict:
    """The provenance block a results file carries in ``_meta``."""
    hashes = file_hashes(bench)
    dirty = _git("status", "--porcelain", "--", *hashes)
    return {"bench": bench, "commit": _git("rev-parse", "HEAD") or None,
            "dirty_sources": sorted(line[3:] for line in dirty.splitlines()), "versions": versions(),
            "sources_digest": digest(hashes), "sources": hashes}


def stale(meta: dict) -> list[str]:
    """Files changed since the results were measured (empty list: the results describe the current code)."""
    now = file_hashes(meta["bench"])
    then = meta.get("sources", {})
    return sorted(p for p in set(now) | set(then) if now.get(p) != then.get(p))


def reconstruct(results: Path) -> dict:
    """Provenance for a results file written before run_all recorded it, from git: the commit that last wrote
    the file (its code state is taken as that commit's), requirements.lock there, and the dependency files'
    content there. Marked ``reconstructed``: it is an inference, a rerun replaces it."""
    rel = str(results.relative_to(ROOT))
    commit = _git("log", "-1", "--format=%H", "--", rel)
    bench = results.stem
    lock = dict(line.split("==", 1) for line in _git("show", f"{commit}:requirements.lock").splitlines()
                if "==" in line)
    hashes = {}
    for p in dependencies(bench):
        path = str(p.relative_to(ROOT))
        blob = subprocess.run(["git", "show", f"{commit}:{path}"], cwd=ROOT, capture_output=True).stdout
        hashes[path] = hashlib.sha256(blob).hexdigest()[:16] if blob else "absent"
    old = __import__("json").loads(results.read_text()).get("_meta", {})
    python = old.get("machine", "").rsplit("Python ", 1)[-1] or None
    return {"bench": bench, "commit": commit, "dirty_sources": [], "sources_digest": digest(hashes),
            "sources": hashes, "versions": {"python": python, **{k: lock.get(k) for k in PACKAGES}},
            "reconstructed": f"from git at {commit[:10]} (the commit that wrote this file) and its "
                             "requirements.lock; not recorded by the run"}


if __name__ == "__main__":  # python -m benchmarks.provenance --reconstruct bench_qat ...
    import json
    import sys

    for name in sys.argv[2:] if sys.argv[1:2] == ["--reconstruct"] else []:
        path = ROOT / "benchmarks" / "results" / f"{name}.json"
        data = json.loads(path.read_text())
        data["_meta"] = {**data.get("_meta", {}), **reconstruct(path)}
        path.write_text(json.dumps(data, indent=2, default=str) + "\n")
        print(name, "stale files:", len(stale(data["_meta"])))
