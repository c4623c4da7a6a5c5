"""What `gavel serve` admits, answers and records for each request (experiments/serve/service.py), without HTTP: a
tiny linear judge, a store in tmp_path, a clock the test moves. Quotas and rates are exact; a window starts at the
first query after the previous one ended; partial requests are answered row by row as targets/access/wire.py says;
a detector's flag is charged and bans the key, persisted; a restart changes no count; signed inputs are checked."""

from __future__ import annotations

import json

import numpy as np
import pytest
from helpers.serving import (
    TINY_SHAPE,
    Clock,
    MarkedRowDetector,
    add_key,
    bearer,
    limits,
    rows,
    tiny_deployment,
    v2_body,
)

from gavel.experiments.serve.limits import AccountLimits
from gavel.experiments.serve.service import MLFLOW, V2, Service
from gavel.experiments.serve.store import Store
from gavel.targets.access import signing, wire
from gavel.targets.access.policy import Output


@pytest.fixture
def store(tmp_path):
    opened = Store(str(tmp_path / "ledger.db"))
    yield opened
    opened.close()


def used(store: Store, name: str) -> tuple[int, int, int]:
    """(rows answered, rows rejected, rows charged in the current window) of a key, from the ledger."""
    usage = {u.key.name: u for u in store.usage()}[name]
    return usage.answered, usage.rejected, usage.window_used


def test_the_quota_is_exact_all_or_nothing_without_partial_and_row_by_row_with_it(store):
    clock = Clock()
    service = Service(tiny_deployment(), store, limits(), clock=clock)
    token = add_key(store, "alice", 5)
    assert service.infer(V2, bearer(token), v2_body(rows(3))).status == 200
    refused = service.infer(V2, bearer(token), v2_body(rows(3)))  # 3 more do not fit in the 2 left: none charged
    assert refused.status == 429 and refused.body["reason"] == "quota" and used(store, "alice") == (3, 0, 3)
    assert refused.headers["Retry-After"] == str(24 * 3600) == str(refused.body["retry_after"])
    assert refused.body["rows"] == [wire.ROW_REFUSED] * 3  # what was charged: nothing

    partial = service.infer(V2, bearer(token), v2_body(rows(3), "label", partial=True))
    assert partial.status == 200
    outputs = {o["name"]: o for o in partial.body["outputs"]}
    assert outputs[wire.ROW_STATUS]["data"] == [wire.ROW_ANSWERED, wire.ROW_ANSWERED, wire.ROW_REFUSED]
    assert used(store, "alice") == (5, 0, 5)
    empty = service.infer(V2, bearer(token), v2_body(rows(2), partial=True))
    assert empty.status == 429 and empty.body["rows"] == [wire.ROW_REFUSED] * 2
    assert used(store, "alice") == (5, 0, 5)


def test_a_window_starts_at_the_first_query_after_the_previous_one_ended(store):
    clock = Clock()
    service = Service(tiny_deployment(), store, limits(), clock=clock)
    token = add_key(store, "alice", 2, window=1.0)
    assert service.infer(V2, bearer(token), v2_body(rows(2))).status == 200
    clock.advance(1800)
    refused = service.infer(V2, bearer(token), v2_body(rows(1)))
    assert refused.status == 429 and refused.body["retry_after"] == 1800
    clock.advance(5000)  # well past the end: the next window starts now, not at 3600
    assert service.infer(V2, bearer(token), v2_body(rows(2))).status == 200
    clock.advance(3599)
    assert service.infer(V2, bearer(token), v2_body(rows(1))).body["retry_after"] == 1
    clock.advance(1)
    assert service.infer(V2, bearer(token), v2_body(rows(1))).status == 200


def test_the_rate_is_a_sliding_minute_with_its_retry_after(store):
    clock = Clock()
    service = Service(tiny_deployment(), store, limits(), clock=clock)
    token = add_key(store, "alice", 1000, rate=4)
    assert service.infer(V2, bearer(token), v2_body(rows(3))).status == 200
    clock.advance(20)
    assert service.infer(V2, bearer(token), v2_body(rows(1))).status == 200
    clock.advance(10)
    refused = service.infer(V2, bearer(token), v2_body(rows(2)))
    assert refused.status == 429 and refused.body["reason"] == "rate"
    assert refused.body["retry_after"] == 30  # the first 3 rows age out at 60 s
    clock.advance(30)
    assert service.infer(V2, bearer(token), v2_body(rows(3))).status == 200
    too_many = service.infer(V2, bearer(token), v2_body(rows(5)))
    assert too_many.status == 429 and "exceed the whole rate" in too_many.body["error"]


