"""Nested Keras models (issue 14, first bullet): flattening keeps the function, so the graph steps see inside
the nested base the way users build transfer-learning models."""
from __future__ import annotations

import numpy as np
import pytest

import keras  # a hard dependency: missing is a broken install, not a skip
from keras import layers


def _nested_models():
    """A Sequential inside a Functional base, reused as ``Model(x, head(base(x)))`` and ``Sequential([base])``,
    with a layer name that clashes between base and outer model, and a shared layer called twice."""
    keras.utils.set_random_seed(0)
    inner = keras.Sequential([keras.Input((8, 8, 3)), layers.Conv2D(4, 3, padding="same", name="conv"),
                              layers.BatchNormalization(name="bn"), layers.ReLU(name="relu")], name="inner")
    i = keras.Input((8, 8, 3))
    shared = layers.Conv2D(4, 1, padding="same", name="shared")
    y = inner(i)
    base = keras.Model(i, layers.Add(name="add")([shared(y), shared(shared(y))]), name="base")
    rng = np.random.default_rng(0)
    bn = inner.get_layer("bn")
    bn.set_weights([rng.uniform(0.5, 1.5, 4), rng.normal(0, .2, 4), rng.normal(0, .3, 4), rng.uniform(.5, 2, 4)])
    head = keras.Sequential([layers.GlobalAveragePooling2D(), layers.Dense(3, activation="softmax", name="conv")],
                            name="head")
    inp = keras.Input((8, 8, 3), name="image")
    functional = keras.Model(inp, head(base(inp, training=False)), name="transfer")
    sequential = keras.Sequential([keras.Input((8, 8, 3)), base, layers.Flatten(), layers.Dense(2)], name="seq")
    return functional, sequential


@pytest.mark.parametrize("which", [0, 1])
def test_flat_model_has_no_sub_models_and_the_same_outputs(which):
    from edgeq.quantize.prepare.flatten import copy_back, flatten, is_nested

    model = _nested_models()[which]
    x = np.random.default_rng(1).uniform(0, 1, (6, 8, 8, 3)).astype(np.float32)
    flat = flatten(model)
    assert is_nested(model) and not is_nested(flat.model)
    assert flat.nested >= 2
    names = [lay.name for lay in flat.model.layers]
    assert len(names) == len(set(names))
    assert sum(type(lay).__name__ == "Conv2D" and lay.name.endswith("shared") for lay in flat.model.layers) == 1
    np.testing.assert_allclose(flat.model.predict(x, verbose=0), model.predict(x, verbose=0), atol=1e-5)
    if which == 0:
        assert flat.model.inputs[0].name == "image" or flat.model.layers[0].name == "image"
        assert flat.origin["base_inner_conv"] == ("base", "inner", "conv")
    # weights changed in the flat model go back into the nested architecture
    target = keras.models.clone_model(model)
    layer = next(lay for lay in flat.model.layers if type(lay).__name__ == "Dense")
    layer.set_weights([w * 2 for w in layer.get_weights()])
    assert copy_back(flat, target) >= 4
    np.testing.assert_allclose(target.predict(x, verbose=0), flat.model.predict(x, verbose=0), atol=1e-5)


def test_graph_steps_reach_inside_a_real_pretrained_base(dwnet):
    """fashion_dwnet's trained body wrapped as users wrap a pretrained base: BN folding and equalization find
    what they find in the flat original (nested, they found nothing before)."""
    from edgeq.quantize.prepare.bn_fold import fold_batchnorm
    from edgeq.quantize.prepare.equalize import equalize
    from edgeq.quantize.prepare.flatten import flatten

    dw = keras.saving.load_model(str(dwnet.keras), compile=False)
    body = keras.Model(dw.inputs, dw.layers[-2].output, name="pretrained_base")
    inp = keras.Input(dw.inputs[0].shape[1:], name="image")
    head = layers.Dense(5, activation="softmax", name="new_head")
    wrapped = keras.Model(inp, head(layers.Dropout(0.2)(body(inp, training=False))))
    x = np.load(dwnet.calib)["x"][:64]
    ref = wrapped.predict(x, verbose=0)
    folded, n_bn = fold_batchnorm(flatten(wrapped).model)
    eq, pairs = equalize(folded, x)
    _, pairs_flat = equalize(fold_batchnorm(dw)[0], x)
    # every pair of the original except the one into its replaced classifier (a Dropout sits there now)
    assert n_bn == 13 and pairs == pairs_flat - 1 >= 12
    np.testing.assert_allclose(eq.predict(x, verbose=0), ref, atol=1e-4)
