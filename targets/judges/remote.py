"""A judge deployed elsewhere (`target=remote`): audited through its API, as an attacker would reach it.

`target.url` is the service (`gavel serve`, or any Open Inference Protocol v2 server; `target.protocol=mlflow`
for an MLflow scoring server's `POST /invocations`), `target.model` the model's name there. The attacker's keys
come from environment variables, never from the config or the command line (`target.api_key_env`: one name, or
several for a Sybil attacker: one key per account), and the evaluator's from its own (`target.evaluator_key_env`):
the operator's re-check of every adversarial input and of the clean verdicts, reported apart from the attack's
queries. With `target.device` and `target.device_key_env` (the path of an enrolled device's private key) every
request is signed (`serve.require_signature`); the evaluator signs with its own (`target.evaluator_device`). An
attacker with no device sends unsigned queries, which such a service refuses: it can only transfer.

Before any run the service is asked, within seconds, whether it is there, speaks the protocol, serves that model
with the data's input shape and classes, and takes each key: anything else is one line naming the key, exit 2,
nothing recorded. A remote judge offers no gradients (white-box attacks are refused) and scores only where the
service shows them. Every example's budget is still the attacker's Oracle's to keep and count; time is the wall
clock's.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Literal, Sequence

import numpy as np
import torch
from torch import nn

from gavel.targets.access.clock import WallClock
from gavel.targets.access.policy import Output
from gavel.targets.access.remote import CONNECT_TIMEOUT, Endpoint, RemoteEvaluator, RemoteResponder
from gavel.targets.datasets import Dataset
from gavel.targets.errors import SourceError
from gavel.targets.judges.base import Capabilities, JudgeSource, ProvidedJudge
from gavel.targets.params import BadValue, NonNegativeFloat, PositiveFloat

SHOWS = {"logits": 3, "probabilities": 2, "label": 1}
"""How much each output shows: a service answers its own output and any below it."""
DEFAULT_MAX_ROWS = 256


class RemoteModel(nn.Module):
    """The remote judge as a module, for whatever reads a judge's scores on the operator's side: each call asks the
    API with the evaluator's key (log-probabilities, or a label as a one-hot score). No gradients."""

    def __init__(self, evaluator: RemoteEvaluator, output: Output, n_classes: int) -> None:
        super().__init__()
        self.evaluator = evaluator
        self.output = output
        self.n_classes = n_classes

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        rows = np.ascontiguousarray(x.detach().cpu().numpy(), dtype=np.float32)
        if self.output == Output.LABEL:
            labels = self.evaluator.answers(rows, Output.LABEL)
            scores = np.full((len(rows), self.n_classes), -1e4, dtype=np.float32)
            scores[np.arange(len(rows)), labels] = 0.0
        else:
            scores = np.log(np.clip(self.evaluator.answers(rows, Output.PROBABILITIES), 1e-30, None))
        return torch.from_numpy(scores.astype(np.float32)).to(x.device)


@dataclass
class RemoteService:
    """What the runner builds the attacker's Oracle from when the judge answers elsewhere."""

    endpoint: Endpoint
    keys: list[str]
    key_names: list[str]
    evaluator: RemoteEvaluator
    n_classes: int
    max_rows: int
    max_wait: float
    signer: object | None

    @property
    def clock(self) -> WallClock:
        """A clock for one run's Oracle: its time starts when the attack plans its examples."""
        return WallClock()

    def responder(self, accounts: int) -> RemoteResponder:
        return RemoteResponder(
            self.endpoint,
            self.keys[:accounts],
            n_classes=self.n_classes,
            max_rows=self.max_rows,
            max_wait=self.max_wait,
            signer=self.signer,
            key_names=self.key_names[:accounts],
        )


