"""What each model's user cares about, converted model vs its source framework (same inputs, same samples).

Every function takes the source's outputs and the converted model's outputs (lists, one stacked array per
output, in the source's order and layout) and returns named numbers; ``primary`` names the one the reference
file guards. Output cosine and SQNR over all outputs are always added (edgeq.metrics).
"""
from __future__ import annotations

import numpy as np

from benchmarks.zoo.manifest import Metric
from edgeq import metrics as em

PRIMARY = {Metric.CLASSIFIER: "top1_agreement", Metric.YOLO: "class_match", Metric.PICODET: "class_match",
           Metric.DB_MAP: "map_iou", Metric.CTC: "string_equal", Metric.ENCODER: "cosine",
           Metric.ENCODER_MASKED: "pooled_cosine", Metric.SCORE: "decision_agreement"}
DB_THRESHOLD = 0.3  # PaddleOCR's DB binarization threshold


def classifier(ref: list, got: list, feeds: dict) -> dict:
    r, g = ref[0].reshape(len(ref[0]), -1), got[0].reshape(len(got[0]), -1)
    k = min(5, r.shape[1])
    top_r, top_g = np.argsort(-r, 1)[:, :k], np.argsort(-g, 1)[:, :k]
    overlap = np.mean([len(set(a) & set(b)) / k for a, b in zip(top_r, top_g)])
    out = {"top1_agreement": em.agreement(r, g), f"top{k}_overlap": float(overlap)}
    if "y" in feeds:  # real labels: the accuracy users would see, float and converted
        out["top1_source"] = em.top1(r, feeds["y"])
        out["top1"] = em.top1(g, feeds["y"])
    return out


def box_iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (cx, cy, w, h) boxes."""
    a0, a1 = a[:2] - a[2:] / 2, a[:2] + a[2:] / 2
    b0, b1 = b[:2] - b[2:] / 2, b[:2] + b[2:] / 2
    inter = np.prod(np.clip(np.minimum(a1, b1) - np.maximum(a0, b0), 0, None))
    union = np.prod(a[2:]) + np.prod(b[2:]) - inter
    return float(inter / union) if union > 0 else 0.0


def yolo(ref: list, got: list, feeds: dict) -> dict:
    """Raw YOLOv8 head (N, 4+C, A): each side's most confident box; same class? their IoU."""
    match, ious = [], []
    for r, g in zip(ref[0], got[0]):
        r, g = r.reshape(r.shape[-2:]), g.reshape(g.shape[-2:])  # per-sample runs keep a batch axis of 1
        ra, ga = np.unravel_index(np.argmax(r[4:]), r[4:].shape), np.unravel_index(np.argmax(g[4:]), g[4:].shape)
        match.append(ra[0] == ga[0])
        ious.append(box_iou(r[:4, ra[1]], g[:4, ga[1]]))
    return {"class_match": float(np.mean(match)), "box_iou": float(np.mean(ious)), "box_iou_min": float(np.min(ious))}


def picodet(ref: list, got: list, feeds: dict) -> dict:
    """PicoDet raw heads: the first half of the outputs are per-level class scores (1, A, C); best anchor's class
    and whether it is the same anchor."""
    half = len(ref) // 2
    r = np.concatenate([x.reshape(len(x), -1, x.shape[-1]) for x in ref[:half]], 1)
    g = np.concatenate([x.reshape(len(x), -1, x.shape[-1]) for x in got[:half]], 1)
    rb = r.reshape(len(r), -1).argmax(1)
    gb = g.reshape(len(g), -1).argmax(1)
    c = r.shape[-1]
    return {"class_match": float(np.mean(rb % c == gb % c)), "same_box": float(np.mean(rb == gb))}


def db_map(ref: list, got: list, feeds: dict) -> dict:
    """DB text-probability map thresholded at 0.3: IoU of the text regions, mean and worst image."""
    ious = []
    for r, g in zip(ref[0], got[0]):
        a, b = r > DB_THRESHOLD, g > DB_THRESHOLD
        union = np.logical_or(a, b).sum()
        ious.append(float(np.logical_and(a, b).sum() / union) if union else 1.0)
    return {"map_iou": float(np.mean(ious)), "map_iou_min": float(np.min(ious))}


def ctc_decode(logits: np.ndarray, blank: int = 0) -> tuple[int, ...]:
    """Greedy CTC: argmax per step, repeats collapsed, blanks dropped."""
    best = logits.argmax(-1)
    return tuple(int(t) for i, t in enumerate(best) if t != blank and (i == 0 or t != best[i - 1]))


def ctc(ref: list, got: list, feeds: dict) -> dict:
    r = ref[0].reshape(len(ref[0]), -1, ref[0].shape[-1])
    g = got[0].reshape(len(got[0]), -1, got[0].shape[-1])
    return {"string_equal": float(np.mean([ctc_decode(a) == ctc_decode(b) for a, b in zip(r, g)]))}


def encoder(ref: list, got: list, feeds: dict) -> dict:
    return {"cosine": em.cosine(ref[0], got[0])}


def encoder_masked(ref: list, got: list, feeds: dict) -> dict:
    """Sentence embeddings as users make them: mean of the token states where attention_mask is 1."""
    mask = feeds["attention_mask"].reshape(len(ref[0]), -1, 1).astype(np.float64)

    def pool(h):
        h = h.reshape(len(h), mask.shape[1], -1)
        return (h * mask).sum(1) / mask.sum(1)

    return {"pooled_cosine": em.cosine(pool(ref[0]), pool(got[0]))}


def score(ref: list, got: list, feeds: dict) -> dict:
    """A probability per sample (VAD speech prob, wake-word score): decision at 0.5 and |difference|."""
    r, g = ref[0].reshape(-1), got[0].reshape(-1)
    return {"decision_agreement": float(np.mean((r > 0.5) == (g > 0.5))), "score_mae": float(np.mean(np.abs(r - g))),
            "positives_source": int(np.sum(r > 0.5))}


FUNCS = {Metric.CLASSIFIER: classifier, Metric.YOLO: yolo, Metric.PICODET: picodet, Metric.DB_MAP: db_map,
         Metric.CTC: ctc, Metric.ENCODER: encoder, Metric.ENCODER_MASKED: encoder_masked, Metric.SCORE: score}


def hits(kind: Metric, ref: list, got: list) -> str | None:
    """Per eval sample, does the converted model keep the source's answer: '+' or '-' (top-1 for classifiers;
    other families have no per-sample yes/no). Kept per row so the report can put an interval on a gap."""
    if kind is not Metric.CLASSIFIER:
        return None
    return "".join("+" if h else "-" for h in em.top1_hits(ref[0], got[0]))


def measure(kind: Metric, ref: list, got: list, feeds: dict) -> dict:
    """The family metric plus output cosine / SQNR over all outputs."""
    out = FUNCS[kind](ref, got, feeds)
    r = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in ref], 1)
    g = np.concatenate([np.asarray(x, np.float64).reshape(len(x), -1) for x in got], 1)
    out["output_cosine"] = em.cosine(r, g)
    out["sqnr_db"] = em.sqnr_db(r, g)
    return out
