"""Preprocessing defenses and the adaptive white-box attacker: each transform computes what ART's preprocessor
computes; the BPDA view answers exactly as the served model does and passes the judge's gradient through; EOT
averages a randomised model's draws; and the served model is never changed by the attacker's view of it."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from gavel.attacks.white_box.base import Expectation
from gavel.attacks.white_box.pgd import PGD
from gavel.defenses.base import OperatorKit
from gavel.defenses.preprocessing.bit_depth import BitDepth
from gavel.defenses.preprocessing.jpeg import JpegCompression
from gavel.defenses.preprocessing.spatial_smoothing import SpatialSmoothing
from gavel.targets.access.preprocessing import Preprocessed, masks_gradients, straight_through

RNG = np.random.default_rng(0)
GREY = RNG.random((6, 1, 8, 8), dtype=np.float32)
COLOUR = RNG.random((4, 3, 12, 10), dtype=np.float32)


def served(defense) -> Preprocessed:
    shield = defense.deploy(nn.Flatten(), OperatorKit(None, None, 10, 0))
    return shield.model


def transformed(defense, x: np.ndarray) -> np.ndarray:
    return served(defense).transform(torch.from_numpy(x)).numpy()


@pytest.mark.parametrize("bits", [1, 2, 4, 8])
def test_bit_depth_is_arts_feature_squeezing(bits):
    from art.defences.preprocessor import FeatureSqueezing

    theirs, _ = FeatureSqueezing(clip_values=(0.0, 1.0), bit_depth=bits)(GREY)
    np.testing.assert_allclose(transformed(BitDepth(bits=bits), GREY), theirs, rtol=0, atol=1e-6)


@pytest.mark.parametrize("window", [2, 3, 4])
@pytest.mark.parametrize("x", [GREY, COLOUR], ids=["greyscale", "colour"])
def test_spatial_smoothing_is_arts_median_filter(window, x):
    from art.defences.preprocessor import SpatialSmoothing as ArtSmoothing

    theirs, _ = ArtSmoothing(window_size=window, channels_first=True, clip_values=(0.0, 1.0))(x)
    np.testing.assert_array_equal(transformed(SpatialSmoothing(window=window), x), theirs)


@pytest.mark.parametrize("x", [GREY, COLOUR], ids=["greyscale", "colour"])
def test_jpeg_is_arts_jpeg_compression(x):
    """ART truncates to 8 bits where gavel rounds; on pixels a quarter above an 8-bit level the two agree."""
    from art.defences.preprocessor import JpegCompression as ArtJpeg

    levels = (np.floor(x * 255) + 0.25) / 255
    levels = levels.astype(np.float32)
    theirs, _ = ArtJpeg(clip_values=(0.0, 1.0), quality=50, channels_first=True)(levels)
    ours = transformed(JpegCompression(quality=50), levels)
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-6)
    assert not np.allclose(ours, levels, atol=1 / 255)  # it did compress


class Judge(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.net = nn.Sequential(nn.Flatten(), nn.Linear(64, 10))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def gradient(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    model(x)[:, 3].sum().backward()
    return x.grad


def test_bpda_answers_as_the_served_model_and_passes_the_judges_gradient_through():
    judge = Judge()
    model = BitDepth(bits=2).deploy(judge, OperatorKit(None, None, 10, 0)).model
    x = torch.from_numpy(GREY)
    assert masks_gradients(model) and not masks_gradients(judge)
    assert gradient(model, x).abs().max() == 0  # rounding: no gradient at all for a plain white box
    view = straight_through(model)
    torch.testing.assert_close(view(x), model(x), rtol=0, atol=0)  # the same verdicts
    squeezed = model.transform(x)
    torch.testing.assert_close(gradient(view, x), gradient(judge, squeezed))  # the judge's, at the squeezed input
    assert not model.straight_through  # the served model is the operator's, untouched


class Coin(nn.Module):
    """Answers 1 or 0 in class 0, at random."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.zeros(len(x), 2)
        out[:, 0] = torch.randint(0, 2, (len(x),)).float()
        return out


def test_eot_averages_the_draws_of_a_randomised_model():
    torch.manual_seed(0)
    x = torch.zeros(4000, 1)
    assert Expectation(Coin(), 1)(x)[:, 0].unique().numel() == 2
    averaged = Expectation(Coin(), 400)(x[:50])[:, 0]
    assert averaged.min() > 0.35 and averaged.max() < 0.65  # 400 draws of a fair coin: near one half


def test_bpda_and_eot_are_hyperparameters_of_white_box_attacks_only():
    from gavel.attacks.query.square import Square
    from gavel.attacks.transfer.transfer_pgd import TransferPGD

    assert {"bpda", "eot_samples"} <= set(PGD.parameters())
    assert "bpda" not in TransferPGD.parameters() and "eot_samples" not in TransferPGD.parameters()
    assert "bpda" not in Square.parameters()
    attack = PGD(eps=0.1, bpda=True, eot_samples=3)
    judge = Judge()
    model = JpegCompression(quality=50).deploy(judge, OperatorKit(None, None, 10, 0)).model
    seen = attack.attacked_model(model)
    assert isinstance(seen, Expectation) and seen.samples == 3 and seen.model.straight_through
    assert PGD(eps=0.1).attacked_model(model) is model


@pytest.mark.parametrize("defense", [BitDepth(bits=2), JpegCompression(quality=50)], ids=["bit_depth", "jpeg"])
def test_a_plain_white_box_reads_a_zero_gradient_and_bpda_the_judges(defense):
    judge = Judge()
    model = defense.deploy(judge, OperatorKit(None, None, 10, 0)).model
    x = torch.from_numpy(GREY)
    assert gradient(model, x).abs().max() == 0
    assert gradient(straight_through(model), x).abs().max() > 0
