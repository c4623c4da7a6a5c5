"""A stop (SIGTERM, Ctrl-C) that lands while a run is registered or ended in the store is held until that ends, then
raised: the run is never left RUNNING by a stop inside MLflow's `start_run`."""

from __future__ import annotations

import os
import signal

import pytest

from gavel.experiments import stops


@pytest.fixture
def handlers():
    saved = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT)}
    stops.install()
    yield
    for s, handler in saved.items():
        signal.signal(s, handler)
    stops._pending = None  # a stop a test left held must not reach another test's run


def test_a_stop_is_raised_where_the_job_is(handlers):
    with pytest.raises(stops.Terminated):
        os.kill(os.getpid(), signal.SIGTERM)
    with pytest.raises(KeyboardInterrupt):
        os.kill(os.getpid(), signal.SIGINT)


def test_a_stop_during_a_deferred_block_is_raised_when_it_ends(handlers):
    done = []
    with pytest.raises(KeyboardInterrupt):
        with stops.deferred():
            os.kill(os.getpid(), signal.SIGINT)
            done.append("the block ran to its end")
        done.append("never: the stop is raised as the block ends")
    assert done == ["the block ran to its end"]
    with stops.deferred():  # nothing left pending
        pass


def test_a_held_stop_does_not_replace_the_blocks_own_error(handlers):
    with pytest.raises(ValueError):
        with stops.deferred():
            os.kill(os.getpid(), signal.SIGTERM)
            raise ValueError("the store failed")
