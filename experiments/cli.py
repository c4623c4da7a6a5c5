"""The `gavel` command.

gavel run [OVERRIDES...] [--multirun]   run an experiment (Hydra overrides, e.g. attack=square access.budget=100)
gavel gate --policy FILE [--out DIR] [--run [OVERRIDES...]]
                                        check robustness thresholds against the newest runs (exit 0 pass,
                                        1 a threshold failed, 2 error); --run runs the policy's experiment first,
                                        with OVERRIDES after its own (target=torchscript target.path=model.pt)
gavel report --experiment NAME [--sweep ID] [--out DIR]
                                        a sweep's runs as one HTML file plus Markdown (intervals, curves,
                                        Kaplan-Meier, provenance), logged to the sweep's parent run
gavel serve [OVERRIDES...]              the judge a run would build (target=, defense=, access.output=, ...) behind
                                        HTTP (Open Inference Protocol v2, MLflow's /invocations) with API keys,
                                        quotas, bans and signed inputs (serve.port=8081 ...; docs/serving.md)
gavel keys add|add-device|list|usage|revoke|unban ...
                                        the service's API keys, devices and ledger (gavel keys --help)
gavel tracking-server [--dir D] [--host H] [--port P] [--pg-port Q] [MLFLOW SERVER OPTIONS...]
                                        a shared MLflow tracking server: PostgreSQL in D/pgdata, artifacts served
                                        from D/artifacts; jobs anywhere log to it with MLFLOW_TRACKING_URI
gavel options                           list the options of every config group
"""

from __future__ import annotations

import logging
import os
import signal
import sys

from gavel.experiments import defense_lists
from gavel.experiments.config import GROUPS, group_options
from gavel.experiments.validation import check_overrides, config_errors_exit

USAGE = __doc__.strip()
COMMANDS = ("run", "report", "gate", "serve", "keys", "tracking-server", "options")


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return
    command, rest = argv[0], argv[1:]
    if command == "options":
        for group in GROUPS:
            print(f"{group}: {', '.join(group_options(group))}")
        return
    if command == "gate":
        sys.exit(gate_command(rest))
    if command == "report":
        sys.exit(report_command(rest))
    if command == "tracking-server":
        sys.exit(server_command(rest))
    if command == "server":  # renamed: one letter from `gavel serve`, which serves a judge rather than runs
        print("gavel: `gavel server` is now `gavel tracking-server` (the MLflow tracking server; `gavel serve` "
              "serves a judge)", file=sys.stderr)  # fmt: skip
        sys.exit(2)
    if command == "serve":
        from gavel.experiments.serve.command import serve_command

        sys.exit(serve_command(rest))
    if command == "keys":
        from gavel.experiments.serve.keys_command import keys_command

        sys.exit(keys_command(rest))
    if command != "run":
        print(
            f"gavel: unknown command {command!r}; allowed: {', '.join(COMMANDS)}\n{USAGE}",
            file=sys.stderr,
        )
        sys.exit(2)
    logging.getLogger("art").setLevel(logging.WARNING)  # ART logs every attack's progress at INFO
    with config_errors_exit():
        rest = defense_lists.expand(rest)
        check_overrides(rest)
    from gavel.experiments.run import Terminated, register_sweeper, stop_on_sigterm
    from gavel.experiments.run import main as hydra_main

    stop_on_sigterm()
    register_sweeper()
    sys.argv = ["gavel run", *rest]
    try:
        hydra_main()
    except Terminated:
        print("gavel: stopped by SIGTERM (a run in progress is marked KILLED)", file=sys.stderr)
        sys.exit(128 + signal.SIGTERM)


def report_command(args: list[str]) -> int:
    import argparse
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from gavel.reports.report import report

    os.environ.setdefault("MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR", "false")  # one bar per artifact read otherwise
    parser = argparse.ArgumentParser(prog="gavel report", description="a sweep's runs as an HTML and Markdown report")
    parser.add_argument("--experiment", required=True, help="the MLflow experiment (a preset's name)")
    parser.add_argument("--sweep", help="one sweep's runs (its sweep_id tag); default: every run of the experiment")
    parser.add_argument("--out", type=Path, default=Path("report"), help="where report.html, report.md and PNGs go")
    try:
        options = parser.parse_args(args)
    except SystemExit as exit_:
        return 2 if exit_.code else 0
    try:
        written = report(options.experiment, options.sweep, options.out)
    except (ValueError, MlflowException) as error:
        print(f"gavel: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2
    print(f"report: {written[0]} (and {written[1].name}, {len(written) - 2} figures)")
    return 0


def gate_command(args: list[str]) -> int:
    import argparse
    from pathlib import Path

    from mlflow.exceptions import MlflowException

    from gavel.reports.gate import PolicyError, gate

    parser = argparse.ArgumentParser(prog="gavel gate", description="check robustness thresholds (see reports/gate.py)")
    parser.add_argument("--policy", required=True, type=Path, help="a policy YAML, e.g. conf/gate/ci.yaml")
    parser.add_argument("--out", type=Path, default=Path("gate"), help="where summary.json and gate.xml go")
    parser.add_argument("--run", action="store_true", help="run the policy's experiment first")
    parser.add_argument("overrides", nargs="*", help="with --run: gavel run overrides after the policy's own")
    try:
        options = parser.parse_args(args)
    except SystemExit as exit_:
        return 2 if exit_.code else 0
    try:
        return gate(options.policy, options.out, run_first=options.run, overrides=options.overrides)
    except (PolicyError, MlflowException) as error:
        print(f"gavel: {str(error).splitlines()[0]}", file=sys.stderr)
        return 2


def server_command(args: list[str]) -> int:
    import argparse
    from pathlib import Path

    from gavel.experiments.server import ServerError, serve

    parser = argparse.ArgumentParser(
        prog="gavel tracking-server",
        description="a shared MLflow tracking server on PostgreSQL (see experiments/server.py); options it does not "
        "know go to `mlflow server` (e.g. --workers 8, --allowed-hosts mlflow.example.org)",
    )
    parser.add_argument("--dir", type=Path, default=Path(".mlflow-server"), help="PostgreSQL's data, artifacts, logs")
    parser.add_argument("--host", default="127.0.0.1", help="0.0.0.0: reachable from other machines")
    parser.add_argument("--port", type=int, default=5000, help="the MLflow server's port")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL's port (on 127.0.0.1 only)")
    try:
        options, extra = parser.parse_known_args(args)
    except SystemExit as exit_:
        return 2 if exit_.code else 0
    try:
        return serve(options.dir, options.host, options.port, options.pg_port, extra)
    except ServerError as error:
        print(f"gavel: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    main()
