"""The runner trains the attacker's surrogate on the pool its knowledge gives (read back from the model cache)."""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import pytest
from helpers.configs import tiny_settings

from gavel.experiments import runner
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.targets.data.proxy import proxy_pool
from gavel.targets.datasets import subsample


@pytest.fixture(scope="module")
def digits():
    return RunSettings.from_config(compose_config([])).data_instance.load()


def surrogate_fingerprint() -> str:
    """The data fingerprint of the surrogate the last run trained, read from its cache entry."""
    run = mlflow.last_active_run()
    key = mlflow.get_run(run.info.run_id).data.tags["surrogate_key"]
    cache = Path(compose_config([]).cache_dir)
    return json.loads((cache / "models" / key / "meta.json").read_text())["spec"]["data_fingerprint"]


@pytest.mark.parametrize(
    "overrides, expected_pool",
    [
        ([], lambda d: d.attacker),
        (["surrogate.knowledge=leaked"], lambda d: d.judge),
        (["surrogate.data_fraction=0.3"], lambda d: subsample(d.attacker, 0.3, seed=1)),
        (["surrogate.knowledge=proxy"], lambda d: proxy_pool(d.attacker, "transformed", None, seed=1)),
    ],
)
def test_the_surrogate_trains_on_the_pool_its_knowledge_gives(digits, overrides, expected_pool):
    settings = tiny_settings("transfer_pgd", *overrides)
    runner.run(settings, runner.prepare(settings))
    assert surrogate_fingerprint() == expected_pool(digits).fingerprint()
