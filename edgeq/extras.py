"""Optional dependency groups: a missing one is one line saying what to install, never a traceback.

``pip install edgeq`` brings what every conversion needs; ONNX input (``edgeq[onnx]``) and PNG plots
(``edgeq[plot]``) are extras because they pull in large packages many users never need.
"""
from __future__ import annotations

import importlib.util

from edgeq.errors import MissingExtra

# top-level module -> (what needs it, what to install)
EXTRAS: dict[str, tuple[str, str]] = {
    "onnx": ("ONNX input", "edgeq[onnx]"),
    "onnxruntime": ("ONNX input", "edgeq[onnx]"),
    "onnx2tf": ("ONNX input", "edgeq[onnx]"),
    "tf_keras": ("ONNX input", "edgeq[onnx]"),
    "matplotlib": ("Plotting (--plot, compare.png)", "edgeq[plot]"),
    "ai_edge_litert": ("Running .tflite models", "ai-edge-litert"),
    "tensorflow": ("Converting models", "tensorflow"),
    "keras": ("Keras models", "keras"),
    "numpy": ("edgeq", "numpy"),
    "PIL": ("Image folders", "pillow"),
}


def missing_message(module: str) -> str:
    """The one line for a missing top-level ``module``, e.g. "ONNX input needs `pip install edgeq[onnx]`"."""
    top = module.split(".")[0]
    what, spec = EXTRAS.get(top, (f"This command ({top})", top))
    return f"{what} needs `pip install {spec}` (Python package '{top}' is not installed)"


def require(*modules: str) -> None:
    """Raise :class:`MissingExtra` (exit 2 in the CLI) naming the extra when any of ``modules`` is absent.

    Checked with ``find_spec``: nothing is imported, so the check is cheap and has no side effects.
    """
    for module in modules:
        if importlib.util.find_spec(module) is None:
            raise MissingExtra(missing_message(module))
