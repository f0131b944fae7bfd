"""Rebuild the bundled sample models and their data from the full Fashion-MNIST set.

    python sample_models/build.py [--only NAME] [--epochs N]

Needs the Debian package ``dataset-fashion-mnist`` (real images, real labels, MIT) at
/usr/share/datasets/fashion-mnist. Writes, per model, ``sample_models/<name>/``:

* ``model.keras`` - the trained float model (input NHWC float32 in [0, 1]);
* ``calib.npz``   - ``x``: 300 *training* images (never used for evaluation);
* ``eval.npz``    - ``x``, ``y``: the first 2,000 *test* images with labels;
* ``meta.json``   - float test accuracy on the full 10k test set and on eval.npz.

The two models share their data files byte for byte, so git stores them once.
"""
from __future__ import annotations

import argparse
import gzip
import io
import json
import os
import sys
import zipfile
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
import numpy as np  # noqa: E402

DATA_DIR = Path(os.environ.get("FASHION_MNIST_DIR", "/usr/share/datasets/fashion-mnist"))
HERE = Path(__file__).resolve().parent
SEED = 1234
N_CALIB = 300
N_EVAL = 2000


def _idx(name: str, offset: int) -> np.ndarray:
    path = DATA_DIR / name
    if not path.exists():
        sys.exit(f"{path}: not found; install it with 'apt-get install dataset-fashion-mnist' "
                 "or set FASHION_MNIST_DIR")
    with gzip.open(path) as f:
        return np.frombuffer(f.read(), np.uint8, offset=offset)


def load_fashion_mnist():
    """Return (x_train, y_train, x_test, y_test); images NHWC float32 in [0, 1]."""
    xtr = _idx("train-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1)
    ytr = _idx("train-labels-idx1-ubyte.gz", 8)
    xte = _idx("t10k-images-idx3-ubyte.gz", 16).reshape(-1, 28, 28, 1)
    yte = _idx("t10k-labels-idx1-ubyte.gz", 8)
    scale = lambda a: (a.astype(np.float32) / 255.0)  # noqa: E731
    return scale(xtr), ytr.astype(np.int64), scale(xte), yte.astype(np.int64)


def fashion_cnn():
    """A small plain CNN (~220k parameters): conv-relu-pool x2, flatten, dense."""
    import keras
    from keras import layers

    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, padding="same", activation="relu")(inp)
    x = layers.MaxPooling2D()(x)
    x = layers.Conv2D(64, 3, padding="same", activation="relu")(x)
    x = layers.MaxPooling2D()(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="fashion_cnn")


def _inverted_residual(x, expand: int, out_ch: int, stride: int, name: str):
    from keras import layers

    in_ch = x.shape[-1]
    y = layers.Conv2D(in_ch * expand, 1, use_bias=False, name=f"{name}_expand")(x)
    y = layers.BatchNormalization(name=f"{name}_expand_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_expand_relu6")(y)
    y = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(y)
    y = layers.BatchNormalization(name=f"{name}_dw_bn")(y)
    y = layers.ReLU(6.0, name=f"{name}_dw_relu6")(y)
    y = layers.Conv2D(out_ch, 1, use_bias=False, name=f"{name}_project")(y)
    y = layers.BatchNormalization(name=f"{name}_project_bn")(y)
    if stride == 1 and in_ch == out_ch:
        y = layers.Add(name=f"{name}_add")([x, y])
    return y


