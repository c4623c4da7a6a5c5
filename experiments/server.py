"""`gavel tracking-server`: one MLflow tracking server that jobs on many machines log to, its runs in PostgreSQL and
its artifacts served by the server itself (jobs need no shared disk, only `MLFLOW_TRACKING_URI`).

PostgreSQL is Debian's (`apt-get install postgresql`), run as a private cluster in `<dir>/pgdata` that listens on
127.0.0.1 only, with no Unix socket: nothing but the MLflow server talks to it. Its one role, `mlflow`, logs in
with a password generated once and kept in `<dir>/pgpass` (libpq's format, mode 600: `PGPASSFILE=<dir>/pgpass
psql -h 127.0.0.1 -p 5433 -U mlflow mlflow` opens the store by hand). The server gets the password through its
environment, never on a command line that `ps` shows. PostgreSQL refuses to run as root: as root, its programs
run as the `postgres` system user, which must be able to reach `<dir>`.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

ROLE = "mlflow"
DATABASE = "mlflow"
MLFLOW = Path(sys.executable).with_name("mlflow")
PRIVATE_NETWORKS = ["10.*", "192.168.*", *(f"172.{n}.*" for n in range(16, 32))]


class ServerError(RuntimeError):
    """Something the user has to fix, said in one line."""


def postgres_bin() -> Path:
    """The folder of PostgreSQL's server programs: initdb on PATH, else Debian's newest /usr/lib/postgresql/N/bin."""
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"), key=lambda p: p.parts[-3].zfill(4))
    if not found:
        raise ServerError("PostgreSQL's server programs (initdb, pg_ctl) are not installed: apt-get install postgresql")
    return found[-1].parent


def _as_cluster_owner(command: list[str]) -> list[str]:
    """`command` as the user who owns the cluster: this one, or `postgres` when this one is root."""
    if os.geteuid() != 0:
        return command
    try:
        pwd.getpwnam("postgres")
    except KeyError:
        raise ServerError(
            "PostgreSQL will not run as root and there is no 'postgres' user: run as an ordinary user, "
            "or create one (adduser --system --group postgres)"
        ) from None
    return ["runuser", "-u", "postgres", "--", *command]


def _give_to_cluster_owner(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, "postgres", "postgres")


def _run(command: list[str], what: str) -> None:
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()
        raise ServerError(f"{what} failed: {detail[-1] if detail else f'exit {done.returncode}'}")


def _initialise(directory: Path, pgdata: Path, bin_dir: Path) -> None:
    """A new cluster in `pgdata`, owned by the cluster's user, and its password in `<dir>/pgpass`."""
    password = secrets.token_hex(16)
    pgdata.mkdir(mode=0o700)
    _give_to_cluster_owner(pgdata)
    if subprocess.run(_as_cluster_owner(["test", "-w", str(pgdata)])).returncode != 0:
        shutil.rmtree(pgdata)
        raise ServerError(
            f"the 'postgres' user cannot reach {pgdata} (a folder above it is closed to other users): "
            "pick a --dir it can reach, or run as an ordinary user"
        )
    pwfile = directory / "initdb-password"
    pwfile.write_text(password + "\n")
    pwfile.chmod(0o600)
    _give_to_cluster_owner(pwfile)
    try:
        initdb = [str(bin_dir / "initdb"), "-D", str(pgdata), "-U", ROLE, f"--pwfile={pwfile}"]
        _run(_as_cluster_owner([*initdb, "--auth=scram-sha-256", "-E", "UTF8", "--locale=C"]), "initdb")
    except ServerError:
        shutil.rmtree(pgdata)
        raise
    finally:
        pwfile.unlink()
    with open(pgdata / "postgresql.conf", "a") as conf:  # TCP on the loopback only; no socket in /var/run
        conf.write("\n# gavel tracking-server\nlisten_addresses = '127.0.0.1'\nunix_socket_directories = ''\n")
    pgpass = directory / "pgpass"
    pgpass.write_text(f"127.0.0.1:*:*:{ROLE}:{password}\n")
    pgpass.chmod(0o600)


def start_postgres(directory: Path, port: int) -> str:
    """Start the cluster in `<directory>/pgdata` on 127.0.0.1:`port` (initialised, and its database created, on
    first use); return the backend store URI, password included (keep it off command lines)."""
    bin_dir = postgres_bin()
    directory = Path(directory).absolute()
    directory.mkdir(parents=True, exist_ok=True)
    pgdata = directory / "pgdata"
    if not (pgdata / "PG_VERSION").exists():
        _initialise(directory, pgdata, bin_dir)
    log = directory / "postgres.log"
    log.touch()
    _give_to_cluster_owner(log)
    start = [str(bin_dir / "pg_ctl"), "start", "-D", str(pgdata), "-l", str(log), "-w", "-t", "60", "-o", f"-p {port}"]
    try:
        _run(_as_cluster_owner(start), f"starting PostgreSQL on port {port} (log: {log})")
    except ServerError as error:
        raise ServerError(f"{error}; {_last_line(log)}") from None
    password = (directory / "pgpass").read_text().strip().rsplit(":", 1)[1]
    try:
        db = psycopg2.connect(host="127.0.0.1", port=port, user=ROLE, password=password, dbname="postgres")
        db.autocommit = True  # CREATE DATABASE refuses to run in a transaction
        try:
            with db.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            db.close()
    except BaseException:
        stop_postgres(directory)
        raise
    return f"postgresql+psycopg2://{ROLE}:{password}@127.0.0.1:{port}/{DATABASE}"


