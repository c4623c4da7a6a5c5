"""`gavel serve` over real HTTP: the digits judge, deployed as the command deploys it, on a uvicorn server on
127.0.0.1 (a free port, in a thread), called with `requests`. Each endpoint and each error status; answers equal to
the in-process responder's, bit for bit; a Blacklight ban is the key's and survives a restart, as every count does;
sixteen concurrent clients sharing one key get exactly its quota; a thousand bad requests get their statuses,
change no count and leave memory flat; the key's token never reaches a log or the store. Then the CLI itself:
`gavel keys` and `gavel serve` in their own processes, and their one-line refusals."""

from __future__ import annotations

import json
import logging
import os
import re
import signal
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from helpers.cli import GAVEL
from helpers.serving import add_key, digits_deployment, serving, v2_body

from gavel.experiments.cli import main
from gavel.experiments.serve.keys_command import keys_command
from gavel.experiments.serve.store import Store
from gavel.experiments.server import free_port
from gavel.targets.access import signing, wire
from gavel.targets.access.policy import Output

INFER = "/v2/models/judge/infer"


@pytest.fixture(scope="module")
def label_judge():
    return digits_deployment("access=hidden_label")


@pytest.fixture(scope="module")
def score_judge():
    return digits_deployment("access=hidden_probabilities")


@pytest.fixture(scope="module")
def digits():
    """Held-out digits (the evaluation pool) as the judge's inputs."""
    from gavel.experiments.config import compose_config
    from gavel.experiments.settings import RunSettings

    data = RunSettings.from_config(compose_config([])).data_instance.load()
    return data.eval.x[:64].astype(np.float32)


