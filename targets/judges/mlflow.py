"""A judge from an MLflow model (`target=mlflow`, `target.uri`: `models:/NAME/VERSION`, `models:/NAME@alias` or
`runs:/RUN_ID/PATH`; `target.tracking_uri` where the registry lives, default `MLFLOW_TRACKING_URI`).

- the pytorch flavour in MLflow 3's default format, `pt2` (`torch.export`): checked free of pickle payloads, then
  loaded with `torch.export.load`; gradients available;
- the pytorch flavour in the legacy pickled format (`model.pth`), which runs code when loaded: refused unless
  `target.trust_pickle=true`;
- the onnx flavour: as `target=onnx` loads a file (onnx2torch where it converts, else ONNX Runtime);
- a model with only the `python_function` flavour (a `PythonModel`, cloudpickled: loading it runs its code, so it
  too needs `target.trust_pickle=true`): a black-box judge, asked through `predict` (no gradients; scores where
  it returns one score per class, a label only where it returns labels).

The run records the URI, the registered model's name and version (or the run and its logged model), and the SHA-256
of the model file (of the whole model folder for a python_function model). The registry is read through a client of
its own: MLflow's tracking and registry URIs, and the environment, are left as they were.
"""

from __future__ import annotations

import hashlib
import io
import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import yaml
from torch import nn

from gavel.targets.datasets import Dataset
from gavel.targets.errors import SourceError
from gavel.targets.judges.base import FULL, Capabilities, first_line
from gavel.targets.judges.foreign import ForeignJudge
from gavel.targets.judges.onnx import load_onnx
from gavel.targets.judges.pt2_archive import UnsafeArchive, check_pickle_free
from gavel.targets.params import BadValue

URIS = "models:/NAME/VERSION, models:/NAME@alias or runs:/RUN_ID/PATH"
REGISTERED = re.compile(r"models:/(?P<name>[^/@]+)(?:/(?P<version>[^/@]+)|@(?P<alias>[^/@]+))")


