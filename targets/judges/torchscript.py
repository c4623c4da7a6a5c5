"""A TorchScript judge (`target=torchscript`, `target.path`): a file saved by `torch.jit.save`, loaded with
`torch.jit.load`, which runs TorchScript's own interpreter and never unpickles Python objects."""

from __future__ import annotations

import io
import warnings
import zipfile

import torch
from torch import nn

from gavel.targets.datasets import Dataset
from gavel.targets.errors import SourceError
from gavel.targets.judges.base import FULL, Capabilities, first_line
from gavel.targets.judges.foreign import FileJudge, file_pin

WHAT = "a TorchScript file (torch.jit.save)"


class TorchScriptJudge(FileJudge):
    kind = "a TorchScript model"
    what = WHAT

    def load(self, data: Dataset) -> tuple[nn.Module, Capabilities, dict[str, str], str]:
        path, content = self.read()
        try:
            with warnings.catch_warnings():  # TorchScript is deprecated in torch's favour of torch.export; it is the
                warnings.filterwarnings("ignore", "`torch.jit.load` is deprecated", FutureWarning)  # user's format
                model = torch.jit.load(io.BytesIO(content), map_location="cpu")
        except (RuntimeError, ValueError) as error:
            raise SourceError(
                f"{self.where}: not {WHAT} ({first_line(error)}){_hint(content)}; allowed: {WHAT}"
            ) from None
        return model.eval(), FULL, file_pin(path, content), f"{self.kind} ({path.name})"


def _hint(content: bytes) -> str:
    """What the file looks like instead, where that is plain: a `torch.save` file, an ONNX model."""
    try:
        names = zipfile.ZipFile(io.BytesIO(content)).namelist()
    except zipfile.BadZipFile:
        return ""
    if any(name.endswith("/archive_format") for name in names):
        return "; it is a torch.export (.pt2) archive"
    if any(name.endswith("/data.pkl") for name in names) and not any(n.endswith("/constants.pkl") for n in names):
        return "; it is a torch.save file (a state dict: target=state_dict)"
    return ""
