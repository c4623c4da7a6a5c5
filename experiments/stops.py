"""Stops: SIGTERM (what `timeout`, `kill` and a cancelled CI job send) and Ctrl-C's SIGINT, raised where the job is
as a `KeyboardInterrupt`, so that the run ends KILLED and the model cache is left as it was.

A stop that lands while the run is being registered or ended in the store (inside MLflow's `start_run`, after the
run's row is written but before MLflow holds it as the active run) would leave the run RUNNING forever, or a store
connection mid-transaction. Those moments run under `deferred()`: a stop that arrives then is held and raised as
soon as they end, where the job can still end the run KILLED."""

from __future__ import annotations

import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where the job is, like Ctrl-C."""


_deferring = 0
_pending: int | None = None


def stop_for(signum: int) -> KeyboardInterrupt:
    if signum == signal.SIGTERM:
        return Terminated(f"stopped by signal {signum} (SIGTERM)")
    return KeyboardInterrupt()


def on_stop(signum, frame) -> None:
    """The handler for SIGTERM and SIGINT (Python runs it in the main thread): raise the stop, or hold it while
    `deferred()`."""
    global _pending
    if _deferring:
        _pending = signum
        return
    raise stop_for(signum)


def install() -> None:
    """`on_stop` for SIGTERM and SIGINT (only the main thread of a process can install a handler)."""
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)


@contextmanager
def deferred() -> Iterator[None]:
    """Hold any stop until the block ends; then raise it, unless the block is ending on an error of its own."""
    global _deferring, _pending
    _deferring += 1
    try:
        yield
    finally:
        _deferring -= 1
        if not _deferring and _pending is not None and sys.exc_info()[0] is None:
            signum, _pending = _pending, None
            raise stop_for(signum)