def test_a_detector_flag_is_charged_bans_the_key_and_the_ban_is_persisted(store, tmp_path):
    clock = Clock()
    service = Service(tiny_deployment(detector=MarkedRowDetector()), store, limits(), clock=clock)
    token, other = add_key(store, "mallory", 100), add_key(store, "honest", 100)
    flagged = service.infer(V2, bearer(token), v2_body(rows(4, mark=[2])))
    assert flagged.status == 403 and flagged.body["reason"] == "detected" and flagged.body["banned"] is True
    assert flagged.body["rows"] == [wire.ROW_ANSWERED, wire.ROW_ANSWERED, wire.ROW_REJECTED, wire.ROW_BANNED]
    assert used(store, "mallory") == (2, 1, 3)  # the rows before the flag, and the flagged row
    key = store.key_by_name("mallory")
    assert key.banned and "detector" in key.banned_why
    refused = service.infer(V2, bearer(token), v2_body(rows(2), partial=True))
    assert refused.status == 403 and refused.body["reason"] == "banned"
    assert refused.body["rows"] == [wire.ROW_BANNED] * 2 and used(store, "mallory") == (2, 1, 3)
    assert service.infer(V2, bearer(other), v2_body(rows(2))).status == 200  # a ban is the key's, not everyone's

    restarted = Service(tiny_deployment(detector=MarkedRowDetector()), store, limits(), clock=clock)
    assert restarted.infer(V2, bearer(token), v2_body(rows(1))).status == 403
    store.unban("mallory")  # `gavel keys unban` while the service runs
    assert restarted.infer(V2, bearer(token), v2_body(rows(1))).status == 200


def test_partial_rows_after_a_flag_are_banned_and_the_flag_charged(store):
    service = Service(tiny_deployment(detector=MarkedRowDetector()), store, limits(), clock=Clock())
    token = add_key(store, "mallory", 4)
    reply = service.infer(V2, bearer(token), v2_body(rows(6, mark=[1]), "label", partial=True))
    assert reply.status == 200
    status = {o["name"]: o for o in reply.body["outputs"]}[wire.ROW_STATUS]["data"]
    assert status == [wire.ROW_ANSWERED, wire.ROW_REJECTED, wire.ROW_BANNED, wire.ROW_BANNED] + [wire.ROW_REFUSED] * 2
    assert used(store, "mallory") == (1, 1, 2)


def test_with_reject_only_a_flagged_row_is_refused_and_the_key_goes_on(store):
    service = Service(tiny_deployment(detector=MarkedRowDetector(), on_detection="reject"), store, limits())
    token = add_key(store, "alice", 100)
    reply = service.infer(V2, bearer(token), v2_body(rows(3, mark=[1]), partial=True))
    status = {o["name"]: o for o in reply.body["outputs"]}[wire.ROW_STATUS]["data"]
    assert status == [wire.ROW_ANSWERED, wire.ROW_REJECTED, wire.ROW_ANSWERED]
    assert not store.key_by_name("alice").banned
    assert service.infer(V2, bearer(token), v2_body(rows(1))).status == 200


def test_a_restart_keeps_every_count(tmp_path):
    clock = Clock()
    path = str(tmp_path / "ledger.db")
    store = Store(path)
    token = add_key(store, "alice", 10, rate=6)
    assert Service(tiny_deployment(), store, limits(), clock=clock).infer(V2, bearer(token), v2_body(rows(4))).status
    store.close()
    clock.advance(5)
    store = Store(path)
    service = Service(tiny_deployment(), store, limits(), clock=clock)  # a new process: nothing but the store
    refused = service.infer(V2, bearer(token), v2_body(rows(3)))
    assert refused.status == 429 and refused.body["reason"] == "rate" and refused.body["retry_after"] == 55
    clock.advance(60)
    assert service.infer(V2, bearer(token), v2_body(rows(6))).status == 200
    clock.advance(60)
    assert service.infer(V2, bearer(token), v2_body(rows(1))).body["reason"] == "quota"
    store.close()


