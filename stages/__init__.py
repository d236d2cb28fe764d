"""dnnlab's pipeline stages: a thin `main()` per DVC stage, generic over the task modules (stages/tasks/)."""

import os

# TensorFlow's C++ start-up chatter (CPU flags, oneDNN notes) would bury the stages' own lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
