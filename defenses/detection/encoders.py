"""The feature spaces the kNN detector measures distances in (`defense.encoder`).

- `pixels`: the flattened input; nothing to train, but an attacker's perturbation counts in full;
- `penultimate`: a copy of the judge up to its last Linear layer (after its own normalisation): distances in the
  representation the verdict is read from;
- `similarity`: a small network the operator trains on its own data so that an image and its slightly shifted,
  brightened or noised versions embed close together and different images far apart (Chen, Carlini & Wagner,
  2019, train theirs with a contrastive loss on such pairs; this one uses SimCLR's NT-Xent, Chen et al., 2020).
  Trained once per operator's data, seed, size and what it trains on, and kept in the model cache beside the judges
  (`cache_dir`), so the jobs of a sweep load it rather than train it again.
"""

from __future__ import annotations

import copy
import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from gavel.targets.training import CACHE_FORMAT, get_or_build, spec_key, trained_on

EncoderName = Literal["similarity", "penultimate", "pixels"]

BATCH_ROWS = 1024
"""Rows per forward pass when encoding: bounds memory on the operator's whole benign set."""


class Encoder:
    """A frozen network from inputs in [0, 1] (NCHW) to feature rows [rows, dim], on the operator's device."""

    def __init__(self, net: nn.Module, device: str = "cpu") -> None:
        self.net = net.to(device).eval().requires_grad_(False)
        if any(isinstance(module, nn.Conv2d) for module in self.net.modules()):
            # As the Oracle serves a conv judge: same function, about twice the rows per second on a CPU.
            self.net.to(memory_format=torch.channels_last)
        self.device = device

    @torch.no_grad()
    def __call__(self, x: np.ndarray) -> torch.Tensor:
        x = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32))
        parts = [
            self.net(x[start : start + BATCH_ROWS].to(self.device)).flatten(1).float()
            for start in range(0, max(len(x), 1), BATCH_ROWS)  # an empty call still yields [0, dim]
        ]
        return torch.cat(parts)


def pixels_encoder(device: str = "cpu") -> Encoder:
    return Encoder(nn.Flatten(), device)


class Trunk(Encoder):
    """A copy of `judge` whose last Linear layer is the identity (the features that layer would read), and that
    layer itself, the judge's own (`head`)."""

    def __init__(self, judge: nn.Module, device: str = "cpu") -> None:
        linear = [name for name, module in judge.named_modules() if isinstance(module, nn.Linear)]
        if not linear:
            raise ValueError(
                "defense.encoder=penultimate: the judge has no Linear layer to stop before; "
                "allowed: similarity or pixels"
            )
        trunk = copy.deepcopy(judge)
        parent, _, attribute = linear[-1].rpartition(".")
        setattr(trunk.get_submodule(parent), attribute, nn.Identity())
        super().__init__(trunk, device)
        self.judge = judge
        self.head = judge.get_submodule(linear[-1])

    @torch.no_grad()
    def composes(self, x: np.ndarray) -> bool:
        """Whether the judge's logits of the rows of `x` are its head's output over their features, to float
        rounding: true of a judge whose last Linear layer is its last step (not of one that, say, averages several
        heads or scales their output after it)."""
        if self.judge.training:  # its forward would differ from the trunk's (and update its statistics)
            return False
        device = next(self.head.parameters()).device
        logits = self.judge(torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)).float()
        return bool(torch.allclose(self.head(self(x).to(device)).float(), logits, rtol=1e-4, atol=1e-5))


def penultimate_encoder(judge: nn.Module, device: str = "cpu") -> Trunk:
    """The judge up to its last Linear layer: distances in the representation its verdict is read from."""
    return Trunk(judge, device)


# Training recipe of the similarity encoder: a few seconds on a CPU for 8x8 digits, and a fixed cost (steps, not
# epochs) however large the operator's data set is.
BATCH = 128
LEARNING_RATE = 3e-3
TEMPERATURE = 0.1
MAX_NOISE = 0.1
"""Largest per-pixel uniform noise in a positive: the size of the L-inf perturbations query attacks try."""
ENCODER_VERSION = 1
"""In the model cache's key: raise it whenever `_similarity_net`, `augment` or `nt_xent` change, so that encoders
trained by the old code are not loaded for the new."""


class _UnitNorm(nn.Module):
    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return F.normalize(z, dim=1)


