"""`gavel serve [OVERRIDES...]`: the judge a run would build, behind HTTP, with API keys, quotas, bans and (with
`serve.require_signature=true`) signed inputs. The overrides are `gavel run`'s (target=, defense=, a list of
defenses, access.output=, data=, seed=, cache_dir=) plus the `serve:` block's keys (serve.port=8081, ...).

Everything that can be wrong is found before the server listens: the config, the store, the address, the data and
the judge; each is one line on stderr and exit status 2.
"""

from __future__ import annotations

import sys

USAGE = """usage: gavel serve [OVERRIDES...]
  the judge gavel run would build (target=, defense=, access.output=, data=, seed=, cache_dir=) behind HTTP on
  serve.host:serve.port (127.0.0.1:8080), answering the keys of serve.store (gavel keys add); see docs/serving.md
  e.g. gavel serve defense=blacklight access=hidden_label serve.port=8081"""


def serve_command(args: list[str]) -> int:
    if any(arg in ("-h", "--help", "help") for arg in args):
        print(USAGE)
        return 0
    flags = [arg for arg in args if "=" not in arg]
    if flags:
        print(
            f"gavel serve: {flags[0]}: not an override; allowed: KEY=VALUE overrides, e.g. serve.port=8081 "
            "(gavel serve --help)",
            file=sys.stderr,
        )
        return 2
    from gavel.experiments import defense_lists
    from gavel.experiments.config import compose_config
    from gavel.experiments.serve.deployment import SERVING_ATTACK, deploy
    from gavel.experiments.serve.server import BindError, bind
    from gavel.experiments.serve.settings import ServeSettings
    from gavel.experiments.serve.store import Store, StoreError
    from gavel.experiments.settings import RunSettings
    from gavel.experiments.validation import ConfigError, check_overrides
    from gavel.targets.errors import SourceError

    try:
        overrides = [SERVING_ATTACK, *defense_lists.expand(args)]
        check_overrides(overrides)
        cfg = compose_config(overrides)
        settings = RunSettings.from_config(cfg)
        serve = ServeSettings.from_config(cfg)
        bind(serve.host, serve.port).close()  # before the judge is built: a port in use is found at once
        store = Store(serve.store)
    except (ConfigError, StoreError, BindError) as error:
        print(f"gavel: {error}", file=sys.stderr)
        return 2
    try:
        store.claim_for_serving()
    except StoreError as error:
        store.close()
        print(f"gavel: {error}", file=sys.stderr)
        return 2
    try:
        deployment = deploy(settings, serve.threads)
        sock = bind(serve.host, serve.port)
    except (ConfigError, SourceError, FileNotFoundError, BindError) as error:
        store.close()
        print(f"gavel: {error}", file=sys.stderr)
        return 2
    try:
        return _serve(deployment, store, serve, sock)
    finally:
        store.close()


def _serve(deployment, store, serve, sock) -> int:
    from gavel.experiments.serve.app import create_app
    from gavel.experiments.serve.server import run_foreground
    from gavel.experiments.serve.service import Service, ServiceLimits

    limits = ServiceLimits(serve.model_name, serve.max_rows, serve.max_bytes, serve.require_signature,
                           serve.signature_window_s)  # fmt: skip
    service = Service(deployment, store, limits)
    host, port = sock.getsockname()[:2]
    keys = sum(1 for key in store.keys() if key.kind != "device" and key.revoked_at is None)
    signed = ", signed inputs only" if serve.require_signature else ""
    print(
        f"gavel serve: {deployment.description} at http://{host}:{port}/v2/models/{serve.model_name} "
        f"(and /invocations); API keys: {keys} in {store.description}{signed}; Ctrl-C stops it",
        flush=True,
    )
    run_foreground(create_app(service), sock)
    print("gavel serve: stopped; every count is in the store", flush=True)
    return 0
