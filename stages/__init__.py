"""dnnlab's pipeline stages: one module per DVC stage, a pure core and a thin `main()`."""

import os

# TensorFlow's C++ start-up chatter (CPU flags, oneDNN notes) would bury the stages' own lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
