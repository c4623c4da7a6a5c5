"""Model extraction by ART: CopycatCNN (Correia-Silva et al., 2018) and KnockoffNets (Orekondy et al., 2019),
the thieved classifier trained on labels bought through the attacker's client."""

from __future__ import annotations

import numpy as np
import torch
from art.attacks.extraction import CopycatCNN, KnockoffNets
from torch import nn

from gavel.attacks.adapters.art import OracleClassifier, pytorch_estimator
from gavel.attacks.extraction.base import ExtractionSpec, LabellingSession, query_set
from gavel.targets.access import AttackerClient
from gavel.targets.datasets import Pool
from gavel.targets.models import build_model
from gavel.targets.training import ModelConfig


def art_extraction(
    client: AttackerClient, model_config: ModelConfig, spec: ExtractionSpec, pool: Pool, n: int, seed: int, device: str
) -> nn.Module:
    torch.manual_seed(seed)
    model = build_model(model_config.arch, client.input_shape, client.n_classes).to(device)
    model.normalize.fit(torch.from_numpy(pool.x))
    optimizer = torch.optim.Adam(
        model.parameters(), lr=model_config.train.lr, weight_decay=model_config.train.weight_decay
    )
    thieved = pytorch_estimator(model, client.input_shape, client.n_classes, device, optimizer)
    victim = OracleClassifier(LabellingSession(client))
    x = query_set(pool.x, n, seed)
    common = dict(
        batch_size_fit=model_config.train.batch_size,
        batch_size_query=256,
        nb_epochs=model_config.train.epochs,
        nb_stolen=n,
        use_probability=spec.use_probability,
    )
    if spec.method == "copycat":
        CopycatCNN(victim, **common).extract(x, thieved_classifier=thieved)
    else:
        knockoff = KnockoffNets(victim, sampling_strategy=spec.sampling, verbose=False, **common)
        y = np.eye(client.n_classes, dtype=np.float32)[np.resize(pool.y, len(x))]
        knockoff.extract(x, y=y if spec.sampling == "adaptive" else None, thieved_classifier=thieved)
    return model
