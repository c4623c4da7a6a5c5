"""Threat models: what an attacker holds, as one object the access checks, metrics, tracking and reports read.

Each is defined once here; code compares `ThreatModel` objects, never their names (names appear in the YAML
files and in MLflow's `threat_model` tag).
"""

from __future__ import annotations

from dataclasses import dataclass

from gavel.targets.access.errors import AccessDenied
from gavel.targets.access.policy import AccessPolicy, Output, Weights
from gavel.targets.judges.base import FULL, Capabilities


@dataclass(frozen=True)
class ThreatModel:
    name: str
    open_weights: bool
    """Needs the judge's weights and gradients (`access.weights=open`)."""
    surrogate: bool
    """Crafts on the attacker's own model (a surrogate trained as its knowledge allows)."""
    scores: bool
    """Needs scores from the API (logits or probabilities), not only labels."""
    charged_queries: bool
    """Spends a per-example query budget through the API: the budget applies, and success has a curve over
    queries. (A transfer attacker submits each crafted input once, charged but not budgeted by its search.)"""

    def __str__(self) -> str:
        return self.name

    def check(self, policy: AccessPolicy, capabilities: Capabilities = FULL, judge: str = "the judge") -> None:
        """Raise `AccessDenied` if `policy`, or the judge (what it offers: `capabilities`; `judge` names it), does
        not give this threat model what it needs."""
        if self.open_weights and not capabilities.gradients:
            raise AccessDenied(
                f"a {self.name} attack needs the judge's gradients, but {judge} offers none; "
                "allowed: a transfer, score-based or decision-based attack"
            )
        if self.scores and not capabilities.scores:
            raise AccessDenied(
                f"a {self.name} attack needs scores, but {judge} answers with a label only; "
                "allowed: a decision-based or transfer attack"
            )
        if self.open_weights and policy.weights != Weights.OPEN:
            raise AccessDenied(
                f"a {self.name} attack needs the judge's gradients, but access.weights={policy.weights}; "
                "allowed: access.weights=open, or a transfer, score-based or decision-based attack"
            )
        if self.scores and policy.output == Output.LABEL:
            raise AccessDenied(
                f"a {self.name} attack needs scores, but access.output=label; "
                "allowed: access.output=logits or probabilities, or a decision-based attack"
            )


WHITE_BOX = ThreatModel("white_box", open_weights=True, surrogate=False, scores=False, charged_queries=False)
TRANSFER = ThreatModel("transfer", open_weights=False, surrogate=True, scores=False, charged_queries=False)
SCORE_BASED = ThreatModel("score_based", open_weights=False, surrogate=False, scores=True, charged_queries=True)
DECISION_BASED = ThreatModel("decision_based", open_weights=False, surrogate=False, scores=False, charged_queries=True)
HYBRID = ThreatModel("hybrid", open_weights=False, surrogate=True, scores=False, charged_queries=True)
"""Transfer first, then queries: what it needs of the API is its query stage's (see `Hybrid.check_access`)."""
POISONING = ThreatModel("poisoning", open_weights=False, surrogate=False, scores=False, charged_queries=False)
"""Contributes poisoned training data (`poison=`), then sends each evaluation example once with the trigger."""

THREAT_MODELS: tuple[ThreatModel, ...] = (WHITE_BOX, TRANSFER, SCORE_BASED, DECISION_BASED, HYBRID, POISONING)
"""In the order of less hiding to more: tables list them so."""


def threat_model_named(name: str) -> ThreatModel:
    for model in THREAT_MODELS:
        if model.name == name:
            return model
    raise ValueError(f"threat model {name!r}: allowed: {', '.join(m.name for m in THREAT_MODELS)}")
