"""Shared fixtures: the bundled sample models, a CLI runner, and small purpose-built models."""
from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
ROOT = Path(__file__).resolve().parents[1]
SAMPLES = ROOT / "sample_models"


# The longest test files (one worker each under `make test`'s `-n 2 --dist loadfile`) start first, so the two
# workers finish together instead of one starting the zoo's models when the other is done.
FIRST = ("test_zoo_fast.py", "test_convert.py", "test_qat_cli.py", "test_device_lab.py")


def pytest_collection_modifyitems(items):
    rank = {name: k for k, name in enumerate(FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(FIRST)))  # stable: order within a file is kept


@dataclass
class Sample:
    name: str
    dir: Path

    @property
    def keras(self) -> Path:
        return self.dir / "model.keras"

    @property
    def calib(self) -> Path:
        return self.dir / "calib.npz"

    @property
    def eval(self) -> Path:
        return self.dir / "eval.npz"


@pytest.fixture(scope="session")
def cnn() -> Sample:
    return Sample("fashion_cnn", SAMPLES / "fashion_cnn")


@pytest.fixture(scope="session")
def mobilenet() -> Sample:
    return Sample("fashion_mobilenet", SAMPLES / "fashion_mobilenet")


@pytest.fixture(scope="session")
def dwnet() -> Sample:
    """Depthwise-heavy model that plain post-training INT8 hurts (sample_models/build.py: fashion_dwnet)."""
    return Sample("fashion_dwnet", SAMPLES / "fashion_dwnet")


@dataclass
class Result:
    code: int
    out: str
    err: str


@pytest.fixture
def cli(capsys):
    """Run ``edgeq ARGS`` in-process; returns exit code, stdout and stderr."""
    from edgeq.cli.main import main

    def run(*args) -> Result:
        capsys.readouterr()
        code = main([str(a) for a in args])
        cap = capsys.readouterr()
        return Result(code, cap.out, cap.err)

    return run


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def one_line_error(res: Result, *needles: str) -> None:
    """Exit code 2, exactly one line on stderr naming what is wrong, and no traceback."""
    assert res.code == 2, (res.code, res.err)
    lines = [ln for ln in res.err.splitlines() if ln.strip()]
    assert len(lines) == 1, res.err
    assert "Traceback" not in res.err
    for n in needles:
        assert n in lines[0], (n, lines[0])


def tf_to_tflite(f, representative=None) -> bytes:
    """A ``tf.function`` (with an input signature) as TFLite: float, or with ``representative`` (a callable
    yielding input lists) full-INT8 with int8 I/O and builtin int8 ops only, as TFLiteConverter writes it."""
    import tensorflow as tf

    conv = tf.lite.TFLiteConverter.from_concrete_functions([f.get_concrete_function()], f)
    if representative is not None:
        conv.optimizations = [tf.lite.Optimize.DEFAULT]
        conv.representative_dataset = representative
        conv.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        conv.inference_input_type = conv.inference_output_type = tf.int8
    return conv.convert()


def calibrate_keras(model, x: np.ndarray, int8_io: bool = False):
    """TFLiteConverter's calibrated float flatbuffer of a Keras model on ``x``: (Calibrated, feeds by input name)."""
    from edgeq.convert import representative_data
    from edgeq.data import Dataset
    from edgeq.modes import IOType
    from edgeq.progress import Silent
    from edgeq.quantize.selective import Calibrated
    from edgeq.sources.keras import from_keras_object

    with from_keras_object(model, Path("test.keras")) as fm:
        name = fm.inputs[0].name
        ds = Dataset(inputs={name: x}, labels=None, source=Path("calib.npz"))
        cal = Calibrated.from_saved_model(fm.saved_model_dir, representative_data(ds, Silent()), True,
                                          IOType.INT8 if int8_io else IOType.FLOAT32, "test")
        return cal, {name: x}


@pytest.fixture(scope="session")
def sin_model(tmp_path_factory) -> Path:
    """A SavedModel with an op (SIN) that has no integer kernel in LiteRT, plus calibration data."""
    import tensorflow as tf

    rng = np.random.default_rng(0)

    class Sine(tf.Module):
        def __init__(self):
            self.w1 = tf.Variable(rng.normal(size=(8, 8)).astype(np.float32))
            self.w2 = tf.Variable(rng.normal(size=(8, 4)).astype(np.float32))

        @tf.function(input_signature=[tf.TensorSpec([None, 8], tf.float32, name="x")])
        def __call__(self, x):
            return {"y": tf.matmul(tf.sin(tf.matmul(x, self.w1)), self.w2)}

    folder = tmp_path_factory.mktemp("sin")
    m = Sine()
    tf.saved_model.save(m, str(folder / "saved_model"), signatures={"serving_default": m.__call__})
    np.savez(folder / "calib.npz", x=rng.normal(size=(32, 8)).astype(np.float32))
    return folder / "saved_model"
