"""The shared tracking server (`gavel tracking-server`: PostgreSQL store, served artifacts) under concurrent writers:
runs per minute it accepts, each logged as a gavel job logs one (tags, params, metrics, a curve, a config, a per-example
table and a figure), and whether every run arrived once, FINISHED, with its metrics and artifacts. Printed, never
asserted. Starts its own PostgreSQL and server on free ports in a temporary folder, and stops them.
    python bench/server_throughput.py [--writers 8] [--runs 25] [--workers 4] [--smoke]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import tempfile
import time
from pathlib import Path

from fixtures import add_smoke_flag
from mlflow import MlflowClient

from gavel.experiments.server import local_server

EXPERIMENT = "server_throughput"


def write_runs(url: str, writer: int, runs: int, start: multiprocessing.Barrier) -> None:
    os.environ["MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT"] = "true"  # a "View run" line per run otherwise
    import mlflow

    mlflow.set_tracking_uri(url)
    mlflow.set_experiment(EXPERIMENT)
    table = "index,label,success,queries\n" + "".join(f"{i},{i % 10},{i % 2},{i * 7}\n" for i in range(200))
    figure = os.urandom(20_000)  # a small PNG's size
    start.wait()
    for number in range(runs):
        with mlflow.start_run(run_name=f"w{writer} r{number}", tags={"writer": str(writer), "job": str(number)}):
            mlflow.log_params({f"param_{k}": k * number for k in range(30)})
            mlflow.log_metrics({f"metric_{k}": k / (number + 1) for k in range(12)} | {"attack_success_rate": 0.5})
            for step in (1, 10, 100, 1000):
                mlflow.log_metric("attack_success_rate_at_queries", step / 1000, step=step)
            mlflow.log_text(f"writer: {writer}\nrun: {number}\n", "config.yaml")
            mlflow.log_text(table, "per_example.csv")
            with tempfile.TemporaryDirectory() as folder:
                (Path(folder) / "figure.png").write_bytes(figure)
                mlflow.log_artifact(str(Path(folder) / "figure.png"))


def check(url: str, writers: int, runs: int) -> str:
    client = MlflowClient(tracking_uri=url)
    experiment = client.get_experiment_by_name(EXPERIMENT).experiment_id
    everywhere = [e.experiment_id for e in client.search_experiments()]
    found, token = [], None
    while True:
        page = client.search_runs(everywhere, max_results=1000, page_token=token)
        found += page
        token = page.token
        if not token:
            break
    here = [r for r in found if r.info.experiment_id == experiment]
    complete = [
        r
        for r in here
        if r.info.status == "FINISHED"
        and "attack_success_rate" in r.data.metrics
        and len(client.list_artifacts(r.info.run_id)) == 3
    ]
    return (
        f"{len(here)} runs found of {writers * runs} written ({len(found) - len(here)} in other experiments), "
        f"{len({r.info.run_name for r in here})} distinct, {len(complete)} FINISHED with their metrics and 3 artifacts"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--writers", type=int, default=8, help="concurrent writer processes")
    parser.add_argument("--runs", type=int, default=25, help="runs each writer logs")
    parser.add_argument("--workers", type=int, default=4, help="the server's uvicorn workers (mlflow's default: 4)")
    add_smoke_flag(parser, "2 writers x 2 runs, 1 server worker")
    args = parser.parse_args()
    if args.smoke:
        args.writers, args.runs, args.workers = 2, 2, 1

    with local_server(["--workers", str(args.workers)], timeout=300) as server:
        url = server.url
        # Made before the writers start: MLflow 3.17's set_experiment, when two processes create an experiment at
        # once, leaves the loser on the Default experiment, where its runs then go.
        MlflowClient(tracking_uri=url).create_experiment(EXPERIMENT)
        context = multiprocessing.get_context("spawn")
        start = context.Barrier(args.writers + 1)
        writers = [context.Process(target=write_runs, args=(url, w, args.runs, start)) for w in range(args.writers)]
        for writer in writers:
            writer.start()
        start.wait()  # every writer has imported mlflow and found the experiment
        began = time.perf_counter()
        for writer in writers:
            writer.join()
        seconds = time.perf_counter() - began
        total = args.writers * args.runs
        print(
            f"{args.writers} writers x {args.runs} runs against the PostgreSQL-backed server "
            f"({args.workers} workers, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}): "
            f"{total} runs in {seconds:.1f} s = {total / seconds * 60:.0f} runs/minute"
        )
        failed = [w.exitcode for w in writers if w.exitcode != 0]
        print(f"writers failed: {len(failed)}; {check(url, args.writers, args.runs)}")


if __name__ == "__main__":
    main()
