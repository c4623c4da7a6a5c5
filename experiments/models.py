"""The models of one run: the judge, and the attacker's surrogate as its knowledge allows.

`surrogate.knowledge` is what the attacker knows of the judge's training data:
- leaked: the judge's own training pool;
- same_distribution: the attacker's own pool, disjoint from the judge's;
- proxy: data from another distribution (a restyled variant of its pool, or another data set);
- extracted: its pool's inputs, labelled by querying the judge (model extraction; the labels count as queries).
`surrogate.data_fraction` shrinks whichever pool it is. An ensemble surrogate trains each member on it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import mlflow
from torch import nn

from gavel.attacks.extraction import ExtractionSpec, extract
from gavel.targets.access import AttackerClient
from gavel.targets.datasets import Dataset, Pool, proxy_pool, subsample
from gavel.targets.models import Ensemble
from gavel.targets.training import CachedModel, ModelConfig, ModelSpec, get_or_train


class Knowledge(StrEnum):
    LEAKED = "leaked"
    SAME_DISTRIBUTION = "same_distribution"
    PROXY = "proxy"
    EXTRACTED = "extracted"


@dataclass(frozen=True)
class SurrogateSpec:
    """`conf/surrogate`: one model or an ensemble's members, and what the attacker knows to train them on."""

    name: str
    members: tuple[ModelConfig, ...]
    knowledge: Knowledge
    data_fraction: float
    proxy: str
    proxy_root: str | None
    extraction: ExtractionSpec


def cached_model(
    role: str, model: ModelConfig, pool: Pool, seed: int, data: Dataset, cache_dir: Path, device: str
) -> CachedModel:
    """Train (or load) a judge or surrogate, and tag the run with its cache key and whether it was a hit."""
    spec = ModelSpec.of(role, model, seed, pool, data.input_shape, data.n_classes, device)
    cached = get_or_train(spec, pool, cache_dir, device)
    mlflow.set_tags({f"{role}_key": cached.key, f"{role}_cache": "hit" if cached.cache_hit else "miss"})
    return cached


def build_surrogate(
    spec: SurrogateSpec, data: Dataset, client: AttackerClient, seed: int, cache_dir: Path, device: str
) -> nn.Module:
    """The attacker's surrogate; `seed` is the attacker's own (the run's seed + 1), not the judge's."""
    source = data.judge if spec.knowledge == Knowledge.LEAKED else data.attacker
    pool = subsample(source, spec.data_fraction, seed)
    if spec.knowledge == Knowledge.EXTRACTED:
        # Not cached: its labels must be bought, and counted, in every run that uses it.
        model, labels = extract(client, spec.members[0], spec.extraction, pool, seed, device)
        mlflow.set_tags({"surrogate_cache": "none (extracted)", "surrogate_labels_bought": labels})
        return model
    if spec.knowledge == Knowledge.PROXY:
        pool = subsample(proxy_pool(data, spec.proxy, spec.proxy_root, seed), spec.data_fraction, seed)
    members = [
        cached_model("surrogate", member, pool, seed + k, data, cache_dir, device).model
        for k, member in enumerate(spec.members)
    ]
    return members[0] if len(members) == 1 else Ensemble(members)
