"""Sample models in other source formats, made once per work directory for the benchmarks that need them."""
from __future__ import annotations

from pathlib import Path


def saved_model(keras_file: Path, path: Path) -> Path:
    """A SavedModel exported from ``keras_file`` at ``path`` (reused when it already exists)."""
    if not path.exists():
        import keras

        from edgeq.nativeio import quiet_native_output

        with quiet_native_output():
            keras.saving.load_model(keras_file, compile=False).export(str(path), verbose=False)
    return path
