"""models.toml as typed data: the wheels, the models inside them, and where the cache keeps them."""
from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
from enum import Enum
from pathlib import Path

HERE = Path(__file__).parent
MANIFEST = HERE / "models.toml"


class Format(str, Enum):
    ONNX = "onnx"
    KERAS = "keras"


class Export(str, Enum):
    """How the model file is made from the wheel's file."""

    NONE = "none"  # used as shipped
    TORCH = "torch"  # state dict -> ONNX in the side venv (export_torch.py)
    KERAS_TRANSFER = "keras_transfer"  # built here around the shipped Keras model (build_transfer.py)


class Metric(str, Enum):
    CLASSIFIER = "classifier"  # top-1 agreement, top-5 overlap
    YOLO = "yolo"  # raw (4+C) x N head: best box class + IoU
    PICODET = "picodet"  # per-level class scores: best anchor's class agreement
    DB_MAP = "db_map"  # DB probability map thresholded at 0.3: IoU
    CTC = "ctc"  # greedy CTC decode: string equality
    ENCODER = "encoder"  # embedding cosine
    ENCODER_MASKED = "encoder_masked"  # mean-pooled over attention mask, cosine
    SCORE = "score"  # a probability per sample: |difference| and decision agreement at 0.5


@dataclass(frozen=True)
class InputSpec:
    name: str
    shape: tuple[int, ...]
    layout: str
    dtype: str


@dataclass(frozen=True)
class Wheel:
    name: str
    version: str
    license: str

    @property
    def pin(self) -> str:
        return f"{self.name}=={self.version}"


@dataclass(frozen=True)
class ZooModel:
    """One zoo entry: where it comes from, what it takes, and how it is judged."""

    name: str
    family: str
    wheel: str
    file: str  # inside the wheel
    sha256: str  # of that file, checked after every fetch
    export: Export
    model_file: str  # in the cache's models/ folder
    license: str
    redistributable: bool
    format: Format
    inputs: tuple[InputSpec, ...]
    preprocessing: str
    metric: Metric
    data: str
    fast: bool
    input_shapes: dict[str, tuple[int, ...]] | None = None

    def path(self, cache: Path | None = None) -> Path:
        return (cache or cache_dir()) / "models" / self.model_file


@dataclass(frozen=True)
class Manifest:
    wheels: dict[str, Wheel]
    models: tuple[ZooModel, ...]

    def model(self, name: str) -> ZooModel:
        for m in self.models:
            if m.name == name:
                return m
        raise KeyError(f"no zoo model '{name}'; known: {', '.join(m.name for m in self.models)}")


def cache_dir() -> Path:
    """``$EDGEQ_ZOO_CACHE`` or ``~/.cache/edgeq/zoo``: outside the repo, shared by runs and CI."""
    return Path(os.environ.get("EDGEQ_ZOO_CACHE") or Path.home() / ".cache" / "edgeq" / "zoo")


def load(path: Path = MANIFEST) -> Manifest:
    """Parse ``models.toml``; an unknown enum value or a missing key fails here, not mid-run."""
    raw = tomllib.loads(path.read_text())
    wheels = {w["name"]: Wheel(w["name"], w["version"], w["license"]) for w in raw["wheel"]}
    models = []
    for m in raw["model"]:
        if m["wheel"] not in wheels:
            raise ValueError(f"{path}: model {m['name']} names unknown wheel {m['wheel']}")
        models.append(ZooModel(
            name=m["name"], family=m["family"], wheel=m["wheel"], file=m["file"], sha256=m["sha256"], export=Export(m["export"]),
            model_file=m["model_file"], license=m["license"], redistributable=bool(m["redistributable"]),
            format=Format(m["format"]),
            inputs=tuple(InputSpec(i["name"], tuple(i["shape"]), i["layout"], i["dtype"]) for i in m["inputs"]),
            preprocessing=m["preprocessing"], metric=Metric(m["metric"]), data=m["data"], fast=bool(m["fast"]),
            input_shapes={k: tuple(v) for k, v in m["input_shapes"].items()} if "input_shapes" in m else None))
    return Manifest(wheels, tuple(models))