class MlflowJudge(ForeignJudge):
    kind = "an MLflow model"

    def __init__(
        self, *, uri: str | None = None, tracking_uri: str | None = None, trust_pickle: bool = False, **contract
    ) -> None:
        super().__init__(**contract)
        if uri is None or not (REGISTERED.fullmatch(uri) or re.fullmatch(r"runs:/[^/]+/.+", uri)):
            raise BadValue("uri", uri, URIS)
        self.uri = uri
        self.tracking_uri = tracking_uri
        self.trust_pickle = bool(trust_pickle)
        self._downloads: tempfile.TemporaryDirectory | None = None

    @property
    def where(self) -> str:
        return f"target.uri={self.uri}"

    def load(self, data: Dataset) -> tuple[nn.Module, Capabilities, dict[str, str], str]:
        from mlflow import MlflowClient
        from mlflow.exceptions import MlflowException

        self._check_store()
        client = MlflowClient(tracking_uri=self.tracking_uri, registry_uri=self.tracking_uri)
        self._downloads = tempfile.TemporaryDirectory(prefix="gavel-judge-")
        try:
            with _env("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false"):
                local, pin = self._download(client, Path(self._downloads.name))
        except MlflowException as error:
            raise SourceError(f"{self.where}: {first_line(error)}; allowed: {URIS} that the registry holds") from None
        flavors = _flavors(local, self.where)
        if "pytorch" in flavors:
            folder = local / flavors["pytorch"].get("model_data", "data")
            if (folder / "model.pt2").is_file():
                return self._exported(folder / "model.pt2", pin)
            if (folder / "model.pth").is_file():
                return self._pickled(local, folder / "model.pth", pin)
            raise SourceError(f"{self.where}: a pytorch flavour with neither model.pt2 nor model.pth in {folder.name}/")
        if "onnx" in flavors:
            path = local / flavors["onnx"].get("data", "model.onnx")
            try:
                content = path.read_bytes()
            except OSError as error:
                raise SourceError(f"{self.where}: its onnx flavour's {path.name} cannot be read ({error})") from None
            model, capabilities, engine = load_onnx(content, "auto", data, self.where)
            pin = {**pin, "judge.format": f"onnx ({engine})", "judge.sha256": hashlib.sha256(content).hexdigest()}
            return model, capabilities, pin, f"{self.kind} (ONNX, run by {engine})"
        if "python_function" in flavors:
            return self._pyfunc(local, data, pin)
        raise SourceError(
            f"{self.where}: flavours {', '.join(flavors) or 'none'}; allowed: a pytorch, onnx or python_function model"
        )

    def _check_store(self) -> None:
        """A registry in a local sqlite file that does not exist holds no model: refused before it is created."""
        import mlflow

        uri = self.tracking_uri or mlflow.get_tracking_uri()
        key = "target.tracking_uri" if self.tracking_uri else "MLFLOW_TRACKING_URI"
        if uri.startswith("sqlite:///") and not Path(uri.removeprefix("sqlite:///")).is_file():
            raise SourceError(
                f"{key}={uri}: no MLflow store there to find {self.uri} in; allowed: the tracking URI of the registry "
                "that holds it (target.tracking_uri)"
            )

    def _download(self, client, into: Path) -> tuple[Path, dict[str, str]]:
        """The model's folder, downloaded into `into`, and the tags that pin it: the URI and what it resolved to (the
        registered model's name and version, an alias's or the latest's, or the run and its logged model). The
        version downloaded is the one pinned, whatever an alias points at by then."""
        import mlflow

        pin = {"judge.uri": self.uri}
        registered = REGISTERED.fullmatch(self.uri)
        if registered is not None:
            found = self._version(client, registered["name"], registered["version"], registered["alias"])
            pin.update({"judge.model_name": found.name, "judge.model_version": str(found.version)})
            if found.run_id:
                pin["judge.run_id"] = found.run_id
            source = client.get_model_version_download_uri(found.name, found.version)
        else:
            run_id, _, path = self.uri.removeprefix("runs:/").partition("/")
            pin["judge.run_id"] = run_id
            run = client.get_run(run_id)
            logged = [
                model
                for model in client.search_logged_models(
                    experiment_ids=[run.info.experiment_id], filter_string=f"source_run_id = '{run_id}'"
                )
                if model.name == path.strip("/")
            ]
            if not logged:  # an MLflow 2 model, logged as the run's artifacts
                return Path(client.download_artifacts(run_id, path, str(into))), pin
            pin["judge.model_id"] = logged[0].model_id
            source = logged[0].artifact_location
        return Path(
            mlflow.artifacts.download_artifacts(artifact_uri=source, dst_path=str(into), tracking_uri=self.tracking_uri)
        ), pin

    def _version(self, client, name: str, version: str | None, alias: str | None):
        if alias is not None:
            return client.get_model_version_by_alias(name, alias)
        if version == "latest":
            found = max(client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version), default=None)
            if found is None:
                raise SourceError(f"{self.where}: the registered model {name!r} has no version; allowed: {URIS}")
            return found
        return client.get_model_version(name, version)

    def _exported(self, path: Path, pin: dict[str, str]) -> tuple[nn.Module, Capabilities, dict[str, str], str]:
        content = path.read_bytes()
        try:
            check_pickle_free(content)
        except UnsafeArchive as why:
            raise SourceError(
                f"{self.where}: its pt2 archive is not plain tensors and graph ({why}); allowed: a model logged with "
                "serialization_format='pt2' by mlflow.pytorch.log_model"
            ) from None
        try:
            module = torch.export.load(io.BytesIO(content)).module()  # the bytes checked, not the file again
        except Exception as error:  # torch.export's own deserialisation errors
            raise SourceError(f"{self.where}: torch.export cannot load its model.pt2 ({first_line(error)})") from None
        module.training = False  # an exported program cannot be switched by eval(); it was exported in eval mode
        pin = {**pin, "judge.format": "pt2", "judge.sha256": hashlib.sha256(content).hexdigest()}
        return module, FULL, pin, f"{self.kind} (pt2, torch.export)"

    def _pickled(self, local: Path, path: Path, pin: dict[str, str]) -> tuple[nn.Module, Capabilities, dict, str]:
        if not self.trust_pickle:
            raise SourceError(
                f"{self.where}: a pickled PyTorch model (MLflow's legacy format), which runs code when loaded; "
                "allowed: target.trust_pickle=true if you trust whoever logged it, or a model logged with "
                "serialization_format='pt2'"
            )
        import mlflow.pytorch

        with _pickle_allowed():
            module = mlflow.pytorch.load_model(str(local), map_location="cpu")
        pin = {**pin, "judge.format": "pickle", "judge.sha256": hashlib.sha256(path.read_bytes()).hexdigest()}
        return module.eval(), FULL, pin, f"{self.kind} (pickled, trusted)"

    def _pyfunc(self, local: Path, data: Dataset, pin: dict) -> tuple[nn.Module, Capabilities, dict, str]:
        if not self.trust_pickle:
            raise SourceError(
                f"{self.where}: a python_function model, whose loader runs its own Python code (a cloudpickled "
                "PythonModel); allowed: target.trust_pickle=true if you trust whoever logged it"
            )
        import mlflow.pyfunc

        with _pickle_allowed():
            model = mlflow.pyfunc.load_model(str(local))
        answers = PyfuncModule(model, data.n_classes, "scores")
        kind = answers.kind_of(data.eval.x[:3], self.where)
        pin = {**pin, "judge.format": "pyfunc", "judge.sha256": folder_digest(local)}
        capabilities = Capabilities(gradients=False, scores=kind != "labels")
        return PyfuncModule(model, data.n_classes, kind), capabilities, pin, f"{self.kind} (python_function, {kind})"


