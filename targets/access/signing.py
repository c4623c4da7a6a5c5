"""A device's side of signed inputs: its Ed25519 key pair, and the headers that sign one request.

A judge served with `serve.require_signature=true` answers a query only when an enrolled device signed its bytes
(the seed's camera that signs what it captures): `X-Gavel-Device` (the device's enrolled name), `X-Gavel-Timestamp`
(unix seconds), `X-Gavel-Nonce` (never used before by that device) and `X-Gavel-Signature` (base64 Ed25519 signature
of `wire.signed_message(timestamp, nonce, body)`). The operator enrols the public key (`gavel keys add-device`); the
private key stays on the device, or with whoever stole it.
"""

from __future__ import annotations

import secrets
import time
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from gavel.targets.access import wire


def new_device_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    """PKCS#8 PEM, unencrypted: the file that holds it is the secret (written mode 600)."""
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_pem(key: Ed25519PrivateKey | Ed25519PublicKey) -> str:
    public = key.public_key() if isinstance(key, Ed25519PrivateKey) else key
    return public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo).decode()


def load_private_key(source: str | Path | bytes) -> Ed25519PrivateKey:
    """A device's private key from PEM bytes or a PEM file; ValueError (one line) when it is not an Ed25519 key."""
    data = source if isinstance(source, bytes) else Path(source).read_bytes()
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not an unencrypted PEM private key ({error})") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"a {type(key).__name__}, not an Ed25519 private key")
    return key


def load_public_key(pem: str | bytes) -> Ed25519PublicKey:
    """An enrolled device's public key; ValueError (one line) when it is not an Ed25519 public key in PEM."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, TypeError) as error:
        raise ValueError(f"not a PEM public key ({error})") from None
    if not isinstance(key, Ed25519PublicKey):
        raise ValueError(f"a {type(key).__name__}, not an Ed25519 public key")
    return key


def sign_headers(
    private_key: Ed25519PrivateKey,
    device: str,
    body: bytes,
    *,
    timestamp: float | None = None,
    nonce: str | None = None,
) -> dict[str, str]:
    """The four `X-Gavel-*` headers that sign `body` (the exact bytes sent) as `device`, now, with a fresh nonce."""
    stamp = str(int(time.time() if timestamp is None else timestamp))
    nonce = secrets.token_urlsafe(18) if nonce is None else nonce
    signature = private_key.sign(wire.signed_message(stamp, nonce, body))
    names = dict(zip(("device", "timestamp", "nonce", "signature"), wire.SIGNATURE_HEADERS))
    return {
        names["device"]: device,
        names["timestamp"]: stamp,
        names["nonce"]: nonce,
        names["signature"]: wire.encode_signature(signature),
    }
