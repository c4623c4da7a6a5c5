"""The universal patch: trained on the attacker's own data only, one patch stuck on every example; white-box it
sends no query and needs open weights, transferred it sends exactly one query per example."""

from __future__ import annotations

import numpy as np
import pytest
from art.attacks.evasion import AdversarialPatchPyTorch
from helpers.accounting import RowCounter, attackable, make_client, make_oracle

from gavel.attacks.base import AttackerKit
from gavel.attacks.transfer.transfer_patch import TransferPatch
from gavel.attacks.white_box.patch import Patch
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError
from gavel.targets.access import AttackerClient
from gavel.targets.training import predict_labels

FAST = {"max_iter": 2}


@pytest.fixture(scope="module")
def setting(digits):
    return digits.data, digits.judge, digits.surrogate, *attackable(digits.judge, digits.data, 60, 20)


@pytest.fixture
def training_spy(monkeypatch):
    """Records what ART's patch training is given and the patch it returns."""
    calls: list[dict] = []
    generate = AdversarialPatchPyTorch.generate

    def spy(self, x, y=None, **kwargs):
        patch, mask = generate(self, x, y=y, **kwargs)
        calls.append({"x": x.copy(), "y": y, "patch": patch.copy()})
        return patch, mask

    monkeypatch.setattr(AdversarialPatchPyTorch, "generate", spy)
    return calls


@pytest.mark.parametrize("cls", [Patch, TransferPatch])
def test_the_patch_is_trained_on_the_attackers_pool_only(setting, training_spy, cls):
    """Proves: training sees the attacker's own pool, once, and not a single evaluation row."""
    data, judge, surrogate, x, y = setting
    weights = "open" if cls is Patch else "hidden"
    client = make_client(judge, data, weights=weights, output="logits")
    cls(**FAST).run(x, y, AttackerKit(client=client, surrogate=surrogate, attacker_data=data.attacker))
    assert len(training_spy) == 1
    trained_on = training_spy[0]["x"]
    np.testing.assert_array_equal(trained_on, data.attacker.x)
    evaluation_rows = {row.tobytes() for row in data.eval.x}
    assert not evaluation_rows & {row.tobytes() for row in trained_on}


def test_a_fixed_patch_is_the_same_sticker_on_every_example(setting, training_spy):
    """Proves: universal and fixed: every example carries the same pixels in the 3x3 square asked for, and
    nothing outside it changes. (ART pastes the patch through a resampling step, so the pasted pixels are a
    smoothed version of the trained patch, not always its exact values.)"""
    data, judge, _, x, y = setting
    client = make_client(judge, data, weights="open", output="logits")
    result = Patch(location=[2, 1], **FAST).run(x, y, AttackerKit(client=client, attacker_data=data.attacker))
    assert training_spy[0]["patch"].shape == (1, 3, 3)
    inside = np.zeros(x.shape[1:], dtype=bool)
    inside[:, 1:4, 2:5] = True
    stuck = result.x_adv[:, inside]
    np.testing.assert_allclose(stuck, np.broadcast_to(stuck[0], stuck.shape), atol=1e-6)
    np.testing.assert_array_equal(result.x_adv[:, ~inside], x[:, ~inside])


def test_a_random_patch_is_the_same_sticker_at_a_seeded_place(setting, training_spy):
    """Proves: with no fixed location each example carries the one trained patch, whole, somewhere; the
    places follow the seed."""
    data, judge, _, x, y = setting
    first, second = [
        Patch(seed=5, **FAST).run(
            x,
            y,
            AttackerKit(client=make_client(judge, data, weights="open", output="logits"), attacker_data=data.attacker),
        )
        for _ in range(2)
    ]
    np.testing.assert_array_equal(first.x_adv, second.x_adv)
    sticker = training_spy[0]["patch"].astype(np.float32)
    places = set()
    for original, patched in zip(x, first.x_adv):
        places.add(_place_of(sticker, original, patched))
    assert None not in places
    assert len(places) > 1


def _place_of(sticker, original, patched):
    """Where `patched` is `original` with `sticker` pasted whole (upper-left corner), or None."""
    side = sticker.shape[-1]
    for top in range(original.shape[1] - side + 1):
        for left in range(original.shape[2] - side + 1):
            expected = original.copy()
            expected[:, top : top + side, left : left + side] = sticker
            if np.allclose(patched, expected, atol=1e-6):
                return top, left
    return None


def test_white_box_patch_sends_no_query(setting):
    """Proves: the white-box patch is crafted on the judge's weights; the Oracle answers nothing."""
    data, judge, _, x, y = setting
    oracle = make_oracle(judge, data, weights="open", output="logits")
    result = Patch(**FAST).run(x, y, AttackerKit(client=AttackerClient(oracle), attacker_data=data.attacker))
    assert oracle.queries_total == 0 and not oracle.ledger
    assert result.queries.tolist() == [0] * len(x)


@pytest.mark.parametrize("output", ["logits", "label"])
def test_transfer_patch_submits_each_example_once(setting, output):
    """Proves: trained on the surrogate, the patched examples cost one query each, counted exactly."""
    data, judge, surrogate, x, y = setting
    oracle = make_oracle(judge, data, output=output, budget=1)
    kit = AttackerKit(client=AttackerClient(oracle), surrogate=surrogate, attacker_data=data.attacker)
    with RowCounter(judge) as counter:
        result = TransferPatch(**FAST).run(x, y, kit)
    assert counter.rows == oracle.queries_total == len(x)
    assert result.queries.tolist() == [1] * len(x)
    fooled = predict_labels(judge, result.x_adv) != y
    np.testing.assert_array_equal(result.queries_to_success == 1, fooled)


def test_patch_needs_open_weights_at_config_time():
    """Proves: a white-box patch against a hidden judge is refused before anything runs."""
    with pytest.raises(ConfigError, match="access.weights=hidden"):
        RunSettings.from_config(compose_config(["attack=patch", "access=hidden_label"]))
    RunSettings.from_config(compose_config(["attack=transfer_patch", "access=hidden_label"]))


def test_a_targeted_sticker_forces_the_target(setting):
    """Proves: a targeted patch turns some verdicts into the target class (not merely into a wrong one)."""
    data, judge, _, x, y = setting
    target = 3
    x, y = x[y != target], y[y != target]
    client = make_client(judge, data, weights="open", output="logits")
    result = Patch(targeted=True, target_class=target, location=[2, 2], max_iter=10).run(
        x, y, AttackerKit(client=client, attacker_data=data.attacker)
    )
    assert (predict_labels(judge, result.x_adv) == target).any()


def test_a_place_art_cannot_hit_exactly_is_refused(setting):
    """Proves: ART centres the patch and rounds: a 3x3 patch at x=0 on an 8x8 image would land half a pixel
    off; the attack says so instead of sticking it elsewhere."""
    data, judge, _, x, y = setting
    with pytest.raises(ValueError, match="attack.location"):
        client = make_client(judge, data, weights="open", output="logits")
        Patch(location=[0, 0], **FAST).run(x, y, AttackerKit(client=client, attacker_data=data.attacker))
