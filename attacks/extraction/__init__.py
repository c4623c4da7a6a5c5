"""Model extraction: a surrogate trained on labels bought from the judge's API.

ART's CopycatCNN and KnockoffNets, and Papernot et al.'s Jacobian-based data augmentation (2017; no library
has it). Every labelling query goes through the attacker's client under the Oracle key `SHARED`, so it is
counted, comes out of the same budget as the attack's queries, and uses the attacker's accounts.
"""

from __future__ import annotations

from torch import nn

from gavel.attacks.adapters.art import seed_global_rngs
from gavel.attacks.extraction.art_extraction import art_extraction
from gavel.attacks.extraction.base import METHODS, ExtractionSpec
from gavel.attacks.extraction.jacobian import jacobian_augmentation
from gavel.targets.access import SHARED, AttackerClient
from gavel.targets.datasets import Pool
from gavel.targets.training import ModelConfig

__all__ = ["METHODS", "ExtractionSpec", "extract"]


def extract(
    client: AttackerClient, model: ModelConfig, spec: ExtractionSpec, pool: Pool, seed: int, device: str
) -> tuple[nn.Module, int]:
    """A surrogate of architecture `model` extracted as `spec` says; returns it and the number of labels bought."""
    n = client.label_allowance(spec.label_budget, reserve=client.planned)
    if n < 1:
        raise RuntimeError(
            f"surrogate.extraction.label_budget={spec.label_budget}: nothing left to buy labels with "
            "after reserving one query per attacked example"
        )
    bought_before = client.queries(SHARED)
    seed_global_rngs(seed)
    steal = jacobian_augmentation if spec.method == "jacobian" else art_extraction
    surrogate = steal(client, model, spec, pool, n, seed, device)
    return surrogate.eval(), client.queries(SHARED) - bought_before
