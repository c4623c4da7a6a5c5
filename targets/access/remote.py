"""A judge deployed elsewhere, reached over HTTP: the attacker's keys and the evaluator's.

`RemoteResponder` answers the rows an Oracle admits by asking the service with the key of the account charged
(one key per account: a Sybil attacker holds several). It sends the Open Inference Protocol v2 with gavel's
`partial` parameter, so that the service says row by row what it answered, rejected (its detector: charged, not
answered), or refused (a banned key; the key's quota or rate: not charged); the Oracle in front keeps each
example's budget and the attacker's own ledger, which must equal the service's row for row. With
`protocol=mlflow` (`POST /invocations`) a request is answered whole or refused whole; a refusal's `rows`, where
the service sends them (gavel does), say which rows were charged.

A 429 for the rate is waited out (`Retry-After`, up to `max_wait` seconds); one for the quota is the account's
limit, as in process: the client moves to its next key. A 401, or an answer that is not the protocol's, stops the
run (`RemoteError`): an attack never goes on with rows it cannot account for.

`RemoteEvaluator` is the operator's re-check: the same API with the evaluator's own key, never charged to the
attacker; its rows are counted apart (`rows_asked`).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Callable

import numpy as np

from gavel.targets.access import wire
from gavel.targets.access.policy import Output
from gavel.targets.access.responder import Response, blank

CONNECT_TIMEOUT = 3.0
RECONNECT_PAUSE = 0.5
ROW_WITHHELD = -1
"""Our own row status: evaluated and charged, its answer withheld (a whole request refused for a later row's flag)."""
ROW_CODES = (wire.ROW_ANSWERED, wire.ROW_REJECTED, wire.ROW_BANNED, wire.ROW_REFUSED)
UNSIGNED = ("signature",)
"""The service's reason for refusing a query it requires signed (`serve.require_signature`)."""


class RemoteError(RuntimeError):
    """The service cannot be used as configured (unreachable, not the protocol, a key it refuses)."""


@dataclass(frozen=True)
class Endpoint:
    """Where the judge answers and how: the service's URL, the protocol (`v2` or `mlflow`), the model's name."""

    url: str
    protocol: str
    model: str
    timeout: float = 30.0

    @property
    def infer_url(self) -> str:
        if self.protocol == "mlflow":
            return f"{self.url.rstrip('/')}/invocations"
        return f"{self.url.rstrip('/')}/v2/models/{self.model}/infer"


Signer = Callable[[bytes], dict]
"""Headers that sign a request's bytes (a device's key: `serve.require_signature`)."""


class _Caller:
    """POSTs one request with one key; returns (status, JSON body, headers)."""

    def __init__(self, endpoint: Endpoint, signer: Signer | None, max_wait: float) -> None:
        import requests

        self.endpoint = endpoint
        self.max_wait = max_wait
        self.signer = signer
        self._session = requests.Session()
        self._lock = threading.Lock()

    def post(self, body: dict, key: str) -> tuple[int, object, Mapping[str, str]]:
        import requests

        data = json.dumps(body).encode()
        headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}"}
        if self.signer is not None:
            headers.update(self.signer(data))
        waited = 0.0
        while True:
            try:
                with self._lock:  # a requests.Session is not safe across threads
                    timeout = (CONNECT_TIMEOUT, self.endpoint.timeout)
                    reply = self._session.post(self.endpoint.infer_url, data=data, headers=headers, timeout=timeout)
                break
            except requests.RequestException as error:
                # Refused before it was sent (the service restarting): nothing was charged, so it is asked again;
                # a request lost after it was sent may have been charged, and the run stops rather than guess.
                if not _never_sent(error) or waited >= self.max_wait:
                    raise RemoteError(f"target.url={self.endpoint.url}: no answer ({type(error).__name__})") from None
                time.sleep(RECONNECT_PAUSE)
                waited += RECONNECT_PAUSE
        try:
            payload = reply.json()
        except ValueError:
            payload = None
        return reply.status_code, payload, reply.headers  # case-insensitive: servers send retry-after in any case


def _retry_after(headers: Mapping[str, str], payload: object, endpoint: Endpoint) -> float:
    """Seconds a 429 asks to wait: `Retry-After` (seconds), else the body's `retry_after`."""
    text = headers.get("retry-after")
    if text is None and isinstance(payload, dict):
        text = payload.get("retry_after")
    try:
        seconds = float(text)
    except (TypeError, ValueError):
        raise RemoteError(f"target.url={endpoint.url}: a 429 with Retry-After={text!r}; allowed: seconds") from None
    return max(seconds, 0.0)


def _never_sent(error: Exception) -> bool:
    """Whether the connection was refused or timed out before the request went out."""
    import requests
    from urllib3.exceptions import NewConnectionError

    if isinstance(error, requests.ConnectTimeout):
        return True
    cause = error.args[0] if error.args else None
    reason = getattr(cause, "reason", cause)
    return isinstance(reason, NewConnectionError) or isinstance(cause, NewConnectionError)


def _error(payload: object) -> str:
    if isinstance(payload, dict) and isinstance(payload.get("error"), str):
        return payload["error"]
    return "no gavel error message"