def _similarity_net(channels: int, dim: int) -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(channels, 16, 3, padding=1),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 3, padding=1),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(4),
        nn.Flatten(),
        nn.Linear(32 * 16, dim),
        _UnitNorm(),  # NT-Xent compares directions: distances on the unit sphere
    )


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """A random positive of each image: shifted by up to 1/8 of its side, brightness and contrast changed, noised."""
    n, _, height, width = x.shape

    def uniform(low: float, high: float, *shape: int) -> torch.Tensor:
        return low + (high - low) * torch.rand(*shape, generator=generator, device=x.device)

    shift = uniform(-0.25, 0.25, n, 2)  # in grid coordinates, [-1, 1] across the image: 1/8 of a side
    theta = torch.zeros(n, 2, 3, device=x.device)
    theta[:, 0, 0] = theta[:, 1, 1] = 1.0
    theta[:, :, 2] = shift
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="border", align_corners=False)
    x = x * uniform(0.8, 1.2, n, 1, 1, 1) + uniform(-0.1, 0.1, n, 1, 1, 1)
    x = x + uniform(-1.0, 1.0, *x.shape) * uniform(0.0, MAX_NOISE, n, 1, 1, 1)
    return x.clamp(0.0, 1.0)


def nt_xent(z1: torch.Tensor, z2: torch.Tensor) -> torch.Tensor:
    """Each embedding should pick its own positive out of the batch's 2n - 1 others (unit-norm rows)."""
    n = len(z1)
    z = torch.cat([z1, z2])
    logits = (z @ z.T / TEMPERATURE).fill_diagonal_(-torch.inf)
    positives = torch.cat([torch.arange(n, 2 * n), torch.arange(n)]).to(z.device)
    return F.cross_entropy(logits, positives)


@dataclass(frozen=True)
class SimilaritySpec:
    """Everything that determines a trained similarity encoder: the model cache's key hashes it."""

    channels: int
    dim: int
    steps: int
    seed: int
    data_fingerprint: str
    trained_on: str
    role: ClassVar[str] = "similarity encoder"
    figure: ClassVar[str] = "train_loss"

    @classmethod
    def of(cls, x: np.ndarray, *, dim: int, steps: int, seed: int, device: str) -> SimilaritySpec:
        digest = hashlib.sha256(str(x.shape).encode())
        digest.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        return cls(int(x.shape[1]), int(dim), int(steps), int(seed), digest.hexdigest(), trained_on(device))

    def as_dict(self) -> dict:
        recipe = {
            "version": ENCODER_VERSION,
            "batch": BATCH,
            "lr": LEARNING_RATE,
            "temperature": TEMPERATURE,
            "max_noise": MAX_NOISE,
        }
        return {
            "format": CACHE_FORMAT,
            "role": "similarity_encoder",
            "channels": self.channels,
            "dim": self.dim,
            "steps": self.steps,
            "seed": self.seed,
            "recipe": recipe,
            "data_fingerprint": self.data_fingerprint,
            "trained_on": self.trained_on,
        }

    @property
    def key(self) -> str:
        return spec_key(self.as_dict())

    def build(self) -> nn.Module:
        return _similarity_net(self.channels, self.dim)


def similarity_encoder(
    x: np.ndarray, *, dim: int, steps: int, seed: int, device: str = "cpu", cache_dir: str | Path | None = None
) -> Encoder:
    """The similarity encoder trained on the operator's images `x` for `steps` batches, seeded by `seed`: from the
    model cache in `cache_dir` when it holds it, else trained (and stored there, if given)."""
    if cache_dir is None:
        return Encoder(_train_similarity(x, dim=dim, steps=steps, seed=seed, device=device)[0], device)
    spec = SimilaritySpec.of(x, dim=dim, steps=steps, seed=seed, device=device)
    net = get_or_build(
        spec, lambda: _train_similarity(x, dim=dim, steps=steps, seed=seed, device=device), cache_dir, device
    ).module
    return Encoder(net, device)


def _train_similarity(x: np.ndarray, *, dim: int, steps: int, seed: int, device: str) -> tuple[nn.Module, float]:
    """(the encoder's network trained on `x`, its last batch's loss)."""
    with torch.random.fork_rng(devices=[]):  # the initialisation is seeded without touching the global stream
        torch.manual_seed(seed)
        net = _similarity_net(x.shape[1], dim)
    net.to(device).train()
    generator = torch.Generator(device=device).manual_seed(seed)
    images = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(device)
    batch = min(BATCH, len(images))
    optimizer = torch.optim.Adam(net.parameters(), lr=LEARNING_RATE)
    loss = torch.zeros(())
    for _ in range(steps):
        # Distinct images per batch: a repeated one would be its own negative.
        chosen = images[torch.randperm(len(images), generator=generator, device=device)[:batch]]
        loss = nt_xent(net(augment(chosen, generator)), net(augment(chosen, generator)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return net.eval(), float(loss.detach())
