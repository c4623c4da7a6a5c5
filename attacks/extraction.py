"""Model extraction: a surrogate trained on labels bought from the judge's API.

ART's CopycatCNN and KnockoffNets, and Papernot et al.'s Jacobian-based data augmentation (2017; no library
has it). Every labelling query goes through the attacker's client under the Oracle key `SHARED`, so it is
counted, comes out of the same budget as the attack's queries, and uses the attacker's accounts.
"""
from __future__ import annotations

import math

import numpy as np
import torch
from art.attacks.extraction import CopycatCNN, KnockoffNets
from omegaconf import DictConfig
from torch import nn

from attacks.art_adapter import OracleClassifier, as_scores, pytorch_estimator, seed_global_rngs
from attacks.client import AttackerClient
from targets.datasets import Pool
from targets.models import build_model
from targets.oracle import SHARED
from targets.training import ModelSpec, train

METHODS = ("copycat", "knockoff", "jacobian")


class LabellingSession:
    """The attacker buying labels: every answer is the judge's (one-hot for label-only APIs)."""

    def __init__(self, client: AttackerClient) -> None:
        self.client = client

    def predict(self, x: np.ndarray) -> np.ndarray:
        return as_scores(self.client.query(np.asarray(x, dtype=np.float32), example=SHARED), self.client.n_classes)

    def labels(self, x: np.ndarray) -> np.ndarray:
        return self.predict(x).argmax(axis=1).astype(np.int64)


def label_allowance(client: AttackerClient, wanted: int, reserve: int) -> int:
    """How many labels the attacker can buy without breaking the limits it knows: its budget (per example,
    times the examples it will attack) and its accounts' quotas, keeping `reserve` queries for the attack."""
    policy = client.policy
    allowed = wanted
    if policy.budget is not None:
        allowed = min(allowed, policy.budget * client.planned - client.oracle.queries_total - reserve)
    if policy.account_limit is not None:
        allowed = min(allowed, policy.account_limit * policy.accounts - client.oracle.queries_total - reserve)
    return max(0, allowed)


def query_set(x: np.ndarray, n: int, seed: int) -> np.ndarray:
    """At least `n` unlabelled inputs: the attacker's pool, then jittered copies of it (a one-pixel shift and
    light noise) so that a labelling budget larger than the pool still buys new inputs."""
    rng = np.random.default_rng(seed)
    parts = [x]
    while sum(len(p) for p in parts) < n:
        shifted = np.roll(x, shift=(int(rng.integers(-1, 2)), int(rng.integers(-1, 2))), axis=(2, 3))
        parts.append(np.clip(shifted + rng.normal(0, 0.05, x.shape), 0, 1).astype(np.float32))
    return np.concatenate(parts)[: max(n, len(x))]


def extract(client: AttackerClient, node: DictConfig, pool: Pool, seed: int, device: str) -> tuple[nn.Module, int]:
    """A surrogate extracted as `node.extraction` says; returns it and the number of labels bought."""
    method = node.extraction.method
    n = label_allowance(client, int(node.extraction.label_budget), reserve=client.planned)
    if n < 1:
        raise RuntimeError(
            f"surrogate.extraction.label_budget={node.extraction.label_budget}: nothing left to buy labels with "
            "after reserving one query per attacked example"
        )
    bought_before = client.queries(SHARED)
    seed_global_rngs(seed)
    if method == "jacobian":
        model = jacobian_augmentation(client, node, pool, n, seed, device)
    else:
        model = _art_extraction(client, node, pool, n, seed, device)
    return model.eval(), client.queries(SHARED) - bought_before


def _art_extraction(client: AttackerClient, node: DictConfig, pool: Pool, n: int, seed: int, device: str) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(node.arch, client.input_shape, client.n_classes).to(device)
    model.normalize.fit(torch.from_numpy(pool.x))
    optimizer = torch.optim.Adam(model.parameters(), lr=node.train.lr, weight_decay=node.train.weight_decay)
    thieved = pytorch_estimator(model, client.input_shape, client.n_classes, optimizer)
    victim = OracleClassifier(LabellingSession(client))
    x = query_set(pool.x, n, seed)
    common = dict(
        batch_size_fit=node.train.batch_size,
        batch_size_query=256,
        nb_epochs=node.train.epochs,
        nb_stolen=n,
        use_probability=bool(node.extraction.use_probability),
    )
    if node.extraction.method == "copycat":
        CopycatCNN(victim, **common).extract(x, thieved_classifier=thieved)
    else:
        knockoff = KnockoffNets(victim, sampling_strategy=node.extraction.sampling, verbose=False, **common)
        y = np.eye(client.n_classes, dtype=np.float32)[np.resize(pool.y, len(x))]
        knockoff.extract(x, y=y if node.extraction.sampling == "adaptive" else None, thieved_classifier=thieved)
    return model


def jacobian_augmentation(
    client: AttackerClient, node: DictConfig, pool: Pool, n: int, seed: int, device: str
) -> nn.Module:
    """Papernot et al. (2017): label a small seed set, train, then grow the set along the sign of the
    surrogate's Jacobian for each input's label (step lambda, its sign flipped every `tau` rounds), label
    the new inputs, retrain; until the labels the attacker can buy run out."""
    labeller = LabellingSession(client)
    cfg = node.extraction
    rng = np.random.default_rng(seed)
    new = pool.x[rng.permutation(len(pool))[: min(cfg.seed_size, n)]]
    x_all = np.zeros((0, *client.input_shape), dtype=np.float32)
    y_all = np.zeros(0, dtype=np.int64)
    model = None
    for round_ in range(math.ceil(math.log2(max(n, 2))) + 1):
        new = new[: n - len(y_all)]
        if not len(new):
            break
        x_all = np.concatenate([x_all, new])
        y_all = np.concatenate([y_all, labeller.labels(new)])
        spec = ModelSpec.from_config("surrogate", node, seed, Pool(x_all, y_all), client.input_shape, client.n_classes)
        model, _ = train(spec, Pool(x_all, y_all), device)
        step = cfg.step * (-1) ** (round_ // cfg.tau)
        new = np.clip(x_all + step * _jacobian_sign(model, x_all, y_all, device), 0, 1).astype(np.float32)
    return model


def _jacobian_sign(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str) -> np.ndarray:
    """sign(d logit_y / d x) for each input and its label."""
    inputs = torch.from_numpy(x).to(device).requires_grad_(True)
    logits = model(inputs)
    logits.gather(1, torch.from_numpy(y).to(device)[:, None]).sum().backward()
    return inputs.grad.sign().cpu().numpy()
