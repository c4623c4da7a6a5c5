"""`target=remote` end to end: the digits judge behind `gavel serve` (a background uvicorn server on 127.0.0.1),
attacked through the same client as in process. The query rows give the same figures as in process (same judge,
examples and seed), the service's ledger equals the attacker's count row for row, a restart of the service in the
middle of a sweep loses no count, and a detector's ban on the service is a key's ban."""

from __future__ import annotations

import pytest
from helpers.configs import tiny_settings
from helpers.serving import add_key, digits_deployment, serving

from gavel.experiments import runner

ROWS = [  # (attack, access, budget): the demo's query rows, shrunk (n_examples=8, small budgets)
    ("square", "hidden_probabilities", 30),
    ("simba", "hidden_probabilities", 30),
    ("hopskipjump", "hidden_label", 40),
    ("rays", "hidden_label", 40),
    ("transfer_pgd", "hidden_label", None),
]
COMPARED = ("attack_success_rate", "clean_accuracy", "robust_accuracy", "queries_total", "queries_median")
BIG = 10**9


def run(attack: str, *overrides: str) -> dict:
    settings = tiny_settings(attack, *overrides)
    return runner.run(settings, runner.prepare(settings))


def row_overrides(access: str, budget: int | None) -> list[str]:
    return [f"access={access}", *([] if budget is None else [f"access.budget={budget}"])]


def charged(store, name: str) -> int:
    """Rows the service charged to a key, or to a device (the rows it signed)."""
    key = store.key_by_name(name)
    if key.kind == "device":
        return sum(request.charged for request in store.requests() if request.device_id == key.id)
    return sum(request.charged for request in store.requests(key.id))


@pytest.fixture(scope="module")
def digits_service(tmp_path_factory):
    """The default config's digits judge served with probabilities (labels too), an attacker's key and the
    evaluator's."""
    deployment = digits_deployment("access=hidden_probabilities")
    with serving(deployment, tmp_path_factory.mktemp("serve") / "ledger.db", max_rows=1024) as (url, service, store):
        yield url, store, add_key(store, "attacker", BIG), add_key(store, "evaluator", BIG, kind="auditor")


def remote(url: str, *extra: str) -> list[str]:
    return ["target=remote", f"target.url={url}", *extra]


@pytest.mark.slow
def test_the_demos_query_rows_give_the_same_figures_remotely_and_the_ledgers_agree(digits_service, monkeypatch):
    url, store, attacker, evaluator = digits_service
    monkeypatch.setenv("GAVEL_API_KEY", attacker)
    monkeypatch.setenv("GAVEL_EVALUATOR_KEY", evaluator)
    for attack, access, budget in ROWS:
        overrides = row_overrides(access, budget)
        here = run(attack, *overrides)
        before = charged(store, "attacker")
        there = run(attack, *overrides, *remote(url))
        assert {k: here.get(k) for k in COMPARED} == {k: there.get(k) for k in COMPARED}, attack
        if there.get("queries_total"):  # time on the wall clock, from the attack's plan to its last answer
            assert there["campaign_hours"] > 0 and "campaign_hours" not in here
        # the service charged the attacker's key exactly what the attacker's Oracle counted
        assert charged(store, "attacker") - before == there["queries_total"]
        assert there["evaluator_queries"] > 0
        assert "evaluator_queries" not in here


def test_white_box_attacks_are_refused_against_a_remote_judge(digits_service, monkeypatch):
    url, _store, attacker, evaluator = digits_service
    monkeypatch.setenv("GAVEL_API_KEY", attacker)
    monkeypatch.setenv("GAVEL_EVALUATOR_KEY", evaluator)
    settings = tiny_settings("pgd", *remote(url))
    with pytest.raises(runner.Unavailable, match="gradients|white"):
        runner.prepare(settings)