class RemoteJudge(JudgeSource):
    def __init__(
        self,
        *,
        url: str | None = None,
        protocol: Literal["v2", "mlflow"] = "v2",
        model: str = "judge",
        api_key_env: str | Sequence[str] = "GAVEL_API_KEY",
        evaluator_key_env: str = "GAVEL_EVALUATOR_KEY",
        device: str | None = None,
        device_key_env: str | None = None,
        evaluator_device: str | None = None,
        evaluator_device_key_env: str | None = None,
        timeout: PositiveFloat = 30.0,
        max_wait: NonNegativeFloat = 60.0,
        input_shape: Sequence[int] | None = None,
    ) -> None:
        if not url or not url.startswith(("http://", "https://")):
            raise BadValue("url", url, "the service's http(s):// URL, e.g. http://127.0.0.1:8080")
        names = [api_key_env] if isinstance(api_key_env, str) else list(api_key_env)
        if not names or not all(isinstance(n, str) and n for n in names):
            raise BadValue("api_key_env", api_key_env, "an environment variable's name, or a list of them")
        if (device is None) != (device_key_env is None):
            raise BadValue("device", device, "a device's name together with target.device_key_env, or both null")
        if (evaluator_device is None) != (evaluator_device_key_env is None):
            raise BadValue(
                "evaluator_device", evaluator_device,
                "a device's name together with target.evaluator_device_key_env, or both null",
            )  # fmt: skip
        self.url, self.protocol, self.model = url.rstrip("/"), protocol, model
        self.key_envs, self.evaluator_key_env = names, evaluator_key_env
        self.device, self.device_key_env = device, device_key_env
        self.evaluator_device, self.evaluator_device_key_env = evaluator_device, evaluator_device_key_env
        self.timeout, self.max_wait = float(timeout), float(max_wait)
        self._input_shape = None if input_shape is None else tuple(int(d) for d in input_shape)
        self._shows: str | None = None

    @property
    def input_shape(self) -> tuple[int, int, int] | None:
        return self._input_shape

    @property
    def accounts(self) -> int:
        """Keys the attacker holds: its accounts."""
        return len(self.key_envs)

    @property
    def capabilities(self) -> Capabilities:
        return Capabilities(gradients=False, scores=self._shows != "label")

    def prepare(self, data: Dataset, device: str) -> ProvidedJudge:
        keys = [self._key(name, "api_key_env") for name in self.key_envs]
        evaluator_key = self._key(self.evaluator_key_env, "evaluator_key_env")
        signer = self._signer(self.device, self.device_key_env, "device_key_env")
        evaluator_signer = self._signer(
            self.evaluator_device, self.evaluator_device_key_env, "evaluator_device_key_env"
        )
        endpoint = Endpoint(self.url, self.protocol, self.model, self.timeout)
        metadata = self._metadata(data)
        if metadata.get("require_signature") and evaluator_signer is None:
            raise SourceError(
                f"target.evaluator_device=null: the service at {self.url} answers only inputs signed by an enrolled "
                "device (serve.require_signature); allowed: the evaluator's device and its key "
                "(target.evaluator_device, target.evaluator_device_key_env)"
            )
        self._shows = metadata.get("output")
        max_rows = rows_per_request(metadata, data.input_shape)
        for name, key in [*zip(self.key_envs, keys), (self.evaluator_key_env, evaluator_key)]:
            self._check_key(name, key)
        evaluator = RemoteEvaluator(
            endpoint, evaluator_key, n_classes=data.n_classes, max_rows=max_rows, signer=evaluator_signer
        )
        output = Output.LABEL if self._shows == "label" else Output.PROBABILITIES
        service = RemoteService(
            endpoint, keys, list(self.key_envs), evaluator, data.n_classes, max_rows, self.max_wait, signer
        )
        tags = {"judge.uri": f"{self.url}/v2/models/{self.model}", "judge.protocol": self.protocol}
        tags.update({f"judge.{k}": str(v) for k, v in metadata.get("judge", {}).items()})
        return ProvidedJudge(
            RemoteModel(evaluator, output, data.n_classes),
            capabilities=self.capabilities,
            tags=tags,
            description=f"a judge served at {self.url} ({self.protocol}, model {self.model})",
            service=service,
        )

    def _key(self, name: str, key: str) -> str:
        value = os.environ.get(name)
        if not value:
            raise SourceError(
                f"target.{key}={name}: the environment variable {name} is not set; allowed: the name of a variable "
                "holding an API key (gavel keys add prints one)"
            )
        return value

    def _signer(self, device: str | None, env: str | None, key: str):
        """Headers signing a request's bytes with `device`'s private key (its path in the variable `env`)."""
        if device is None:
            return None
        from gavel.targets.access.signing import load_private_key, sign_headers

        path = self._key(env, key)
        try:
            private = load_private_key(path)
        except (OSError, ValueError) as error:
            raise SourceError(
                f"target.{key}={env}: cannot read the device key {path} ({error}); "
                "allowed: the path of an Ed25519 private key in PEM (gavel keys add-device --out)"
            ) from None
        return lambda body: sign_headers(private, device, body)

    def _get(self, path: str, key: str | None = None):
        import requests

        headers = {} if key is None else {"Authorization": f"Bearer {key}"}
        try:
            return requests.get(f"{self.url}{path}", headers=headers, timeout=(CONNECT_TIMEOUT, CONNECT_TIMEOUT))
        except requests.RequestException as error:
            raise SourceError(
                f"target.url={self.url}: no answer ({type(error).__name__}); allowed: the URL of a running judge "
                "service (gavel serve)"
            ) from None

    def _metadata(self, data: Dataset) -> dict:
        """The model's metadata (v2), checked against the data; gavel's own parameters where the service is gavel."""
        reply = self._get(f"/v2/models/{self.model}")
        if reply.status_code == 404 and self.protocol == "mlflow" and not _is_json(reply):
            return {}  # an MLflow scoring server: no metadata to read, the data says the shape
        if reply.status_code == 404 and _is_json(reply):
            raise SourceError(
                f"target.model={self.model}: the service at {self.url} serves no such model (404); allowed: "
                f"{_served_models(self._get('/v2/models'))}"
            )
        if reply.status_code != 200 or not _is_json(reply):
            raise SourceError(
                f"target.url={self.url}: not an Open Inference Protocol v2 service (GET /v2/models/{self.model} "
                f"answered {reply.status_code}); allowed: a gavel serve or v2 endpoint, target.protocol=v2|mlflow"
            )
        body = reply.json()
        try:
            shape = tuple(body["inputs"][0]["shape"][1:])
        except (KeyError, IndexError, TypeError):
            raise SourceError(f"target.url={self.url}: the model's metadata names no input shape") from None
        if shape != tuple(data.input_shape):
            raise SourceError(
                f"target.model={self.model}: it takes inputs of {list(shape)}, the data's are "
                f"{list(data.input_shape)}; allowed: data of the judge's input shape"
            )
        parameters = body.get("parameters") or {}
        n_classes = parameters.get("n_classes")
        if n_classes is not None and n_classes != data.n_classes:
            raise SourceError(
                f"target.model={self.model}: it judges {n_classes} classes, data has {data.n_classes}; allowed: data "
                "of the judge's classes"
            )
        if parameters.get("output") is not None and parameters["output"] not in SHOWS:
            raise SourceError(f"target.url={self.url}: the service shows {parameters['output']!r}, not an output")
        return parameters

    def _check_key(self, env: str, key: str) -> None:
        """Whether the service takes the key (gavel's `GET /gavel/v1/key`: nothing charged); other services are
        asked nothing here, and a refused key stops the run at its first query."""
        reply = self._get("/gavel/v1/key", key)
        if reply.status_code in (401, 403):
            what = "refuses" if reply.status_code == 401 else "has banned"
            error = reply.json().get("error", "") if _is_json(reply) else ""
            raise SourceError(f"target.{self._which(env)}={env}: the service {what} that key ({error})")

    def _which(self, env: str) -> str:
        return "evaluator_key_env" if env == self.evaluator_key_env else "api_key_env"

    def check_output(self, output: Output) -> str | None:
        """Why the service cannot answer `output` (it shows less; or, over MLflow's protocol, which cannot ask for an
        output, it shows scores of another kind), or None."""
        if self._shows is None:
            return None
        if SHOWS[output.value] > SHOWS[self._shows]:
            return f"the service shows at most {self._shows}"
        if self.protocol == "mlflow" and output != Output.LABEL and output.value != self._shows:
            return (
                f"the service answers {self._shows} and target.protocol=mlflow cannot ask for another output; "
                f"allowed: access.output={self._shows} or label, or target.protocol=v2"
            )
        return None


def rows_per_request(metadata: dict, input_shape: tuple[int, ...]) -> int:
    """Rows one request may carry: the service's `max_rows`, and as many as fit its `max_bytes` as JSON (a float
    32 written as text takes up to about 16 bytes; 24 leaves room for separators)."""
    rows = int(metadata.get("max_rows", DEFAULT_MAX_ROWS))
    max_bytes = metadata.get("max_bytes")
    if isinstance(max_bytes, int) and max_bytes > 0:
        rows = min(rows, max(1, (max_bytes - 1024) // (24 * int(np.prod(input_shape)))))
    return rows


def _is_json(reply) -> bool:
    try:
        reply.json()
        return True
    except ValueError:
        return False


def _served_models(reply) -> str:
    try:
        names = [m["name"] for m in reply.json()["models"]]
    except (ValueError, KeyError, TypeError):
        return "the model the service serves (GET /v2/models/NAME)"
    return ", ".join(names)
