"""edgeq: float models to small, fast, still-accurate TFLite models, measured on the device.

Library API (the CLI is a thin layer over these)::

    from edgeq import convert, ConvertOptions, Mode
    report = convert("model.keras", ConvertOptions(mode=Mode.INT8, calib="calib.npz"), eval_data="eval.npz")
    print(report.render())
"""
from __future__ import annotations

__version__ = "0.1.0"

from edgeq.convert import convert, default_output  # noqa: E402
from edgeq.errors import EdgeqError  # noqa: E402
from edgeq.modes import ConvertOptions, IOType, Layout, Mode, Preprocess  # noqa: E402

__all__ = ["convert", "default_output", "ConvertOptions", "IOType", "Layout", "Mode", "Preprocess", "EdgeqError",
           "__version__"]
