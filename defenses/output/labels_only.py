"""Labels only: each answer becomes the one-hot row of its verdict, in the probabilities' shape.

The same information as `access.output=label`, from an API that keeps its probabilities format. Written here:
ART 1.20.1's `ClassLabels` sets `class_labels[:, index_labels] = 1`, which puts a 1 in every row at the verdict
of every row of the batch; it is one-hot only for a batch of one row.
"""

from __future__ import annotations

import numpy as np

from gavel.defenses.base import OperatorKit
from gavel.defenses.output.base import PROBABILITIES_ONLY, OutputDefense
from gavel.targets.access.shield import OutputFilter


class LabelsOnly(OutputDefense):
    outputs = PROBABILITIES_ONLY

    def output_filter(self, operator: OperatorKit) -> OutputFilter:
        return OneHotFilter()


class OneHotFilter(OutputFilter):
    def __call__(self, probabilities: np.ndarray) -> np.ndarray:
        return one_hot(probabilities.argmax(axis=1), probabilities.shape[1])


def one_hot(labels: np.ndarray, n_classes: int) -> np.ndarray:
    rows = np.zeros((len(labels), n_classes), dtype=np.float32)
    rows[np.arange(len(labels)), labels] = 1.0
    return rows
