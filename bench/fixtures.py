"""What the benchmarks share: the default config's data and judge, trained once into the model cache, and
`gavel run` timed in a folder of its own."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.targets.datasets import Dataset, load_dataset
from gavel.targets.training import ModelSpec, get_or_train


def default_judge(overrides: list[str] = ()) -> tuple[RunSettings, Dataset, object]:
    """The settings, data and (cached) judge of `gavel run` with `overrides`."""
    settings = RunSettings.from_config(compose_config(list(overrides)))
    data = load_dataset(settings.data)
    spec = ModelSpec.of("judge", settings.target.model, settings.seed, data.judge, data.input_shape, data.n_classes)
    return settings, data, get_or_train(spec, data.judge, settings.cache_dir).model


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