def fashion_mobilenet():
    """MobileNetV2-style: depthwise-separable inverted residuals, BN, ReLU6, residual adds, GAP."""
    import keras
    from keras import layers

    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(16, 3, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(name="stem_bn")(x)
    x = layers.ReLU(6.0, name="stem_relu6")(x)
    # Narrow at high resolution, wide at 7x7 and 4x4 like MobileNetV2's tail: most parameters sit in the
    # wide 1x1 convolutions, so fixed per-channel quantization metadata weighs as in real MobileNets.
    for i, (expand, ch, stride) in enumerate(
        [(1, 16, 1), (4, 24, 2), (4, 24, 1), (4, 48, 2), (4, 48, 1), (4, 96, 2), (4, 96, 1), (6, 160, 1), (6, 160, 1)]
    ):
        x = _inverted_residual(x, expand, ch, stride, name=f"block{i}")
    x = layers.Conv2D(640, 1, use_bias=False, name="head")(x)
    x = layers.BatchNormalization(name="head_bn")(x)
    x = layers.ReLU(6.0, name="head_relu6")(x)
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    x = layers.Dropout(0.2)(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="fashion_mobilenet")


def _dw_separable(x, ch: int, stride: int, name: str):
    from keras import layers

    x = layers.DepthwiseConv2D(3, strides=stride, padding="same", use_bias=False, name=f"{name}_dw")(x)
    x = layers.BatchNormalization(epsilon=1e-5, name=f"{name}_dw_bn")(x)
    x = layers.ReLU(name=f"{name}_dw_relu")(x)
    x = layers.Conv2D(ch, 1, use_bias=False, name=f"{name}_pw")(x)
    x = layers.BatchNormalization(epsilon=1e-5, name=f"{name}_pw_bn")(x)
    return layers.ReLU(name=f"{name}_pw_relu")(x)


def fashion_dwnet():
    """The hard PTQ case: MobileNetV1-style depthwise-separable stack, unbounded ReLU, PyTorch BN epsilon."""
    import keras
    from keras import layers

    inp = keras.Input((28, 28, 1), name="image")
    x = layers.Conv2D(32, 3, strides=2, padding="same", use_bias=False, name="stem")(inp)
    x = layers.BatchNormalization(epsilon=1e-5, name="stem_bn")(x)
    x = layers.ReLU(name="stem_relu")(x)
    for i, (ch, stride) in enumerate([(64, 1), (96, 2), (96, 1), (128, 1), (160, 2), (160, 1)]):
        x = _dw_separable(x, ch, stride, name=f"b{i}")
    x = layers.GlobalAveragePooling2D(name="gap")(x)
    out = layers.Dense(10, activation="softmax", name="probs")(x)
    return keras.Model(inp, out, name="fashion_dwnet")


def spread_dw_channel_scales(model, decades: float = 1.0):
    """Give each depthwise output channel a scale in [10^-decades, 10^decades], undone in the next 1x1 conv.

    ReLU is positively homogeneous, so the float model computes the same function (checked to ~1e-6),
    but its depthwise per-channel ranges now differ by orders of magnitude, as in pretrained
    MobileNets (Nagel et al. 2019, "Data-Free Quantization", Fig. 2: scale drift that training with
    BN does not control). Min/max per-tensor activation ranges then starve the small channels.
    """
    rng = np.random.default_rng(SEED)
    i = 0
    while any(layer.name == f"b{i}_dw_bn" for layer in model.layers):
        bn, pw = model.get_layer(f"b{i}_dw_bn"), model.get_layer(f"b{i}_pw")
        gamma, beta, mean, var = bn.get_weights()
        s = (10.0 ** rng.uniform(-decades, decades, size=gamma.shape)).astype(np.float32)
        bn.set_weights([gamma * s, beta * s, mean, var])
        (kernel,) = pw.get_weights()
        pw.set_weights([kernel / s[None, None, :, None]])
        i += 1
    return model


MODELS = {"fashion_cnn": (fashion_cnn, 5), "fashion_mobilenet": (fashion_mobilenet, 3),
          "fashion_dwnet": (fashion_dwnet, 3)}
# Applied after training, before saving (function-preserving weight edits).
POST_TRAIN = {"fashion_dwnet": spread_dw_channel_scales}


def npz_bytes(**arrays) -> bytes:
    """A compressed .npz with fixed timestamps: same arrays, same bytes (so git stores shared data once)."""
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", compression=zipfile.ZIP_DEFLATED) as zf:
        for name, arr in arrays.items():
            member = io.BytesIO()
            np.lib.format.write_array(member, np.asarray(arr), allow_pickle=False)
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            zf.writestr(info, member.getvalue())
    return buf.getvalue()


def _save_npz(path: Path, **arrays) -> None:
    path.write_bytes(npz_bytes(**arrays))


def build(name: str, epochs: int | None = None) -> dict:
    import keras

    keras.utils.set_random_seed(SEED)
    xtr, ytr, xte, yte = load_fashion_mnist()
    factory, default_epochs = MODELS[name]
    model = factory()
    model.compile(optimizer=keras.optimizers.Adam(2e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(xtr, ytr, batch_size=128, epochs=epochs or default_epochs, validation_split=0.05, verbose=2)
    if name in POST_TRAIN:
        model = POST_TRAIN[name](model)
    out = HERE / name
    out.mkdir(exist_ok=True)
    # Save weights and architecture only: an optimizer state would triple the committed file.
    clean = keras.Model.from_config(model.get_config())
    clean.set_weights(model.get_weights())
    clean.save(out / "model.keras")
    # Calibration images come from the training split; the evaluation set is the test split.
    rng = np.random.default_rng(SEED)
    calib_idx = np.sort(rng.choice(len(xtr), N_CALIB, replace=False))
    _save_npz(out / "calib.npz", x=xtr[calib_idx])
    _save_npz(out / "eval.npz", x=xte[:N_EVAL], y=yte[:N_EVAL])
    full = float(np.mean(np.argmax(model.predict(xte, verbose=0), -1) == yte))
    sub = float(np.mean(np.argmax(model.predict(xte[:N_EVAL], verbose=0), -1) == yte[:N_EVAL]))
    meta = {"name": name, "params": int(model.count_params()), "float_top1_test10k": round(full, 4),
            "float_top1_eval": round(sub, 4), "epochs": epochs or default_epochs, "seed": SEED}
    (out / "meta.json").write_text(json.dumps(meta, indent=2) + "\n")
    print(json.dumps(meta))
    return meta


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=sorted(MODELS), action="append")
    ap.add_argument("--epochs", type=int)
    args = ap.parse_args()
    for name in args.only or MODELS:
        build(name, args.epochs)


if __name__ == "__main__":
    main()
