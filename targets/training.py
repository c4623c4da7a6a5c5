"""Train a model once and cache it on disk under a key that hashes everything that determines it.

A cache entry is a folder `<cache_dir>/models/<key>/` holding `model.pt` (a plain state dict, loaded with
`weights_only=True`) and `meta.json` (the spec, the SHA-256 of `model.pt` and a training figure: a judge's
training accuracy). Judges and surrogates come through `get_or_train`; any other trained module whose spec meets
`CacheSpec` (the operator's similarity encoder) through `get_or_build`. An entry
is written to a staging folder beside it and renamed into place, so an entry only ever appears complete; one
that fails any check on load (unreadable, a file where the folder should be, `meta.json` not an object or
missing a key, a spec or checksum that does not match, a state dict that does not load) is reported and
retrained, and the bad one is set aside and removed.

Parallel jobs may share one cache, also on a shared filesystem: a complete entry is loaded without locking;
otherwise a job takes the key's lock, `<cache_dir>/locks/<key>.lock`, checks again, and loads or trains and
stores while holding it, so parallel jobs that need the same model train it once and the others wait and load
it. Waiting blocks for as long as the training takes (minutes, for a real judge), logging every
`LOCK_LOG_EVERY_S` seconds so that a wait is never silent. The lock is a `filelock.FileLock` (an fcntl/flock
lock, released by the kernel if its holder dies): on a shared filesystem the locks folder must support such
locks (NFSv4 and most cluster filesystems do; some mounts do not). Where it does not, set
`GAVEL_CACHE_LOCK=soft` to use `filelock.SoftFileLock` instead, which only needs an atomic exclusive create;
its lock file stays behind if its holder is killed, and then must be removed by hand (the log names it).
Even without a lock, two writers of one key never crash: the later one keeps the entry already in place.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
import io
import json
import logging
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, ClassVar, Literal, NamedTuple, Protocol

import filelock
import numpy as np
import torch
from torch import nn

from gavel.targets.architectures.base import Architecture
from gavel.targets.datasets import Pool
from gavel.targets.models import Judge, build_model
from gavel.targets.params import NonNegativeFloat, PositiveFloat, PositiveInt, Range
from gavel.targets.robust.base import Natural, Objective
from gavel.targets.robust.fast import FastFGSM
from gavel.targets.robust.pgd import MadryPGD
from gavel.targets.robust.trades import Trades

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # 2: the key holds what the model was trained on (`trained_on`)
LOCK_ENV = "GAVEL_CACHE_LOCK"
LOCK_LOG_EVERY_S = 60.0


ADVERSARIAL_FIELDS = ("eps", "steps", "beta")
"""A recipe's robust-training settings: part of the model's cache key only when it is trained adversarially."""


@dataclass(frozen=True)
class Recipe:
    """How a model is trained (`target.train`, `surrogate.train`): Adam over shuffled mini-batches, each batch's loss
    the natural cross-entropy, or (`adversarial`) one on inputs crafted within an L-inf `eps` of the batch: Madry's
    PGD (`pgd`, `steps` steps), TRADES (`trades`, `steps` steps, weight `beta`) or fast FGSM from a random start
    (`fast`)."""

    epochs: PositiveInt
    batch_size: PositiveInt
    lr: PositiveFloat
    weight_decay: NonNegativeFloat = 0.0
    adversarial: Literal["pgd", "trades", "fast"] | None = None
    eps: Annotated[float, Range(above=0, maximum=1)] = 0.1
    steps: PositiveInt = 7
    beta: PositiveFloat = 6.0

    def key_fields(self) -> dict:
        """What the model cache's key holds of the recipe: a naturally trained model's key is what it was before
        robust training existed (its adversarial settings change nothing)."""
        fields = dataclasses.asdict(self)
        if self.adversarial is None:
            for name in ("adversarial", *ADVERSARIAL_FIELDS):
                del fields[name]
        return fields

    def objective(self, seed: int) -> Objective:
        """What each batch minimises (the Trainer's per-batch hook)."""
        if self.adversarial == "pgd":
            return MadryPGD(self.eps, self.steps, seed)
        if self.adversarial == "trades":
            return Trades(self.eps, self.steps, seed, self.beta)
        if self.adversarial == "fast":
            return FastFGSM(self.eps, seed)
        return Natural()


@dataclass(frozen=True)
class ModelConfig:
    """A judge or surrogate as configured: its architecture and training recipe."""

    arch: Architecture
    train: Recipe


@dataclass(frozen=True)
class ModelSpec:
    """Everything that determines a trained model."""

    role: str
    arch: Architecture
    train: Recipe
    seed: int
    input_shape: tuple[int, ...]
    n_classes: int
    data_fingerprint: str
    trained_on: str = "cpu/1"
    """`cpu/<threads>` or `cuda`: the same seed trains different weights on another thread count (the order of
    its float sums changes), so a judge trained with 2 threads is not the one a 1-thread job would train."""
    provenance: str = ""
    """How its training data came to be, where not as the data gave it (canonical JSON: the poison planted in it,
    the sanitiser that cleaned it, the model it was fine-tuned from); empty for a pool as given, whose key is what it
    always was."""
    figure: ClassVar[str] = "train_accuracy"

    @classmethod
    def of(
        cls,
        role: str,
        model: ModelConfig,
        seed: int,
        pool: Pool,
        input_shape,
        n_classes: int,
        device: str = "cpu",
        provenance: dict | None = None,
    ) -> ModelSpec:
        """`device`'s kind, and on the CPU torch's thread count now, say what the model is trained on."""
        return cls(
            role=role,
            arch=model.arch,
            train=model.train,
            seed=int(seed),
            input_shape=tuple(int(d) for d in input_shape),
            n_classes=int(n_classes),
            data_fingerprint=pool.fingerprint(),
            trained_on=trained_on(device),
            provenance=json.dumps(provenance, sort_keys=True) if provenance else "",
        )

    def as_dict(self) -> dict:
        return {
            "format": CACHE_FORMAT,
            "role": self.role,
            "arch": self.arch.as_dict(),
            "train": self.train.key_fields(),
            "seed": self.seed,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "data_fingerprint": self.data_fingerprint,
            "trained_on": self.trained_on,
            **({"training_data": json.loads(self.provenance)} if self.provenance else {}),
        }

    @property
    def key(self) -> str:
        return spec_key(self.as_dict())

    def build(self) -> Judge:
        return build_model(self.arch, self.input_shape, self.n_classes)


def spec_key(spec: dict) -> str:
    """A cache key: the hash of a spec's canonical JSON."""
    canonical = json.dumps(spec, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:20]


def trained_on(device: str) -> str:
    """What a model trained now on `device` is trained on: `cuda`, or `cpu/<torch's thread count now>`."""
    return "cuda" if str(device).startswith("cuda") else f"cpu/{torch.get_num_threads()}"


@dataclass(frozen=True)
class CachedModel:
    model: Judge
    key: str
    cache_hit: bool
    train_accuracy: float
    train_seconds: float | None = None
    """How long training it took (kept in the cache beside it); None for an entry stored before that was kept."""


class Built(NamedTuple):
    module: nn.Module
    cache_hit: bool
    figure: float
    """The training figure `CacheSpec.figure` names."""
    train_seconds: float | None
    """Wall-clock seconds its training took, when it was trained (now, or when the cache entry was stored)."""


class CorruptCacheEntry(Exception):
    pass


def get_or_train(spec: ModelSpec, pool: Pool, cache_dir: str | Path, device: str = "cpu") -> CachedModel:
    built = get_or_build(spec, lambda: train(spec, pool, device), cache_dir, device)
    return CachedModel(built.module, spec.key, built.cache_hit, built.figure, built.train_seconds)


class CacheSpec(Protocol):
    """What the cache needs of anything it stores (a judge's `ModelSpec`, the similarity encoder's spec): a name
    for the logs, everything that determines the trained module (`as_dict`, stored in `meta.json` and checked on
    load) and its hash (`key`), an untrained module of the same shape to load weights into (`build`), and the name
    of the training figure kept beside it (`figure`)."""

    role: str
    figure: str

    @property
    def key(self) -> str: ...

    def as_dict(self) -> dict: ...

    def build(self) -> nn.Module: ...


def get_or_build(
    spec: CacheSpec, train_it: Callable[[], tuple[nn.Module, float]], cache_dir: str | Path, device: str = "cpu"
) -> Built:
    """The module `spec` stands for, loaded from `cache_dir`, or trained by `train_it` (-> the module and its figure)
    and stored, as the module docstring says."""
    entry = Path(cache_dir) / "models" / spec.key
    if entry.is_dir():  # lock-free: an entry only ever appears complete, by an atomic rename
        try:
            return _hit(entry, spec, device)
        except CorruptCacheEntry as error:  # or being replaced right now: decide under the lock
            log.debug("%s %s: lock-free load failed (%s)", spec.role, spec.key, error)
    with _key_lock(Path(cache_dir) / "locks" / f"{spec.key}.lock", spec):
        if os.path.lexists(entry):
            try:
                return _hit(entry, spec, device)  # another job stored it while this one waited
            except CorruptCacheEntry as error:
                log.warning("%s %s: corrupt cache entry (%s); retraining", spec.role, spec.key, error)
        else:
            log.info("%s %s: cache miss; training", spec.role, spec.key)
        started = time.perf_counter()
        model, figure = train_it()
        seconds = time.perf_counter() - started
        _store(entry, spec, model, figure, seconds)
    return Built(model.eval(), False, figure, seconds)


def _hit(entry: Path, spec: CacheSpec, device: str) -> Built:
    model, meta = _load(entry, spec)
    log.info("%s %s: cache hit (%s)", spec.role, spec.key, entry)
    seconds = meta.get(TRAIN_SECONDS)
    seconds = float(seconds) if isinstance(seconds, (int, float)) and not isinstance(seconds, bool) else None
    return Built(model.to(device).eval(), True, float(meta[spec.figure]), seconds)


@contextmanager
def _key_lock(path: Path, spec: CacheSpec) -> Iterator[None]:
    """Hold the key's lock; if another job holds it (training the model, most likely), say so and wait."""
    path.parent.mkdir(parents=True, exist_ok=True)
    kind = os.environ.get(LOCK_ENV, "") or "file"
    if kind not in ("file", "soft"):
        raise ValueError(f"{LOCK_ENV}={kind}: allowed: file (the default) or soft")
    lock = (filelock.SoftFileLock if kind == "soft" else filelock.FileLock)(str(path))
    try:
        lock.acquire(timeout=0)
    except filelock.Timeout:
        log.info("%s: waiting for another process training %s (lock %s)", spec.role, spec.key, path)
        started = time.monotonic()
        while True:
            try:
                lock.acquire(timeout=LOCK_LOG_EVERY_S)
                break
            except filelock.Timeout:
                stale = f"; if no process is training it, remove {path}" if kind == "soft" else ""
                log.warning(
                    "%s %s: still waiting for the lock after %.0f s%s",
                    spec.role,
                    spec.key,
                    time.monotonic() - started,
                    stale,
                )
    try:
        yield
    finally:
        lock.release()


def train(spec: ModelSpec, pool: Pool, device: str = "cpu") -> tuple[Judge, float]:
    threads = torch.get_num_threads()
    if spec.trained_on.startswith("cpu/"):
        torch.set_num_threads(int(spec.trained_on.removeprefix("cpu/")))  # the spec's, whoever trains it
    try:
        return _train(spec, pool, device)
    finally:
        torch.set_num_threads(threads)


def _train(spec: ModelSpec, pool: Pool, device: str) -> tuple[Judge, float]:
    torch.manual_seed(spec.seed)
    model = build_model(spec.arch, spec.input_shape, spec.n_classes)
    x = torch.from_numpy(pool.x)
    y = torch.from_numpy(pool.y)
    model.normalize.fit(x)
    Trainer(spec.train, spec.seed, device).fit(model, x, y)
    model.eval()
    train_accuracy = float((predict_labels(model, pool.x, device=device) == pool.y).mean())
    return model, train_accuracy


class Trainer:
    """Adam over shuffled mini-batches (the recipe's), each step minimising what the recipe's objective makes of the
    batch: the per-batch hook robust training plugs into. The natural objective is the recipe gavel always had, to
    the bit (same shuffling stream, same loss)."""

    def __init__(self, recipe: Recipe, seed: int, device: str = "cpu") -> None:
        self.recipe = recipe
        self.seed = int(seed)
        self.device = device

    def fit(self, model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> nn.Module:
        recipe = self.recipe
        model.to(self.device).train()
        optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
        objective = recipe.objective(self.seed)
        generator = torch.Generator().manual_seed(self.seed)
        for _ in range(recipe.epochs):
            for idx in torch.randperm(len(y), generator=generator).split(recipe.batch_size):
                optimizer.zero_grad()
                loss = objective.loss(model, x[idx].to(self.device), y[idx].to(self.device))
                loss.backward()
                optimizer.step()
        return model


@torch.no_grad()
def predict_labels(model: nn.Module, x: np.ndarray, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """The evaluator's view of the judge: direct, uncounted, used for clean accuracy and re-checking success."""
    labels = [
        model(torch.from_numpy(x[i : i + batch_size]).to(device)).argmax(dim=1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64)


def _load(entry: Path, spec: CacheSpec) -> tuple[nn.Module, dict]:
    if not entry.is_dir():
        raise CorruptCacheEntry("not a folder")
    try:
        meta = json.loads((entry / "meta.json").read_text())
        weights = (entry / "model.pt").read_bytes()
    except (OSError, ValueError) as error:
        raise CorruptCacheEntry(f"unreadable: {error}") from error
    if not isinstance(meta, dict):
        raise CorruptCacheEntry(f"meta.json holds {type(meta).__name__}, not an object")
    missing = [key for key in ("spec", "sha256", spec.figure) if key not in meta]
    if missing:
        raise CorruptCacheEntry(f"meta.json lacks {', '.join(missing)}")
    if meta["spec"] != spec.as_dict():
        raise CorruptCacheEntry("meta.json does not match the spec this key stands for")
    if hashlib.sha256(weights).hexdigest() != meta["sha256"]:
        raise CorruptCacheEntry("model.pt does not match its recorded SHA-256")
    figure = meta[spec.figure]
    if isinstance(figure, bool) or not isinstance(figure, (int, float)):
        raise CorruptCacheEntry(f"{spec.figure} is {figure!r}, not a number")
    model = spec.build()
    try:  # from the bytes just checked, not the file again: it may have been replaced since
        state = torch.load(io.BytesIO(weights), map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as error:  # any failure to restore means the entry cannot be trusted
        raise CorruptCacheEntry(f"state dict does not load: {error}") from error
    return model.eval(), meta


TRAIN_SECONDS = "train_seconds"
"""In `meta.json`: how long training the entry's module took."""


def _store(entry: Path, spec: CacheSpec, model: nn.Module, figure: float, seconds: float) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.key}-", dir=entry.parent))
    try:
        state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
        buffer = io.BytesIO()
        torch.save(state, buffer)
        weights = buffer.getvalue()
        meta = {
            "spec": spec.as_dict(),
            "sha256": hashlib.sha256(weights).hexdigest(),
            spec.figure: float(figure),
            TRAIN_SECONDS: float(seconds),
        }
        _write_durably(staging / "model.pt", weights)
        _write_durably(staging / "meta.json", json.dumps(meta, indent=2, sort_keys=True).encode())
        installed = _install(staging, entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    if not installed:
        shutil.rmtree(staging, ignore_errors=True)


def _write_durably(path: Path, data: bytes) -> None:
    with open(path, "wb") as file:
        file.write(data)
        file.flush()
        os.fsync(file.fileno())


def _install(staging: Path, entry: Path) -> bool:
    """Rename the complete `staging` folder to `entry` and say whether it was. Whatever is there (a corrupt
    entry, a file) is first renamed aside and removed after; a complete entry that another writer installs in
    between (possible only without the key's lock) is kept instead."""
    aside = None
    if os.path.lexists(entry):
        aside = entry.with_name(f".{entry.name}-old-{uuid.uuid4().hex}")
        try:
            os.rename(entry, aside)
        except FileNotFoundError:  # another writer set it aside first
            aside = None
    try:
        os.replace(staging, entry)
        return True
    except OSError as error:
        if error.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
        log.debug("%s: another writer stored it first; keeping theirs", entry.name)
        return False
    finally:
        if aside is not None:
            if aside.is_dir() and not aside.is_symlink():
                shutil.rmtree(aside, ignore_errors=True)
            else:
                aside.unlink(missing_ok=True)
