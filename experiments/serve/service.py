"""What `gavel serve` decides for each query, apart from HTTP: who asks (the API key, and the device that signed the
query), whether it may (banned, over its quota or rate), what the judge answers through its shield, and what the
ledger records. `app` turns HTTP into calls of `Service.infer` and its `Reply` back into HTTP.

Admission, answer and record happen under one lock, so that concurrent requests see the same counts as sequential
ones would: sixteen clients sharing one key never get one row past its quota. The key's integer id is the
responder's account, so a detector keeps one history per key, and a detector's ban is the key's ban (and the
signing device's), persisted. The wire format and its row codes are `targets.access.wire`'s:

- without `"partial": true`, a request is answered whole or refused whole: 429 (quota or rate; nothing charged)
  when its rows do not all fit, 403 when the key is banned (nothing charged) or when the detector flags a row (the
  rows the detector saw up to it are charged, and the key banned when the defense bans);
- with it, rows are admitted up to what the key (and the device) may still be charged, in order, screened and
  answered; `gavel_row_status` says what became of each row; 200 when a row was charged, else 403 (banned) or 429.

A refusal of rows (403 banned or detected, 429) carries each row's status under "rows" in its error JSON, partial or
not, so that a client always knows what was charged. In a whole request refused for a detector's flag, the rows
marked answered (0) before the flagged one were evaluated and charged, but their answers are withheld.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version

import numpy as np

from gavel.experiments.serve import tokens
from gavel.experiments.serve.deployment import Deployment
from gavel.experiments.serve.limits import AccountLimits, Blocked
from gavel.experiments.serve.signatures import SignatureCheck, SignatureRefused
from gavel.experiments.serve.store import KeyRecord, RequestRecord, Store
from gavel.targets.access import wire
from gavel.targets.access.policy import Output

log = logging.getLogger(__name__)

V2, MLFLOW = "v2", "invocations"
"""The two request shapes (`wire`), as the ledger names their endpoints."""


@dataclass(frozen=True)
class Reply:
    status: int
    body: dict
    headers: Mapping[str, str] = field(default_factory=dict)


def error_reply(status: int, message: str, reason: str, **extra) -> Reply:
    """The one-line error JSON of `wire`: {"error", "status"}, with the reason, and Retry-After on a 429."""
    body = {"error": message, "status": status, "reason": reason, **extra}
    headers = {"Retry-After": str(extra["retry_after"])} if "retry_after" in extra else {}
    return Reply(status, body, headers)


class Refusal(Exception):
    """A request refused before its rows reach the judge: the reply, and what the ledger records of it."""

    def __init__(self, reply: Reply, rows: int = 0) -> None:
        super().__init__(reply.body["error"])
        self.reply, self.rows = reply, rows


@dataclass(frozen=True)
class ServiceLimits:
    model_name: str
    max_rows: int
    max_bytes: int
    require_signature: bool
    signature_window_s: float


class Service:
    def __init__(
        self, deployment: Deployment, store: Store, limits: ServiceLimits, clock: Callable[[], float] = time.time
    ) -> None:
        """`clock`: unix seconds (quota windows and signature timestamps outlive the process)."""
        self.deployment = deployment
        self.limits = limits
        self._store = store
        self._clock = clock
        self._signatures = SignatureCheck(store, limits.signature_window_s) if limits.require_signature else None
        self._accounts: dict[int, AccountLimits] = {}
        self._lock = threading.Lock()
        store.claim_for_serving()
        # Bans outlive the process: a key banned before a restart is still refused unseen.
        deployment.responder.banned.update(store.banned_ids())

    # what anyone may read

    def models(self) -> dict:
        return {"models": [{"name": self.limits.model_name, "ready": True}]}

    def server_metadata(self) -> dict:
        extensions = ["gavel_row_status"] + (["gavel_signed_inputs"] if self.limits.require_signature else [])
        return {"name": "gavel", "version": _gavel_version(), "extensions": extensions}

    def model_metadata(self) -> dict:
        d = self.deployment
        outputs = [
            {"name": o.value, "datatype": "INT64" if o == Output.LABEL else "FP32",
             "shape": [-1] if o == Output.LABEL else [-1, d.n_classes]}
            for o in d.outputs
        ]  # fmt: skip
        outputs.append({"name": wire.ROW_STATUS, "datatype": "INT8", "shape": [-1]})
        return {
            "name": self.limits.model_name,
            "versions": ["1"],
            "platform": "gavel",
            "inputs": [{"name": wire.INPUT_NAME, "datatype": "FP32", "shape": [-1, *d.input_shape]}],
            "outputs": outputs,
            "parameters": {
                "n_classes": d.n_classes,
                "output": d.output.value,
                "max_rows": self.limits.max_rows,
                "max_bytes": self.limits.max_bytes,
                "require_signature": self.limits.require_signature,
                "signature_window_s": self.limits.signature_window_s,
                "gavel": True,
                "judge": dict(d.provenance),
            },
        }

    def check_key(self, headers: Mapping[str, str]) -> Reply:
        """`GET /gavel/v1/key`: whether the service takes the key a client holds, and what it may still ask;
        charged nothing, recorded nowhere (a request with no valid key is counted as any other)."""
        key = self._authenticate("key", headers)
        if isinstance(key, Reply):
            return key
        if key.banned:
            return error_reply(403, f"key {key.name!r} is banned ({key.banned_why or 'by the operator'})", "banned")
        now = self._clock()
        with self._lock:
            account = self._account(key, now)
            used = 0 if account.roll_due(now) else account.used
        body = {"key": key.name, "quota": key.quota, "window_hours": key.window_hours, "rate": key.rate, "used": used,
                "left": max(0, key.quota - used)}  # fmt: skip
        return Reply(200, body)

    # queries

    def infer(self, endpoint: str, headers: Mapping[str, str], body: bytes, oversize: bool = False) -> Reply:
        """Answer one request. `headers`: lower-case names; `oversize`: the body passed `max_bytes` (then `body` is
        what was read of it, and is not used)."""
        key = self._authenticate(endpoint, headers)
        if isinstance(key, Reply):
            return key
        device = None
        rows = 0
        try:
            if oversize:
                raise Refusal(error_reply(
                    413, f"the request body exceeds serve.max_bytes={self.limits.max_bytes} bytes; send fewer rows",
                    "too_large"))  # fmt: skip
            if self._signatures is not None:
                try:
                    signer = self._signatures.device_of(headers)
                    self._signatures.verify(signer, headers, body, self._clock())
                except SignatureRefused as refused:
                    raise Refusal(error_reply(401, str(refused), refused.reason)) from None
                device = signer
            request = self._decode(endpoint, body)
            rows = len(request.x)
            output = self._output(request)
            with self._lock:
                return self._answer(key, device, endpoint, request, output)
        except Refusal as refusal:
            self._record(key, device, endpoint, refusal.rows or rows, refusal.reply)
            return refusal.reply
        except Exception:  # the server keeps serving; the log says what broke (never the key: it is not in there)
            log.exception("%s request of key %r failed", endpoint, key.name)
            reply = error_reply(500, "the server failed to answer this request; nothing was charged", "server")
            self._record(key, device, endpoint, rows, reply)
            return reply

    def _authenticate(self, endpoint: str, headers: Mapping[str, str]) -> KeyRecord | Reply:
        """The key a request presents, or a 401 reply (counted, charged to nobody, the token not kept)."""
        token = tokens.from_headers(headers)
        if token is None:
            self._store.count_unauthenticated("missing", self._clock())
            return error_reply(
                401, "no API key: send Authorization: Bearer <key> (or X-API-Key: <key>)", "unauthenticated"
            )
        parsed = tokens.parse(token)
        key = self._store.key_by_lookup(parsed[0]) if parsed else None
        if parsed is None or not tokens.secret_matches(parsed[1], key.secret_sha256 if key else None):
            self._store.count_unauthenticated("invalid", self._clock())
            return error_reply(401, "invalid API key", "unauthenticated")
        if key.revoked_at is not None:
            reply = error_reply(401, "this API key was revoked", "revoked")
            self._record(key, None, endpoint, 0, reply)
            return reply
        return key

    def _decode(self, endpoint: str, body: bytes) -> wire.InferRequest:
        try:
            payload = json.loads(body)
        except (UnicodeDecodeError, ValueError, RecursionError) as error:
            raise Refusal(error_reply(400, f"the body is not JSON ({str(error)[:120]})", "malformed")) from None
        decode = wire.decode_v2_request if endpoint == V2 else wire.decode_mlflow_request
        try:
            request = decode(payload, self.deployment.input_shape)
        except wire.WireError as error:
            raise Refusal(error_reply(error.status, str(error), "malformed" if error.status == 400 else "invalid"))
        if len(request.x) > self.limits.max_rows:
            raise Refusal(
                error_reply(
                    413, f"the request holds {len(request.x)} rows; allowed: at most serve.max_rows="
                    f"{self.limits.max_rows}", "too_large"),
                rows=len(request.x),
            )  # fmt: skip
        return request

    def _output(self, request: wire.InferRequest) -> Output:
        shown = self.deployment.outputs
        if request.output is None:
            return self.deployment.output
        if request.output not in shown:
            raise Refusal(
                error_reply(
                    403, f'outputs[0].name="{request.output}": this service shows at most '
                    f"{self.deployment.output.value}; allowed: {', '.join(o.value for o in shown)}", "output"),
                rows=len(request.x),
            )  # fmt: skip
        return Output(request.output)

    def _answer(
        self, key: KeyRecord, device: KeyRecord | None, endpoint: str, request: wire.InferRequest, output: Output
    ) -> Reply:
        """Admission, the judge's answer and the record, under the service's lock."""
        now = self._clock()
        key = self._store.key_by_lookup(key.lookup) or key  # as it stands now: banned or unbanned meanwhile
        if device is not None:
            device = self._store.key_by_name(device.name) or device
        n = len(request.x)
        responder = self.deployment.responder
        if key.banned:
            responder.banned.add(key.id)
        else:
            responder.banned.discard(key.id)  # an operator unbanned it (`gavel keys unban`)
        for banned in (key, device):
            if banned is not None and banned.banned:
                return self._refuse_banned(key, device, endpoint, request, banned)
        accounts = [(key, self._account(key, now))]
        if device is not None:
            accounts.append((device, self._account(device, now)))
        rolled = [account for _, account in accounts if account.roll(now)]
        allowance = min(account.allowance(now) for _, account in accounts)
        admitted = min(n, allowance) if request.partial else (n if allowance >= n else 0)
        if not admitted:
            return self._refuse_limit(key, device, endpoint, request, accounts, rolled, now)
        if key.kind == "auditor":  # the operator's own evaluation: never screened, never in a detector's history
            reply = responder.unscreened(request.x[:admitted], output)
        else:
            reply = responder.respond(request.x[:admitted], key.id, output)
        status = np.full(n, wire.ROW_REFUSED, dtype=np.int8)
        status[:admitted][reply.answered] = wire.ROW_ANSWERED
        status[:admitted][reply.rejected] = wire.ROW_REJECTED
        status[:admitted][reply.banned] = wire.ROW_BANNED
        answered, rejected = int(reply.answered.sum()), int(reply.rejected.sum())
        charged = answered + rejected
        values = np.zeros((n, *reply.values.shape[1:]), dtype=reply.values.dtype)
        values[:admitted] = reply.values
        if request.partial and not charged:
            http = error_reply(403, "banned", "banned", rows=status.tolist())
        elif rejected and not request.partial:
            first = int(np.flatnonzero(reply.rejected)[0])
            what = "the key is banned" if reply.account_banned else "the row was refused"
            http = error_reply(
                403, f"the operator's detector flagged row {first} of this request: {what}", "detected",
                banned=bool(reply.account_banned), rows=status.tolist(),
            )  # fmt: skip
        elif endpoint == V2:
            http = Reply(200, wire.encode_v2_response(
                self.limits.model_name, output.value, values, status if request.partial else None,
                key_banned=bool(reply.account_banned)))  # fmt: skip
        else:
            http = Reply(200, wire.encode_mlflow_response(values))
        reason = "detected" if rejected else None
        with self._store.transaction():
            self._store.record(RequestRecord(
                key.id, None if device is None else device.id, now, endpoint, n, answered, rejected, n - charged,
                http.status, reason))  # fmt: skip
            for record, account in accounts:
                if charged or account in rolled:
                    self._store.save_window(record.id, account.window_start, account.used + charged)
            if reply.account_banned:
                why = f"the detector flagged a query ({self.deployment.description})"
                self._store.ban(key.id, now, why)
                if device is not None:
                    self._store.ban(device.id, now, f"{why}, signed by this device, sent with key {key.name!r}")
        for _, account in accounts:
            account.charge(now, charged)
        return http

    def _refuse_banned(
        self,
        key: KeyRecord,
        device: KeyRecord | None,
        endpoint: str,
        request: wire.InferRequest,
        banned: KeyRecord,
    ) -> Reply:
        n = len(request.x)
        who = f"{banned.kind} {banned.name!r}"
        rows = [wire.ROW_BANNED] * n
        reply = error_reply(403, f"{who} is banned ({banned.banned_why or 'by the operator'})", "banned", rows=rows)
        self._record(key, device, endpoint, n, reply, refused=n)
        return reply

    def _refuse_limit(
        self,
        key: KeyRecord,
        device: KeyRecord | None,
        endpoint: str,
        request: wire.InferRequest,
        accounts: list[tuple[KeyRecord, AccountLimits]],
        rolled: list[AccountLimits],
        now: float,
    ) -> Reply:
        """429: the rows do not fit (not one of them, with partial); the binding limit and when to ask again."""
        n = len(request.x)
        need = 1 if request.partial else n
        blocks: list[Blocked] = [
            blocked
            for record, account in accounts
            if (blocked := account.blocked(now, need, f"{record.kind} {record.name!r}")) is not None
        ]
        first = blocks[0]
        retry = max(block.retry_after for block in blocks)
        reply = error_reply(
            429, "; ".join(b.message for b in blocks), first.reason, retry_after=retry, rows=[wire.ROW_REFUSED] * n
        )
        with self._store.transaction():
            self._record(key, device, endpoint, n, reply, refused=n)
            for record, account in accounts:
                if account in rolled:
                    self._store.save_window(record.id, account.window_start, account.used)
        return reply

    def _account(self, record: KeyRecord, now: float) -> AccountLimits:
        """A key's or a device's limits; from the store the first time (its latest window, the last minute's
        charges)."""
        account = self._accounts.get(record.id)
        if account is None:
            account = AccountLimits(
                quota=record.quota,
                window_hours=record.window_hours,
                rate=record.rate,
                window=self._store.window(record.id),
                recent=self._store.charges_since(record.id, now - 60.0, device=record.kind == "device"),
            )
            self._accounts[record.id] = account
        account.update(quota=record.quota, window_hours=record.window_hours, rate=record.rate)
        return account

    def _record(
        self, key: KeyRecord, device: KeyRecord | None, endpoint: str, rows: int, reply: Reply, refused: int = 0
    ) -> None:
        self._store.record(RequestRecord(
            key.id, None if device is None else device.id, self._clock(), endpoint, rows, 0, 0, refused, reply.status,
            reply.body.get("reason")))  # fmt: skip


def _gavel_version() -> str:
    try:
        return version("gavel")
    except PackageNotFoundError:
        return "unknown"
