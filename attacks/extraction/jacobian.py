"""Model extraction by Jacobian-based dataset augmentation (Papernot et al., 2017; no library has it)."""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn

from gavel.attacks.extraction.base import ExtractionSpec, LabellingSession
from gavel.targets.access import AttackerClient
from gavel.targets.datasets import Pool
from gavel.targets.training import ModelConfig, ModelSpec, train


def jacobian_augmentation(
    client: AttackerClient, model_config: ModelConfig, spec: ExtractionSpec, pool: Pool, n: int, seed: int, device: str
) -> nn.Module:
    """Papernot et al. (2017): label a small seed set, train, then grow the set along the sign of the
    surrogate's Jacobian for each input's label (step lambda, its sign flipped every `tau` rounds), label
    the new inputs, retrain; until the labels the attacker can buy run out."""
    labeller = LabellingSession(client)
    rng = np.random.default_rng(seed)
    new = pool.x[rng.permutation(len(pool))[: min(spec.seed_size, n)]]
    x_all = np.zeros((0, *client.input_shape), dtype=np.float32)
    y_all = np.zeros(0, dtype=np.int64)
    model = None
    for round_ in range(math.ceil(math.log2(max(n, 2))) + 1):
        new = new[: n - len(y_all)]
        if not len(new):
            break
        x_all = np.concatenate([x_all, new])
        y_all = np.concatenate([y_all, labeller.labels(new)])
        model_spec = ModelSpec.of(
            "surrogate", model_config, seed, Pool(x_all, y_all), client.input_shape, client.n_classes, device
        )
        model, _ = train(model_spec, Pool(x_all, y_all), device)
        step = spec.step * (-1) ** (round_ // spec.tau)
        new = np.clip(x_all + step * _jacobian_sign(model, x_all, y_all, device), 0, 1).astype(np.float32)
    return model


def _jacobian_sign(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str) -> np.ndarray:
    """sign(d logit_y / d x) for each input and its label."""
    inputs = torch.from_numpy(x).to(device).requires_grad_(True)
    logits = model(inputs)
    logits.gather(1, torch.from_numpy(y).to(device)[:, None]).sum().backward()
    return inputs.grad.sign().cpu().numpy()