def test_a_restart_of_the_service_mid_sweep_loses_no_count(tmp_path, monkeypatch):
    """Two jobs, the service stopped and started again on the same store between them: the second job's charges add
    to the first's, and the quota left carries over (a key cannot reset it by waiting for a restart)."""
    deployment = digits_deployment("access=hidden_probabilities")
    store_path = tmp_path / "ledger.db"
    with serving(deployment, store_path) as (url, _service, store):
        monkeypatch.setenv("GAVEL_API_KEY", add_key(store, "attacker", 300))
        monkeypatch.setenv("GAVEL_EVALUATOR_KEY", add_key(store, "evaluator", BIG, kind="auditor"))
        first = run("square", "access=hidden_probabilities", "access.budget=20", *remote(url))
        spent = charged(store, "attacker")
    assert spent == first["queries_total"] > 0
    with serving(deployment, store_path) as (url, _service, store):
        assert charged(store, "attacker") == spent  # the restart kept every count
        second = run("square", "access=hidden_probabilities", "access.budget=100", *remote(url))
        assert charged(store, "attacker") == spent + second["queries_total"] == 300  # the quota bound across it


@pytest.mark.parametrize("scope", ["account", "global"])
def test_a_detector_on_the_service_bans_the_attackers_keys(tmp_path, monkeypatch, scope):
    """Blacklight on the service: the attacker's keys are banned there, as its accounts are in process, and the run
    goes on with its next key until none is left. The evaluator's key is an auditor's: its re-checks are never
    screened nor remembered, so a detector comparing every key's queries (scope=global) sees what it sees in
    process."""
    deployment = digits_deployment("access=hidden_probabilities", "defense=blacklight", f"defense.scope={scope}")
    with serving(deployment, tmp_path / "ledger.db") as (url, _service, store):
        for k in range(3):
            monkeypatch.setenv(f"KEY_{k}", add_key(store, f"attacker{k}", BIG))
        monkeypatch.setenv("GAVEL_EVALUATOR_KEY", add_key(store, "evaluator", BIG, kind="auditor"))
        keys = "target.api_key_env=[KEY_0,KEY_1,KEY_2]"
        there = run("square", "access=hidden_probabilities", "access.budget=200", "access.accounts=3", keys,
                    *remote(url))  # fmt: skip
        banned = {key.name for key in store.keys() if key.banned}
    here = run("square", "access=hidden_probabilities", "access.budget=200", "access.accounts=3", "defense=blacklight",
               f"defense.scope={scope}")  # fmt: skip
    assert banned and banned <= {"attacker0", "attacker1", "attacker2"}
    assert "evaluator" not in banned
    assert len(banned) == here["detections_total"] == there["detections_total"]
    for key in ("queries_total", "attack_success_rate", "detection_rate"):
        assert there[key] == here[key], key


