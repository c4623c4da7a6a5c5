"""The judge as a service (`gavel serve`) against the same judge in process (the Oracle): the latency each query gains
over HTTP, and the rows per second each answers, at batch 1 and at batch 256.

Printed, never asserted. The service runs as `gavel serve` in a process of its own on 127.0.0.1 (its own torch
threads, as many as this process's), with one API key and a SQLite ledger in a temporary folder; the client is one
`requests.Session` (keep-alive) sending v2 requests with `"partial": true`, as `target=remote` does. The service's
time includes everything a deployed judge adds: JSON both ways, the key's check, admission under the lock, and one
ledger write per request. Each round times the Oracle and the service back to back; the figures are medians over
rounds.
    python bench/serve_latency.py [--queries 300] [--big-queries 40] [--rounds 5] [--threads 1] [--smoke]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import requests
import torch
from fixtures import SMOKE_TRAINING, add_smoke_flag, default_judge, smoke_cache

from gavel.experiments.serve import tokens
from gavel.experiments.serve.store import Store
from gavel.targets.access import AccessPolicy, Oracle, wire

GAVEL = str(Path(sys.executable).with_name("gavel"))


def start_service(store: str, output: str, overrides: list[str]) -> tuple[subprocess.Popen, str]:
    access = "access=hidden_label" if output == "label" else "access=hidden_probabilities"
    command = [GAVEL, "serve", access, "serve.port=0", f"serve.store={store}",
               f"serve.threads={torch.get_num_threads()}", *overrides]  # fmt: skip
    process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
    line = process.stdout.readline()
    match = re.search(r"at (http://[^/]+)/v2/models/judge", line)
    if match is None:
        process.kill()
        raise SystemExit(f"gavel serve did not start: {line or 'no output'}")
    return process, match.group(1)


def stop(process: subprocess.Popen) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


def through_oracle(judge, data, output: str, batches: list[np.ndarray]) -> float:
    oracle = Oracle(judge, AccessPolicy("hidden", output, None), input_shape=data.input_shape,
                    n_classes=data.n_classes, batch_size=256)  # fmt: skip
    oracle.plan(len(batches))
    start = time.perf_counter()
    for i, x in enumerate(batches):
        oracle.query_rows(x, [i] * len(x))
    return time.perf_counter() - start


def through_service(session: requests.Session, url: str, token: str, output: str, batches: list[np.ndarray]) -> float:
    start = time.perf_counter()
    for x in batches:
        reply = session.post(f"{url}/v2/models/judge/infer", json=wire.encode_v2_request(x, output),
                             headers={"Authorization": f"Bearer {token}"})  # fmt: skip
        reply.raise_for_status()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--queries", type=int, default=300, help="queries of one row")
    parser.add_argument("--big-queries", type=int, default=40, help="queries of 256 rows")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--threads",
        type=int,
        default=int(os.environ.get("GAVEL_THREADS", "1")),
        help="torch threads of the Oracle and of the service each (default: GAVEL_THREADS, else 1)",
    )
    add_smoke_flag(parser, "20 queries of one row, 3 of 256, 1 round")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    if args.smoke:
        args.queries, args.big_queries, args.rounds = 20, 3, 1
    overrides = list(SMOKE_TRAINING[:1]) if args.smoke else []
    with smoke_cache(args.smoke):
        _, data, judge = default_judge(SMOKE_TRAINING if args.smoke else ())
        rng = np.random.default_rng(0)
        sizes = {1: args.queries, 256: args.big_queries}
        batches = {size: [rng.random((size, *data.input_shape), dtype=np.float32) for _ in range(count)]
                   for size, count in sizes.items()}  # fmt: skip
        print(
            f"gavel serve against the in-process Oracle, digits CNN judge, {torch.get_num_threads()} torch threads "
            f"each, one client with keep-alive (median of {args.rounds} rounds)"
        )
        print(f"  {'output':<13} {'batch':>5}  {'oracle ms/query':>15}  {'service ms/query':>16}  {'added ms':>8}  "
              f"{'service/oracle':>14}  {'rows/s oracle':>13}  {'rows/s service':>14}")  # fmt: skip
        with tempfile.TemporaryDirectory(prefix="gavel-bench-serve-") as tmp:
            for output in ("label", "probabilities"):
                store_path = str(Path(tmp) / f"{output}.db")
                store = Store(store_path)
                new = tokens.new_token()
                store.add_key("bench", "key", quota=10**12, window_hours=24.0, rate=None, created=time.time(),
                              lookup=new.lookup, secret_sha256=new.secret_sha256)  # fmt: skip
                store.close()
                process, url = start_service(store_path, output, overrides)
                try:
                    with requests.Session() as session:
                        through_service(session, url, new.token, output, batches[1][:5])  # warm-up
                        through_oracle(judge, data, output, batches[1][:5])
                        for size, queued in batches.items():
                            oracle, service = [], []
                            for _ in range(args.rounds):
                                oracle.append(through_oracle(judge, data, output, queued))
                                service.append(through_service(session, url, new.token, output, queued))
                            report(output, size, len(queued), statistics.median(oracle), statistics.median(service))
                finally:
                    stop(process)


def report(output: str, size: int, queries: int, oracle: float, service: float) -> None:
    per_oracle, per_service = oracle / queries * 1000, service / queries * 1000
    print(
        f"  {output:<13} {size:>5}  {per_oracle:>15.3f}  {per_service:>16.3f}  {per_service - per_oracle:>8.2f}  "
        f"{service / oracle:>14.1f}  {size * queries / oracle:>13.0f}  {size * queries / service:>14.0f}"
    )


if __name__ == "__main__":
    main()
