"""The models of one run: the judge, and the attacker's surrogate as its knowledge allows.

`surrogate.knowledge` is what the attacker knows of the judge's training data:
- leaked: the judge's own training pool;
- same_distribution: the attacker's own pool, disjoint from the judge's;
- proxy: data from another distribution (a restyled variant of its pool, or another data set);
- extracted: its pool's inputs, labelled by querying the judge (model extraction; the labels count as queries).
`surrogate.data_fraction` shrinks whichever pool it is. An ensemble surrogate trains each member on it.
"""
from __future__ import annotations

import mlflow
from omegaconf import DictConfig
from torch import nn

from attacks.client import AttackerClient
from attacks.extraction import extract
from targets.datasets import Dataset, Pool, proxy_pool, subsample
from targets.models import Ensemble
from targets.training import CachedModel, ModelSpec, get_or_train

KNOWLEDGE = ("leaked", "same_distribution", "proxy", "extracted")


def cached_model(role: str, node: DictConfig, pool: Pool, seed: int, data: Dataset, cfg: DictConfig, device: str):
    """Train (or load) a judge or surrogate, and tag the run with its cache key and whether it was a hit."""
    spec = ModelSpec.from_config(role, node, seed, pool, data.input_shape, data.n_classes)
    cached: CachedModel = get_or_train(spec, pool, cfg.cache_dir, device)
    mlflow.set_tags({f"{role}_key": cached.key, f"{role}_cache": "hit" if cached.cache_hit else "miss"})
    return cached


def surrogate_members(node: DictConfig) -> list[DictConfig]:
    return list(node.members.values()) if node.get("members") else [node]


def build_surrogate(cfg: DictConfig, data: Dataset, client: AttackerClient, device: str) -> nn.Module:
    node = cfg.surrogate
    seed = cfg.seed + 1  # the attacker's own randomness, not the judge's
    source = data.judge if node.knowledge == "leaked" else data.attacker
    pool = subsample(source, node.data_fraction, seed)
    if node.knowledge == "extracted":
        # Not cached: its labels must be bought, and counted, in every run that uses it.
        model, labels = extract(client, node, pool, seed, device)
        mlflow.set_tags({"surrogate_cache": "none (extracted)", "surrogate_labels_bought": labels})
        return model
    if node.knowledge == "proxy":
        pool = subsample(proxy_pool(data, node.proxy, node.proxy_root, seed), node.data_fraction, seed)
    members = [
        cached_model("surrogate", member, pool, seed + k, data, cfg, device).model
        for k, member in enumerate(surrogate_members(node))
    ]
    return members[0] if len(members) == 1 else Ensemble(members)