def not_gavel_server():
    """A local HTTP server that is not a judge service (it answers every GET with a page)."""
    import http.server
    import threading

    class Page(http.server.BaseHTTPRequestHandler):
        def do_GET(self):  # noqa: N802 (the standard library's name)
            self.send_response(200)
            self.send_header("Content-Type", "text/html")
            self.end_headers()
            self.wfile.write(b"<html>hello</html>")

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Page)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.mark.slow
def test_bad_remote_targets_are_one_line_exit_2_within_seconds_and_nothing_recorded(digits_service, tmp_path):
    """Through the CLI, as a user types it: an unreachable URL, a server that is not a judge service, a protocol gavel
    does not speak, a missing key variable, a model the service does not serve, and a key the service refuses."""
    import os
    import time

    from helpers.cli import gavel_in_own_folder

    url, _store, attacker, evaluator = digits_service
    page = not_gavel_server()
    other = f"http://127.0.0.1:{page.server_address[1]}"
    square = ["attack=square", "access=hidden_probabilities", "access.budget=10", "n_examples=4"]
    cases = [
        ([f"target.url=http://127.0.0.1:{free_port()}"], "target.url=http://127.0.0.1:", "no answer"),
        ([f"target.url={other}"], f"target.url={other}: not an Open Inference Protocol v2 service", ""),
        ([f"target.url={url}", "target.protocol=grpc"], "target.protocol='grpc'", "allowed: "),
        (
            [f"target.url={url}", "target.api_key_env=NO_SUCH_VARIABLE"],
            "target.api_key_env=NO_SUCH_VARIABLE",
            "not set",
        ),
        ([f"target.url={url}", "target.model=nobody"], "target.model=nobody: the service", "judge"),
        (
            [f"target.url={url}", "target.api_key_env=WRONG_KEY"],
            "target.api_key_env=WRONG_KEY: the service refuses",
            "",
        ),
    ]
    env = {"GAVEL_API_KEY": attacker, "GAVEL_EVALUATOR_KEY": evaluator, "WRONG_KEY": attacker[:-4] + "AAAA"}
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        for extra, start, contains in cases:
            began = time.monotonic()
            folder = tmp_path / str(len(list(tmp_path.iterdir())))
            folder.mkdir()
            done = gavel_in_own_folder(
                folder, "target=remote", *square, *extra, cache_dir=os.environ["GAVEL_CACHE_DIR"]
            )
            lines = done.stderr.strip().splitlines()
            assert done.returncode == 2, (extra, done.stderr[-2000:])
            assert len(lines) == 1 and lines[0].startswith(f"gavel: {start}") and contains in lines[0], lines
            assert time.monotonic() - began < 30  # seconds, not a hang (the CLI's start is most of it)
            assert not (folder / "mlflow.db").exists() or runs_in(folder / "mlflow.db") == 0
    finally:
        page.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def runs_in(db) -> int:
    import sqlite3

    with sqlite3.connect(db) as connection:
        try:
            return connection.execute("select count(*) from runs").fetchone()[0]
        except sqlite3.OperationalError:
            return 0


def enrol_device(store, name: str, quota: int, folder) -> str:
    """A device enrolled in `store` (as `gavel keys add-device --out` does); returns the path of its private key."""
    import time

    from gavel.targets.access.signing import new_device_key, private_pem, public_pem

    key = new_device_key()
    store.add_key(name, "device", quota=quota, window_hours=24.0, rate=None, created=time.time(),
                  public_key=public_pem(key))  # fmt: skip
    path = folder / f"{name}.pem"
    path.write_bytes(private_pem(key))
    return str(path)


def test_signed_inputs_without_a_device_only_transfer_and_a_stolen_device_gives_its_quota(tmp_path, monkeypatch):
    """serve.require_signature=true: an attacker with no device has every query refused (nothing answered, nothing
    charged), so a query attack learns nothing while a transfer attack's inputs are still judged (by the evaluator,
    who signs with its own device); an attacker holding a stolen device gets exactly that device's quota."""
    deployment = digits_deployment("access=hidden_probabilities")
    with serving(deployment, tmp_path / "ledger.db", require_signature=True, max_rows=1024) as (url, _, store):
        monkeypatch.setenv("GAVEL_API_KEY", add_key(store, "attacker", BIG))
        monkeypatch.setenv("GAVEL_EVALUATOR_KEY", add_key(store, "evaluator", BIG, kind="auditor"))
        monkeypatch.setenv("EVALUATOR_DEVICE", enrol_device(store, "auditor", BIG, tmp_path))
        monkeypatch.setenv("STOLEN_DEVICE", enrol_device(store, "camera", 50, tmp_path))
        signed = [*remote(url), "target.evaluator_device=auditor", "target.evaluator_device_key_env=EVALUATOR_DEVICE"]
        square = ["access=hidden_probabilities", "access.budget=30"]
        unsigned_square = run("square", *square, *signed)
        assert unsigned_square["queries_total"] == 0 and unsigned_square["evaluator_queries"] > 0
        unsigned_transfer = run("transfer_pgd", "access=hidden_label", *signed)
        assert unsigned_transfer.get("queries_total", 0) == 0 and unsigned_transfer["n_attacked"] > 0
        assert charged(store, "attacker") == 0
        stolen = run("square", *square, *signed, "target.device=camera", "target.device_key_env=STOLEN_DEVICE")
        assert stolen["queries_total"] == 50 == charged(store, "attacker") == charged(store, "camera")


