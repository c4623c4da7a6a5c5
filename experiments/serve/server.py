"""Running the app under uvicorn, programmatically: in the foreground for `gavel serve` (Ctrl-C or SIGTERM stop it
cleanly), or in a background thread for tests and benchmarks. uvicorn's access log is off (a request line would
name no key, but the log has nothing an operator needs that the ledger does not hold) and it logs warnings only.

The socket is bound before uvicorn starts, so that a port in use is one line and exit 2 rather than uvicorn's
log and exit 1, and port 0 can pick a free port that the caller learns.
"""

from __future__ import annotations

import signal
import socket
import threading
import time
from types import TracebackType

import uvicorn
from fastapi import FastAPI


class BindError(OSError):
    """The address cannot be bound; one line, for the user."""


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP spelled out: asyncio sets TCP_NODELAY only on sockets that say so, and without it each response's
    # body waits for the client's delayed ACK of its headers (40 ms a request on Linux, measured)
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
        sock.listen(2048)  # from now on connections queue until uvicorn accepts them: the startup line can say "at"
    except OSError as error:
        sock.close()
        raise BindError(f"serve.host={host} serve.port={port}: cannot listen there ({error.strerror})") from None
    return sock


def _config(app: FastAPI) -> uvicorn.Config:
    return uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off", timeout_keep_alive=30)


class _Stopped(Exception):
    """SIGTERM, once uvicorn has finished the requests in flight and passed the signal on."""


def _stopped(signum: int, frame) -> None:
    raise _Stopped


def run_foreground(app: FastAPI, sock: socket.socket) -> None:
    """Serve until Ctrl-C or SIGTERM; uvicorn finishes the requests in flight, then this returns."""
    previous = signal.signal(signal.SIGTERM, _stopped)  # uvicorn re-raises the signal it stopped on, after its exit
    try:
        uvicorn.Server(_config(app)).run(sockets=[sock])
    except (KeyboardInterrupt, _Stopped):
        pass
    finally:
        signal.signal(signal.SIGTERM, previous)
        sock.close()


class BackgroundServer:
    """The app on `host`:`port` (0: a free port) in a thread, for tests and benchmarks: `with BackgroundServer(app)
    as server: requests.get(server.url + "/v2/health/ready")`."""

    def __init__(self, app: FastAPI, host: str = "127.0.0.1", port: int = 0) -> None:
        self._sock = bind(host, port)
        self.port = self._sock.getsockname()[1]
        self.url = f"http://{host}:{self.port}"
        self._server = uvicorn.Server(_config(app))
        self._thread = threading.Thread(target=self._server.run, kwargs={"sockets": [self._sock]}, daemon=True)

    def __enter__(self) -> BackgroundServer:
        self._thread.start()
        deadline = time.monotonic() + 30
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the background server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, kind: type | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=30)
        self._sock.close()
