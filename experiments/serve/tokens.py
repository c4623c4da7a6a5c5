"""API key tokens: `gvl_<lookup>_<secret>`, printed once by `gavel keys add` and never stored or logged.

The store keeps the lookup (a random public handle, so that a token does not reveal how many keys exist) and the
SHA-256 of the secret. The secret holds 256 random bits, so a plain hash is enough (no password-stretching KDF:
nobody can guess such a secret from its hash); the comparison is constant-time, so that a caller cannot learn the
hash byte by byte from response times.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from collections.abc import Mapping
from dataclasses import dataclass

PREFIX = "gvl"
_TOKEN = re.compile(rf"{PREFIX}_([0-9a-f]{{12}})_([A-Za-z0-9_-]{{32,128}})")
_UNUSED_HASH = hashlib.sha256(b"no such key").hexdigest()
"""Compared against when the lookup names no key: a miss costs the same as a wrong secret."""


@dataclass(frozen=True)
class NewToken:
    token: str
    """What the key's holder sends; shown once."""
    lookup: str
    secret_sha256: str


def new_token() -> NewToken:
    lookup, secret = secrets.token_hex(6), secrets.token_urlsafe(32)
    return NewToken(f"{PREFIX}_{lookup}_{secret}", lookup, secret_hash(secret))


def secret_hash(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


def parse(token: str) -> tuple[str, str] | None:
    """(lookup, secret) of a well-formed token, else None."""
    match = _TOKEN.fullmatch(token)
    return None if match is None else (match.group(1), match.group(2))


def secret_matches(secret: str, stored_sha256: str | None) -> bool:
    """Constant-time: `hmac.compare_digest` of the hashes (a missing key is compared against a hash no secret has)."""
    return hmac.compare_digest(secret_hash(secret), stored_sha256 or _UNUSED_HASH) and stored_sha256 is not None


def from_headers(headers: Mapping[str, str]) -> str | None:
    """The token a request presents: `Authorization: Bearer <token>`, else `X-API-Key: <token>`; None without."""
    authorization = headers.get("authorization", "")
    scheme, _, value = authorization.strip().partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    key = headers.get("x-api-key", "").strip()
    return key or None