class PyfuncModule(nn.Module):
    """A `python_function` model as a module with no parameters and no gradients: its `predict` on the rows
    given, as scores: its own (`scores`), the log of its probabilities (`probabilities`: the softmax of which is
    them again), or one-hot rows for its labels (`labels`)."""

    def __init__(self, model, n_classes: int, kind: str) -> None:
        super().__init__()
        self.model = model
        self.n_classes = n_classes
        self.kind = kind

    def predict(self, x: np.ndarray) -> np.ndarray:
        out = self.model.predict(np.ascontiguousarray(x, dtype=np.float32))
        return np.asarray(out.to_numpy() if hasattr(out, "to_numpy") else out)

    def kind_of(self, x: np.ndarray, where: str) -> str:
        """What `predict` returns: one label per row, probabilities, or other scores."""
        out = self.predict(x)
        if out.shape == (len(x),) and np.issubdtype(out.dtype, np.integer):
            return "labels"
        if out.shape == (len(x), self.n_classes) and np.issubdtype(out.dtype, np.floating):
            sums = out.sum(axis=1)
            return "probabilities" if (out >= 0).all() and np.allclose(sums, 1, atol=1e-3) else "scores"
        raise SourceError(
            f"{where}: predict returns {out.dtype} {list(out.shape)} for {len(x)} inputs; allowed: one label per "
            f"input or one score per class, [{len(x)}, {self.n_classes}]"
        )

    @torch.no_grad()
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.predict(x.detach().cpu().numpy())
        if self.kind == "labels":
            scores = np.zeros((len(out), self.n_classes), dtype=np.float32)
            scores[np.arange(len(out)), out.astype(np.int64)] = 1.0
        elif self.kind == "probabilities":
            scores = np.log(np.clip(out, np.finfo(np.float32).tiny, None)).astype(np.float32)
        else:
            scores = out.astype(np.float32)
        return torch.from_numpy(scores).to(x.device)


def _flavors(local: Path, where: str) -> dict:
    try:
        flavors = yaml.safe_load((local / "MLmodel").read_text()).get("flavors", {})
    except (OSError, yaml.YAMLError, AttributeError) as error:
        raise SourceError(
            f"{where}: no readable MLmodel file ({first_line(error)}); allowed: an MLflow model"
        ) from None
    if not isinstance(flavors, dict):
        raise SourceError(f"{where}: its MLmodel file lists no flavours; allowed: an MLflow model")
    return flavors


def folder_digest(folder: Path) -> str:
    """One SHA-256 of a model folder: every file's path within it and bytes, in sorted order (a python_function
    model's code, pickle and artifacts, weights among them)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in folder.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(folder)).encode() + b"\0")
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


@contextmanager
def _env(name: str, value: str):
    """The environment variable `name` set to `value` for a while (MLflow reads its switches from there)."""
    saved = os.environ.get(name)
    os.environ[name] = value
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(name, None)
        else:
            os.environ[name] = saved


def _pickle_allowed():
    """MLflow's own switch for unpickling, on for the load the user said to trust."""
    return _env("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", "true")
