"""A state dict and the architecture it fits (`target=state_dict`): `target.path` (a `torch.save(model.state_dict())`
file, loaded with `weights_only=True`: tensors only, nothing unpickled that could run code) and
`target.architecture`, a torchvision model name (`resnet18`; built with `num_classes` = the data's classes unless
`target.kwargs` says otherwise) or an importable `package.module:Class`, built with `target.kwargs`."""

from __future__ import annotations

import importlib
import io
import pickle
from typing import Any, Mapping

import torch
from torch import nn

from gavel.targets.datasets import Dataset
from gavel.targets.errors import SourceError
from gavel.targets.judges.base import FULL, Capabilities, first_line
from gavel.targets.judges.foreign import FileJudge, file_pin
from gavel.targets.params import BadValue

WHAT = "a state dict saved by torch.save(model.state_dict(), PATH)"


def torchvision_classifiers() -> list[str]:
    """torchvision's image classifiers (not its detection, segmentation, video or optical-flow models)."""
    import torchvision

    return sorted(torchvision.models.list_models(module=torchvision.models))


class StateDictJudge(FileJudge):
    kind = "a state dict"
    what = WHAT

    def __init__(self, *, architecture: str | None = None, kwargs: Mapping[str, Any] = {}, **file) -> None:
        super().__init__(**file)
        allowed = "a torchvision classifier's name (resnet18, ...) or an importable package.module:Class"
        if architecture is None:
            raise BadValue("architecture", None, allowed, why="a state dict holds weights, not the network")
        if ":" not in architecture and architecture not in torchvision_classifiers():
            raise BadValue("architecture", architecture, allowed, why="not a torchvision classifier's name")
        self.architecture = architecture
        self.kwargs = dict(kwargs)

    def load(self, data: Dataset) -> tuple[nn.Module, Capabilities, dict[str, str], str]:
        model = self.build(data.n_classes)
        path, content = self.read()
        try:
            state = torch.load(io.BytesIO(content), map_location="cpu", weights_only=True)
        except pickle.UnpicklingError as error:
            why = str(error).split("WeightsUnpickler error: ")[-1].strip().splitlines()[0][:160]
            raise SourceError(
                f"{self.where}: holds Python objects that would run code when unpickled (a whole pickled model, not "
                f"its state dict: {why}); allowed: {WHAT}"
            ) from None
        except (RuntimeError, EOFError, ValueError) as error:
            raise SourceError(f"{self.where}: not {WHAT} ({first_line(error)}); allowed: {WHAT}") from None
        if not isinstance(state, Mapping) or not all(isinstance(v, torch.Tensor) for v in state.values()):
            raise SourceError(f"{self.where}: holds {type(state).__name__}, not a mapping of tensors; allowed: {WHAT}")
        try:
            model.load_state_dict(state, strict=True)
        except RuntimeError:
            raise SourceError(
                f"{self.where}: does not fit target.architecture={self.architecture} ({_mismatch(model, state)}); "
                f"allowed: the state dict of that architecture, with target.kwargs as it was built"
            ) from None
        pin = {**file_pin(path, content), "judge.architecture": self.architecture}
        return model.eval(), FULL, pin, f"{self.kind} for {self.architecture} ({path.name})"

    def build(self, n_classes: int) -> nn.Module:
        """An untrained `target.architecture`, built with `target.kwargs`."""
        if ":" not in self.architecture:
            import torchvision

            kwargs = {"num_classes": n_classes, **self.kwargs}
            try:
                return torchvision.models.get_model(self.architecture, weights=None, **kwargs)
            except (TypeError, ValueError) as error:
                raise SourceError(
                    f"target.kwargs={kwargs}: torchvision's {self.architecture} refuses them ({first_line(error)}); "
                    "allowed: the keyword arguments its builder takes"
                ) from None
        module_name, _, class_name = self.architecture.partition(":")
        try:
            cls = getattr(importlib.import_module(module_name), class_name)
        except (ImportError, AttributeError) as error:
            raise SourceError(
                f"target.architecture={self.architecture}: not importable ({first_line(error)}); allowed: a "
                "torchvision model name or package.module:Class on the Python path"
            ) from None
        try:
            model = cls(**self.kwargs)
        except (TypeError, ValueError) as error:
            raise SourceError(
                f"target.kwargs={self.kwargs}: {cls.__name__} refuses them ({first_line(error)})"
            ) from None
        if not isinstance(model, nn.Module):
            raise SourceError(
                f"target.architecture={self.architecture}: builds {type(model).__name__}, not a torch nn.Module"
            )
        return model


def _mismatch(model: nn.Module, state: Mapping[str, torch.Tensor]) -> str:
    """The first keys and shapes that do not fit, in a few words."""
    own = model.state_dict()
    missing = [key for key in own if key not in state]
    unexpected = [key for key in state if key not in own]
    shapes = [
        f"{key} {list(state[key].shape)} for {list(own[key].shape)}"
        for key in own
        if key in state and state[key].shape != own[key].shape
    ]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}")
    if unexpected:
        parts.append(f"unexpected {', '.join(unexpected[:3])}{' ...' if len(unexpected) > 3 else ''}")
    if shapes:
        parts.append(f"shape {'; '.join(shapes[:2])}")
    return "; ".join(parts) or "the weights do not load"
