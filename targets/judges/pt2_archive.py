"""Whether a `torch.export` archive (.pt2) is free of pickle payloads, before `torch.export.load` reads it.

`torch.export.load` unpickles the archive's sample inputs and any weight stored `use_pickle: true`, and where its
`weights_only` load fails it falls back to a full unpickling: a crafted archive runs code when loaded. This check
fails closed: every record must be a raw tensor its config declares `use_pickle: false`, JSON, a tiny text record
(the archive's version and format), or a `torch.save` file whose pickle references only tensor-rebuilding globals
(read without executing it, with `pickletools`) and loads with `weights_only=True`. MLflow checks its own
`pt2` models so (`mlflow.pytorch._validate_pt2_archive_is_pickle_free`, private); this is the same rule.
"""

from __future__ import annotations

import io
import json
import pickletools
import re
import zipfile

import torch

TEXT_RECORDS = {"version", "archive_format", "archive_version", "byteorder", "serialization_id"}
TEXT = re.compile(rb"[A-Za-z0-9._-]{1,64}\n?")
CONFIG = re.compile(r"(?:^|/)data/(?:weights|constants)/[^/]+_config\.json$")
TENSOR_GLOBALS = {
    "torch._utils._rebuild_tensor_v2",
    "torch._utils._rebuild_parameter",
    "collections.OrderedDict",
    *(
        f"torch.{kind}Storage"
        for kind in ("Float", "Double", "Half", "BFloat16", "Long", "Int", "Short", "Char", "Byte", "Bool")
    ),
}
STRINGS = {"SHORT_BINUNICODE", "BINUNICODE", "BINUNICODE8", "UNICODE", "STRING", "BINSTRING", "SHORT_BINSTRING"}
MEMO = {"PUT", "BINPUT", "LONG_BINPUT", "MEMOIZE"}


class UnsafeArchive(ValueError):
    """The archive holds something that could run code when loaded, or is not a pt2 archive at all."""


def pickle_globals(stream: bytes) -> set[str]:
    """The globals a pickle stream references, read without running it."""
    found, strings = set(), []
    for op, arg, _ in pickletools.genops(stream):
        if op.name == "GLOBAL":
            found.add(arg.replace(" ", "."))
        elif op.name == "STACK_GLOBAL":
            if len(strings) < 2:
                raise UnsafeArchive("a STACK_GLOBAL whose names are not literals")
            found.add(f"{strings[-2]}.{strings[-1]}")
            strings = []
        elif op.name in STRINGS:
            strings.append(arg)
        elif op.name not in MEMO:
            strings = []
    return found


def check_pickle_free(content: bytes) -> None:
    """Raise `UnsafeArchive` unless `content` is a pt2 archive with no pickle payload but plain tensors. Zip readers
    differ on an archive with data before it or a name twice (Python's and torch's might read different records):
    such an archive is refused."""
    if not content.startswith(b"PK\x03\x04"):
        raise UnsafeArchive("not a zip archive, or data before it")
    try:
        archive = zipfile.ZipFile(io.BytesIO(content))
    except zipfile.BadZipFile:
        raise UnsafeArchive("not a zip archive") from None
    with archive:
        records = [info for info in archive.infolist() if not info.is_dir()]
        names = [record.filename for record in records]
        if len(set(names)) != len(names):
            raise UnsafeArchive("a record name twice")
        if not any(r.filename.endswith("/archive_format") and archive.read(r).strip() == b"pt2" for r in records):
            raise UnsafeArchive("not a pt2 archive (no archive_format record saying pt2)")
        raw, pickled = set(), set()
        for record in records:
            if CONFIG.search(record.filename):
                folder = record.filename.rsplit("/", 1)[0]
                for entry in json.loads(archive.read(record))["config"].values():
                    name = f"{folder}/{entry['path_name']}"
                    plain = entry.get("use_pickle") is False and entry["path_name"].startswith(("weight_", "tensor_"))
                    (raw if plain else pickled).add(name)
        raw -= pickled
        for record in records:
            name, body = record.filename, archive.read(record)
            if name in raw:
                continue
            if name in pickled or "/sample_inputs/" in f"/{name}":  # declared tensors: judged as such, by name
                _check_tensor_file(name, body)
                continue
            if name.rsplit("/", 1)[-1] in TEXT_RECORDS and TEXT.fullmatch(body):
                continue
            try:
                json.loads(body)
                continue
            except (UnicodeDecodeError, ValueError):
                pass
            _check_tensor_file(name, body)


def _check_tensor_file(name: str, body: bytes) -> None:
    try:
        inner = zipfile.ZipFile(io.BytesIO(body))
        streams = [n for n in inner.namelist() if n.endswith("/data.pkl")]
        if not streams:
            raise UnsafeArchive("no data.pkl")
        foreign = set().union(*(pickle_globals(inner.read(n)) for n in streams)) - TENSOR_GLOBALS
        if foreign:
            raise UnsafeArchive(f"it references {', '.join(sorted(foreign))}")
        torch.load(io.BytesIO(body), map_location="cpu", weights_only=True)
    except Exception as error:
        raise UnsafeArchive(f"record {name!r} is not a plain tensor payload ({error})") from None
