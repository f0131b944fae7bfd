"""A PNG bar chart of per-layer INT8 sensitivity (matplotlib, Agg backend: no display needed)."""
from __future__ import annotations

from pathlib import Path

from edgeq.quantize.sensitivity import Sensitivity

MAX_BARS = 30  # beyond that the labels become unreadable; the table and JSON have every layer


def plot_sensitivity(sens: Sensitivity, out: Path, title: str = "") -> Path:
    """Horizontal bars, most harmful layer on top: share of the INT8 output error each layer causes."""
    from edgeq.extras import require

    require("matplotlib")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from edgeq.fileio import atomic_write_bytes

    rows = sens.layers[:MAX_BARS][::-1]
    labels = [s.layer if s.op.lower() in s.layer else f"{s.layer} ({s.op.lower()})" for s in rows]
    values = [100 * s.error_share for s in rows]
    fig, ax = plt.subplots(figsize=(8, 0.32 * len(rows) + 1.6), dpi=110)
    colors = ["#c0392b" if v >= 10 else "#e67e22" if v >= 3 else "#7f8c8d" for v in values]
    ax.barh(range(len(rows)), values, color=colors)
    ax.set_yticks(range(len(rows)), labels, fontsize=8)
    ax.axvline(0, color="black", linewidth=0.6)
    ax.set_xlabel("% of the full-INT8 output error removed by keeping this layer (and its output) float")
    ax.set_title(title or f"INT8 sensitivity per layer (full INT8 loses {sens.loss_int8:.2f} "
                          f"{sens.metric.value} pt on {sens.samples} samples)", fontsize=10)
    for i, s in enumerate(rows):
        if s.rmse_scale is not None:
            ax.annotate(f"rmse/scale {s.rmse_scale:.2f}", (max(values[i], 0), i), xytext=(3, 0),
                        textcoords="offset points", va="center", fontsize=7,
                        color="#c0392b" if s.rmse_scale > 0.7 else "#34495e")
    fig.tight_layout()
    import io

    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    atomic_write_bytes(Path(out), buf.getvalue())
    return Path(out)
