"""The white-box catalogue and the transfer variants: within eps in their norm, fooling the judge on some
examples, no query for white box and exactly one per example for transfer, targeted where supported."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from helpers.accounting import RowCounter, attackable, make_client, make_oracle

from gavel.attacks.base import AttackerKit, distances
from gavel.attacks.transfer.transfer_difgsm import DiverseMomentumPGD, InputDiversity, TransferDIFGSM
from gavel.attacks.transfer.transfer_mifgsm import MomentumPGD, TransferMIFGSM
from gavel.attacks.transfer.transfer_patch import TransferPatch
from gavel.attacks.transfer.transfer_pgd import TransferPGD
from gavel.attacks.white_box.autoattack import AutoAttack
from gavel.attacks.white_box.base import ADAPTIVE, WhiteBoxAttack
from gavel.attacks.white_box.carlini_wagner_l2 import CarliniWagnerL2
from gavel.attacks.white_box.deepfool import DeepFool
from gavel.attacks.white_box.fgsm import FGSM
from gavel.attacks.white_box.patch import Patch
from gavel.attacks.white_box.pgd import PGD
from gavel.attacks.white_box.pgd_l2 import PGDL2
from gavel.targets import access
from gavel.targets.access import AttackerClient
from gavel.targets.training import predict_labels

# Each attack at its yaml defaults but eps, so a broken attack (one that returns the originals) fails here.
WHITE_BOX = {
    "fgsm": lambda **kw: FGSM(eps=0.2, **kw),
    "pgd_l2": lambda **kw: PGDL2(eps=1.0, **kw),
    "carlini_wagner_l2": lambda **kw: CarliniWagnerL2(eps=1.0, **kw),
    "deepfool": lambda **kw: DeepFool(eps=1.0, **kw),
    "autoattack": lambda **kw: AutoAttack(eps=0.2, **kw),
}
TRANSFER = {
    "transfer_mifgsm": lambda **kw: TransferMIFGSM(eps=0.2, **kw),
    "transfer_difgsm": lambda **kw: TransferDIFGSM(eps=0.2, **kw),
}
TARGET = 3


@pytest.fixture(scope="module")
def judge_and_data(digits):
    return digits.judge, digits.data, *attackable(digits.judge, digits.data, 40, 10)


def check_in_ball(attack, x_adv: np.ndarray, x: np.ndarray) -> None:
    assert x_adv.dtype == np.float32 and x_adv.shape == x.shape
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    assert distances(x_adv, x, attack.norm).max() <= attack.eps + 1e-5


@pytest.mark.parametrize("name", sorted(WHITE_BOX))
def test_white_box_attacks_fool_within_eps_without_a_query(judge_and_data, name):
    judge, data, x, y = judge_and_data
    attack = WHITE_BOX[name]()
    oracle = make_oracle(judge, data, weights="open")
    result = attack.run(x, y, AttackerKit(client=AttackerClient(oracle)))
    check_in_ball(attack, result.x_adv, x)
    assert oracle.queries_total == 0 and not oracle.ledger
    assert result.queries.tolist() == [0] * len(x) and not result.budget_exhausted.any()
    assert attack.goal.fooled(predict_labels(judge, result.x_adv), y).any()


@pytest.mark.parametrize("name", sorted(TRANSFER))
@pytest.mark.parametrize("output", ["label", "probabilities"])
def test_transfer_variants_submit_each_example_once(judge_and_data, name, output):
    judge, data, x, y = judge_and_data
    attack = TRANSFER[name]()
    oracle = make_oracle(judge, data, output=output, budget=1)
    with RowCounter(judge) as counter:
        result = attack.run(x, y, AttackerKit(client=AttackerClient(oracle), surrogate=copy.deepcopy(judge)))
    assert counter.rows == oracle.queries_total == len(x)
    assert result.queries.tolist() == [1] * len(x)
    check_in_ball(attack, result.x_adv, x)
    # the surrogate is the judge's twin here, so the transfer must land somewhere and be seen doing so
    fooled = attack.goal.fooled(predict_labels(judge, result.x_adv), y)
    assert fooled.any()
    assert np.array_equal(result.queries_to_success == 1, fooled)


@pytest.mark.parametrize("name", ["fgsm", "pgd_l2", "carlini_wagner_l2", "transfer_mifgsm"])
def test_targeted_mode_forces_the_target_verdict(judge_and_data, name):
    judge, data, x, y = judge_and_data
    keep = y != TARGET
    x, y = x[keep], y[keep]
    attack = {**WHITE_BOX, **TRANSFER}[name](targeted=True, target_class=TARGET)
    weights = "open" if attack.threat_model == access.WHITE_BOX else "hidden"
    kit = AttackerKit(client=make_client(judge, data, weights=weights), surrogate=copy.deepcopy(judge))
    result = attack.run(x, y, kit)
    check_in_ball(attack, result.x_adv, x)
    assert (predict_labels(judge, result.x_adv) == TARGET).any()


@pytest.mark.parametrize("name", ["deepfool", "autoattack"])
def test_untargeted_only_attacks_refuse_a_target(name):
    with pytest.raises(ValueError, match="no targeted mode"):
        WHITE_BOX[name](targeted=True, target_class=TARGET)


@pytest.mark.parametrize("make", [DeepFool, CarliniWagnerL2], ids=["deepfool", "carlini_wagner_l2"])
def test_min_norm_attacks_are_projected_onto_the_ball(judge_and_data, make):
    """DeepFool and C&W have no eps of their own: with a tiny eps what they find is scaled back onto the ball
    with a huge one it is kept as found (and does)."""
    judge, data, x, y = judge_and_data
    kit = AttackerKit(client=make_client(judge, data, weights="open"))
    tight = make(eps=0.05).run(x, y, kit).x_adv
    radius = distances(tight, x, "2")
    # on the surface, but where clipping into [0, 1] takes a little off
    assert radius.max() <= 0.05 + 1e-5 and np.median(radius) == pytest.approx(0.05, rel=1e-3)
    loose = make(eps=100.0).run(x, y, kit).x_adv
    assert (predict_labels(judge, loose) != y).all()
    assert distances(loose, x, "2").max() < 3.0


def test_input_diversity_is_seeded_and_differentiable(judge_and_data):
    judge, data, x, y = judge_and_data
    kit = AttackerKit(client=make_client(judge, data), surrogate=copy.deepcopy(judge))
    runs = [TransferDIFGSM(eps=0.1, seed=s).run(x, y, kit).x_adv for s in (0, 0, 1)]
    np.testing.assert_array_equal(runs[0], runs[1])
    assert not np.array_equal(runs[0], runs[2])
    inputs = torch.from_numpy(x).requires_grad_()
    always = InputDiversity(judge, prob=1.0, resize_ratio=1.25)
    always(inputs).sum().backward()
    assert inputs.grad.abs().sum() > 0
    never = InputDiversity(judge, prob=0.0, resize_ratio=1.25)
    torch.testing.assert_close(never(inputs), judge(inputs))


def test_momentum_is_art_only():
    with pytest.raises(ValueError, match="attack.backend"):
        TransferMIFGSM(eps=0.1, backend="foolbox")


@pytest.mark.parametrize(
    "transfer, crafter",
    [(TransferPGD, PGD), (TransferMIFGSM, MomentumPGD), (TransferDIFGSM, DiverseMomentumPGD), (TransferPatch, Patch)],
    ids=lambda cls: cls.__name__,
)
def test_a_transfer_attack_composes_its_white_box_crafter(transfer, crafter):
    """A transfer attack is not a white-box attack: it holds one, built from its own hyperparameters."""
    assert transfer.crafter_class is crafter and not issubclass(transfer, WhiteBoxAttack)
    assert transfer.threat_model == access.TRANSFER and crafter.threat_model == access.WHITE_BOX
    # less BPDA and EOT: the crafter runs on the attacker's own surrogate, with no defense to adapt to
    assert set(crafter.parameters()) - set(ADAPTIVE) <= set(transfer.parameters())
    assert not set(ADAPTIVE) & set(transfer.parameters())
    assert transfer.norm == crafter.norm and transfer.supports_targeted == crafter.supports_targeted
    attack = transfer(eps=0.2, max_iter=3, seed=4)
    assert type(attack.crafter) is crafter
    assert (attack.crafter.eps, attack.crafter.max_iter, attack.crafter.seed) == (0.2, 3, 4)
    assert attack.goal == attack.crafter.goal
