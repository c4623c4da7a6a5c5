"""The two views of a judge's API, as protocols.

`QueryAPI` is all an attacker may call: plan its examples, ask rows (each charged to an example and an account),
read the operator's published allowance and what it was charged, and the judge's weights only where they are open.
`AttackerClient` holds one and nothing else. Today's `Oracle` implements it in this process, and over HTTP when a
`RemoteResponder` answers its rows (`target=remote`).

`OperatorView` is the operator's: the verdicts its protocol acts on, the ledger, what the detector caught and
banned, the clock. The runner and the operator's measurements read it; no attack does.
"""

from __future__ import annotations

from typing import Hashable, Protocol, Sequence, runtime_checkable

import numpy as np
from torch import nn

from gavel.targets.access.policy import AccessPolicy


@runtime_checkable
class QueryAPI(Protocol):
    policy: AccessPolicy
    input_shape: tuple[int, ...]
    n_classes: int
    device: str

    def plan(self, n_examples: int) -> None: ...

    def query(self, x: np.ndarray, *, example: Hashable, account: int = 0) -> np.ndarray: ...

    def query_rows(self, x: np.ndarray, examples: Sequence[Hashable], *, account: int = 0): ...

    def allowance(self, example: Hashable) -> int | float: ...

    def queries(self, example: Hashable) -> int: ...

    @property
    def queries_total(self) -> int: ...

    def open_weights(self) -> nn.Module: ...


@runtime_checkable
class OperatorView(Protocol):
    ledger: list
    detections: list
    screened_scores: list

    @property
    def banned(self) -> set[int]: ...

    @property
    def clock(self) -> float: ...

    def verdicts(self, x: np.ndarray) -> np.ndarray: ...

    def served_probabilities(self, x: np.ndarray) -> np.ndarray: ...

    def rows(self, example: Hashable) -> list[tuple[int, float, float]]: ...

    def exhausted(self, example: Hashable) -> bool: ...

    @property
    def accounts_used(self) -> int: ...

    @property
    def rows_evaluated(self) -> int: ...
