"""An ONNX judge (`target=onnx`, `target.path`), run one of two ways (`target.engine`):

- `onnx2torch`: converted into a torch module (gradients available: every threat model);
- `onnxruntime`: run by ONNX Runtime (no gradients: black-box threat models only);
- `auto` (the default): converted where onnx2torch can convert it and the converted module answers as ONNX
  Runtime does (to float rounding, on the data's inputs), else ONNX Runtime, saying why.

An ONNX file is a protobuf: loading it never unpickles anything.
"""

from __future__ import annotations

import logging
from typing import Literal

import numpy as np
import torch
from torch import nn

from gavel.targets.datasets import Dataset
from gavel.targets.errors import SourceError
from gavel.targets.judges.base import FULL, Capabilities, first_line
from gavel.targets.judges.foreign import FileJudge, file_pin

log = logging.getLogger(__name__)

WHAT = "an ONNX model file (.onnx)"
Engine = Literal["auto", "onnx2torch", "onnxruntime"]
BLACK_BOX = Capabilities(gradients=False, scores=True)
AGREEMENT = dict(rtol=1e-4, atol=1e-4)
"""How closely the converted module must answer as ONNX Runtime does (their kernels differ in the last bits)."""


class OnnxRuntimeModule(nn.Module):
    """An ONNX Runtime session as a module with no parameters and no gradients: each call runs the session on the
    rows given (float32, on the CPU) and returns its first output as a tensor where the input was."""

    def __init__(self, content: bytes, threads: int) -> None:
        super().__init__()
        import onnxruntime

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        self.session = onnxruntime.InferenceSession(content, options, providers=["CPUExecutionProvider"])
        inputs = self.session.get_inputs()
        if len(inputs) != 1:
            raise ValueError(f"it takes {len(inputs)} inputs; allowed: one input, the image batch")
        self.input_name = inputs[0].name

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        out = self.session.run(None, {self.input_name: rows})[0]
        return torch.from_numpy(np.asarray(out, dtype=np.float32)).to(x.device)


class OnnxJudge(FileJudge):
    kind = "an ONNX model"
    what = WHAT

    def __init__(self, *, engine: Engine = "auto", **file) -> None:
        super().__init__(**file)
        self.engine = engine

    def load(self, data: Dataset) -> tuple[nn.Module, Capabilities, dict[str, str], str]:
        path, content = self.read()
        model, capabilities, engine = load_onnx(content, self.engine, data, self.where)
        pin = {**file_pin(path, content), "judge.engine": engine}
        return model, capabilities, pin, f"{self.kind} run by {engine} ({path.name})"


def load_onnx(content: bytes, engine: Engine, data: Dataset, where: str) -> tuple[nn.Module, Capabilities, str]:
    """(the model, what it offers, the engine that runs it) for the ONNX bytes `content`."""
    import onnx
    from google.protobuf.message import DecodeError

    try:
        proto = onnx.load_from_string(content)
        onnx.checker.check_model(proto)
    except (DecodeError, onnx.checker.ValidationError, ValueError) as error:
        raise SourceError(f"{where}: not {WHAT} ({first_line(error)}); allowed: {WHAT}") from None
    if not proto.graph.node:
        raise SourceError(f"{where}: not {WHAT} (an empty graph); allowed: {WHAT}")
    try:
        runtime = OnnxRuntimeModule(content, torch.get_num_threads())
    except Exception as error:  # ONNX Runtime's own errors (an op or opset it lacks, a bad graph)
        raise SourceError(f"{where}: ONNX Runtime cannot run it ({first_line(error)}); allowed: {WHAT}") from None
    if engine == "onnxruntime":
        return runtime, BLACK_BOX, "onnxruntime"
    try:
        converted = _converted(proto, runtime, data)
    except _NotConverted as why:
        if engine == "onnx2torch":
            raise SourceError(
                f"target.engine=onnx2torch: {where} {why}; allowed: target.engine=onnxruntime or auto (no gradients: "
                "black-box attacks only)"
            ) from None
        log.warning("%s: %s; running it with onnxruntime (no gradients: black-box attacks only)", where, why)
        return runtime, BLACK_BOX, "onnxruntime"
    return converted, FULL, "onnx2torch"


class _NotConverted(Exception):
    pass


@torch.no_grad()
def _converted(proto, runtime: OnnxRuntimeModule, data: Dataset) -> nn.Module:
    from onnx2torch import convert

    try:
        module = convert(proto).eval()
    except Exception as error:  # onnx2torch raises NotImplementedError for an op it lacks, others for the rest
        raise _NotConverted(
            f"cannot be converted by onnx2torch ({type(error).__name__}: {first_line(error)})"
        ) from None
    x = torch.from_numpy(data.eval.x[:8])
    try:
        ours, theirs = module(x), runtime(x)
    except Exception as error:  # the converted graph fails where ONNX Runtime does not
        raise _NotConverted(f"converts but the module fails on the data ({first_line(error)})") from None
    if ours.shape != theirs.shape or not torch.allclose(ours.float(), theirs, **AGREEMENT):
        gap = (ours.float() - theirs).abs().max().item() if ours.shape == theirs.shape else "a different shape"
        raise _NotConverted(f"converts to a module that answers otherwise than ONNX Runtime (max difference {gap})")
    return module
