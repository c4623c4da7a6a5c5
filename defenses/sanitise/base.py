"""The sanitiser contract: from the contributed pool (and the judge trained on it), what to keep, or what clean data
to fine-tune the judge on; the runner retrains (or fine-tunes) the judge accordingly.

What a sanitiser removed is scored against what the attacker poisoned: `poison_recall` (the poisoned examples it
removed), `poison_precision` (the removed examples that were poisoned) and `honest_removed_fraction` (what it cost
honest contributors).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn

from gavel.targets.datasets import Pool
from gavel.targets.params import declared_hyperparameters


@dataclass(frozen=True)
class SanitiseContext:
    pool: Pool
    """The contributed training pool, poison and all."""
    contributors: np.ndarray
    parties: int
    judge: nn.Module
    """The judge trained on `pool`."""
    seed: int
    device: str = "cpu"
    held_out: Pool | None = None
    """The operator's own clean data that trained nothing (the evaluation pool past the examples used, or the
    honest half of `data.operator`)."""


@dataclass(frozen=True)
class Cleaned:
    kept: np.ndarray | None = None
    """The examples to retrain on (a mask over the pool); None: remove nothing."""
    fine_tune_on: Pool | None = None
    """Clean data to fine-tune the trained judge on, instead of retraining it."""


class Sanitiser(ABC):
    active: ClassVar[bool] = True
    needs_contributors: ClassVar[bool] = False
    """Whether it reads who contributed what (and so needs more than one contributor)."""

    def as_dict(self) -> dict:
        """The sanitiser as the model cache's key holds it: its class and every hyperparameter."""
        values = {key: getattr(self, key) for key in declared_hyperparameters(type(self).__mro__)}
        return {"sanitiser": type(self).__name__, **values}

    def shortfall(self, held_out: Pool) -> str | None:
        """Why it cannot clean with the operator's clean held-out data `held_out` (one line), or None where it can:
        checked before the run, so that a job it cannot do is refused rather than failed after training."""
        return None

    @abstractmethod
    def clean(self, context: SanitiseContext) -> Cleaned:
        """What to keep of the pool, or what to fine-tune on."""


class NoSanitiser(Sanitiser):
    """`sanitise=none`: the judge is trained on the pool as contributed."""

    active = False

    def as_dict(self) -> dict:
        return {}

    def clean(self, context: SanitiseContext) -> Cleaned:
        return Cleaned()


@torch.no_grad()
def penultimate_features(judge: nn.Module, x: np.ndarray, device: str = "cpu") -> np.ndarray:
    """The judge's activations just before its last Linear layer (what its verdict is read from), row by row."""
    from gavel.defenses.detection.encoders import penultimate_encoder

    return penultimate_encoder(judge, device)(x).cpu().numpy().astype(np.float64)
