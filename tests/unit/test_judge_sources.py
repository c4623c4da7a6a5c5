"""A judge of the user's own, in process: its input contract applied inside, its layout chosen so its function stays
the same, a model left in training mode or a tampered archive refused, and MLflow's global state left as it was."""

from __future__ import annotations

import io
import json
import os
import zipfile

import mlflow
import numpy as np
import pytest
import torch
from helpers.foreign_judges import save_onnx, save_onnx_onnx2torch_cannot_convert, save_torchscript
from torch import nn

from gavel.experiments import runner
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError
from gavel.targets.access import Oracle
from gavel.targets.errors import SourceError
from gavel.targets.judges.onnx import OnnxJudge
from gavel.targets.judges.pt2_archive import UnsafeArchive, check_pickle_free
from gavel.targets.judges.state_dict import StateDictJudge
from gavel.targets.judges.torchscript import TorchScriptJudge


class Network(nn.Module):
    """The digits judge's network without its own normalisation, as a user might ship it: the contract says it."""

    def __init__(self, judge: nn.Module, scale: float = 1.0) -> None:
        super().__init__()
        self.net, self.scale = judge.net, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x / self.scale)


def logits(model: nn.Module, x: np.ndarray) -> torch.Tensor:
    with torch.no_grad():
        return model(torch.from_numpy(x))


def test_the_input_contract_is_applied_inside_the_judge(digits, tmp_path):
    """The network alone, with the judge's normalisation declared as target.mean and target.std, is the judge to the
    bit; one that takes [0, 255] inputs (value_range) answers as the judge does."""
    judge, data = digits.judge, digits.data
    mean = [float(digits.judge.normalize.mean.flatten()[0])]
    std = [float(digits.judge.normalize.std.flatten()[0])]
    bare = save_torchscript(Network(judge).eval(), tmp_path / "net.pt")
    contract = TorchScriptJudge(path=str(bare), mean=mean, std=std).prepare(data, "cpu").model
    x = data.eval.x[:64]
    torch.testing.assert_close(logits(contract, x), logits(judge, x), rtol=0, atol=0)
    in_bytes = save_torchscript(nn.Sequential(nn.Identity(), _Scaled(judge)).eval(), tmp_path / "bytes.pt")
    as_bytes = TorchScriptJudge(path=str(in_bytes), value_range=[0, 255]).prepare(data, "cpu").model
    torch.testing.assert_close(logits(as_bytes, x), logits(judge, x), rtol=1e-5, atol=1e-5)


class _Scaled(nn.Module):
    """The judge behind inputs in [0, 255]."""

    def __init__(self, judge: nn.Module) -> None:
        super().__init__()
        self.judge = judge

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.judge(x / 255.0)


class Viewing(nn.Module):
    """A convolution whose activations are flattened with `view`: channels-last memory breaks it. (Three channels
    in: a one-channel convolution's weights are channels-last already, and its output too.)"""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.head = nn.Linear(4 * 8 * 8, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.conv(x.repeat(1, 3, 1, 1)).view(x.shape[0], -1))


def test_a_judge_the_channels_last_layout_would_break_is_served_as_it_was(digits, tmp_path):
    torch.manual_seed(0)
    path = save_torchscript(Viewing().eval(), tmp_path / "viewing.pt")
    judge = TorchScriptJudge(path=str(path)).prepare(digits.data, "cpu").model
    oracle = Oracle(judge, _policy(), input_shape=(1, 8, 8), n_classes=10)
    oracle.plan(1)
    assert oracle.query(digits.data.eval.x[:5], example=0).shape == (5,)  # answered, not a stride error
    served = TorchScriptJudge(path=str(save_torchscript(digits.judge, tmp_path / "cnn.pt"))).prepare(digits.data, "cpu")
    assert any(p.is_contiguous(memory_format=torch.channels_last) and p.dim() == 4 and p.shape[1] > 1
               for p in served.model.parameters())  # fmt: skip


def _policy():
    from gavel.targets.access import AccessPolicy

    return AccessPolicy("hidden", "label", 5)


