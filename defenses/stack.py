"""Stacked defenses: what an operator deploys together (`defense=[jpeg,blacklight,labels_only]`), as one shield.

Whatever the list's order, the stack applies its members in the order an API meets them: input transforms
(`preprocessing`, in the list's order among themselves: JPEG then bit-depth is not bit-depth then JPEG), then the
model wrapper (`randomised`: noise on the input the judge evaluates), then the output filter (`output`), then the
detector (`detection`) on the queries as they arrive. A shield has one wrapper, one filter and one detector, so a
stack holds at most one of each of those kinds; `none` is the empty stack, not a member.
"""

from __future__ import annotations

from typing import ClassVar, Sequence

from torch import nn

from gavel.defenses.base import Defense, OperatorKit
from gavel.targets.access import AccessPolicy, ThreatModel
from gavel.targets.access.shield import Shield

ORDER = ("preprocessing", "randomised", "output", "detection")
"""The kinds a stack is built from, in the order an input meets them."""

SINGLE = ("randomised", "output", "detection")
"""The kinds a shield has one slot for."""


class DefenseStack(Defense):
    kind: ClassVar[str] = "stack"

    def __init__(self, members: Sequence[tuple[str, Defense]]) -> None:
        """`members`: (option name, defense) pairs, as listed; refused (ValueError, one line) where they cannot
        be stacked."""
        names = [name for name, _ in members]
        if len(members) < 2:
            raise ValueError(f"defense={list(names)}: a stack has two or more defenses; allowed: defense=NAME for one")
        for name, defense in members:
            if defense.kind not in ORDER:
                allowed = ", ".join(ORDER)
                raise ValueError(f"defense={name} (kind {defense.kind}) cannot be stacked; allowed kinds: {allowed}")
        for kind in SINGLE:
            same = [name for name, defense in members if defense.kind == kind]
            if len(same) > 1:
                raise ValueError(
                    f"defense=[{','.join(names)}]: {' and '.join(same)} are both {kind} defenses and a shield has one "
                    f"{kind} slot; allowed: at most one {kind} defense in a stack"
                )
        self.members = tuple(sorted(members, key=lambda member: ORDER.index(member[1].kind)))  # stable: list order

    @property
    def name(self) -> str:
        """The stack as runs and reports name it: its members in the order they apply."""
        return "+".join(name for name, _ in self.members)

    @property
    def needs_operator_data(self) -> bool:  # type: ignore[override]
        return any(defense.needs_operator_data for _, defense in self.members)

    def check(self, policy: AccessPolicy, threat_model: ThreatModel, name: str) -> None:
        for member, defense in self.members:
            defense.check(policy, threat_model, member)

    def check_judge(self, judge: nn.Module) -> None:
        for _, defense in self.members:
            defense.check_judge(judge)

    def check_hyperparameters(self) -> None:
        for _, defense in self.members:
            defense.check_hyperparameters()

    def deploy(self, judge: nn.Module, operator: OperatorKit) -> Shield:
        """Built from the judge outwards: the wrapper around the judge, the transforms around it (the first listed
        outermost, so it meets the input first); the filter and the detector from their own deployments, the
        detector's on the bare judge (it watches the queries as they arrive, and a detector that reads the judge's
        features reads them from the judge)."""
        by_kind = {kind: [defense for _, defense in self.members if defense.kind == kind] for kind in ORDER}
        model = judge
        for defense in by_kind["randomised"]:
            model = defense.deploy(model, operator).model
        for defense in reversed(by_kind["preprocessing"]):
            model = defense.deploy(model, operator).model
        output_filter = detector = None
        on_detection = "ban"
        for defense in by_kind["output"]:
            output_filter = defense.deploy(judge, operator).output_filter
        for defense in by_kind["detection"]:
            watch = defense.deploy(judge, operator)
            detector, on_detection = watch.detector, watch.on_detection
        return Shield(model, output_filter=output_filter, detector=detector, on_detection=on_detection)
