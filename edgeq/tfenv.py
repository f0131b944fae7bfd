"""Import TensorFlow quietly and only when needed, so ``edgeq --help`` stays instant."""
from __future__ import annotations

import os
import warnings


def quiet_tf():
    """Return the ``tensorflow`` module with its C++ and Python logging turned down."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")  # bit-identical float results run to run
    os.environ.setdefault("GRPC_VERBOSITY", "ERROR")
    import absl.logging

    from edgeq.nativeio import quiet_native_output

    with quiet_native_output():  # absl/XLA print "All log messages before absl::InitializeLog()" at import
        import tensorflow as tf

    absl.logging.set_verbosity(absl.logging.ERROR)
    tf.get_logger().setLevel("ERROR")
    # Keras 3 warns on every new batch shape when a model saved with a list of inputs (many .h5 files) is
    # called with one array; it flattens the structure and computes the same thing
    warnings.filterwarnings("ignore", message="The structure of `inputs` doesn't match the expected structure",
                            category=UserWarning)
    return tf
