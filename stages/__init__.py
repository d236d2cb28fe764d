"""dnnlab's pipeline stages: one module per DVC stage, a pure core and a thin `main()`."""

import os
import signal
import sys

# TensorFlow's C++ start-up chatter (CPU flags, oneDNN notes) would bury the stages' own lines.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


def _interrupted_while_starting(signum, frame) -> None:
    """Ctrl-C while a stage still imports (pandas, TensorFlow): nothing is written yet, so one line and
    exit 130 instead of the traceback of whichever import it cut; `run_stage` takes over from here."""
    args = sys.orig_argv
    name = args[args.index("-m") + 1].rsplit(".", 1)[-1] if "-m" in args else "stage"
    os.write(2, f"{name}: error: interrupted while starting; its outputs are as they were\n".encode())
    os._exit(130)


# `python -m stages.<stage>`: Python imports this package to find the stage while argv[0] is still "-m"
# (a flow or a test importing stages in its own process keeps its own Ctrl-C).
if sys.argv[:1] == ["-m"]:
    signal.signal(signal.SIGINT, _interrupted_while_starting)
