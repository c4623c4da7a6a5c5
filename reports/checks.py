"""The sanity checks, read back for the top of the report, in plain words.

Each run's own checks are its tags (`gavel.check.<name>` = pass | warn, `experiments/sanity.py`). One check needs two
runs, so the report runs it: a black-box or transfer attack that fools significantly more of the same examples of
the same judge than the white-box attack (exact McNemar, 5%) means the white-box attack is failing (Carlini et
al., 2019: "a white-box attack must do at least as well as a black-box one"), and its figure is not the judge's
robustness.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, Sequence

import numpy as np

from gavel.experiments.statistics import mcnemar_test
from gavel.experiments.tracking import CHECK_TAG

DETAIL = ".detail"
BEATS = "black_box_beats_white_box"
SIGNIFICANCE = 0.05

SAME_JUDGE_AND_EXAMPLES = ("judge_key", "judge.sha256", "dataset", "defense", "poison", "sanitise", "norm")
"""Tags two runs must share to be on the same judge, as served, under the same eps's norm."""
SAME_PARAMS = ("n_examples", "seed", "attack.eps", "data.split_seed")


class Run(Protocol):
    name: str
    status: str
    tags: dict
    params: dict
    per_example: dict[str, np.ndarray] | None

    @property
    def threat_model(self) -> str: ...


@dataclass(frozen=True)
class Finding:
    run: str
    check: str
    detail: str


def warnings(runs: Sequence[Run]) -> list[Finding]:
    """Every warning the runs' own checks logged."""
    found = []
    for run in runs:
        for key, value in sorted(run.tags.items()):
            if key.startswith(CHECK_TAG) and not key.endswith(DETAIL) and value == "warn":
                name = key[len(CHECK_TAG) :]
                found.append(Finding(run.name, name, run.tags.get(f"{key}{DETAIL}", "")))
    return found


def checked(runs: Sequence[Run]) -> int:
    """How many checks the runs logged, passed or not."""
    return sum(1 for run in runs for key in run.tags if key.startswith(CHECK_TAG) and not key.endswith(DETAIL))


def _goal(run: Run) -> str | None:
    """The class a targeted attack forces; None: untargeted (an attack with no targeted mode logs no such key)."""
    targeted = str(run.params.get("attack.targeted", "False")).lower() == "true"
    return run.params.get("attack.target_class") if targeted else None


def _same(run: Run) -> tuple:
    return (
        *(run.tags.get(k) for k in SAME_JUDGE_AND_EXAMPLES),
        *(run.params.get(k) for k in (*SAME_PARAMS, *sorted(k for k in run.params if k.startswith("defense.")))),
        _goal(run),
    )


def _fooled(run: Run) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    if run.per_example is None:
        return None
    return run.per_example["index"], (run.per_example["attacked"] > 0), (run.per_example["success"] > 0)


def black_box_beats_white_box(runs: Sequence[Run]) -> tuple[list[Finding], int]:
    """Each pair of a white-box run and a run of another threat model on the same judge and examples where the other
    fooled significantly more; and how many such pairs were compared."""
    finished = [r for r in runs if r.status == "FINISHED" and r.per_example is not None]
    white = [r for r in finished if r.threat_model == "white_box"]
    others = [r for r in finished if r.threat_model not in ("white_box", "poisoning")]
    found, compared = [], 0
    for w in white:
        w_index, w_attacked, w_fooled = _fooled(w)
        for o in others:
            if _same(o) != _same(w):
                continue
            o_index, o_attacked, o_fooled = _fooled(o)
            if not np.array_equal(w_index, o_index):
                continue
            both = w_attacked & o_attacked
            if not both.any():
                continue
            compared += 1
            test = mcnemar_test(o_fooled[both], w_fooled[both])
            if test.only_first > test.only_second and test.p_value < SIGNIFICANCE:
                n = int(both.sum())
                found.append(
                    Finding(
                        w.name,
                        BEATS,
                        f"{o.name} ({o.threat_model.replace('_', '-')}) fooled {int(o_fooled[both].sum())} of {n} "
                        f"examples, the white-box attack {int(w_fooled[both].sum())} ({test.only_first} only by it, "
                        f"{test.only_second} only by the white box; McNemar p = {test.p_value:.3g}): the white-box "
                        "attack is failing on this judge, its figure is not the judge's robustness",
                    )
                )
    return found, compared


def section(runs: Sequence[Run]) -> tuple[str, list[list[str]] | None]:
    """The report's first section: a sentence, then a row per warning (None: none warned)."""
    own = warnings(runs)
    crossed, compared = black_box_beats_white_box(runs)
    found = own + crossed
    total = checked(runs) + compared
    if total == 0:
        return "No sanity check applied to these runs.", None
    if not found:
        return (
            f"All {total} sanity checks passed (each run's own, and {compared} white-box against black-box pairs).",
            None,
        )
    sentence = (
        f"{len(found)} of {total} sanity checks warn: the figures of the runs below may flatter the judge. "
        "Read each warning before trusting its row."
    )
    return sentence, [["run", "check", "what it saw"], *[[f.run, f.check.replace("_", " "), f.detail] for f in found]]
