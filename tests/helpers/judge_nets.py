"""A user's own network class, importable as `helpers.judge_nets:DigitsCNN` (`target.architecture`): the digits
judge's layers under the names gavel's trained judge gives them, so its state dict loads here unchanged. And a
user's `python_function` model answering with probabilities (`ProbabilityJudge`)."""

from __future__ import annotations

import mlflow.pyfunc
import numpy as np
import torch
from torch import nn

from gavel.targets.architectures.cnn import SmallCNN
from gavel.targets.models import Normalize


class DigitsCNN(nn.Module):
    def __init__(self, width: int = 32, n_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize(1)
        self.net = SmallCNN(width=width).build((1, 8, 8), n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.normalize(x))


class ProbabilityJudge(mlflow.pyfunc.PythonModel):
    """`predict`: the softmax of the judge's logits, served as the Oracle serves a judge (channels last)."""

    def load_context(self, context) -> None:
        self.model = DigitsCNN()
        self.model.load_state_dict(torch.load(context.artifacts["weights"], weights_only=True))
        self.model.eval().to(memory_format=torch.channels_last)

    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        with torch.no_grad():
            return torch.softmax(self.model(torch.from_numpy(np.asarray(model_input))), dim=1).numpy()
