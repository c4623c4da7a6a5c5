"""The training stage of a judge gavel trains: the pool its contributors gave, poisoned where the attacker controls
some of them (`poison=`), cleaned by the operator (`sanitise=`), trained on by the recipe (natural or robust).

    contributed pool -> poison -> train -> sanitise -> retrain on what it kept, or fine-tune -> the judge

Each judge along the way is cached like any other, its key holding the poison and the sanitiser (`provenance`).
With neither, the judge is the one gavel always trained, under the same key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from gavel.attacks.poisoning.base import PoisonContext
from gavel.defenses.sanitise.base import SanitiseContext
from gavel.experiments.settings import RunSettings
from gavel.targets.datasets import Dataset, Pool
from gavel.targets.judges.base import ProvidedJudge
from gavel.targets.training import Recipe

POISON_SEED = 7877
"""Added to the run's seed for the attacker's choice of what to poison (its own stream)."""


@dataclass(frozen=True)
class Trained:
    judge: ProvidedJudge
    metrics: dict[str, float] = field(default_factory=dict)
    """What the poison and the sanitiser did: `poisoned_examples`, `poison_recall`, `poison_precision`,
    `honest_removed_fraction`, `removed_examples` (each only where it applies)."""


def held_out(data: Dataset, n_examples: int) -> Pool:
    """The operator's own clean data that trains nothing and judges nothing: the honest half of `data.operator`, else
    the evaluation pool past the examples used."""
    if data.honest is not None:
        return data.honest
    return Pool(data.eval.x[n_examples:], data.eval.y[n_examples:])


def train_judge(settings: RunSettings, data: Dataset, device: str) -> Trained:
    source = settings.target_instance
    poison, sanitiser = settings.poison_instance, settings.sanitiser_instance
    seed, cache_dir = settings.seed, Path(settings.cache_dir)
    if not poison.active and not sanitiser.active:
        return Trained(source.provide(data, seed, cache_dir, device))
    parties = settings.data_instance.contributors
    context = PoisonContext(
        data.contributors, parties, seed + POISON_SEED, data.attacker, str(cache_dir), device
    )  # fmt: skip
    contributed = poison.apply(data.judge, context)
    provenance = poison.as_dict()
    judge = source.train_on(contributed.pool, data, seed, cache_dir, device, provenance)
    metrics: dict[str, float] = {}
    if poison.active:
        metrics["poisoned_examples"] = float(contributed.poisoned.sum())
    if not sanitiser.active:
        return Trained(judge, metrics)
    cleaned = sanitiser.clean(
        SanitiseContext(
            contributed.pool, data.contributors, parties, judge.model, seed, device, held_out(data, settings.n_examples)
        )
    )
    provenance = {**provenance, **sanitiser.as_dict()}
    if cleaned.kept is not None:
        if not cleaned.kept.any():  # else a judge trained on nothing, cached, and a run failing on its verdicts
            raise RuntimeError(
                f"sanitise={settings.sanitise.name} removed all {len(cleaned.kept)} examples of the judge's training "
                "pool: nothing left to retrain it on"
            )
        metrics |= removal_metrics(contributed.poisoned, cleaned.kept, honest_examples(poison, data, parties))
        kept = Pool(contributed.pool.x[cleaned.kept], contributed.pool.y[cleaned.kept])
        return Trained(source.train_on(kept, data, seed, cache_dir, device, provenance), metrics)
    recipe = Recipe(epochs=sanitiser.epochs, batch_size=sanitiser.batch_size, lr=sanitiser.lr)
    tuned = source.fine_tune(judge, cleaned.fine_tune_on, recipe, data, seed, cache_dir, device, provenance)
    return Trained(tuned, metrics)


def honest_examples(poison, data: Dataset, parties: int) -> np.ndarray | None:
    """What the honest contributors gave: every example of a contributor the attacker does not control. Where it
    controls them all (one contributor, the default: the attacker slips `poison.fraction` of the samples into the
    pool), None: every example it did not poison."""
    if not poison.active:
        return None
    honest = ~poison.attackers(data.contributors, parties)
    return honest if honest.any() else None


def removal_metrics(poisoned: np.ndarray, kept: np.ndarray, honest: np.ndarray | None = None) -> dict[str, float]:
    """What a sanitiser removed, scored against what was poisoned and against what honest contributors gave (`honest`:
    the examples of the contributors the attacker does not control; None: every example not poisoned); a figure with
    nothing to count is left out."""
    removed = ~kept
    metrics = {"removed_examples": float(removed.sum())}
    honest = ~poisoned if honest is None else honest
    if honest.any():
        metrics["honest_removed_fraction"] = float((removed & honest).sum() / honest.sum())
    if poisoned.any():
        metrics["poison_recall"] = float((removed & poisoned).sum() / poisoned.sum())
    if removed.any() and poisoned.any():
        metrics["poison_precision"] = float((removed & poisoned).sum() / removed.sum())
    return metrics
