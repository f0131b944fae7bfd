"""edgeq: float models to small, fast, still-accurate TFLite models, measured on the device.

Library API (the CLI is a thin layer over these; see :mod:`edgeq.api`)::

    import edgeq
    report = edgeq.convert("model.keras", edgeq.ConvertOptions(mode="int8", calib="calib.npz"),
                           eval_data="eval.npz")
    print(report.render())

Names are imported on first use, so ``import edgeq.bench`` (or ``edgeq --help``) loads no converter,
no TensorFlow and no numpy.
"""
from __future__ import annotations

import importlib
import sys
import types
from typing import TYPE_CHECKING, Any

__version__ = "0.2.0"

# public name -> module that defines it
_EXPORTS = {
    **{name: "edgeq.api" for name in ("convert", "analyze", "finetune", "evaluate", "inspect", "bench", "compare")},
    **{name: "edgeq.options" for name in ("ConvertOptions", "AnalyzeOptions", "FinetuneOptions", "EvalOptions",
                                          "BenchOptions", "CompareOptions", "Mode", "IOType", "Layout", "Metric",
                                          "Fallback", "PtqChoice", "Preprocess")},
    **{name: "edgeq.errors" for name in ("EdgeqError", "DataError", "ModelLoadError", "ConversionError",
                                         "OutputError", "OptionError", "MissingExtra", "TargetError",
                                         "BenchmarkFailed", "DeviceError")},
    "default_output": "edgeq.convert",
    "ConversionReport": "edgeq.report",
    "EvalResult": "edgeq.evaluate",
    "ModelInfo": "edgeq.modelinfo",
    "Sensitivity": "edgeq.quantize.sensitivity",
    "BenchResult": "edgeq.bench.result",
    "Comparison": "edgeq.bench.compare",
}

__all__ = sorted(_EXPORTS) + ["__version__"]
_FUNCTIONS = frozenset(n for n, m in _EXPORTS.items() if m == "edgeq.api")


class _Package(types.ModuleType):
    """``edgeq.convert``, ``edgeq.evaluate`` and ``edgeq.bench`` are API functions *and* submodules.

    Importing a submodule binds it on its package, which would replace the function the first time e.g.
    ``edgeq.bench`` is imported. The binding is skipped for those names: the submodule is still in
    ``sys.modules`` (``import edgeq.bench.host``, ``from edgeq.bench import ...`` work as before), and the
    attribute stays the function. (``import edgeq.bench as b`` gives the function: use ``from`` imports.)
    """

    def __setattr__(self, name: str, value: Any) -> None:
        if name in _FUNCTIONS and isinstance(value, types.ModuleType):
            return
        super().__setattr__(name, value)


sys.modules[__name__].__class__ = _Package


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'edgeq' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))


if TYPE_CHECKING:  # for type checkers and IDEs; at run time __getattr__ imports on first use
    from edgeq.api import analyze, bench, compare, convert, evaluate, finetune, inspect  # noqa: F401
    from edgeq.bench.compare import Comparison  # noqa: F401
    from edgeq.bench.result import BenchResult  # noqa: F401
    from edgeq.convert import default_output  # noqa: F401
    from edgeq.errors import (BenchmarkFailed, ConversionError, DataError, DeviceError, EdgeqError,  # noqa: F401
                              MissingExtra, ModelLoadError, OptionError, OutputError, TargetError)
    from edgeq.evaluate import EvalResult  # noqa: F401
    from edgeq.modelinfo import ModelInfo  # noqa: F401
    from edgeq.options import (AnalyzeOptions, BenchOptions, CompareOptions, ConvertOptions,  # noqa: F401
                               EvalOptions, Fallback, FinetuneOptions, IOType, Layout, Metric, Mode,
                               Preprocess, PtqChoice)
    from edgeq.quantize.sensitivity import Sensitivity  # noqa: F401
    from edgeq.report import ConversionReport  # noqa: F401
