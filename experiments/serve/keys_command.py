"""`gavel keys ...`: the API keys and devices of `gavel serve`, in its store.

    gavel keys add NAME --quota N [--window HOURS] [--rate PER_MINUTE] [--auditor] [--store S]
    gavel keys add-device NAME --quota N [--window HOURS] [--rate PER_MINUTE] (--out FILE | --public-key PEM)
                          [--store S]
    gavel keys list [--store S]
    gavel keys usage [--store S] [--mlflow EXPERIMENT]
    gavel keys revoke NAME [--store S]
    gavel keys unban NAME [--store S]

`add` prints the key's token on stdout, once: the store keeps only its hash. `add-device` writes a new Ed25519
private key to FILE (mode 600; the device's, never the store's) or enrols the public key of one made elsewhere.
The store is `serve.store`'s default (GAVEL_SERVE_STORE, else .gavel_serve/ledger.db) unless --store names one.
Bad input is one line naming the option and what is allowed, exit status 2.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
"""A key's name: what the ledger, the usage table and MLflow's metric keys (`<name>.answered`) show."""
USAGE = __doc__.strip()


class BadInput(Exception):
    """One line: the option, what it got, what is allowed."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # argparse's own: usage and message on two lines, exit 2
        raise BadInput(message)


def _name(text: str) -> str:
    if not NAME.fullmatch(text):
        raise argparse.ArgumentTypeError(f"NAME={text!r}: allowed: 1 to 64 letters, digits, '_', '.' or '-'")
    return text


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: a positive integer")
    return value


def _hours(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = 0.0
    if not 0 < value < 1e6:
        raise argparse.ArgumentTypeError(f"{text!r}: allowed: a positive number of hours")
    return value


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="gavel keys", add_help=False)
    commands = parser.add_subparsers(dest="command", parser_class=_Parser)
    for command in ("add", "add-device"):
        sub = commands.add_parser(command, add_help=False)
        sub.add_argument("name", type=_name, metavar="NAME")
        sub.add_argument("--quota", type=_positive_int, required=True, help="rows per window")
        sub.add_argument("--window", type=_hours, default=24.0, help="hours a quota window lasts")
        sub.add_argument("--rate", type=_positive_int, help="rows per minute (default: no rate limit)")
        if command == "add":
            sub.add_argument("--auditor", action="store_true", help="an evaluator's key: its queries are not screened")
        if command == "add-device":
            where = sub.add_mutually_exclusive_group(required=True)
            where.add_argument("--out", type=Path, help="write a new private key here (mode 600)")
            where.add_argument("--public-key", type=Path, help="enrol this Ed25519 public key (PEM)")
    for command in ("revoke", "unban"):
        commands.add_parser(command, add_help=False).add_argument("name", type=_name, metavar="NAME")
    commands.add_parser("list", add_help=False)
    commands.add_parser("usage", add_help=False).add_argument("--mlflow", metavar="EXPERIMENT")
    for sub in commands.choices.values():
        sub.add_argument("--store", help="a SQLite file or a postgresql:// URL")
    return parser


