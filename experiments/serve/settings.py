"""The `serve:` block of conf/config.yaml, read at the typed boundary like every other key: one frozen
`ServeSettings`, or a `ConfigError` naming the key and what is allowed."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from gavel.experiments.validation import ConfigError, Node
from gavel.targets.params import Range

DEFAULT_STORE = ".gavel_serve/ledger.db"
"""Where the keys and the ledger live unless `serve.store` (or GAVEL_SERVE_STORE) says otherwise; `gavel keys` uses
the same default, so that the keys it adds are the ones `gavel serve` reads."""
STORE_ENV = "GAVEL_SERVE_STORE"
"""A PostgreSQL URL holds a password: passed in the environment it stays off command lines that `ps` shows."""
MODEL_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A model name is one segment of the URL path (`/v2/models/<name>/infer`)."""


def default_store() -> str:
    return os.environ.get(STORE_ENV) or DEFAULT_STORE


@dataclass(frozen=True)
class ServeSettings:
    host: str
    port: int
    """0: any free port (the one taken is printed)."""
    model_name: str
    store: str
    """A SQLite file, or a `postgresql://` URL."""
    max_rows: int
    max_bytes: int
    require_signature: bool
    signature_window_s: float
    threads: int | None
    """torch threads answering queries; None: the job's (`threads`, else the machine's cores)."""

    @classmethod
    def from_config(cls, cfg: DictConfig) -> ServeSettings:
        if "serve" not in cfg:
            raise ConfigError("serve: missing; allowed: the serve block of conf/config.yaml")
        node = Node(OmegaConf.to_container(cfg.serve, resolve=True), "serve")
        known = ("host", "port", "model_name", "store", "max_rows", "max_bytes", "require_signature",
                 "signature_window_s", "threads")  # fmt: skip
        unknown = sorted(set(node.values) - set(known))
        if unknown:
            raise ConfigError(f"serve.{unknown[0]}: no such key; allowed keys under serve: {', '.join(known)}")
        model_name = node.text("model_name", meaning="a model name (letters, digits, _ . -)")
        if not MODEL_NAME.fullmatch(model_name):
            node.fail("model_name", model_name, "1 to 64 letters, digits, '_', '.' or '-' (one URL path segment)")
        return cls(
            host=node.text("host", meaning="an address to bind: 127.0.0.1 (this machine only) or 0.0.0.0"),
            port=node.integer("port", minimum=0, maximum=65535, meaning="0: any free port"),
            model_name=model_name,
            store=node.text("store", meaning="a SQLite file path or a postgresql:// URL"),
            max_rows=node.integer("max_rows", minimum=1, meaning="rows per request"),
            max_bytes=node.integer("max_bytes", minimum=1024, meaning="bytes per request body"),
            require_signature=node.boolean("require_signature"),
            signature_window_s=node.number("signature_window_s", Range(above=0)),
            threads=node.integer("threads", minimum=1, optional=True, meaning="torch threads"),
        )