def test_the_service_answers_at_most_its_output(store):
    token = add_key(store, "alice", 100)
    x = rows(2)
    label = Service(tiny_deployment("label"), store, limits())
    refused = label.infer(V2, bearer(token), v2_body(x, "probabilities"))
    assert refused.status == 403 and refused.body["reason"] == "output" and "allowed: label" in refused.body["error"]
    deployment = tiny_deployment("logits")
    logits = Service(deployment, store, limits())
    for output in ("logits", "probabilities", "label"):
        reply = logits.infer(V2, bearer(token), v2_body(x, output))
        assert reply.status == 200 and reply.body["outputs"][0]["name"] == output
        got = np.asarray(reply.body["outputs"][0]["data"])
        expected = deployment.responder.answer(x, Output(output))
        assert np.array_equal(got.reshape(expected.shape).astype(expected.dtype), expected)
    mlflow = logits.infer(MLFLOW, bearer(token), json.dumps({"inputs": x.reshape(2, -1).tolist()}).encode())
    assert np.asarray(mlflow.body["predictions"]).shape == (2, 3)
    assert used(store, "alice")[0] == 8


@pytest.mark.parametrize(
    "body, status, words",
    [
        (b"{not json", 400, "not JSON"),
        (b'{"inputs": 3}', 400, "a v2 request"),
        (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 4], "datatype": "FP32", "data": [0.1] * 4}]}), 422,
         "allowed: [n, 1, 4, 4]"),
        (json.dumps({"inputs": [{"name": "input", "shape": [1, 1, 4, 4], "datatype": "INT8", "data": [0] * 16}]}), 422,
         "datatype"),
        (v2_body(rows(1)).replace(b"0.", b"NaN, 0.", 1), 422, ""),
        ('{"inputs": [{"name": "input", "shape": [1, 1, 4, 4], "datatype": "FP32", "data": [NaN' + ", 0" * 15 + "]}]}",
         422, "NaN"),
        (v2_body(rows(1) + 1.0), 422, "outside [0, 1]"),
        (v2_body(rows(65)), 413, "serve.max_rows=64"),
    ],
)  # fmt: skip
def test_a_bad_request_gets_its_status_and_charges_nothing(store, body, status, words):
    service = Service(tiny_deployment(), store, limits())
    token = add_key(store, "alice", 100)
    reply = service.infer(V2, bearer(token), body if isinstance(body, bytes) else body.encode())
    assert reply.status == status and words in reply.body["error"] and reply.body["status"] == status
    assert used(store, "alice") == (0, 0, 0)
    assert store.requests()[-1].status == status  # recorded against the key that sent it


def test_no_key_a_bad_key_or_a_revoked_one_is_401_and_charged_to_nobody(store):
    service = Service(tiny_deployment(), store, limits())
    token = add_key(store, "alice", 100)
    lookup = token.split("_")[1]
    for headers in ({}, bearer("nonsense"), bearer(f"gvl_{lookup}_{'A' * 43}"), {"x-api-key": token[:-1] + "x"}):
        reply = service.infer(V2, headers, v2_body(rows(1)))
        assert reply.status == 401 and reply.body["reason"] == "unauthenticated"
    assert store.requests() == [] and store.unauthenticated() == {"missing": 1, "invalid": 3}
    store.revoke("alice", 0.0)
    assert service.infer(V2, bearer(token), v2_body(rows(1))).body["reason"] == "revoked"
    assert service.infer(V2, {}, b"", oversize=True).status == 401  # the key first, then the body


def test_an_oversized_body_is_413_against_its_key(store):
    service = Service(tiny_deployment(), store, limits())
    token = add_key(store, "alice", 100)
    reply = service.infer(V2, bearer(token), b"", oversize=True)
    assert reply.status == 413 and "serve.max_bytes" in reply.body["error"]
    assert [r.status for r in store.requests()] == [413]


def enrolled_device(store: Store, name: str, quota: int):
    key = signing.new_device_key()
    store.add_key(name, "device", quota=quota, window_hours=24.0, rate=None, created=0.0,
                  public_key=signing.public_pem(key))  # fmt: skip
    return key


