"""The panel's vote on hand-made members: majority and mean probabilities give the verdicts their arithmetic says,
gradients flow through the mean and are declared absent from the majority, and the Oracle charges a panel one query
per row, whatever its size."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gavel.targets.access import AccessPolicy, Oracle
from gavel.targets.architectures.cnn import SmallCNN
from gavel.targets.judges.panel import NO_VOTE_SHARE, Panel, PanelJudge, seat_seed
from gavel.targets.judges.trained import TrainedJudge
from gavel.targets.params import SEED_MAX, BadValue
from gavel.targets.training import Recipe


class Fixed(nn.Module):
    """A member whose probabilities are `probabilities` for every row (log of them as its logits)."""

    def __init__(self, *probabilities: float) -> None:
        super().__init__()
        self.register_buffer("logits", torch.tensor(probabilities).log())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


class Linear(nn.Module):
    """A differentiable member: a linear map of the flattened input."""

    def __init__(self, seed: int, n_classes: int = 3) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(16, n_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


X = torch.rand(4, 1, 4, 4)
SURE_OF_0 = (0.98, 0.01, 0.01)
LEANS_TO_1 = (0.3, 0.4, 0.3)
LEANS_TO_2 = (0.3, 0.3, 0.4)


def verdicts(panel: Panel) -> list[int]:
    return panel(X).argmax(dim=1).tolist()


def test_majority_follows_the_votes_where_the_mean_follows_the_confident_member():
    members = [Fixed(*SURE_OF_0), Fixed(*LEANS_TO_1), Fixed(*LEANS_TO_1)]
    assert verdicts(Panel(members, "majority")) == [1] * 4
    assert verdicts(Panel(members, "mean_probabilities")) == [0] * 4


def test_majority_serves_vote_shares_as_probabilities():
    members = [Fixed(*SURE_OF_0), Fixed(*LEANS_TO_1), Fixed(*LEANS_TO_1)]
    shares = torch.softmax(Panel(members, "majority")(X), dim=1)
    expected = torch.tensor([1 / 3, 2 / 3, NO_VOTE_SHARE])
    assert torch.allclose(shares, (expected / expected.sum()).expand(4, -1), atol=1e-6)


@pytest.mark.parametrize(
    "members, winner",
    [
        ([SURE_OF_0, LEANS_TO_1], 0),  # one vote each: the tie goes to the higher mean probability
        ([(0.45, 0.55, 0.0001), (0.9, 0.05, 0.05)], 0),
        ([(0.05, 0.9, 0.05), (0.55, 0.45, 0.0001)], 1),
        ([LEANS_TO_1, LEANS_TO_2, SURE_OF_0, SURE_OF_0, LEANS_TO_1], 0),  # 2 against 2 against 1
    ],
)
def test_a_tie_goes_to_the_tied_class_of_highest_mean_probability(members, winner):
    panel = Panel([Fixed(*p) for p in members], "majority")
    assert verdicts(panel) == [winner] * 4


def test_a_class_outside_the_tie_never_wins_it_however_probable():
    # classes 1 and 2 have one vote each; class 0 none, though its mean probability is the highest
    members = [Fixed(0.49, 0.5, 0.01), Fixed(0.48, 0.01, 0.51)]
    assert verdicts(Panel(members, "majority")) == [2] * 4


def test_mean_probabilities_is_the_log_of_the_members_mean_and_passes_gradients():
    members = [Linear(seed) for seed in range(3)]
    panel = Panel(members, "mean_probabilities")
    x = X.clone().requires_grad_(True)
    out = panel(x)
    mean = torch.stack([torch.softmax(m(x), dim=1) for m in members]).mean(dim=0)
    assert torch.allclose(torch.softmax(out, dim=1), mean, atol=1e-6)
    assert torch.allclose(out.exp().sum(dim=1), torch.ones(4), atol=1e-6)
    torch.nn.functional.cross_entropy(out, torch.tensor([0, 1, 2, 0])).backward()
    assert x.grad is not None and torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0


def test_majority_offers_no_gradient_and_says_so():
    members = [Linear(seed) for seed in range(3)]
    out = Panel(members, "majority")(X.clone().requires_grad_(True))
    assert not out.requires_grad
    cnn = TrainedJudge(arch=SmallCNN(), train=Recipe(epochs=1, batch_size=8, lr=0.01))
    assert PanelJudge(members=3, vote="majority", judges={"cnn": cnn}).capabilities.gradients is False
    mean = PanelJudge(members=3, vote="mean_probabilities", judges={"cnn": cnn}).capabilities
    assert mean.gradients and mean.scores


def test_a_panel_of_one_gives_its_member_verdicts_and_probabilities():
    member = Linear(0)
    for vote in ("mean_probabilities", "majority"):
        assert verdicts(Panel([member], vote)) == member(X).argmax(dim=1).tolist()
    assert torch.allclose(
        torch.softmax(Panel([member], "mean_probabilities")(X), dim=1), torch.softmax(member(X), dim=1), atol=1e-6
    )


@pytest.mark.parametrize("vote", ["mean_probabilities", "majority"])
@pytest.mark.parametrize("output", ["logits", "probabilities", "label"])
def test_the_oracle_charges_a_panel_one_query_per_row(vote, output):
    panel = Panel([Linear(seed) for seed in range(5)], vote)
    oracle = Oracle(panel, AccessPolicy("hidden", output, 10), input_shape=(1, 4, 4), n_classes=3)
    oracle.plan(2)
    rows = np.random.default_rng(0).random((7, 1, 4, 4), dtype=np.float32)
    answers = oracle.query(rows, example=0)
    oracle.query(rows[:2], example=1)
    assert oracle.queries(0) == 7 and oracle.queries(1) == 2 and oracle.queries_total == 9
    expected = panel(torch.from_numpy(rows)).argmax(dim=1).numpy()
    assert (np.asarray(answers).reshape(7, -1).argmax(axis=1) if output != "label" else answers).tolist() == (
        expected.tolist()
    )


def test_each_seat_has_its_own_seed_and_seat_0_the_runs():
    assert seat_seed(17, 0) == 17
    seeds = [seat_seed(17, seat) for seat in range(50)]
    assert len(set(seeds)) == 50 and all(0 <= s <= SEED_MAX for s in seeds)
    assert seat_seed(SEED_MAX, 3) <= SEED_MAX


def test_a_panel_with_no_judge_to_seat_is_refused_naming_the_key():
    with pytest.raises(BadValue, match=r"^judges=\{\}: allowed: one judge or more"):
        PanelJudge(members=3, judges={})


def test_robust_training_reaches_every_member_and_names_the_run():
    fast = TrainedJudge(arch=SmallCNN(), train=Recipe(epochs=1, batch_size=8, lr=0.01, adversarial="fast"))
    natural = TrainedJudge(arch=SmallCNN(), train=Recipe(epochs=1, batch_size=8, lr=0.01))
    assert PanelJudge(members=3, judges={"cnn": fast}).adversarial == "fast"
    assert PanelJudge(members=2, judges={"a": natural, "b": fast}).adversarial == "fast"
    assert PanelJudge(members=1, judges={"a": natural, "b": fast}).adversarial is None
