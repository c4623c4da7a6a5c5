"""What the benchmarks share: the default config's data and judge, trained once into the model cache, and
`gavel run` timed in a folder of its own; and what `--smoke` (every bench has it) shrinks: a tiny size that runs in
seconds through the same code, so that no bench rots between full runs. A smoke run's numbers mean nothing."""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.targets.datasets import Dataset
from gavel.targets.training import get_or_train


def default_judge(overrides: list[str] = ()) -> tuple[RunSettings, Dataset, object]:
    """The settings, data and (cached) judge of `gavel run` with `overrides`."""
    settings = RunSettings.from_config(compose_config(list(overrides)))
    data = settings.data_instance.load()
    spec = settings.target_instance.spec(data, settings.seed, "cpu")
    return settings, data, get_or_train(spec, data.judge, settings.cache_dir).model


# What every smoke run trains: the judge and the surrogate for 5 epochs instead of 30, so that a cold model cache
# costs seconds (the same training code; a judge right on about 87% of the digits, under another cache key).
SMOKE_TRAINING = ("target.train.epochs=5", "surrogate.train.epochs=5")


def add_smoke_flag(parser: argparse.ArgumentParser, size: str) -> None:
    """`--smoke`: `size` says what it runs (the bench reads `args.smoke` and shrinks its own sizes)."""
    parser.add_argument(
        "--smoke",
        action="store_true",
        help=f"a tiny size ({size}; any judge trained for 5 epochs): proves in seconds that the bench runs (its "
        "numbers mean nothing)",
    )


@contextmanager
def smoke_cache(smoke: bool) -> Iterator[None]:
    """With `smoke` and no GAVEL_CACHE_DIR: the model cache in a temporary folder, removed after; otherwise the
    cache the config names (GAVEL_CACHE_DIR, else .gavel_cache)."""
    if not smoke or os.environ.get("GAVEL_CACHE_DIR"):
        yield
        return
    with tempfile.TemporaryDirectory(prefix="gavel-bench-smoke-") as tmp:
        os.environ["GAVEL_CACHE_DIR"] = str(Path(tmp) / "cache")
        try:
            yield
        finally:
            del os.environ["GAVEL_CACHE_DIR"]


GAVEL = str(Path(sys.executable).with_name("gavel"))


def timed_gavel(workdir: Path, cache: Path, *args: str, env: dict[str, str] | None = None) -> float:
    """Wall-clock seconds of `gavel run *args` in `workdir` (made if missing), on the model cache `cache` and a new
    sqlite MLflow store in `workdir`, Hydra's outputs there too; `env`: the environment (default: this one's).
    Its output is discarded; a failure raises."""
    workdir.mkdir(parents=True, exist_ok=True)
    env = dict(os.environ if env is None else env)
    env.update(GAVEL_CACHE_DIR=str(cache), MLFLOW_TRACKING_URI=f"sqlite:///{workdir / 'mlflow.db'}")
    start = time.perf_counter()
    subprocess.run(
        [GAVEL, "run", *args, f"hydra.sweep.dir={workdir / 'multirun'}", f"hydra.run.dir={workdir / 'out'}"],
        cwd=workdir,
        env=env,
        check=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return time.perf_counter() - start
