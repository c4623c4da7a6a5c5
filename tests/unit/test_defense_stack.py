"""A stack of defenses is one shield: transforms, then the model wrapper, then the output filter, then the detector,
whatever the list's order; `defense=[...]` overrides are rewritten into the stack Hydra composes."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gavel.defenses.base import OperatorKit
from gavel.defenses.detection.blacklight import Blacklight
from gavel.defenses.output.labels_only import LabelsOnly
from gavel.defenses.output.rounded import Rounded
from gavel.defenses.preprocessing.bit_depth import BitDepth
from gavel.defenses.preprocessing.jpeg import JpegCompression
from gavel.defenses.randomised.input_noise import InputNoise, NoisyInput
from gavel.defenses.stack import DefenseStack
from gavel.experiments import defense_lists
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError
from gavel.targets.access.preprocessing import Preprocessed

OPERATOR = OperatorKit(None, None, n_classes=3, seed=0)


class Recorder(nn.Module):
    """A judge that keeps the last input it saw."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.seen = x.detach().clone()
        return x.flatten(1)[:, :3]


def test_the_order_is_by_kind_whatever_the_lists_order():
    listed = [("blacklight", Blacklight()), ("labels_only", LabelsOnly()), ("jpeg", JpegCompression(quality=50))]
    stack = DefenseStack(listed)
    assert stack.name == "jpeg+labels_only+blacklight"
    assert [name for name, _ in DefenseStack(list(reversed(listed))).members] == [name for name, _ in stack.members]


def test_transforms_keep_the_lists_order_among_themselves_and_meet_the_input_before_the_noise():
    judge = Recorder()
    stack = DefenseStack(
        [
            ("input_noise", InputNoise(sigma=0.05)),
            ("jpeg", JpegCompression(quality=30)),
            ("bit_depth", BitDepth(bits=1)),
        ]
    )
    assert stack.name == "jpeg+bit_depth+input_noise"
    shield = stack.deploy(judge, OPERATOR)
    outer = shield.model
    assert isinstance(outer, Preprocessed) and isinstance(outer.transform.__class__, type)
    assert isinstance(outer.judge, Preprocessed)  # jpeg outermost, then bit depth
    assert isinstance(outer.judge.judge, NoisyInput) and outer.judge.judge.judge is judge
    x = torch.rand(2, 1, 8, 8)
    shield.model(x)
    squeezed = outer.judge.transform(outer.transform(x))
    noise = judge.seen - squeezed
    assert 0.01 < float(noise.std()) < 0.1  # the judge saw the transformed input plus the wrapper's noise


def test_one_shield_carries_the_filter_and_the_detector_of_its_members():
    judge = Recorder()
    rng = np.random.default_rng(0)
    operator = OperatorKit(rng.random((40, 1, 8, 8), dtype=np.float32), rng.integers(0, 3, 40), n_classes=3, seed=0)
    shield = DefenseStack([("blacklight", Blacklight(on_detection="reject")), ("labels_only", LabelsOnly())]).deploy(
        judge, operator
    )
    assert shield.model is judge
    assert shield.detector is not None and shield.on_detection == "reject"
    probabilities = np.array([[0.2, 0.5, 0.3]], dtype=np.float32)
    assert shield.output_filter(probabilities).tolist() == [[0.0, 1.0, 0.0]]


@pytest.mark.parametrize(
    "members, message",
    [
        ([("rounded", Rounded()), ("labels_only", LabelsOnly())], "both output defenses"),
        ([("a", InputNoise()), ("b", InputNoise())], "both randomised defenses"),
        ([("jpeg", JpegCompression())], "a stack has two or more defenses"),
    ],
)
def test_a_stack_that_cannot_be_one_shield_is_refused(members, message):
    with pytest.raises(ValueError, match=message):
        DefenseStack(members)


def test_a_list_override_becomes_the_stack_with_each_member_at_its_own_package():
    assert defense_lists.expand(["attack=square", "defense=[jpeg,labels_only]", "defense.jpeg.quality=30"]) == [
        "attack=square",
        "defense=_stack",
        "+defense@defense.jpeg=jpeg",
        "+defense@defense.labels_only=labels_only",
        "defense.jpeg.quality=30",
    ]
    assert defense_lists.expand(["defense=[jpeg]"]) == ["defense=jpeg"]
    assert defense_lists.expand(["defense=jpeg"]) == ["defense=jpeg"]
    assert defense_lists.expand(["defense=[jpeg,rounded],none"]) == ["defense=[jpeg,rounded],none"]  # a sweep: later
    with pytest.raises(ConfigError, match=r"^defense=\[jpeg,jpeg\]: jpeg listed twice"):
        defense_lists.expand(["defense=[jpeg,jpeg]"])


def test_each_member_keeps_its_own_defaults_and_keys():
    args = ["attack=square", "access=hidden_probabilities", "defense=[labels_only,jpeg]", "defense.jpeg.quality=30"]
    settings = RunSettings.from_config(compose_config(args))
    assert settings.defense.name == "jpeg+labels_only"
    assert settings.defense.params["jpeg"] == {"quality": 30}
    stack = settings.defense_instance
    assert [type(d) for _, d in stack.members] == [JpegCompression, LabelsOnly]
    assert stack.members[0][1].quality == 30


def test_a_single_defense_composes_as_before():
    """`defense=jpeg` is the same flat node as ever (params, run names and cache keys unchanged)."""
    settings = RunSettings.from_config(compose_config(["defense=jpeg", "defense.quality=30"]))
    assert settings.defense.name == "jpeg" and dict(settings.defense.params) == {"quality": 30}
    assert settings.resolved["defense"] == {
        "_target_": "gavel.defenses.preprocessing.jpeg.JpegCompression",
        "name": "jpeg",
        "quality": 30,
    }
