"""Import TensorFlow quietly and only when needed, so ``edgeq --help`` stays instant."""
from __future__ import annotations

import os


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
    return tf