class AlwaysDropping(nn.Module):
    """Dropout its saved code applies whatever the mode (as an exported program left in training mode does, which
    `eval()` cannot switch): its answer to an input is a draw."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(64, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.nn.functional.dropout(x.flatten(1), 0.5, training=True))


def test_a_judge_whose_answer_to_an_input_is_not_fixed_is_refused(digits, tmp_path):
    path = tmp_path / "dropping.pt"
    torch.jit.save(torch.jit.script(AlwaysDropping()), str(path))
    with pytest.raises(SourceError, match="scores an input differently alone and among others"):
        TorchScriptJudge(path=str(path)).prepare(digits.data, "cpu")


def test_a_state_dict_that_does_not_fit_or_build_is_refused_naming_the_key(digits, tmp_path):
    path = tmp_path / "cnn_state.pt"
    torch.save(digits.judge.state_dict(), path)
    with pytest.raises(SourceError, match=r"target.path=.*: does not fit target.architecture=resnet18 \(missing "):
        StateDictJudge(path=str(path), architecture="resnet18").prepare(digits.data, "cpu")
    with pytest.raises(SourceError, match="target.kwargs=.*: torchvision's resnet18 refuses them"):
        StateDictJudge(path=str(path), architecture="resnet18", kwargs={"widht": 3}).prepare(digits.data, "cpu")
    with pytest.raises(ConfigError, match="target.architecture='raft_small': not a torchvision classifier's name"):
        RunSettings.from_config(
            compose_config(["target=state_dict", f"target.path={path}", "target.architecture=raft_small"])
        )


def test_onnx2torch_asked_for_a_model_it_cannot_convert_is_refused(digits, tmp_path):
    onnx_file = save_onnx(digits.judge, tmp_path / "judge.onnx", digits.data.input_shape)
    shrink = save_onnx_onnx2torch_cannot_convert(onnx_file, tmp_path / "shrink.onnx")
    with pytest.raises(SourceError, match="target.engine=onnx2torch: target.path=.* cannot be converted by onnx2torch"):
        OnnxJudge(path=str(shrink), engine="onnx2torch").prepare(digits.data, "cpu")
    fallback = OnnxJudge(path=str(shrink)).prepare(digits.data, "cpu")
    assert not fallback.capabilities.gradients and fallback.tags["judge.engine"] == "onnxruntime"


def tampered(content: bytes, bodies: dict) -> bytes:
    """The archive with each record whose name ends in a key of `bodies` rewritten by its value (old bytes -> new)."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(content)) as source, zipfile.ZipFile(out, "w") as target:
        for info in source.infolist():
            body = source.read(info)
            for ending, rewrite in bodies.items():
                if info.filename.endswith(ending):
                    body = rewrite(body)
            target.writestr(info, body)
    return out.getvalue()


def pickled_weight(config: bytes) -> bytes:
    """The weights' config with weight_0 declared pickled (torch.export.load would unpickle it)."""
    loaded = json.loads(config)
    for entry in loaded["config"].values():
        if entry["path_name"] == "weight_0":
            entry["use_pickle"] = True
    return json.dumps(loaded).encode()


class Payload:
    def __reduce__(self):
        return (print, ("code ran while unpickling",))


def test_a_pt2_archive_with_a_pickle_payload_is_refused_and_a_genuine_one_passes(digits):
    program = torch.export.export(digits.judge.eval(), (torch.from_numpy(digits.data.eval.x[:2]),))
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    genuine = buffer.getvalue()
    check_pickle_free(genuine)
    evil = io.BytesIO()
    torch.save({"x": Payload()}, evil)
    payload = lambda _: evil.getvalue()  # noqa: E731
    for bodies in (
        {"sample_inputs/model.pt": payload},
        {"weights/weight_0": payload, "weights/model_weights_config.json": pickled_weight},
    ):
        with pytest.raises(
            UnsafeArchive, match="is not a plain tensor payload .*references (__builtin__|builtins).print"
        ):
            check_pickle_free(tampered(genuine, bodies))
    check_pickle_free(tampered(genuine, {"weights/weight_0": payload}))  # raw bytes, read as a tensor's, not run
    with pytest.raises(UnsafeArchive, match="data before it"):
        check_pickle_free(b"junk" + genuine)


@pytest.mark.slow
def test_an_mlflow_judge_leaves_mlflows_uris_and_the_environment_as_they_were(digits, tmp_path):
    """Its own registry (target.tracking_uri) read through a client of its own: the session's store untouched."""
    registry = f"sqlite:///{tmp_path / 'registry.db'}"
    uri_before = mlflow.get_tracking_uri()
    mlflow.set_tracking_uri(registry)
    try:
        with mlflow.start_run(experiment_id=mlflow.create_experiment("judges")) as run:
            mlflow.pytorch.log_model(
                digits.judge, name="judge", input_example=digits.data.eval.x[:2], serialization_format="pt2",
                registered_model_name="own-judge",
            )  # fmt: skip
        mlflow.MlflowClient().set_registered_model_alias("own-judge", "champion", "1")
    finally:
        mlflow.set_tracking_uri(uri_before)
    before = (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), dict(os.environ))
    settings = RunSettings.from_config(compose_config(
        ["target=mlflow", "target.uri=models:/own-judge@champion", f"target.tracking_uri={registry}"]
    ))  # fmt: skip
    judge = runner.prepare(settings).judge
    assert judge.tags["judge.model_version"] == "1" and judge.tags["judge.format"] == "pt2"
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), dict(os.environ)) == before
    by_run = RunSettings.from_config(compose_config(
        ["target=mlflow", f"target.uri=runs:/{run.info.run_id}/judge", f"target.tracking_uri={registry}"]
    ))  # fmt: skip
    assert runner.prepare(by_run).judge.tags["judge.sha256"] == judge.tags["judge.sha256"]
    assert (mlflow.get_tracking_uri(), mlflow.get_registry_uri(), dict(os.environ)) == before