def keys_command(args: list[str]) -> int:
    if not args or args[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    try:
        options = _parser().parse_args(args)
        if options.command is None:
            raise BadInput("a command: add, add-device, list, usage, revoke, unban")
        return _run(options)
    except BadInput as error:
        print(f"gavel keys: {_one_line(str(error))}", file=sys.stderr)
        return 2


def _one_line(message: str) -> str:
    """argparse's messages, in gavel's words: the option, then what is allowed."""
    message = message.splitlines()[0]
    message = re.sub(r"^argument (\S+?)(/\S+)?: ", r"\1: ", message)
    message = message.replace("the following arguments are required: ", "missing: ")
    return message.replace("invalid choice: ", "unknown command ").replace("(choose from ", "(allowed: ")


def _run(options: argparse.Namespace) -> int:
    from gavel.experiments.serve.settings import default_store
    from gavel.experiments.serve.store import Store, StoreError

    try:
        store = Store(options.store or default_store())
    except StoreError as error:
        raise BadInput(str(error).replace("serve.store", "--store")) from None
    try:
        return COMMANDS[options.command](store, options)
    except StoreError as error:
        raise BadInput(str(error)) from None
    finally:
        store.close()


def _add(store, options) -> int:
    from gavel.experiments.serve import tokens

    new = tokens.new_token()
    key = store.add_key(
        options.name, "auditor" if options.auditor else "key", quota=options.quota, window_hours=options.window,
        rate=options.rate, created=time.time(),
        lookup=new.lookup, secret_sha256=new.secret_sha256,
    )  # fmt: skip
    print(f"key {key.name!r} added to {store.description}: {_limits(key)}; its token is on stdout, shown this once "
          "(the store keeps only its hash)", file=sys.stderr)  # fmt: skip
    print(new.token, flush=True)
    return 0


def _add_device(store, options) -> int:
    from gavel.targets.access import signing

    if store.key_by_name(options.name) is not None:
        raise BadInput(f"NAME={options.name!r}: a key or device of that name exists; allowed: a new name")
    if options.public_key is not None:
        try:
            public = signing.public_pem(signing.load_public_key(options.public_key.read_bytes()))
        except (OSError, ValueError) as error:
            raise BadInput(
                f"--public-key={options.public_key}: {error}; allowed: an Ed25519 public key (PEM)"
            ) from None
        return _enrol(store, options, public, None)
    private = signing.new_device_key()
    try:  # O_EXCL: never overwrite a key file; 600 from the start, never readable by others even for a moment
        descriptor = os.open(options.out, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except OSError as error:
        raise BadInput(f"--out={options.out}: {error.strerror}; allowed: a new file in an existing folder") from None
    with os.fdopen(descriptor, "wb") as out:
        out.write(signing.private_pem(private))
    try:
        return _enrol(store, options, signing.public_pem(private), options.out)
    except BaseException:
        options.out.unlink()  # nothing half-done: no key file for a device that was not enrolled
        raise


def _enrol(store, options, public_pem: str, out: Path | None) -> int:
    device = store.add_key(
        options.name, "device", quota=options.quota, window_hours=options.window, rate=options.rate,
        created=time.time(), public_key=public_pem,
    )  # fmt: skip
    where = f"; its private key is in {out} (mode 600): install it on the device" if out else ""
    print(f"device {device.name!r} enrolled in {store.description}: {_limits(device)}{where}")
    return 0


def _limits(key) -> str:
    rate = "no rate limit" if key.rate is None else f"{key.rate} rows per minute"
    return f"{key.quota} rows per {key.window_hours:g} h window, {rate}"


def _list(store, options) -> int:
    from gavel.experiments.serve import usage

    print(usage.table(usage.rows(store.usage(), time.time()), usage.KEY_COLUMNS))
    return 0


def _usage(store, options) -> int:
    from gavel.experiments.serve import usage

    rows = usage.rows(store.usage(), time.time())
    unauthenticated = store.unauthenticated()
    print(usage.table(rows))
    print(f"requests with no valid key: {sum(unauthenticated.values())} "
          f"({', '.join(f'{k} {v}' for k, v in sorted(unauthenticated.items())) or 'none'})")  # fmt: skip
    if options.mlflow:
        run_id = usage.log_to_mlflow(options.mlflow, rows, unauthenticated, store.description)
        print(f"logged to MLflow: run {run_id} in experiment {options.mlflow!r}")
    return 0


def _revoke(store, options) -> int:
    key = store.revoke(options.name, time.time())
    print(f"{key.kind} {key.name!r} revoked: its requests are refused (401); its ledger stays")
    return 0


def _unban(store, options) -> int:
    key = store.unban(options.name)
    print(f"{key.kind} {key.name!r} unbanned")
    return 0


COMMANDS = {"add": _add, "add-device": _add_device, "list": _list, "usage": _usage, "revoke": _revoke,
            "unban": _unban}  # fmt: skip
