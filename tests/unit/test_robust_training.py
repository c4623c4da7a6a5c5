"""Robust training through the Trainer's per-batch hook: a naturally trained judge is the one gavel always trained
(its cache key and its weights), an adversarially trained one has a key of its own and resists PGD better, and it
agrees with ART's Madry trainer."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pytest
import torch
from helpers.paired import agree, enough_to_compare, less_success

from gavel.attacks.base import AttackerKit
from gavel.attacks.white_box.pgd import PGD
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError
from gavel.targets.access import AccessPolicy, AttackerClient, Oracle
from gavel.targets.training import ModelSpec, Recipe, get_or_train, predict_labels


def test_a_natural_recipes_key_is_the_key_gavel_always_gave_it():
    """The robust-training settings are left out of a natural recipe's key: the cache holds the same entries."""
    recipe = Recipe(epochs=30, batch_size=64, lr=0.001, weight_decay=0.0)
    assert recipe.key_fields() == {"epochs": 30, "batch_size": 64, "lr": 0.001, "weight_decay": 0.0}
    assert replace(recipe, eps=0.3, steps=3).key_fields() == recipe.key_fields()
    robust = replace(recipe, adversarial="pgd")
    assert robust.key_fields() == {**recipe.key_fields(), "adversarial": "pgd", "eps": 0.1, "steps": 7, "beta": 6.0}
    keys = {json.dumps(replace(robust, **change).key_fields(), sort_keys=True) for change in
            ({}, {"eps": 0.2}, {"steps": 3}, {"adversarial": "trades"}, {"adversarial": "fast"})}  # fmt: skip
    assert len(keys) == 5


def spec(adversarial: str | None, data) -> ModelSpec:
    """The default judge's spec (30 epochs), trained naturally or adversarially at eps 0.1."""
    settings = RunSettings.from_config(compose_config([]))
    model = settings.target_instance.model
    model = replace(model, train=replace(model.train, adversarial=adversarial))
    return ModelSpec.of("judge", model, 0, data.judge, data.input_shape, data.n_classes)


def pgd_fooled(judge, data, n: int = 300, restarts: int = 1, steps: int = 40) -> np.ndarray:
    """Which of the first `n` evaluation examples white-box PGD fools on `judge` (False where the judge is wrong to
    begin with: those are not attacked)."""
    x, y = data.eval.x[:n], data.eval.y[:n]
    right = predict_labels(judge, x) == y
    oracle = Oracle(judge, AccessPolicy("open", "logits", None), input_shape=data.input_shape, n_classes=10)
    client = AttackerClient(oracle)
    attack = PGD(eps=0.1, eps_step=0.01, max_iter=steps, num_random_init=restarts)
    result = attack.run(x[right], y[right], AttackerKit(client=client))
    fooled = np.zeros(n, dtype=bool)
    fooled[np.flatnonzero(right)] = predict_labels(judge, result.x_adv) != y[right]
    return fooled


@pytest.mark.slow
@pytest.mark.parametrize("adversarial", ["pgd", "trades", "fast"])
def test_an_adversarially_trained_judge_resists_pgd_better_than_a_natural_one(digits, adversarial):
    """Same architecture, recipe, seed and epochs; PGD at the training eps on the same examples: the robust judge
    is fooled on significantly fewer (McNemar's test), and its key is its own."""
    data = digits.data
    natural, robust = (get_or_train(spec(a, data), data.judge, digits.cache_dir) for a in (None, adversarial))
    assert natural.key != robust.key
    a, b = pgd_fooled(robust.model, data), pgd_fooled(natural.model, data)
    enough_to_compare(a, b)
    less_success(a, b)
    assert robust.train_seconds is not None and robust.train_seconds > 0


def art_estimator(adversarial: str, data):
    """ART's classifier around the same network as gavel's `adversarial` judge, from the same initial weights (seed
    0), with the recipe's optimizer; and that recipe."""
    from gavel.attacks.adapters.art import pytorch_estimator
    from gavel.targets.models import build_model

    reference = spec(adversarial, data)
    torch.manual_seed(0)
    model = build_model(reference.arch, data.input_shape, 10)
    model.normalize.fit(torch.from_numpy(data.judge.x))
    optimizer = torch.optim.Adam(model.parameters(), lr=reference.train.lr)
    np.random.seed(0)
    return pytorch_estimator(model, data.input_shape, 10, "cpu", optimizer), reference.train


