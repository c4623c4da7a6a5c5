"""Train a model once and cache it on disk under a key that hashes everything that determines it.

A cache entry is a folder `<cache_dir>/models/<key>/` holding `model.pt` (a plain state dict, loaded with
`weights_only=True`) and `meta.json` (the spec and the SHA-256 of `model.pt`). Entries are written to a
temporary folder and renamed into place, so a crash never leaves a half-written entry under its key; an
entry that fails any check on load is reported and retrained.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from targets.datasets import Pool
from targets.models import Architecture, Judge, build_model

log = logging.getLogger(__name__)

CACHE_FORMAT = 1


@dataclass(frozen=True)
class Recipe:
    """How a model is trained (`target.train`, `surrogate.train`): Adam over shuffled mini-batches."""

    epochs: int
    batch_size: int
    lr: float
    weight_decay: float = 0.0


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

    @classmethod
    def of(cls, role: str, model: ModelConfig, seed: int, pool: Pool, input_shape, n_classes: int) -> ModelSpec:
        return cls(
            role=role,
            arch=model.arch,
            train=model.train,
            seed=int(seed),
            input_shape=tuple(int(d) for d in input_shape),
            n_classes=int(n_classes),
            data_fingerprint=pool.fingerprint(),
        )

    def as_dict(self) -> dict:
        return {
            "format": CACHE_FORMAT,
            "role": self.role,
            "arch": self.arch.as_dict(),
            "train": dataclasses.asdict(self.train),
            "seed": self.seed,
            "input_shape": list(self.input_shape),
            "n_classes": self.n_classes,
            "data_fingerprint": self.data_fingerprint,
        }

    @property
    def key(self) -> str:
        canonical = json.dumps(self.as_dict(), sort_keys=True, separators=(",", ":"))
        return hashlib.sha256(canonical.encode()).hexdigest()[:20]


@dataclass(frozen=True)
class CachedModel:
    model: Judge
    key: str
    cache_hit: bool
    train_accuracy: float


class CorruptCacheEntry(Exception):
    pass


def get_or_train(spec: ModelSpec, pool: Pool, cache_dir: str | Path, device: str = "cpu") -> CachedModel:
    entry = Path(cache_dir) / "models" / spec.key
    if entry.exists():
        try:
            model, meta = _load(entry, spec)
            log.info("%s %s: cache hit (%s)", spec.role, spec.key, entry)
            return CachedModel(model.to(device).eval(), spec.key, True, meta["train_accuracy"])
        except CorruptCacheEntry as error:
            log.warning("%s %s: corrupt cache entry (%s); retraining", spec.role, spec.key, error)
    else:
        log.info("%s %s: cache miss; training", spec.role, spec.key)
    model, train_accuracy = train(spec, pool, device)
    _store(entry, spec, model, train_accuracy)
    return CachedModel(model.eval(), spec.key, False, train_accuracy)


def train(spec: ModelSpec, pool: Pool, device: str = "cpu") -> tuple[Judge, float]:
    torch.manual_seed(spec.seed)
    model = build_model(spec.arch, spec.input_shape, spec.n_classes)
    x = torch.from_numpy(pool.x)
    y = torch.from_numpy(pool.y)
    model.normalize.fit(x)
    model.to(device).train()
    recipe = spec.train
    optimizer = torch.optim.Adam(model.parameters(), lr=recipe.lr, weight_decay=recipe.weight_decay)
    loss_fn = nn.CrossEntropyLoss()
    generator = torch.Generator().manual_seed(spec.seed)
    for _ in range(recipe.epochs):
        for idx in torch.randperm(len(y), generator=generator).split(recipe.batch_size):
            optimizer.zero_grad()
            loss = loss_fn(model(x[idx].to(device)), y[idx].to(device))
            loss.backward()
            optimizer.step()
    model.eval()
    train_accuracy = float((predict_labels(model, pool.x, device=device) == pool.y).mean())
    return model, train_accuracy


@torch.no_grad()
def predict_labels(model: nn.Module, x: np.ndarray, batch_size: int = 512, device: str = "cpu") -> np.ndarray:
    """The evaluator's view of the judge: direct, uncounted, used for clean accuracy and re-checking success."""
    labels = [
        model(torch.from_numpy(x[i : i + batch_size]).to(device)).argmax(dim=1).cpu()
        for i in range(0, len(x), batch_size)
    ]
    return torch.cat(labels).numpy() if labels else np.zeros(0, dtype=np.int64)


def _load(entry: Path, spec: ModelSpec) -> tuple[Judge, dict]:
    try:
        meta = json.loads((entry / "meta.json").read_text())
        weights = (entry / "model.pt").read_bytes()
    except (OSError, ValueError) as error:
        raise CorruptCacheEntry(f"unreadable: {error}") from error
    if meta.get("spec") != spec.as_dict():
        raise CorruptCacheEntry("meta.json does not match the spec this key stands for")
    if hashlib.sha256(weights).hexdigest() != meta.get("sha256"):
        raise CorruptCacheEntry("model.pt does not match its recorded SHA-256")
    model = build_model(spec.arch, spec.input_shape, spec.n_classes)
    try:
        state = torch.load(entry / "model.pt", map_location="cpu", weights_only=True)
        model.load_state_dict(state, strict=True)
    except Exception as error:  # any failure to restore means the entry cannot be trusted
        raise CorruptCacheEntry(f"state dict does not load: {error}") from error
    return model.eval(), meta


def _store(entry: Path, spec: ModelSpec, model: Judge, train_accuracy: float) -> None:
    entry.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{spec.key}-", dir=entry.parent))
    try:
        state = {name: tensor.detach().cpu() for name, tensor in model.state_dict().items()}
        torch.save(state, staging / "model.pt")
        meta = {
            "spec": spec.as_dict(),
            "sha256": hashlib.sha256((staging / "model.pt").read_bytes()).hexdigest(),
            "train_accuracy": train_accuracy,
        }
        (staging / "meta.json").write_text(json.dumps(meta, indent=2, sort_keys=True))
        if entry.exists():  # a corrupt entry being replaced
            shutil.rmtree(entry)
        os.replace(staging, entry)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
