"""The dense network and its training engines, with a train core that does no I/O.

Keras is imported here first, with scikit-learn and matplotlib marked absent while it loads: when they
are installed, Keras imports them for its scikit-learn estimator wrappers and its image gallery, which
training never uses (1.1 s of the 4 s `import keras` here). Absent, Keras skips them as it does on a
machine without them; they are importable again right after (a task module may use either).
"""

from __future__ import annotations

import sys

_UNUSED_BY_TRAINING = [name for name in ("sklearn", "matplotlib") if name not in sys.modules]
sys.modules.update(dict.fromkeys(_UNUSED_BY_TRAINING))  # None: `import` raises ImportError
try:
    import keras  # noqa: F401,E402
finally:
    for name in _UNUSED_BY_TRAINING:
        if sys.modules.get(name, "") is None:
            del sys.modules[name]
