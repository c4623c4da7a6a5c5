"""The models of one run: the judge from its source, and the attacker's surrogate as its knowledge allows
(`attacks/surrogate/base.py` says what each kind of knowledge means)."""

from __future__ import annotations

from pathlib import Path

import mlflow
from torch import nn

from gavel.attacks.extraction import extract
from gavel.attacks.surrogate.base import Surrogate
from gavel.targets.access import AttackerClient
from gavel.targets.data.proxy import proxy_pool
from gavel.targets.datasets import Dataset, Pool, subsample
from gavel.targets.models import Ensemble
from gavel.targets.training import CachedModel, ModelConfig, ModelSpec, get_or_train


def cached_model(
    role: str, model: ModelConfig, pool: Pool, seed: int, data: Dataset, cache_dir: Path, device: str
) -> CachedModel:
    """Train (or load) a surrogate, and tag the run with its cache key and whether it was a hit."""
    spec = ModelSpec.of(role, model, seed, pool, data.input_shape, data.n_classes, device)
    cached = get_or_train(spec, pool, cache_dir, device)
    mlflow.set_tags({f"{role}_key": cached.key, f"{role}_cache": "hit" if cached.cache_hit else "miss"})
    return cached


def build_surrogate(
    spec: Surrogate, data: Dataset, client: AttackerClient, seed: int, cache_dir: Path, device: str
) -> nn.Module:
    """The attacker's surrogate; `seed` is the attacker's own (the run's seed + 1), not the judge's."""
    pool = subsample(data.judge if spec.knowledge == "leaked" else data.attacker, spec.data_fraction, seed)
    if spec.knowledge == "extracted":
        # Not cached: its labels must be bought, and counted, in every run that uses it.
        model, labels = extract(client, spec.members[0], spec.extraction, pool, seed, device)
        mlflow.set_tags({"surrogate_cache": "none (extracted)", "surrogate_labels_bought": labels})
        return model
    if spec.knowledge == "proxy":
        pool = subsample(proxy_pool(data.attacker, spec.proxy, spec.proxy_root, seed), spec.data_fraction, seed)
    members = [
        cached_model("surrogate", member, pool, seed + k, data, cache_dir, device).model
        for k, member in enumerate(spec.members)
    ]
    return members[0] if len(members) == 1 else Ensemble(members)
