"""The judge-source contract, and what every judge declares.

A source is configured once (`conf/target/<name>.yaml`: hyperparameters in `__init__`, checked at the config
boundary), prepared before any run starts (`prepare`: a file is loaded and its model checked against the data, so
that a judge gavel cannot use is refused in one line, nothing recorded), and provided inside the run (`provide`: a
trained judge is trained or loaded from the cache there).

Every judge, whatever its source, takes inputs in [0, 1] (NCHW) and returns one score per class: a foreign model's
own input range and normalisation (`InputContract`) are applied inside (`PixelSpace`), so that eps means the same
thing for every judge. And every judge declares what it offers (`Capabilities`): the threat model's check reads
them beside the access policy.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from gavel.targets.datasets import Dataset


@dataclass(frozen=True)
class Capabilities:
    """What a judge offers an attacker who holds it (open weights) or asks it (an API)."""

    gradients: bool = True
    """Its gradients with respect to its inputs (white-box attacks need them)."""
    scores: bool = True
    """Scores per class (logits or probabilities), not only a label (score-based attacks, and an API that returns
    scores, need them)."""


FULL = Capabilities()


@dataclass(frozen=True)
class ProvidedJudge:
    """A judge as the runner uses it: inputs in [0, 1], one score per class."""

    model: nn.Module
    capabilities: Capabilities = FULL
    tags: dict[str, str] = field(default_factory=dict)
    """What the run records about it (`judge.sha256`, `judge.uri`, `judge_key`, ...)."""
    figures: dict[str, float] = field(default_factory=dict)
    """Metrics of its training the run logs (`judge_train_accuracy`, `judge_train_seconds`), where gavel trained it."""
    description: str = ""
    """How logs and errors name it: `a TorchScript model (model.pt)`."""
    service: Any = None
    """Where it answers when not in this process (`targets.judges.remote.RemoteService`): the attacker's Oracle asks
    it over HTTP; None: the judge is served here."""


class JudgeSource(ABC):
    trained_on_the_data: ClassVar[bool] = False
    """Whether gavel trains the judge on the data's judge pool (then that pool is its training data, for
    `surrogate.knowledge=leaked`), rather than loading one trained elsewhere on data gavel cannot know."""

    sanitisable: ClassVar[bool] = True
    """Whether a sanitiser can clean its training data: a sanitiser reads the one judge trained on the contributed pool
    (its penultimate activations) and retrains or fine-tunes it (a panel of judges is several)."""

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        """The input the judge declares ([channels, height, width]); None: the data's (a judge gavel trains)."""
        return None

    @property
    def adversarial(self) -> str | None:
        """How gavel trains its judge robustly (`pgd`, `trades`, `fast`); None: naturally, or not at all."""
        return None

    @property
    def capabilities(self) -> Capabilities:
        """What the judge the run makes (`provide`) will offer, known once prepared, before it is trained (a majority
        vote offers no gradients); a judge ready when prepared declares its own (`ProvidedJudge.capabilities`)."""
        return FULL

    @abstractmethod
    def prepare(self, data: Dataset, device: str) -> ProvidedJudge | None:
        """Before any run starts: load and check whatever can be (raises `SourceError`, one line naming the key).
        Returns the judge where it is ready now (a file's), None where the run makes it (`provide`)."""

    def provide(self, data: Dataset, seed: int, cache_dir: Path, device: str) -> ProvidedJudge:
        """The judge `prepare` left to the run (one gavel trains, inside the run that records its training)."""
        raise TypeError(f"{type(self).__name__}: its judge is ready when prepared; the run does not make it")


def first_line(error: BaseException) -> str:
    """An exception's message in a few words: its first line (its type where it has none), cut at 300 characters."""
    text = str(error).strip()
    return (text.splitlines()[0] if text else type(error).__name__)[:300]


@torch.no_grad()
def check_outputs(
    model: nn.Module, data: Dataset, where: str, device: str, declared: tuple[int, ...] | None = None
) -> None:
    """The model takes the data's inputs (three rows, then one: a batch dimension fixed at export is refused here,
    not mid-attack), returns one finite score per class for each, and scores a row the same in either call (not a
    network left in training mode: batch norm over the batch, dropout); else a `SourceError` naming `where`.
    `declared`: the input shape the judge declares (None: the data's, said so)."""
    from gavel.targets.errors import SourceError

    shape = list(data.input_shape)
    key = f"target.input_shape={list(declared)}" if declared else f"target.input_shape=null (the data's {shape})"
    outs = []
    for rows in (3, 1):
        x = torch.from_numpy(data.eval.x[:rows]).to(device)
        try:
            out = model(x)
        except Exception as error:  # whatever the model's own code raises: it cannot take this input
            raise SourceError(
                f"{key}: the model in {where} does not take {rows} input(s) of {shape} ({type(error).__name__}: "
                f"{first_line(error)[:200]}); allowed: the input shape it was made for, with any number of rows"
            ) from None
        expected = [len(x), data.n_classes]
        got = list(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        if got != expected:
            raise SourceError(
                f"{where}: the model returns {got} for {rows} input(s) of {shape}; allowed: one score per class, "
                f"{expected} (data={data.name} has {data.n_classes} classes)"
            )
        if not torch.isfinite(out.float()).all():
            raise SourceError(f"{where}: the model returns non-finite scores for the data's inputs; allowed: finite")
        outs.append(out.float())
    if not torch.allclose(outs[0][:1], outs[1], rtol=1e-3, atol=1e-4):
        raise SourceError(
            f"{where}: the model scores an input differently alone and among others (a network left in training "
            "mode: batch norm over the batch, dropout?); allowed: a model saved in eval mode"
        )