def stop_postgres(directory: Path) -> None:
    """Stop the cluster in `<directory>/pgdata` (fast: open sessions are rolled back); nothing if it is not up."""
    pgdata = Path(directory).absolute() / "pgdata"
    if (pgdata / "postmaster.pid").exists():
        pg_ctl = str(postgres_bin() / "pg_ctl")
        subprocess.run(_as_cluster_owner([pg_ctl, "stop", "-D", str(pgdata), "-m", "fast", "-w"]), capture_output=True)


def _last_line(log: Path) -> str:
    lines = log.read_text(errors="replace").strip().splitlines()
    return lines[-1] if lines else "the log is empty"


def allowed_hosts() -> str:
    """The Host headers a server on every interface accepts: MLflow's defaults (loopback and private addresses)
    plus this machine's names, so that `http://<hostname>:<port>` works from other machines."""
    names = dict.fromkeys(["localhost", "127.0.0.1", socket.gethostname(), socket.getfqdn()])
    return ",".join([*(f"{name}{port}" for name in names for port in ("", ":*")), *PRIVATE_NETWORKS])


def mlflow_server(
    directory: Path, backend_uri: str, host: str, port: int, extra: list[str] = (), **popen
) -> subprocess.Popen:
    """`mlflow server` on `backend_uri`, serving the artifacts kept in `<directory>/artifacts`."""
    command = [
        str(MLFLOW), "server", "--host", host, "--port", str(port),
        "--serve-artifacts", "--artifacts-destination", str(Path(directory).absolute() / "artifacts"),
    ]  # fmt: skip
    if host not in ("127.0.0.1", "localhost"):  # an --allowed-hosts in `extra`, later on the line, wins
        command += ["--allowed-hosts", allowed_hosts()]
    env = {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend_uri, **popen.pop("env", {})}
    return subprocess.Popen([*command, *extra], env=env, **popen)


def wait_until_up(url: str, process: subprocess.Popen, timeout: float = 120) -> None:
    """Return once the server at `url` answers /health; raise if it exits or stays silent past `timeout`."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServerError(f"the MLflow server exited with {process.returncode} before it answered")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.3)
    raise ServerError(f"the MLflow server did not answer on {url}/health within {timeout:.0f} s")


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@dataclass(frozen=True)
class LocalServer:
    url: str
    backend_uri: str
    directory: Path


@contextmanager
def local_server(extra: list[str] = (), timeout: float = 180) -> Iterator[LocalServer]:
    """PostgreSQL and an MLflow server on 127.0.0.1, free ports, in a new temporary folder, for tests and
    benchmarks; both stopped and the folder removed afterwards. Raises ServerError (with the end of the server's
    log) if the server does not come up."""
    # Not under a test's tmp_path: as root, PostgreSQL runs as `postgres`, which must reach the folder.
    directory = Path(tempfile.mkdtemp(prefix="gavel-server-"))
    directory.chmod(0o711)
    process = None
    try:
        backend_uri = start_postgres(directory, free_port())
        port = free_port()
        with open(directory / "mlflow.log", "w") as log:
            process = mlflow_server(
                directory, backend_uri, "127.0.0.1", port, extra, stdout=log, stderr=subprocess.STDOUT
            )
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until_up(url, process, timeout=timeout)
        except ServerError as error:
            raise ServerError(f"{error}; its log ends: {(directory / 'mlflow.log').read_text()[-2000:]}") from None
        yield LocalServer(url, backend_uri, directory)
    finally:
        try:
            if process is not None:
                _stop(process)
        finally:
            try:
                stop_postgres(directory)
            finally:
                shutil.rmtree(directory, ignore_errors=True)


def _stop(process: subprocess.Popen, grace: float = 60) -> None:
    """Terminate `process`; kill it if it is still there after `grace` seconds."""
    process.terminate()
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def serve(directory: Path, host: str, port: int, pg_port: int, extra: list[str]) -> int:
    """PostgreSQL, then the MLflow server in the foreground until Ctrl-C or SIGTERM, then PostgreSQL stopped."""
    backend_uri = start_postgres(directory, pg_port)
    try:
        process = mlflow_server(directory, backend_uri, host, port, extra)
        signal.signal(signal.SIGTERM, lambda *_: process.terminate())  # `mlflow server` passes it on to uvicorn
        reachable = socket.gethostname() if host == "0.0.0.0" else host
        try:
            wait_until_up(f"http://{'127.0.0.1' if host == '0.0.0.0' else host}:{port}", process, timeout=600)
            print(
                f"gavel tracking-server: MLflow at http://{reachable}:{port}, its store in "
                f"{Path(directory).absolute()} (PostgreSQL on 127.0.0.1:{pg_port}); point jobs at it with:\n"
                f"  export MLFLOW_TRACKING_URI=http://{reachable}:{port}",
                flush=True,
            )
            process.wait()
        except KeyboardInterrupt:  # a terminal's Ctrl-C reaches the server too: give it time to finish
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                pass
        finally:
            if process.poll() is None:
                process.terminate()
                process.wait()
        return 0 if process.returncode in (0, -signal.SIGTERM, -signal.SIGINT) else process.returncode
    finally:
        stop_postgres(directory)
