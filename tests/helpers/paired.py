"""Two configurations compared on the same examples, as a test on any weights must: McNemar's test
(`gavel.experiments.statistics.mcnemar_test`) on each example's success under both, one-sided at `ALPHA`, instead
of a margin between two rates tuned on one machine's trained judge."""

from __future__ import annotations

import numpy as np

from gavel.experiments.statistics import McNemar, mcnemar_test

ALPHA = 0.01
"""A difference is found when McNemar's one-sided p-value is below this."""


def _compare(first, second) -> tuple[McNemar, str]:
    a, b = np.asarray(first, dtype=bool), np.asarray(second, dtype=bool)
    test = mcnemar_test(a, b)
    said = (
        f"{a.sum()} vs {b.sum()} of {len(a)} fooled (only the first: {test.only_first}, only the second: "
        f"{test.only_second}), two-sided p {test.p_value:.2g}"
    )
    return test, said


def _first_lower(test: McNemar) -> bool:
    return test.only_second > test.only_first and test.p_value / 2 < ALPHA


def less_success(fewer, more) -> None:
    """`fewer` fools significantly fewer of the same examples than `more`."""
    test, said = _compare(fewer, more)
    assert _first_lower(test), said


def no_less_success(first, second) -> None:
    """`first` does not fool significantly fewer of the same examples than `second`."""
    test, said = _compare(first, second)
    assert not _first_lower(test), said


def agree(first, second) -> None:
    """Neither fools significantly more of the same examples than the other."""
    no_less_success(first, second)
    no_less_success(second, first)


def enough_to_compare(*fooled, at_least: int = 5) -> None:
    """Some configuration fooled `at_least` examples: with fewer, McNemar's test could find no difference at all
    and a comparison would prove nothing."""
    most = max(int(np.asarray(f, dtype=bool).sum()) for f in fooled)
    assert most >= at_least, f"at most {most} examples fooled: too few to compare configurations"
