"""Sanity checks on every run: is the number the attack reports one a reviewer can trust?

RobustBench/AutoAttack check a model before they trust a robustness figure (`check_zero_gradients`,
`check_randomized`), and Carlini et al. (2019, "On Evaluating Adversarial Robustness") and Pintor et al. (2022,
"Indicators of Attack Failure") list failures a tool can see on its own. gavel runs them on the operator's side
(the served model, nothing charged to the attacker) after each attack, and logs each as a tag
`gavel.check.<name>` = pass | warn, with what it saw in plain words (`gavel.check.<name>.detail`). A check that
does not apply to a run (a gradient check on a query attack) is left out, never logged as a pass.

The check that compares runs (a black-box or transfer attack beating the white-box one on the same examples) is
the report's (`reports/checks.py`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from gavel.attacks.adapters.art import pytorch_estimator
from gavel.attacks.base import Attack, AttackerKit, AttackResult
from gavel.attacks.white_box.base import WhiteBoxAttack
from gavel.targets.access import SCORE_BASED, WHITE_BOX
from gavel.targets.access.preprocessing import masks_gradients

PASS, WARN = "pass", "warn"

SAMPLE = 50
"""Examples the gradient, randomness and loss checks look at (the first of those attacked)."""
LADDER_SAMPLE = 10
"""Examples the eps ladder re-attacks at each of its larger radii."""
LADDER_TOP_SUCCESS = 0.9
"""Success the attack must reach at the top of its eps ladder (the whole input range, where any input is reachable)."""
LOSS_PROGRESS = 0.01
"""The share by which the attack must lower the mean margin of the examples it did not fool."""


@dataclass(frozen=True)
class Check:
    name: str
    passed: bool
    detail: str

    @property
    def value(self) -> str:
        return PASS if self.passed else WARN


def margins(
    model: nn.Module, x: np.ndarray, y: np.ndarray, device: str, target: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The attacker's loss as a margin, lower is closer to fooling: the true class's logit less the best other
    class's (targeted: the best non-target class's less the target's); and the inputs, a leaf tensor it is
    differentiable in."""
    inputs = torch.as_tensor(x, device=device).requires_grad_(True)
    logits = model(inputs).float()
    goal = (
        torch.as_tensor(y, device=device, dtype=torch.long)
        if target is None
        else torch.full((len(x),), target, device=device, dtype=torch.long)
    )
    chosen = logits.gather(1, goal[:, None])[:, 0]
    best_other = logits.scatter(1, goal[:, None], -math.inf).max(dim=1).values
    return (chosen - best_other if target is None else best_other - chosen), inputs


def zero_gradients(model: nn.Module, x: np.ndarray, y: np.ndarray, device: str, target: int | None) -> Check:
    """AutoAttack's `check_zero_gradients`: an input whose gradient is all zero (or not finite) leaves a gradient
    attack blind there; a non-differentiable defense does that (a quantiser's gradient is zero almost everywhere)."""
    margin, inputs = margins(model, x, y, device, target)
    (grad,) = torch.autograd.grad(margin.sum(), inputs)
    flat = grad.reshape(len(x), -1)
    bad = ~torch.isfinite(flat).all(dim=1) | (flat.abs().sum(dim=1) == 0)
    n = int(bad.sum())
    if n == 0:
        return Check(
            "zero_gradients",
            True,
            f"the attacked model's input gradients are non-zero and finite on all {len(x)} examples checked",
        )
    return Check(
        "zero_gradients",
        False,
        f"{n} of {len(x)} examples have zero or non-finite input gradients on the model the attack differentiates: a "
        "gradient attack is blind there (gradient masking); try attack.bpda=true or a black-box attack",
    )


def randomised_without_eot(served: nn.Module, x: np.ndarray, device: str, eot_samples: int) -> Check:
    """AutoAttack's `check_randomized`: two answers to the same input differ, and the attack did not average."""
    with torch.no_grad():
        inputs = torch.as_tensor(x, device=device)
        first, second = served(inputs), served(inputs)
    randomised = not torch.equal(first, second)
    if not randomised:
        return Check("randomised_without_eot", True, "the served model answers the same input the same way")
    if eot_samples > 1:
        return Check(
            "randomised_without_eot",
            True,
            f"the served model is randomised; the attack averaged {eot_samples} draws (EOT)",
        )
    return Check(
        "randomised_without_eot",
        False,
        "the served model is randomised (two answers to the same input differ) and the attack did not average over "
        "its randomness: its gradients or scores are one noisy draw; try attack.eot_samples=10",
    )


def preprocessing_without_bpda(served: nn.Module, bpda: bool) -> Check:
    if not masks_gradients(served):
        return Check("preprocessing_without_bpda", True, "no non-differentiable preprocessing in front of the judge")
    if bpda:
        return Check(
            "preprocessing_without_bpda", True, "a non-differentiable preprocessing defense, attacked with BPDA"
        )
    return Check(
        "preprocessing_without_bpda",
        False,
        "a non-differentiable preprocessing defense (JPEG, bit-depth, smoothing) was attacked through its own "
        "gradients: the figure measures gradient masking; try attack.bpda=true",
    )


