"""The service's check of signed inputs (`serve.require_signature=true`): the query's bytes signed by an enrolled,
unrevoked device (Ed25519), timestamped within `serve.signature_window_s` of the server's clock, with a nonce the
device never used before. A replayed request fails on its nonce while its timestamp is fresh, and on its
timestamp afterwards; nonces older than the window are then forgotten. The device's own side is
`targets.access.signing`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from gavel.experiments.serve.store import KeyRecord, Store
from gavel.targets.access import wire
from gavel.targets.access.signing import load_public_key

DEVICE, TIMESTAMP, NONCE, SIGNATURE = (name.lower() for name in wire.SIGNATURE_HEADERS)
_NONCE = re.compile(r"[A-Za-z0-9_-]{8,128}")
_TIMESTAMP = re.compile(r"[0-9]{1,12}(\.[0-9]{1,9})?")


class SignatureRefused(Exception):
    """401: the query is not signed as the service requires; `reason` goes in the error JSON."""

    def __init__(self, message: str, reason: str = "signature") -> None:
        super().__init__(message)
        self.reason = reason


class SignatureCheck:
    def __init__(self, store: Store, window_s: float) -> None:
        self._store = store
        self.window_s = window_s
        self._public_keys: dict[int, Ed25519PublicKey] = {}
        self._forgotten_at = float("-inf")

    def device_of(self, headers: Mapping[str, str]) -> KeyRecord:
        """The enrolled device a request names (before its signature is checked: a device's limits and ban apply
        to what it signs)."""
        missing = [name for name, key in zip(wire.SIGNATURE_HEADERS, (DEVICE, TIMESTAMP, NONCE, SIGNATURE))
                   if not headers.get(key)]  # fmt: skip
        if missing:
            raise SignatureRefused(
                "serve.require_signature=true: every query is signed by an enrolled device; missing "
                + ", ".join(missing)
            )
        device = self._store.key_by_name(headers[DEVICE])
        if device is None or device.kind != "device" or device.revoked_at is not None:
            raise SignatureRefused(f"{wire.SIGNATURE_HEADERS[0]}: no enrolled device of that name")
        return device

    def verify(self, device: KeyRecord, headers: Mapping[str, str], body: bytes, now: float) -> None:
        """Raise `SignatureRefused` unless `device` signed exactly `body`, recently, with a fresh nonce (then the
        nonce is spent)."""
        stamp, nonce = headers[TIMESTAMP], headers[NONCE]
        if not _TIMESTAMP.fullmatch(stamp):
            raise SignatureRefused(f"{wire.SIGNATURE_HEADERS[1]}: allowed: unix seconds")
        if abs(now - float(stamp)) > self.window_s:
            raise SignatureRefused(
                f"{wire.SIGNATURE_HEADERS[1]}: {abs(now - float(stamp)):.0f} s from the server's clock; "
                f"allowed: within serve.signature_window_s={self.window_s:g} s",
                "stale",
            )
        if not _NONCE.fullmatch(nonce):
            raise SignatureRefused(f"{wire.SIGNATURE_HEADERS[2]}: allowed: 8 to 128 characters of A-Z a-z 0-9 _ -")
        try:
            signature = wire.decode_signature(headers[SIGNATURE])
            self._public_key(device).verify(signature, wire.signed_message(stamp, nonce, body))
        except (wire.WireError, InvalidSignature, ValueError):
            raise SignatureRefused(
                f"{wire.SIGNATURE_HEADERS[3]}: not the device's Ed25519 signature of this request's bytes"
            ) from None
        if now - self._forgotten_at > self.window_s:
            self._store.forget_nonces(before=now - 2 * self.window_s)
            self._forgotten_at = now
        if not self._store.use_nonce(device.id, nonce, now):
            raise SignatureRefused(f"{wire.SIGNATURE_HEADERS[2]}: used before by this device (replayed)", "replayed")

    def _public_key(self, device: KeyRecord) -> Ed25519PublicKey:
        if device.id not in self._public_keys:
            self._public_keys[device.id] = load_public_key(device.public_key or "")
        return self._public_keys[device.id]