def test_signed_inputs_good_bad_replayed_stale_and_the_device_s_own_quota(store):
    clock = Clock()
    service = Service(tiny_deployment(), store, limits(require_signature=True), clock=clock)
    token = add_key(store, "alice", 100)
    thief = add_key(store, "thief", 100)
    camera = enrolled_device(store, "cam-1", 3)
    body = v2_body(rows(2))
    signed = signing.sign_headers(camera, "cam-1", body, timestamp=clock())
    headers = {**bearer(token), **{k.lower(): v for k, v in signed.items()}}

    def reason(reply):
        return reply.status, reply.body.get("reason")

    assert reason(service.infer(V2, bearer(token), body)) == (401, "signature")  # unsigned
    assert service.infer(V2, headers, body).status == 200
    assert reason(service.infer(V2, headers, body)) == (401, "replayed")
    tampered = v2_body(rows(2, seed=1))
    fresh = {**bearer(token), **{k.lower(): v for k, v in signing.sign_headers(camera, "cam-1", body).items()}}
    fresh["x-gavel-timestamp"] = str(int(clock()))
    assert reason(service.infer(V2, fresh, tampered)) == (401, "signature")  # signed other bytes
    impostor = signing.new_device_key()
    forged = {k.lower(): v for k, v in signing.sign_headers(impostor, "cam-1", body, timestamp=clock()).items()}
    assert reason(service.infer(V2, {**bearer(token), **forged}, body)) == (401, "signature")
    unknown = {k.lower(): v for k, v in signing.sign_headers(camera, "cam-9", body, timestamp=clock()).items()}
    assert reason(service.infer(V2, {**bearer(token), **unknown}, body)) == (401, "signature")
    stale = {k.lower(): v for k, v in signing.sign_headers(camera, "cam-1", body, timestamp=clock() - 301).items()}
    assert reason(service.infer(V2, {**bearer(token), **stale}, body)) == (401, "stale")

    # A stolen device gives its quota (3 rows), whichever key sends: 2 were spent above, 1 is left.
    stolen = {k.lower(): v for k, v in signing.sign_headers(camera, "cam-1", body, timestamp=clock()).items()}
    refused = service.infer(V2, {**bearer(thief), **stolen}, body)
    assert refused.status == 429 and "device 'cam-1'" in refused.body["error"]
    one = v2_body(rows(1))
    stolen = {k.lower(): v for k, v in signing.sign_headers(camera, "cam-1", one, timestamp=clock()).items()}
    assert service.infer(V2, {**bearer(thief), **stolen}, one).status == 200
    usage = {u.key.name: u for u in store.usage()}
    assert (usage["cam-1"].answered, usage["alice"].answered, usage["thief"].answered) == (3, 2, 1)
    assert usage["alice"].errors == 6 and usage["thief"].refused == 2


def test_account_limits_charge_only_what_they_are_told():
    limits_ = AccountLimits(quota=5, window_hours=1.0, rate=3)
    assert limits_.roll(0.0) and limits_.allowance(0.0) == 3
    limits_.charge(0.0, 3)
    assert limits_.blocked(30.0, 1, "key 'k'").reason == "rate"
    assert limits_.allowance(59.9) == 0 and limits_.allowance(60.0) == 2  # quota left: 2 of 5
    assert limits_.blocked(60.0, 3, "key 'k'").reason == "quota"
    assert not limits_.roll(3599.0) and limits_.roll(3600.0) and limits_.allowance(3600.0) == 3


def test_model_metadata_says_what_the_service_shows(store):
    service = Service(tiny_deployment("probabilities"), store, limits(max_rows=7))
    meta = service.model_metadata()
    assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, *TINY_SHAPE]}]
    assert meta["parameters"] == {"n_classes": 3, "output": "probabilities", "max_rows": 7, "max_bytes": 256 * 1024,
                                  "require_signature": False, "signature_window_s": 300.0, "gavel": True,
                                  "judge": {}}  # fmt: skip
    assert [o["name"] for o in meta["outputs"]] == ["probabilities", "label", wire.ROW_STATUS]


def test_a_client_may_check_its_key_without_being_charged(store):
    clock = Clock()
    service = Service(tiny_deployment(detector=MarkedRowDetector()), store, limits(), clock=clock)
    token = add_key(store, "alice", 10, window=1.0, rate=5)
    assert service.check_key(bearer(token)).body == {"key": "alice", "quota": 10, "window_hours": 1.0, "rate": 5,
                                                     "used": 0, "left": 10}  # fmt: skip
    service.infer(V2, bearer(token), v2_body(rows(3)))
    assert service.check_key(bearer(token)).body["left"] == 7
    clock.advance(3600)
    assert service.check_key(bearer(token)).body["left"] == 10  # its next query starts a new window
    assert service.check_key({}).status == 401 and service.check_key(bearer("gvl_x")).status == 401
    service.infer(V2, bearer(token), v2_body(rows(1, mark=[0])))
    assert service.check_key(bearer(token)).status == 403
    assert [r.endpoint for r in store.requests()] == [V2, V2]  # a check is no request