class RemoteResponder:
    """Asks the service for the rows the Oracle admitted, with the key of the account charged."""

    def __init__(
        self,
        endpoint: Endpoint,
        keys: list[str],
        *,
        n_classes: int,
        max_rows: int,
        max_wait: float = 60.0,
        signer: Signer | None = None,
        key_names: list[str] | None = None,
    ) -> None:
        """`max_rows`: rows per request, what the service takes (in rows and in bytes)."""
        self._caller = _Caller(endpoint, signer, max_wait)
        self._keys = keys
        self._key_names = key_names or [f"key {i}" for i in range(len(keys))]
        self.n_classes = n_classes
        self.max_rows = max_rows
        self.max_wait = max_wait
        self.banned: set[int] = set()
        self.model = None  # no weights over HTTP

    def respond(self, x: np.ndarray, account: int, output: Output) -> Response:
        n = len(x)
        values = blank(output, n, self.n_classes)
        status = np.full(n, wire.ROW_REFUSED, dtype=np.int8)
        done = 0
        while done < n:
            chunk = slice(done, min(n, done + self.max_rows))
            got, rows = self._ask(x[chunk], account, output)
            values[chunk], status[chunk] = got, rows
            done = chunk.stop
            if (rows == wire.ROW_BANNED).any() or account in self.banned:
                status[done:] = wire.ROW_BANNED
                break
            if (rows == wire.ROW_REFUSED).any():  # the key's quota is spent: the rest waits for another key
                break
        answered = status == wire.ROW_ANSWERED
        values[~answered] = 0
        return Response(
            values,
            answered,
            status == wire.ROW_REJECTED,
            status == wire.ROW_BANNED,
            status == wire.ROW_REFUSED,
            account in self.banned,
            withheld=status == ROW_WITHHELD,
        )

    def _ask(self, x: np.ndarray, account: int, output: Output) -> tuple[np.ndarray, np.ndarray]:
        """One request's answers and row statuses; a 429 for the rate is waited out."""
        endpoint = self._caller.endpoint
        if endpoint.protocol == "mlflow":
            body = {"inputs": x.tolist()}
        else:
            body = wire.encode_v2_request(x, output.value, partial=True)
        waited = 0.0
        while True:
            code, payload, headers = self._caller.post(body, self._keys[account])
            if code == 200:
                try:
                    if endpoint.protocol == "mlflow":
                        values = wire.decode_mlflow_response(payload, output.value, len(x), self.n_classes)
                        return values, np.zeros(len(x), dtype=np.int8)
                    values, rows, banned = wire.decode_v2_response(payload, output.value, len(x), self.n_classes)
                    if banned:
                        self.banned.add(account)
                    return values, rows
                except wire.WireError as error:
                    raise RemoteError(f"target.url={endpoint.url}: {error}") from None
            reason = payload.get("reason") if isinstance(payload, dict) else None
            if code == 429 and reason == "rate":
                retry = _retry_after(headers, payload, endpoint)
                if waited + retry <= self.max_wait:
                    time.sleep(retry)
                    waited += retry
                    continue
            if code == 401 and reason in UNSIGNED and self._caller.signer is None:
                # the service answers only signed inputs and this attacker holds no device: nothing it asks is
                # answered or charged (it can only transfer)
                return blank(output, len(x), self.n_classes), np.full(len(x), wire.ROW_REFUSED, dtype=np.int8)
            if code == 403 and reason == "output":
                raise RemoteError(f"target.url={endpoint.url}: {_error(payload)}")
            rows = self._refused_rows(payload, len(x), code)
            banned = isinstance(payload, dict) and payload.get("banned") is True
            if code == 403 and ((rows == wire.ROW_BANNED).any() or reason == "banned" or banned):
                self.banned.add(account)
            if code in (403, 429):
                return blank(output, len(x), self.n_classes), rows
            name = self._key_names[account]
            raise RemoteError(f"target.url={endpoint.url}: the service answered {code} to {name}: {_error(payload)}")

    @staticmethod
    def _refused_rows(payload: object, n: int, code: int) -> np.ndarray:
        """The statuses a refusal sends (`rows`), else the whole request refused: banned on 403, quota on 429. A row
        a refusal calls answered was evaluated and charged, but its answer withheld (a detector's flag later in a
        request answered whole or not at all): charged and unanswered, as a rejected row is."""
        rows = payload.get("rows") if isinstance(payload, dict) else None
        if isinstance(rows, list) and len(rows) == n and set(rows) <= set(ROW_CODES):
            rows = np.asarray(rows, dtype=np.int8)
            rows[rows == wire.ROW_ANSWERED] = ROW_WITHHELD
            return rows
        return np.full(n, wire.ROW_BANNED if code == 403 else wire.ROW_REFUSED, dtype=np.int8)


class RemoteEvaluator:
    """The operator's re-check through the same API with the evaluator's own key: verdicts and probabilities,
    counted apart from the attacker's queries."""

    def __init__(self, endpoint: Endpoint, key: str, *, n_classes: int, max_rows: int, signer: Signer | None = None):
        self._responder = RemoteResponder(
            endpoint, [key], n_classes=n_classes, max_rows=max_rows, signer=signer, key_names=["the evaluator's key"]
        )
        self.rows_asked = 0

    def answers(self, x: np.ndarray, output: Output) -> np.ndarray:
        reply = self._responder.respond(x, 0, output)
        self.rows_asked += len(x)
        if not reply.answered.all():
            raise RemoteError(
                f"the evaluator's key was refused {int((~reply.answered).sum())} of {len(x)} rows (its quota, or a "
                "ban): give it a quota that covers the evaluation (gavel keys add ... --quota)"
            )
        return reply.values

    def verdicts(self, x: np.ndarray, output: Output) -> np.ndarray:
        values = self.answers(x, output)
        return values if output == Output.LABEL else values.argmax(axis=1).astype(np.int64)

    def served_probabilities(self, x: np.ndarray) -> np.ndarray:
        return self.answers(x, Output.PROBABILITIES)
