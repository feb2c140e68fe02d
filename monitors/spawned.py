"""What the processes a canary run spawns have in common (the PII workers of
``lorawatch.monitors.pii_pool``, the model process of ``lorawatch.monitors.canary_child``): kept
light, since a run imports it before the libraries it waits for."""

from __future__ import annotations

import contextlib
import os
import sys
import time
from collections.abc import Iterator


@contextlib.contextmanager
def main_kept_out() -> Iterator[None]:
    """Start processes without the caller's main module: a spawned child runs the parent's
    ``__main__`` again unless it is guarded (a user's script, a Streamlit page, a test runner
    that ran one); they need only the module of the function they run."""
    main = sys.modules.get("__main__")
    saved = {name: getattr(main, name) for name in ("__file__", "__spec__") if hasattr(main, name)}
    try:
        for name in saved:
            setattr(main, name, None)
        yield
    finally:
        for name, value in saved.items():
            setattr(main, name, value)


def end_with_parent(parent: int) -> None:
    """End this process once its parent is gone (killed, say): a worker would otherwise wait
    for work forever, since it holds both ends of the pipe its work comes through. Run it on a
    daemon thread."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)
