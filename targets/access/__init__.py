"""Both sides of the judge's API: the operator's access policy, the Oracle and its ledger, and the attacker's
client. A black-box attacker holds a client, never the Oracle."""

from targets.access.client import AttackerClient
from targets.access.errors import (
    AccessDenied,
    AccountLimitReached,
    AccountsExhausted,
    BudgetExhausted,
    QueryRefused,
)
from targets.access.oracle import LedgerEntry, Oracle
from targets.access.policy import SHARED, AccessPolicy, Output, Weights
from targets.access.threat_model import (
    DECISION_BASED,
    HYBRID,
    SCORE_BASED,
    THREAT_MODELS,
    TRANSFER,
    WHITE_BOX,
    ThreatModel,
    threat_model_named,
)

__all__ = [
    "SHARED",
    "AccessDenied",
    "AccessPolicy",
    "AccountLimitReached",
    "AccountsExhausted",
    "AttackerClient",
    "BudgetExhausted",
    "DECISION_BASED",
    "HYBRID",
    "LedgerEntry",
    "Oracle",
    "Output",
    "QueryRefused",
    "SCORE_BASED",
    "THREAT_MODELS",
    "TRANSFER",
    "ThreatModel",
    "WHITE_BOX",
    "Weights",
    "threat_model_named",
]