def loss_not_decreasing(
    model: nn.Module,
    x: np.ndarray,
    x_adv: np.ndarray,
    y: np.ndarray,
    missed: np.ndarray,
    device: str,
    target: int | None,
    progress: float = LOSS_PROGRESS,
) -> Check | None:
    """Pintor et al.'s non-converging attack, from the ends of the optimisation: on the examples it did not fool
    (`missed`: those it had every chance on), the attack should have moved the mean margin down by `progress` of it.
    None where it fooled every example it had every chance on."""
    if not missed.any():
        return None
    with torch.no_grad():
        start = margins(model, x[missed], y[missed], device, target)[0].detach()
        end = margins(model, x_adv[missed], y[missed], device, target)[0].detach()
    before, after = float(start.mean()), float(end.mean())
    n = int(missed.sum())
    if before > 0 and after < before * (1 - progress):
        fell = f"on the {n} examples not fooled, the mean margin fell from {before:.3g} to {after:.3g}"
        return Check("loss_not_decreasing", True, fell)
    return Check(
        "loss_not_decreasing",
        False,
        f"on the {n} examples the attack did not fool, the mean margin went from {before:.3g} to {after:.3g} "
        f"({f'less than {progress:.0%} lower' if progress else 'no lower'}): the attack made no progress; more "
        "iterations, a larger step, a different "
        "loss, or (behind an output filter that hides the scores) a decision-based attack",
    )


def ladder_radii(attack: Attack, input_size: int) -> list[float]:
    """Larger radii than the run's, up to the whole input range (L-inf 1, L2 the cube's diagonal)."""
    top = 1.0 if attack.norm == "inf" else math.sqrt(input_size)
    return sorted(radius for radius in {min(top, attack.eps * 4), top} if radius > attack.eps)


def eps_ladder(
    attack: WhiteBoxAttack, params: dict, radii: list[float], estimator_for, served: nn.Module, x, y, kit, device
) -> Check:
    """Carlini et al.: an attack whose success does not approach 1 as eps grows to the whole input range is
    failing, not measuring robustness. The same attack (its step scaled with eps) on a few examples, at each of
    `radii` (`ladder_radii`)."""
    rates = []
    for eps in radii:
        scaled = dict(params, eps=eps)
        if scaled.get("eps_step") is not None:  # None: the attack sets its own step from eps
            scaled["eps_step"] = params["eps_step"] * eps / attack.eps
        rung = type(attack)(**scaled, seed=attack.seed)
        x_adv = rung.craft(estimator_for(rung), x, y, kit)
        with torch.no_grad():
            verdicts = served(torch.as_tensor(x_adv, device=device)).argmax(dim=1).cpu().numpy()
        rates.append(float(attack.goal.fooled(verdicts, y).mean()))
    shown = ", ".join(f"{rate:.2f} at eps {eps:g}" for eps, rate in zip(radii, rates))
    if rates[-1] >= LADDER_TOP_SUCCESS:
        return Check("eps_ladder", True, f"on {len(x)} examples: {shown}")
    return Check(
        "eps_ladder",
        False,
        f"on {len(x)} examples the attack fools {shown}: it should approach 1 as eps covers the whole input range; "
        "the attack is failing (masked gradients, too few steps), not measuring robustness",
    )


def run_checks(
    attack: Attack,
    params: dict,
    served: nn.Module,
    x: np.ndarray,
    y: np.ndarray,
    result: AttackResult,
    fooled: np.ndarray,
    kit: AttackerKit,
    device: str,
) -> list[Check]:
    """The checks that apply to this run's attack, on the examples it attacked (`x`, `y`, the adversarial inputs in
    `result`, and which it `fooled` as the operator's API judged them)."""
    target = attack.target_class if attack.targeted else None
    sample = slice(0, SAMPLE)
    xs, ys, advs, hits = x[sample], y[sample], result.x_adv[sample], fooled[sample]
    checks: list[Check] = []
    if attack.threat_model == WHITE_BOX and isinstance(attack, WhiteBoxAttack):
        model = attack.attacked_model(served)
        checks.append(zero_gradients(model, xs, ys, device, target))
        checks.append(randomised_without_eot(served, xs, device, attack.eot_samples))
        checks.append(preprocessing_without_bpda(served, attack.bpda))
        checks.append(loss_not_decreasing(model, xs, advs, ys, ~hits, device, target))
        radii = ladder_radii(attack, int(np.prod(x.shape[1:]))) if attack.norm in ("inf", "2") else []
        if radii:  # none: a patch (no norm), or eps already the whole range
            n_classes = int(served(torch.as_tensor(xs[:1], device=device)).shape[1])

            def estimator_for(rung: WhiteBoxAttack):
                return pytorch_estimator(rung.attacked_model(served), x.shape[1:], n_classes, device)

            ladder = slice(0, LADDER_SAMPLE)
            checks.append(eps_ladder(attack, params, radii, estimator_for, served, x[ladder], y[ladder], kit, device))
    elif attack.threat_model == SCORE_BASED:
        # only the examples that spent their whole budget: one a detector cut off, or a small budget, is not a failing
        # attack; any fall at all passes
        spent = result.budget_exhausted[sample]
        checks.append(loss_not_decreasing(served, xs, advs, ys, ~hits & spent, device, target, progress=0.0))
        eot = getattr(attack, "eot_samples", None)
        if eot is not None:
            checks.append(randomised_without_eot(served, xs, device, eot))
    return [check for check in checks if check is not None]