def key_header(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def test_health_metadata_and_unknown_names(tmp_path, label_judge):
    with serving(label_judge, tmp_path / "ledger.db") as (url, _, _):
        assert requests.get(f"{url}/v2/health/ready").json() == {"ready": True}
        assert requests.get(f"{url}/v2/health/live").json() == {"live": True}
        assert requests.get(f"{url}/v2").json()["name"] == "gavel"
        meta = requests.get(f"{url}/v2/models/judge").json()
        assert meta["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}]
        assert meta["parameters"]["output"] == "label" and meta["parameters"]["n_classes"] == 10
        assert meta["parameters"]["gavel"] is True and meta["parameters"]["max_rows"] == 64
        assert meta["parameters"]["judge"] == {"target": "cnn", "defense": "none"}
        assert requests.get(f"{url}/v2/models/judge/ready").json()["ready"] is True
        assert requests.get(f"{url}/v2/models").json() == {"models": [{"name": "judge", "ready": True}]}
        for method, path in (("get", "/v2/models/other"), ("post", "/v2/models/other/infer"), ("get", "/nothing")):
            reply = getattr(requests, method)(f"{url}{path}", data=b"{}")
            assert reply.status_code == 404 and reply.json()["status"] == 404
            assert "\n" not in reply.text
        assert requests.delete(f"{url}/v2").status_code == 405


def test_answers_over_http_equal_the_judge_s_in_process_answers(tmp_path, score_judge, digits):
    x = digits[:16]
    with serving(score_judge, tmp_path / "ledger.db") as (url, _, store):
        token = add_key(store, "alice", 1000)
        checked = requests.get(f"{url}/gavel/v1/key", headers={"X-API-Key": token})
        assert checked.status_code == 200 and checked.json()["left"] == 1000
        assert requests.get(f"{url}/gavel/v1/key", headers=key_header(token + "x")).status_code == 401
        for output in ("probabilities", "label"):
            reply = requests.post(f"{url}{INFER}", data=v2_body(x, output, partial=True), headers=key_header(token))
            values, status, _ = wire.decode_v2_response(reply.json(), output, len(x), 10)
            assert (status == wire.ROW_ANSWERED).all()
            assert np.array_equal(values, score_judge.responder.answer(x, Output(output)))  # float32 bit for bit
        mlflow = requests.post(f"{url}/invocations", json={"inputs": x.tolist()}, headers={"X-API-Key": token})
        predictions = wire.decode_mlflow_response(mlflow.json(), "probabilities", len(x), 10)
        assert np.array_equal(predictions, score_judge.responder.answer(x, Output.PROBABILITIES))
        assert {u.key.name: u.answered for u in store.usage()} == {"alice": 48}


def test_every_error_has_its_status_in_one_line_and_the_server_keeps_serving(tmp_path, score_judge, digits):
    with serving(score_judge, tmp_path / "ledger.db", max_bytes=64 * 1024) as (url, _, store):
        token = add_key(store, "alice", 3)
        good = v2_body(digits[:1])
        cases = [
            (None, good, 401),
            ("gvl_000000000000_" + "x" * 43, good, 401),
            (token, b"{oops", 400),
            (token, b'{"inputs": "x"}', 400),
            (token, json.dumps({"inputs": [[0.5] * 10]}).encode(), 422),
            (token, v2_body(digits[:1] + 1.5), 422),
            (token, v2_body(np.repeat(digits[:1], 65, axis=0)), 413),
            (token, v2_body(np.random.default_rng(0).random((200, 1, 8, 8), dtype=np.float32)), 413),
            (token, v2_body(digits[:1], "logits"), 403),
        ]
        for key, body, status in cases:
            headers = {} if key is None else key_header(key)
            endpoint = "/invocations" if body.startswith(b'{"inputs": [[') else INFER
            reply = requests.post(f"{url}{endpoint}", data=body, headers=headers)
            assert reply.status_code == status, (status, reply.text)
            assert reply.json()["status"] == status and reply.text.count("\n") == 0
        chunked = requests.post(f"{url}{INFER}", data=iter([b"[" * 40_000] * 2), headers=key_header(token))
        assert chunked.status_code == 413  # no Content-Length: counted as it is read
        assert requests.post(f"{url}{INFER}", data=v2_body(digits[:3]), headers=key_header(token)).status_code == 200
        over = requests.post(f"{url}{INFER}", data=good, headers=key_header(token))
        assert over.status_code == 429 and over.json()["reason"] == "quota"
        assert int(over.headers["Retry-After"]) == over.json()["retry_after"] > 0
        assert {u.key.name: (u.answered, u.errors) for u in store.usage()} == {"alice": (3, 8)}
        assert requests.get(f"{url}/v2/health/ready").status_code == 200


def test_a_blacklight_ban_is_the_key_s_and_survives_a_restart(tmp_path, digits):
    path = tmp_path / "ledger.db"
    repeated = np.repeat(digits[:1], 5, axis=0)  # the same digit again and again: Blacklight's matches=3
    with serving(digits_deployment("access=hidden_label", "defense=blacklight"), path) as (url, _, store):
        token, honest = add_key(store, "mallory", 100), add_key(store, "honest", 100)
        reply = requests.post(f"{url}{INFER}", data=v2_body(repeated, "label", partial=True), headers=key_header(token))
        _, status, key_banned = wire.decode_v2_response(reply.json(), "label", 5, 10)
        assert status.tolist() == [0, 0, 0, wire.ROW_REJECTED, wire.ROW_BANNED] and key_banned
        banned = requests.post(f"{url}{INFER}", data=v2_body(digits[5:6]), headers=key_header(token))
        assert banned.status_code == 403 and banned.json()["reason"] == "banned"
        assert requests.post(f"{url}{INFER}", data=v2_body(digits[:2]), headers=key_header(honest)).status_code == 200
    with serving(digits_deployment("access=hidden_label", "defense=blacklight"), path) as (url, _, store):
        assert requests.post(f"{url}{INFER}", data=v2_body(digits[7:8]), headers=key_header(token)).status_code == 403
        usage = {u.key.name: u for u in store.usage()}
        assert (usage["mallory"].answered, usage["mallory"].rejected, usage["mallory"].window_used) == (3, 1, 4)
        assert usage["mallory"].key.banned and usage["honest"].answered == 2


def test_a_restart_keeps_the_quota_spent(tmp_path, label_judge, digits):
    path = tmp_path / "ledger.db"
    with serving(label_judge, path) as (url, _, store):
        token = add_key(store, "alice", 5)
        assert requests.post(f"{url}{INFER}", data=v2_body(digits[:3]), headers=key_header(token)).status_code == 200
    with serving(label_judge, path) as (url, _, store):
        reply = requests.post(f"{url}{INFER}", data=v2_body(digits[:4], partial=True), headers=key_header(token))
        _, status, _ = wire.decode_v2_response(reply.json(), "label", 4, 10)
        assert status.tolist() == [0, 0, wire.ROW_REFUSED, wire.ROW_REFUSED]
        assert requests.post(f"{url}{INFER}", data=v2_body(digits[:1]), headers=key_header(token)).status_code == 429


def test_sixteen_concurrent_clients_sharing_one_key_get_exactly_its_quota(tmp_path, label_judge, digits):
    quota, clients = 2000, 16
    answered, statuses, lock = [], [], threading.Lock()

    def client(seed: int) -> None:
        rng = np.random.default_rng(seed)
        partial_only = False  # once a whole request is refused, the rest of the quota is asked row by row
        with requests.Session() as session:
            while True:
                n = int(rng.integers(1, 9))
                partial = partial_only or bool(rng.integers(0, 2))
                body = v2_body(digits[rng.integers(0, len(digits), n)], partial=partial)
                reply = session.post(f"{url}{INFER}", data=body, headers=key_header(token))
                got = 0
                if reply.status_code == 200:
                    got = n if not partial else int((np.asarray(reply.json()["outputs"][1]["data"]) == 0).sum())
                with lock:
                    answered.append(got)
                    statuses.append(reply.status_code)
                if reply.status_code == 429:
                    if partial:  # not one row left in the window's quota
                        return
                    partial_only = True

    with serving(label_judge, tmp_path / "ledger.db") as (url, _, store):
        token = add_key(store, "shared", quota)
        threads = [threading.Thread(target=client, args=(seed,)) for seed in range(clients)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
        seconds = time.perf_counter() - started
        assert not any(thread.is_alive() for thread in threads)
        (usage,) = store.usage()
        ledger = store.requests()
    assert sum(answered) == quota == usage.answered == usage.window_used
    assert sum(r.answered for r in ledger) == quota and len(ledger) == len(statuses)
    assert set(statuses) <= {200, 429} and statuses.count(429) >= clients
    print(
        f"\n16 clients, one key: {len(statuses)} requests ({statuses.count(200)} answered) and {quota} rows in "
        f"{seconds:.2f} s: {len(statuses) / seconds:.0f} requests/s, {quota / seconds:.0f} rows/s answered"
    )


def test_a_thousand_bad_requests_get_their_statuses_change_no_count_and_leave_memory_flat(
    tmp_path, label_judge, digits, caplog, capfd
):
    caplog.set_level(logging.DEBUG)
    with serving(label_judge, tmp_path / "ledger.db", require_signature=True, max_bytes=32 * 1024) as (url, _, store):
        token = add_key(store, "alice", 50)
        camera = signing.new_device_key()
        store.add_key("cam-1", "device", quota=50, window_hours=24.0, rate=None, created=0.0,
                      public_key=signing.public_pem(camera))  # fmt: skip
        thief = signing.new_device_key()
        good = v2_body(digits[:2])

        def signed(body: bytes, key=camera) -> dict[str, str]:
            return {**key_header(token), **signing.sign_headers(key, "cam-1", body)}

        with requests.Session() as session:
            first = session.post(f"{url}{INFER}", data=good, headers=signed(good))
            assert first.status_code == 200
            replay_headers = signed(good)
            assert session.post(f"{url}{INFER}", data=good, headers=replay_headers).status_code == 200
            before = [(u.answered, u.rejected, u.refused, u.window_used) for u in store.usage()]
            rss_before = rss_mb()
            oversized = b"[" + b"0.5," * 10_000 + b"0.5]"
            nan = good.replace(b'"data": [', b'"data": [NaN, ', 1)
            kinds = [
                ("no key", lambda: (good, {}), 401),
                ("bad key", lambda: (good, key_header("gvl_0123456789ab_" + "y" * 43)), 401),
                ("unsigned", lambda: (good, key_header(token)), 401),
                ("bad signature", lambda: (good, signed(good, thief)), 401),
                ("replayed", lambda: (good, replay_headers), 401),
                ("oversized", lambda: (oversized, signed(oversized)), 413),
                ("malformed", lambda: (b'{"inputs": [', signed(b'{"inputs": [')), 400),
                ("NaN", lambda: (nan, signed(nan)), 422),
            ]  # fmt: skip
            started = time.perf_counter()
            for i in range(1000):
                what, make, status = kinds[i % len(kinds)]
                body, headers = make()
                reply = session.post(f"{url}{INFER}", data=body, headers=headers)
                assert reply.status_code == status, (what, reply.text)
            seconds = time.perf_counter() - started
            grown = rss_mb() - rss_before
            after = [(u.answered, u.rejected, u.refused, u.window_used) for u in store.usage()]
            assert after == before
            assert session.post(f"{url}{INFER}", data=good, headers=signed(good)).status_code == 200
        assert grown < 50, f"memory grew {grown:.1f} MB over 1,000 bad requests"
        assert len(store.requests()) == 3 + 1000 - 2 * 125  # every bad request from a known key is in the ledger
        assert store.unauthenticated() == {"missing": 125, "invalid": 125}
    written = b"".join(p.read_bytes() for p in tmp_path.iterdir())
    assert token.encode() not in written and token.split("_", 2)[2].encode() not in written
    printed = capfd.readouterr()
    assert token not in caplog.text + printed.out + printed.err  # uvicorn's own log goes to stderr
    print(f"\n1,000 bad requests in {seconds:.2f} s ({1000 / seconds:.0f}/s); memory {grown:+.1f} MB")


def test_keys_usage_logs_its_table_to_mlflow_and_ends_the_run_finished(tmp_path, capsys):
    from mlflow import MlflowClient

    store_path = str(tmp_path / "ledger.db")
    assert keys_command(["add", "alice", "--quota", "7", "--rate", "3", "--store", store_path]) == 0
    token = capsys.readouterr().out.strip()
    assert re.fullmatch(r"gvl_[0-9a-f]{12}_[A-Za-z0-9_-]{43}", token)
    assert keys_command(["usage", "--store", store_path, "--mlflow", "serve-usage-test"]) == 0
    out = capsys.readouterr().out
    assert "alice" in out and token not in out
    client = MlflowClient()
    (run,) = client.search_runs([client.get_experiment_by_name("serve-usage-test").experiment_id])
    assert run.info.status == "FINISHED" and run.data.metrics["alice.answered"] == 0
    assert "serve_usage.json" in {a.path for a in client.list_artifacts(run.info.run_id)}


@pytest.mark.parametrize(
    "args, words",
    [
        (["add", "x", "--quota", "0"], "--quota: '0': allowed: a positive integer"),
        (["add", "x", "--quota", "3", "--window", "soon"], "--window: 'soon': allowed: a positive number of hours"),
        (["add", "bad name", "--quota", "3"], "NAME='bad name': allowed: 1 to 64 letters"),
        (["add", "x"], "missing: --quota"),
        (["add-device", "cam", "--quota", "3"], "one of the arguments --out --public-key is required"),
        (["frob"], "unknown command 'frob'"),
        (["unban", "nobody"], "NAME='nobody': no key or device of that name"),
    ],
)
def test_gavel_keys_refuses_bad_input_in_one_line(tmp_path, capsys, args, words):
    assert keys_command([*args, "--store", str(tmp_path / "ledger.db")]) == 2
    err = capsys.readouterr().err
    assert words in err and err.count("\n") == 1, err


def test_add_device_writes_a_private_key_readable_by_its_owner_only(tmp_path, capsys):
    store_path, out = str(tmp_path / "ledger.db"), tmp_path / "cam.pem"
    assert keys_command(["add-device", "cam", "--quota", "3", "--out", str(out), "--store", store_path]) == 0
    assert out.stat().st_mode & 0o777 == 0o600
    key = signing.load_private_key(out)
    store = Store(store_path)
    assert store.key_by_name("cam").public_key == signing.public_pem(key)
    store.close()
    public = tmp_path / "other.pub"
    public.write_text(signing.public_pem(signing.new_device_key()))
    assert keys_command(["add-device", "cam2", "--quota", "3", "--public-key", str(public), "--store", store_path]) == 0
    assert keys_command(["add-device", "cam3", "--quota", "3", "--out", str(out), "--store", store_path]) == 2
    assert "--out=" in capsys.readouterr().err  # never overwritten


def run_gavel(*args: str, timeout: int = 120, **env) -> subprocess.CompletedProcess:
    return subprocess.run([GAVEL, *args], capture_output=True, text=True, timeout=timeout, env={**os.environ, **env})


@pytest.mark.parametrize(
    "args, words",
    [
        (["serve", "--port", "8080"], "--port: not an override; allowed: KEY=VALUE overrides"),
        (["serve", "serve.port=http"], "serve.port='http': allowed: an integer from 0 to 65535"),
        (["serve", "serve.max_rows=0"], "serve.max_rows=0: allowed"),
        (["serve", "serve.nope=1"], "serve.nope: no such key"),
        (["serve", "defense=[jpeg,nope]"], "unknown defense nope"),
        (["server"], "`gavel server` is now `gavel tracking-server`"),
    ],
)
def test_gavel_serve_refuses_bad_input_in_one_line(capsys, args, words):
    with pytest.raises(SystemExit) as exit_:
        main(args)
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and words in err and err.count("\n") == 1, err


@pytest.mark.slow  # four `gavel` processes, each importing torch: 10 s on an idle machine, 20 on a busy one
def test_gavel_serve_serves_the_keys_gavel_keys_adds_and_stops_cleanly(tmp_path):
    store = str(tmp_path / "ledger.db")
    added = run_gavel("keys", "add", "alice", "--quota", "4", "--store", store)
    assert added.returncode == 0, added.stderr
    token = added.stdout.strip()
    with socket_in_use() as busy:
        refused = run_gavel("serve", f"serve.port={busy}", f"serve.store={store}")
        assert refused.returncode == 2 and "cannot listen there" in refused.stderr, refused.stderr
    server = subprocess.Popen([GAVEL, "serve", "access=hidden_label", "serve.port=0", f"serve.store={store}"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        line = server.stdout.readline()
        url = re.search(r"at (http://127\.0\.0\.1:\d+)/v2/models/judge", line).group(1)
        body = v2_body(np.full((3, 1, 8, 8), 0.5, dtype=np.float32))
        reply = requests.post(f"{url}{INFER}", data=body, headers=key_header(token))
        assert reply.status_code == 200 and len(reply.json()["outputs"][0]["data"]) == 3
        assert requests.post(f"{url}{INFER}", data=body, headers=key_header(token)).status_code == 429
    finally:
        server.send_signal(signal.SIGTERM)
        out, err = server.communicate(timeout=60)
    assert server.returncode == 0, err
    assert "stopped" in out and token not in out + err + line
    usage = run_gavel("keys", "usage", "--store", store)
    row = next(line for line in usage.stdout.splitlines() if line.startswith("alice"))
    assert row.split()[5:10] == ["3", "2", "3", "0", "3"]  # used, requests, answered, rejected, refused


class socket_in_use:
    """A port something already listens on."""

    def __enter__(self) -> int:
        import socket

        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", free_port()))
        self.sock.listen()
        return self.sock.getsockname()[1]

    def __exit__(self, *exc) -> None:
        self.sock.close()
