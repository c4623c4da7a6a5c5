"""Both sides of the judge's API: the operator's access policy, the Oracle and its ledger, and the attacker's
client. A black-box attacker holds a client, never the Oracle."""

from gavel.targets.access.client import AttackerClient
from gavel.targets.access.clock import Clock, SimulatedClock, WallClock
from gavel.targets.access.errors import (
    AccessDenied,
    AccountBanned,
    AccountLimitReached,
    AccountsExhausted,
    BudgetExhausted,
    QueryRefused,
    QueryRejected,
)
from gavel.targets.access.oracle import Answers, Detection, LedgerEntry, Oracle
from gavel.targets.access.policy import SHARED, AccessPolicy, Output, Weights
from gavel.targets.access.protocol import OperatorView, QueryAPI
from gavel.targets.access.shield import Detector, OutputFilter, Shield
from gavel.targets.access.threat_model import (
    DECISION_BASED,
    HYBRID,
    POISONING,
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
    "AccountBanned",
    "AccountLimitReached",
    "Answers",
    "Clock",
    "Detection",
    "OperatorView",
    "QueryAPI",
    "SimulatedClock",
    "WallClock",
    "Detector",
    "OutputFilter",
    "QueryRejected",
    "Shield",
    "AccountsExhausted",
    "AttackerClient",
    "BudgetExhausted",
    "DECISION_BASED",
    "HYBRID",
    "LedgerEntry",
    "POISONING",
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
