"""Accuracy and output-agreement metrics, all computed the same way for every command."""
from __future__ import annotations

import numpy as np


def top1(outputs: np.ndarray, labels: np.ndarray) -> float:
    """Share of samples whose arg-max class equals the label."""
    return float(np.mean(np.argmax(outputs.reshape(len(outputs), -1), -1) == labels))


def top1_hits(reference: np.ndarray, outputs: np.ndarray) -> np.ndarray:
    """Per sample: does the arg-max class equal the reference model's."""
    return reference.reshape(len(reference), -1).argmax(-1) == outputs.reshape(len(outputs), -1).argmax(-1)


def agreement(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Share of samples whose arg-max class equals the reference model's."""
    return float(np.mean(top1_hits(reference, outputs)))


def cosine(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Mean per-sample cosine similarity of the flattened outputs."""
    r = reference.reshape(len(reference), -1).astype(np.float64)
    o = outputs.reshape(len(outputs), -1).astype(np.float64)
    num = np.sum(r * o, -1)
    den = np.linalg.norm(r, axis=-1) * np.linalg.norm(o, axis=-1)
    cos = np.where(den > 0, num / np.maximum(den, 1e-300), np.where(np.all(r == o, -1), 1.0, 0.0))
    return float(np.mean(cos))


def sqnr_db(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when identical)."""
    r = reference.astype(np.float64)
    noise = np.sum((r - outputs.astype(np.float64)) ** 2)
    if noise == 0:
        return float("inf")
    return float(10 * np.log10(max(np.sum(r ** 2), 1e-300) / noise))


def max_abs_error(reference: np.ndarray, outputs: np.ndarray) -> float:
    return float(np.max(np.abs(reference.astype(np.float64) - outputs.astype(np.float64)))) if reference.size else 0.0


def _unit_rows(e: np.ndarray) -> np.ndarray:
    e = e.reshape(len(e), -1).astype(np.float64)
    return e / np.maximum(np.linalg.norm(e, axis=-1, keepdims=True), 1e-300)


def _ranks(v: np.ndarray) -> np.ndarray:
    order = np.argsort(v, kind="stable")
    r = np.empty(len(v))
    r[order] = np.arange(len(v))
    return r


def similarity_spearman(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Spearman correlation of all pairwise cosine similarities between samples, reference vs outputs.

    For embedding models: 1.0 when the quantized model ranks every pair of inputs as similar in the same
    order as the reference (what semantic search and clustering depend on)."""
    iu = np.triu_indices(len(reference), 1)
    r, o = _unit_rows(reference), _unit_rows(outputs)
    a, b = (r @ r.T)[iu], (o @ o.T)[iu]
    ra, rb = _ranks(a), _ranks(b)
    return float(np.corrcoef(ra, rb)[0, 1]) if len(a) > 1 else 1.0


def neighbour_agreement(reference: np.ndarray, outputs: np.ndarray) -> float:
    """Share of samples whose most similar other sample (cosine) is the same under reference and outputs."""
    def nearest(e):
        u = _unit_rows(e)
        s = u @ u.T
        np.fill_diagonal(s, -np.inf)
        return s.argmax(-1)

    return float(np.mean(nearest(reference) == nearest(outputs)))
