"""What every judge of the user's own shares (`target=torchscript|state_dict|onnx|mlflow`): its input contract,
the file's bytes read once and pinned by their SHA-256, and the check against the data before any run starts.

The input contract: `target.input_shape` ([channels, height, width]; null: the data's), `target.value_range` (what
the model takes as black and white: [0, 1], [0, 255], [-1, 1]), and the normalisation it expects
(`target.mean`, `target.std`, per channel). gavel's attacks work in [0, 1] pixel space for every judge; the
contract is applied inside the judge (`PixelSpace`), so eps means the same thing whatever the model expects.
"""

from __future__ import annotations

import hashlib
from abc import abstractmethod
from pathlib import Path
from typing import ClassVar, Sequence

import torch
from torch import nn

from gavel.targets.datasets import Dataset
from gavel.targets.errors import SourceError
from gavel.targets.judges.base import Capabilities, JudgeSource, ProvidedJudge, check_outputs
from gavel.targets.params import BadValue, PositiveFloat, PositiveInt


class PixelSpace(nn.Module):
    """A model behind gavel's input convention: inputs in [0, 1] are mapped to the model's value range, then
    normalised as it expects, then given to it. An identity contract adds no operation at all (the same function,
    to the bit, as the model alone). Its model is frozen as loaded: `train()` does not reach it (an exported
    program cannot even be switched), so a library that toggles training mode on the judge changes nothing."""

    layout_chosen = True
    """Its memory layout was chosen when it was loaded (`channels_last_where_same`): the Oracle serves it as it is."""

    def __init__(
        self,
        model: nn.Module,
        channels: int,
        value_range: tuple[float, float] = (0.0, 1.0),
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        self.model = model
        low, high = value_range
        self.rescaled = (low, high) != (0.0, 1.0)
        self.normalised = mean is not None or std is not None
        as_channels = lambda values, default: torch.tensor(  # noqa: E731
            list(values) if values is not None else [default] * channels, dtype=torch.float32
        ).reshape(1, -1, 1, 1)
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32))
        self.register_buffer("span", torch.tensor(high - low, dtype=torch.float32))
        self.register_buffer("mean", as_channels(mean, 0.0))
        self.register_buffer("std", as_channels(std, 1.0))
        self.training = False

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.rescaled:
            x = x * self.span + self.low
        if self.normalised:
            x = (x - self.mean) / self.std
        return self.model(x)

    def train(self, mode: bool = True) -> PixelSpace:
        self.training = mode
        return self


@torch.no_grad()
def channels_last_where_same(judge: nn.Module, x: torch.Tensor) -> None:
    """A judge with 2-d convolutions (4-d weights: a TorchScript or exported module holds no `nn.Conv2d`) put, in
    place, in channels-last memory format, as the Oracle serves gavel's own (about twice the rows per second on a
    CPU), where its function stays the same on `x`; a model the layout breaks (a `view` of its activations) or
    changes stays as it was."""
    if not any(parameter.dim() == 4 for parameter in judge.parameters()):
        return
    before = judge(x).float()
    judge.to(memory_format=torch.channels_last)
    try:
        same = torch.allclose(judge(x).float(), before, rtol=1e-4, atol=1e-5)
    except RuntimeError:
        same = False
    if not same:
        judge.to(memory_format=torch.contiguous_format)


def read_file(raw: str | None, key: str, what: str) -> tuple[Path, bytes]:
    """The file `target.<key>` names, read once (what is pinned is what is loaded)."""
    if raw is None:
        raise SourceError(f"target.{key}=None: allowed: {what}")
    path = Path(raw).expanduser()
    if not path.is_file():
        reason = "a folder, not a file" if path.is_dir() else "no such file"
        raise SourceError(f"target.{key}={raw}: {reason}; allowed: {what}")
    try:
        return path, path.read_bytes()
    except OSError as error:
        raise SourceError(f"target.{key}={raw}: cannot be read ({error.strerror}); allowed: {what}") from None


def file_pin(path: Path, content: bytes) -> dict[str, str]:
    """The tags that pin a judge's file: its SHA-256 and where it was."""
    return {"judge.sha256": hashlib.sha256(content).hexdigest(), "judge.file": str(path.resolve())}


class ForeignJudge(JudgeSource):
    kind: ClassVar[str]
    """What the file holds, for messages: `a TorchScript model`."""

    def __init__(
        self,
        *,
        input_shape: Sequence[PositiveInt] | None = None,
        value_range: Sequence[float] = (0.0, 1.0),
        mean: Sequence[float] | None = None,
        std: Sequence[PositiveFloat] | None = None,
    ) -> None:
        if input_shape is not None and len(input_shape) != 3:
            raise BadValue("input_shape", list(input_shape), "[channels, height, width] or null (the data's)")
        if len(value_range) != 2 or not value_range[0] < value_range[1]:
            raise BadValue("value_range", list(value_range), "[low, high] with low < high, e.g. [0, 255]")
        for key, values in (("mean", mean), ("std", std)):
            if values is not None and len(values) not in (1, 3):
                raise BadValue(key, list(values), "one value per channel (1 or 3) or null")
        self._input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self.value_range = (float(value_range[0]), float(value_range[1]))
        self.mean = None if mean is None else tuple(float(v) for v in mean)
        self.std = None if std is None else tuple(float(v) for v in std)

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return self._input_shape

    @property
    @abstractmethod
    def where(self) -> str:
        """The key and value that name the judge, for messages: `target.path=model.pt`."""

    @abstractmethod
    def load(self, data: Dataset) -> tuple[nn.Module, Capabilities, dict[str, str], str]:
        """(the model on the CPU, as it takes its own inputs; what it offers; the tags that pin it; how to name it)."""

    def prepare(self, data: Dataset, device: str) -> ProvidedJudge:
        channels = data.input_shape[0]
        for key, values in (("mean", self.mean), ("std", self.std)):
            if values is not None and len(values) not in (1, channels):
                raise SourceError(
                    f"target.{key}={list(values)}: {len(values)} values for {channels}-channel inputs; "
                    f"allowed: one value, or {channels}"
                )
        model, capabilities, tags, description = self.load(data)
        judge = PixelSpace(model, channels, self.value_range, self.mean, self.std).to(device)
        check_outputs(judge, data, self.where, device, self.input_shape)
        channels_last_where_same(judge, torch.from_numpy(data.eval.x[:8]).to(device))
        return ProvidedJudge(judge, capabilities=capabilities, tags=tags, description=description)


class FileJudge(ForeignJudge):
    """A judge in one file (`target.path`): read once, pinned by the SHA-256 of the bytes loaded."""

    what: ClassVar[str]
    """The file it takes, for messages: `a TorchScript file (torch.jit.save)`."""

    def __init__(self, *, path: str | None = None, **contract) -> None:
        super().__init__(**contract)
        if path is None:
            raise BadValue("path", None, self.what)
        self.path = path

    @property
    def where(self) -> str:
        return f"target.path={self.path}"

    def read(self) -> tuple[Path, bytes]:
        return read_file(self.path, "path", self.what)