def test_mlflows_invocations_protocol_gives_the_same_figures(digits_service, monkeypatch):
    """target.protocol=mlflow (`POST /invocations`, answered whole or refused whole) against the same service."""
    url, store, attacker, evaluator = digits_service
    monkeypatch.setenv("GAVEL_API_KEY", attacker)
    monkeypatch.setenv("GAVEL_EVALUATOR_KEY", evaluator)
    overrides = row_overrides("hidden_label", 40)
    here = run("hopskipjump", *overrides)
    before = charged(store, "attacker")
    there = run("hopskipjump", *overrides, *remote(url, "target.protocol=mlflow"))
    assert {k: here.get(k) for k in COMPARED} == {k: there.get(k) for k in COMPARED}
    assert charged(store, "attacker") - before == there["queries_total"]


def test_a_restart_of_the_service_in_the_middle_of_a_job_loses_no_count(tmp_path, monkeypatch):
    """The service stopped (gracefully: what it was answering is answered and recorded) and started again on the same
    store and port while an attack is querying it: the client asks again what was refused before it was sent, and
    the service's ledger still equals the attacker's count, row for row."""
    import threading
    import time

    from helpers.serving import limits

    from gavel.experiments.serve.app import create_app
    from gavel.experiments.serve.server import BackgroundServer
    from gavel.experiments.serve.service import Service
    from gavel.experiments.serve.store import Store

    deployment = digits_deployment("access=hidden_probabilities")
    store_path = str(tmp_path / "ledger.db")

    def serve(port: int = 0) -> tuple[BackgroundServer, Store]:
        store = Store(store_path)
        server = BackgroundServer(create_app(Service(deployment, store, limits(max_rows=1024))), port=port)
        return server.__enter__(), store

    server, store = serve()
    monkeypatch.setenv("GAVEL_API_KEY", add_key(store, "attacker", BIG))
    monkeypatch.setenv("GAVEL_EVALUATOR_KEY", add_key(store, "evaluator", BIG, kind="auditor"))
    outcome: dict = {}
    job = threading.Thread(
        target=lambda: outcome.update(
            run("square", "access=hidden_probabilities", "access.budget=300", *remote(server.url))
        )  # fmt: skip
    )
    job.start()
    deadline = time.monotonic() + 60
    while charged(store, "attacker") < 200 and time.monotonic() < deadline:  # the attack is under way
        time.sleep(0.05)
    server.__exit__(None, None, None)
    store.close()
    restarted_mid_job = job.is_alive()
    time.sleep(1.0)  # the service is down: the client's requests are refused before they are sent
    server, store = serve(server.port)
    try:
        job.join(timeout=300)
        assert restarted_mid_job and "queries_total" in outcome
        assert charged(store, "attacker") == outcome["queries_total"] > 200
    finally:
        server.__exit__(None, None, None)
        store.close()


def black_box_attacks() -> list[str]:
    from helpers.configs import threat_model_of

    from gavel.experiments.config import group_options
    from gavel.targets.access import POISONING, WHITE_BOX

    return [a for a in group_options("attack") if threat_model_of(a) not in (WHITE_BOX, POISONING)]


@pytest.mark.slow
@pytest.mark.parametrize("attack", black_box_attacks())
def test_every_black_box_attack_runs_unchanged_against_the_served_judge(digits_service, monkeypatch, attack):
    """Every score-based, decision-based, transfer and hybrid attack, through the same client, on the same examples:
    the figures in process and through the service agree, and so do the two ledgers."""
    from helpers.configs import tiny_overrides

    url, store, attacker, evaluator = digits_service
    monkeypatch.setenv("GAVEL_API_KEY", attacker)
    monkeypatch.setenv("GAVEL_EVALUATOR_KEY", evaluator)
    here = run(attack)
    before = charged(store, "attacker")
    there = run(attack, *remote(url))
    assert {k: here.get(k) for k in COMPARED} == {k: there.get(k) for k in COMPARED}, tiny_overrides(attack)
    assert charged(store, "attacker") - before == there.get("queries_total", 0)
