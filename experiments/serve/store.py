"""The service's persistent state: API keys and devices, the ledger of every request, quota windows, and the nonces of
signed inputs; SQLite by default (stdlib `sqlite3`), PostgreSQL as an option (a `postgresql://` URL, psycopg2).

Everything that decides what a key may still ask lives here, so that a restart changes nothing: a key cannot reset
its quota by waiting for one. A key's secret is never stored, only its SHA-256 (`tokens`).

One `Store` is one connection, used by one thread at a time (a lock); every write is one transaction. SQLite runs
in WAL mode with a busy timeout, so that `gavel keys` can add a key while `gavel serve` writes the ledger; its
transactions take the write lock up front (BEGIN IMMEDIATE), so two writers queue rather than fail.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

KINDS = ("key", "device", "auditor")
"""An auditor is a key whose queries the detector never sees (the operator's evaluation, as in process)."""
BUSY_TIMEOUT_MS = 10_000

SCHEMA = """
CREATE TABLE IF NOT EXISTS keys (
    id {id},
    name TEXT NOT NULL UNIQUE,
    kind TEXT NOT NULL,
    lookup TEXT UNIQUE,
    secret_sha256 TEXT,
    public_key TEXT,
    quota BIGINT NOT NULL,
    window_hours DOUBLE PRECISION NOT NULL,
    rate BIGINT,
    banned INTEGER NOT NULL DEFAULT 0,
    banned_at DOUBLE PRECISION,
    banned_why TEXT,
    revoked_at DOUBLE PRECISION,
    created DOUBLE PRECISION NOT NULL
);
CREATE TABLE IF NOT EXISTS requests (
    id {id},
    key_id BIGINT NOT NULL REFERENCES keys (id),
    device_id BIGINT REFERENCES keys (id),
    asked_at DOUBLE PRECISION NOT NULL,
    endpoint TEXT NOT NULL,
    rows_asked BIGINT NOT NULL,
    answered BIGINT NOT NULL,
    rejected BIGINT NOT NULL,
    refused BIGINT NOT NULL,
    status INTEGER NOT NULL,
    reason TEXT
);
CREATE INDEX IF NOT EXISTS requests_by_key ON requests (key_id, asked_at);
CREATE INDEX IF NOT EXISTS requests_by_device ON requests (device_id, asked_at);
CREATE TABLE IF NOT EXISTS quota_windows (
    key_id BIGINT NOT NULL REFERENCES keys (id),
    window_start DOUBLE PRECISION NOT NULL,
    used BIGINT NOT NULL,
    PRIMARY KEY (key_id, window_start)
);
CREATE TABLE IF NOT EXISTS nonces (
    device_id BIGINT NOT NULL REFERENCES keys (id),
    nonce TEXT NOT NULL,
    seen_at DOUBLE PRECISION NOT NULL,
    PRIMARY KEY (device_id, nonce)
);
CREATE INDEX IF NOT EXISTS nonces_by_time ON nonces (seen_at);
CREATE TABLE IF NOT EXISTS unauthenticated (
    reason TEXT PRIMARY KEY,
    requests BIGINT NOT NULL,
    last_at DOUBLE PRECISION NOT NULL
);
"""

LIMIT_REASONS = "'banned', 'detected', 'quota', 'rate'"
"""Ledger reasons of requests refused for the key's standing, not for what they were (`Usage.errors` leaves them
out)."""
KEY_COLUMNS = (
    "id, name, kind, lookup, secret_sha256, public_key, quota, window_hours, rate, banned, banned_at, banned_why, "
    "revoked_at, created"
)


SERVING_LOCK = 0x6761766C
"""PostgreSQL's advisory lock of the one service answering from a store ("gavl")."""


class _Released:
    """A PostgreSQL advisory lock: released with the session, nothing to close."""

    def close(self) -> None:
        pass


class StoreError(RuntimeError):
    """The store cannot be opened or refuses a change; one line, for the user."""


@dataclass(frozen=True)
class KeyRecord:
    """An API key or an enrolled device: its limits, and whether it is banned or revoked."""

    id: int
    name: str
    kind: str
    lookup: str | None
    secret_sha256: str | None
    public_key: str | None
    quota: int
    window_hours: float
    rate: int | None
    """Rows per minute (a sliding 60 s); None: no rate limit."""
    banned: bool
    banned_at: float | None
    banned_why: str | None
    revoked_at: float | None
    created: float

    @classmethod
    def of(cls, row: tuple) -> KeyRecord:
        values = list(row)
        values[9] = bool(values[9])
        return cls(*values)


@dataclass(frozen=True)
class RequestRecord:
    """One request in the ledger: who asked (the key, and the device that signed it), when, where, how many rows,
    and what became of them: answered, rejected by the detector (both charged), refused (quota, rate, ban: not
    charged), and the HTTP status."""

    key_id: int
    device_id: int | None
    asked_at: float
    endpoint: str
    rows_asked: int
    answered: int
    rejected: int
    refused: int
    status: int
    reason: str | None = None

    @property
    def charged(self) -> int:
        return self.answered + self.rejected


@dataclass(frozen=True)
class Usage:
    """A key's (or a device's) totals over the whole ledger."""

    key: KeyRecord
    requests: int
    answered: int
    rejected: int
    refused: int
    errors: int
    """Requests refused for what they were (malformed, too large, a bad signature), not for the key's limits."""
    window_start: float | None
    window_used: int


class Store:
    def __init__(self, location: str) -> None:
        """`location`: a SQLite file (created with its folder) or a `postgresql://` URL."""
        self.location = location
        self.postgres = location.startswith(("postgresql://", "postgres://"))
        self._lock = threading.RLock()
        self._depth = 0
        self._claim = None
        if self.postgres:
            self._db = _connect_postgres(location)
        else:
            self._db = _connect_sqlite(Path(location))
        with self.transaction():
            for statement in SCHEMA.split(";"):
                if statement.strip():
                    self._execute(statement.format(id=self._id_column))

    @property
    def description(self) -> str:
        """Where the store is, without a password."""
        if not self.postgres:
            return str(Path(self.location))
        from urllib.parse import urlsplit

        parts = urlsplit(self.location)
        return f"postgresql://{parts.hostname}:{parts.port or 5432}{parts.path}"

    @property
    def _id_column(self) -> str:
        return "BIGSERIAL PRIMARY KEY" if self.postgres else "INTEGER PRIMARY KEY AUTOINCREMENT"

    def close(self) -> None:
        with self._lock:
            self._db.close()
            if self._claim is not None:
                self._claim.close()  # the file lock goes with it
                self._claim = None

    def claim_for_serving(self) -> None:
        """Make this the one service answering from the store (idempotent): a service keeps each key's window and
        last minute in memory, so a second one on the same store would let a key spend its quota twice. SQLite: a
        lock on `<file>.serving`; PostgreSQL: a session advisory lock. Both go when the store is closed."""
        if self._claim is not None:
            return
        if self.postgres:
            with self.transaction():
                held = self._execute("SELECT pg_try_advisory_lock(?)", (SERVING_LOCK,)).fetchone()[0]
            self._claim = _Released()
        else:
            import fcntl

            self._claim = open(f"{self.location}.serving", "w")
            try:
                fcntl.flock(self._claim, fcntl.LOCK_EX | fcntl.LOCK_NB)
                held = True
            except BlockingIOError:
                held = False
        if not held:
            if not self.postgres:
                self._claim.close()
            self._claim = None
            raise StoreError(
                f"serve.store={self.description}: another gavel serve answers from it; allowed: one server per store"
            )

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """One transaction (nested calls join the outer one): committed whole, or rolled back whole."""
        with self._lock:
            if self._depth:
                self._depth += 1
                try:
                    yield
                finally:
                    self._depth -= 1
                return
            if not self.postgres:
                self._db.execute("BEGIN IMMEDIATE")
            self._depth = 1
            try:
                yield
            except BaseException:
                self._depth = 0
                self._db.rollback()
                raise
            self._depth = 0
            self._db.commit()

    def _execute(self, sql: str, parameters: tuple = ()) -> Any:
        if self.postgres:  # psycopg2 spells placeholders %s; no statement here holds a literal % or ?
            cursor = self._db.cursor()
            cursor.execute(sql.replace("?", "%s"), parameters)
            return cursor
        return self._db.execute(sql, parameters)

    def _read(self, sql: str, parameters: tuple = ()) -> list[tuple]:
        with self._lock:
            if self.postgres and not self._depth:
                with self.transaction():  # a read in PostgreSQL opens a transaction too: end it
                    return self._execute(sql, parameters).fetchall()
            return self._execute(sql, parameters).fetchall()

    # keys and devices

    def add_key(
        self,
        name: str,
        kind: str,
        *,
        quota: int,
        window_hours: float,
        rate: int | None,
        created: float,
        lookup: str | None = None,
        secret_sha256: str | None = None,
        public_key: str | None = None,
    ) -> KeyRecord:
        if kind not in KINDS:
            raise ValueError(f"kind={kind!r}: allowed: {', '.join(KINDS)}")
        with self.transaction():
            if self._execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone() is not None:
                raise StoreError(f"NAME={name!r}: a key or device of that name exists; allowed: a new name")
            self._execute(
                "INSERT INTO keys (name, kind, lookup, secret_sha256, public_key, quota, window_hours, rate, created) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (name, kind, lookup, secret_sha256, public_key, quota, window_hours, rate, created),
            )
            return KeyRecord.of(self._execute(f"SELECT {KEY_COLUMNS} FROM keys WHERE name = ?", (name,)).fetchone())

    def key_by_lookup(self, lookup: str) -> KeyRecord | None:
        rows = self._read(f"SELECT {KEY_COLUMNS} FROM keys WHERE lookup = ? AND kind IN ('key', 'auditor')", (lookup,))
        return KeyRecord.of(rows[0]) if rows else None

    def key_by_name(self, name: str) -> KeyRecord | None:
        rows = self._read(f"SELECT {KEY_COLUMNS} FROM keys WHERE name = ?", (name,))
        return KeyRecord.of(rows[0]) if rows else None

    def keys(self) -> list[KeyRecord]:
        return [KeyRecord.of(row) for row in self._read(f"SELECT {KEY_COLUMNS} FROM keys ORDER BY id")]

    def banned_ids(self) -> set[int]:
        """The API keys banned (a device's ban refuses what it signs; it is no detector's account)."""
        return {row[0] for row in self._read("SELECT id FROM keys WHERE banned = 1 AND kind = 'key'")}

    def ban(self, key_id: int, at: float, why: str) -> None:
        """Ban a key or device (a detector's flag); the first ban's time and reason are kept."""
        with self.transaction():
            self._execute(
                "UPDATE keys SET banned = 1, banned_at = ?, banned_why = ? WHERE id = ? AND banned = 0",
                (at, why, key_id),
            )

    def unban(self, name: str) -> KeyRecord:
        return self._change(name, "banned = 0, banned_at = NULL, banned_why = NULL")

    def revoke(self, name: str, at: float) -> KeyRecord:
        return self._change(name, "revoked_at = ?", (at,))

    def _change(self, name: str, assignments: str, parameters: tuple = ()) -> KeyRecord:
        with self.transaction():
            if self._execute("SELECT 1 FROM keys WHERE name = ?", (name,)).fetchone() is None:
                raise StoreError(f"NAME={name!r}: no key or device of that name; see gavel keys list")
            self._execute(f"UPDATE keys SET {assignments} WHERE name = ?", (*parameters, name))
            return KeyRecord.of(self._execute(f"SELECT {KEY_COLUMNS} FROM keys WHERE name = ?", (name,)).fetchone())

    # quota windows and the ledger

    def window(self, key_id: int) -> tuple[float, int] | None:
        """(start, rows used) of the key's latest quota window, or None before its first charged query."""
        rows = self._read(
            "SELECT window_start, used FROM quota_windows WHERE key_id = ? ORDER BY window_start DESC LIMIT 1",
            (key_id,),
        )
        return (float(rows[0][0]), int(rows[0][1])) if rows else None

    def save_window(self, key_id: int, start: float, used: int) -> None:
        with self.transaction():
            self._execute(
                "INSERT INTO quota_windows (key_id, window_start, used) VALUES (?, ?, ?) "
                "ON CONFLICT (key_id, window_start) DO UPDATE SET used = excluded.used",
                (key_id, start, used),
            )

    def charges_since(self, key_id: int, since: float, *, device: bool = False) -> list[tuple[float, int]]:
        """(time, rows charged) of the key's (or the device's) requests after `since`, oldest first: a sliding
        rate limit rebuilt after a restart."""
        column = "device_id" if device else "key_id"
        rows = self._read(
            f"SELECT asked_at, answered + rejected FROM requests WHERE {column} = ? AND asked_at > ? "
            "AND answered + rejected > 0 ORDER BY asked_at",
            (key_id, since),
        )
        return [(float(t), int(n)) for t, n in rows]

    def record(self, request: RequestRecord) -> None:
        with self.transaction():
            self._execute(
                "INSERT INTO requests (key_id, device_id, asked_at, endpoint, rows_asked, answered, rejected, refused, "
                "status, reason) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (request.key_id, request.device_id, request.asked_at, request.endpoint, request.rows_asked,
                 request.answered, request.rejected, request.refused, request.status, request.reason),
            )  # fmt: skip

    def requests(self, key_id: int | None = None) -> list[RequestRecord]:
        where, parameters = ("WHERE key_id = ?", (key_id,)) if key_id is not None else ("", ())
        rows = self._read(
            "SELECT key_id, device_id, asked_at, endpoint, rows_asked, answered, rejected, refused, status, reason "
            f"FROM requests {where} ORDER BY id",
            parameters,
        )
        return [RequestRecord(*row) for row in rows]

    def count_unauthenticated(self, reason: str, at: float) -> None:
        """A request that presented no valid key: counted by reason, charged to nobody, its token not kept."""
        with self.transaction():
            self._execute(
                "INSERT INTO unauthenticated (reason, requests, last_at) VALUES (?, 1, ?) ON CONFLICT (reason) "
                "DO UPDATE SET requests = unauthenticated.requests + 1, last_at = excluded.last_at",
                (reason, at),
            )

    def unauthenticated(self) -> dict[str, int]:
        return {reason: int(n) for reason, n in self._read("SELECT reason, requests FROM unauthenticated")}

    # nonces of signed inputs

    def use_nonce(self, device_id: int, nonce: str, at: float) -> bool:
        """Record the device's nonce; False when the device used it before (a replay)."""
        with self.transaction():
            seen = self._execute("SELECT 1 FROM nonces WHERE device_id = ? AND nonce = ?", (device_id, nonce))
            if seen.fetchone() is not None:
                return False
            self._execute("INSERT INTO nonces (device_id, nonce, seen_at) VALUES (?, ?, ?)", (device_id, nonce, at))
            return True

    def forget_nonces(self, before: float) -> None:
        """Nonces older than any timestamp the service still accepts can no longer be replayed: drop them."""
        with self.transaction():
            self._execute("DELETE FROM nonces WHERE seen_at < ?", (before,))

    # usage

    def usage(self) -> list[Usage]:
        """Every key's and device's totals, from the ledger and its latest quota window."""
        totals = {}
        for column in ("key_id", "device_id"):
            for row in self._read(
                f"SELECT {column}, COUNT(*), SUM(answered), SUM(rejected), SUM(refused), "
                f"SUM(CASE WHEN status = 200 OR reason IN ({LIMIT_REASONS}) THEN 0 ELSE 1 END) "
                f"FROM requests WHERE {column} IS NOT NULL GROUP BY {column}"
            ):
                totals[(column, row[0])] = [int(value or 0) for value in row[1:]]
        out = []
        for key in self.keys():
            column = "device_id" if key.kind == "device" else "key_id"
            requests, answered, rejected, refused, errors = totals.get((column, key.id), [0] * 5)
            start, used = self.window(key.id) or (None, 0)
            out.append(Usage(key, requests, answered, rejected, refused, errors, start, used))
        return out


def _connect_sqlite(path: Path) -> sqlite3.Connection:
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: transactions are this module's own (BEGIN IMMEDIATE ... COMMIT)
        db = sqlite3.connect(str(path), timeout=BUSY_TIMEOUT_MS / 1000, isolation_level=None, check_same_thread=False)
        db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
        db.execute("PRAGMA journal_mode = WAL")
        db.execute("PRAGMA synchronous = NORMAL")  # WAL: a commit survives a crash of the process, not of the OS
        db.execute("PRAGMA foreign_keys = ON")
    except (OSError, sqlite3.Error) as error:
        raise StoreError(f"serve.store={str(path)!r}: cannot open it as a SQLite file ({error})") from None
    return db


def _connect_postgres(url: str):
    import psycopg2

    try:
        return psycopg2.connect(url, connect_timeout=10)
    except psycopg2.Error as error:
        detail = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise StoreError(f"serve.store: cannot connect to PostgreSQL ({detail})") from None
