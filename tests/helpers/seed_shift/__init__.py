"""Test-only: the suite run on other weights, as another CPU or seed would train them.

`GAVEL_TEST_SEED=K` shifts the seed of every judge and surrogate the suite trains by K (`ModelSpec.of`, the one
door all of them pass through; the cache key holds the shifted seed, so no entry is mistaken for another).
`GAVEL_TEST_THREADS=N` trains and attacks on N torch threads instead of one (the same seed trains other weights
on another thread count). Neither is read by gavel itself: `tests/conftest.py` applies them in the test process,
and `sitecustomize.py` beside this file (put on PYTHONPATH by conftest) applies the seed in every Python process
a test starts (`gavel run`, a launcher's workers). Portability is proven by running the whole suite under
several of each: `GAVEL_TEST_SEED=3 GAVEL_TEST_THREADS=2 make test`."""

from __future__ import annotations

import os

SEED_ENV = "GAVEL_TEST_SEED"
THREADS_ENV = "GAVEL_TEST_THREADS"


def _integer(name: str, default: int, minimum: int) -> int:
    raw = os.environ.get(name, "").strip()
    if not raw:
        return default
    try:
        value = int(raw)
    except ValueError:
        raise SystemExit(f"{name}={raw}: allowed: an integer >= {minimum}") from None
    if value < minimum:
        raise SystemExit(f"{name}={raw}: allowed: an integer >= {minimum}")
    return value


def seed_shift() -> int:
    return _integer(SEED_ENV, 0, 0)


def threads_for_tests() -> int:
    return _integer(THREADS_ENV, 1, 1)


def shift_training_seeds(training) -> None:
    """Wrap `training.ModelSpec.of` (module `gavel.targets.training`) so that every model's seed is shifted."""
    shift = seed_shift()
    spec = training.ModelSpec
    if shift == 0 or getattr(spec.of, "seed_shift", None) is not None:
        return
    original = spec.of.__func__

    def of(cls, role, model, seed, *args, **kwargs):
        return original(cls, role, model, int(seed) + shift, *args, **kwargs)

    of.seed_shift = shift
    spec.of = classmethod(of)