def agrees_with_arts(adversarial: str, theirs: torch.nn.Module, digits) -> None:
    """PGD fools as many of the same examples on gavel's `adversarial` judge as on ART's (McNemar's test both ways),
    and far fewer on either than on the natural judge."""
    data = digits.data
    theirs.eval()
    ours = get_or_train(spec(adversarial, data), data.judge, digits.cache_dir).model
    natural = get_or_train(spec(None, data), data.judge, digits.cache_dir).model
    fooled = {name: pgd_fooled(model, data) for name, model in (("ours", ours), ("art", theirs), ("natural", natural))}
    agree(fooled["ours"], fooled["art"])
    less_success(fooled["ours"], fooled["natural"])
    less_success(fooled["art"], fooled["natural"])


@pytest.mark.slow
def test_gavels_madry_training_agrees_with_arts(digits):
    """ART's AdversarialTrainerMadryPGD as the reference: the same network, initial weights, eps, steps and epochs
    (30: at 10 the robustness of one training run and the next, either implementation's, is still spread wide).
    Measured on the machine this was written on: 33-40 of 300 fooled on ours over seeds 0-2, 36-38 on ART's over
    seeds 0-1."""
    from art.defences.trainer import AdversarialTrainerMadryPGD

    data = digits.data
    estimator, recipe = art_estimator("pgd", data)
    trainer = AdversarialTrainerMadryPGD(
        estimator, nb_epochs=recipe.epochs, batch_size=recipe.batch_size, eps=0.1, eps_step=2.5 * 0.1 / 7,
        max_iter=7, num_random_init=1,
    )  # fmt: skip
    trainer.fit(data.judge.x, data.judge.y)
    agrees_with_arts("pgd", estimator.model, digits)


@pytest.mark.slow
def test_gavels_trades_agrees_with_arts(digits):
    """ART's AdversarialTrainerTRADESPyTorch as the reference, with the same network, initial weights, beta, eps,
    steps and epochs. ART's inner attack is the one it is given (PGD on the cross-entropy, here), ours TRADES' own
    (the KL divergence from a small Gaussian start): the outer loss is the same. Measured on the machine this was
    written on: 38 of 300 fooled on ours, 39 on ART's, 136 on the natural judge. (ART's fast trainer,
    AdversarialTrainerFBFPyTorch, does not fit: it drives SGD's cyclic learning rate up to 0.21, where gavel's
    recipe is Adam at 0.001.)"""
    from art.attacks.evasion import ProjectedGradientDescent
    from art.defences.trainer import AdversarialTrainerTRADESPyTorch

    data = digits.data
    estimator, recipe = art_estimator("trades", data)
    inner = ProjectedGradientDescent(
        estimator, eps=0.1, eps_step=2.5 * 0.1 / 7, max_iter=7, num_random_init=1, verbose=False
    )
    trainer = AdversarialTrainerTRADESPyTorch(estimator, inner, beta=recipe.beta)
    trainer.fit(data.judge.x, data.judge.y, batch_size=recipe.batch_size, nb_epochs=recipe.epochs)
    agrees_with_arts("trades", estimator.model, digits)


def test_adversarial_training_with_an_eps_the_norm_does_not_allow_is_refused():
    for value, says in (("1.5", "target.train.eps=1.5: allowed: a number in (0, 1]"),
                        ("0", "target.train.eps=0: allowed: a number in (0, 1]")):  # fmt: skip
        with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
            RunSettings.from_config(compose_config(["target.train.adversarial=pgd", f"target.train.eps={value}"]))
    with pytest.raises(ConfigError, match="target.train.adversarial='madry': allowed: pgd, trades, fast or null"):
        RunSettings.from_config(compose_config(["target.train.adversarial=madry"]))


def test_the_natural_trainer_trains_the_weights_it_always_trained(tmp_path):
    """The Trainer's natural objective is the loop gavel had before it (the same shuffling stream, the same loss):
    that loop, written out here as it was, trains the same weights, to the bit."""
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.random((64, 1, 4, 4), dtype=np.float32))
    y = torch.from_numpy(rng.integers(0, 3, 64).astype(np.int64))
    from gavel.targets.architectures.mlp import MLP
    from gavel.targets.models import build_model
    from gavel.targets.training import Trainer

    recipe = Recipe(epochs=2, batch_size=16, lr=0.01)
    torch.manual_seed(3)
    ours = build_model(MLP(hidden=(8,)), (1, 4, 4), 3)
    Trainer(recipe, 3).fit(ours, x, y)
    torch.manual_seed(3)
    theirs = build_model(MLP(hidden=(8,)), (1, 4, 4), 3)
    optimizer = torch.optim.Adam(theirs.parameters(), lr=0.01, weight_decay=0.0)
    generator = torch.Generator().manual_seed(3)
    for _ in range(2):
        for idx in torch.randperm(64, generator=generator).split(16):
            optimizer.zero_grad()
            torch.nn.CrossEntropyLoss()(theirs(x[idx]), y[idx]).backward()
            optimizer.step()
    for (name, a), b in zip(ours.state_dict().items(), theirs.state_dict().values()):
        assert torch.equal(a, b), name
