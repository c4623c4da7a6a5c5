"""GeoDA (Rahmati et al., 2020), decision-based, from ART."""

from __future__ import annotations

import contextlib
import tempfile
import warnings

import numpy as np
from art.attacks.evasion import GeoDA as ArtGeoDA
from art.estimators.classification import BlackBoxClassifierNeuralNetwork

from gavel.attacks.query.base import QueryAttack
from gavel.targets.access import DECISION_BASED
from gavel.targets.params import PositiveFloat, PositiveInt

SMALLEST_PLAN = 251
"""ART's GeoDA splits the queries it plans for into rounds of about 500 and cannot plan for fewer than this."""


class GeoDA(QueryAttack):
    threat_model = DECISION_BASED
    norm = "inf"  # ART's GeoDA also does L2; L-inf compares with HopSkipJump, Square and SimBA at the same eps

    def __init__(
        self,
        *,
        eps: float,
        max_iter: PositiveInt = 4000,
        sub_dim: PositiveInt = 10,
        bin_search_tol: PositiveFloat = 0.001,
        lambda_param: PositiveFloat = 0.6,
        sigma: PositiveFloat = 0.002,
        init_size: PositiveInt = 100,
        **common,
    ) -> None:
        super().__init__(eps=eps, **common)
        self.max_iter = max_iter
        self.sub_dim = sub_dim
        self.bin_search_tol = bin_search_tol
        self.lambda_param = lambda_param
        self.sigma = sigma
        self.init_size = init_size

    def library_attack(self, estimator, budget):
        # ART's max_iter is the number of queries GeoDA plans for (its step sizes follow from it): the
        # attacker plans for the budget it has, or for the least ART can plan for.
        plan = max(SMALLEST_PLAN, self.max_iter if budget is None else min(self.max_iter, budget))
        side = min(estimator.input_shape[-2:])
        while True:
            try:
                return _BoxedGeoDA(
                    _clipped(estimator),
                    norm=np.inf if self.norm == "inf" else 2,
                    sub_dim=min(self.sub_dim, side),  # an image has no more DCT frequencies than pixels per side
                    max_iter=plan,
                    bin_search_tol=float(self.bin_search_tol),
                    lambda_param=float(self.lambda_param),
                    sigma=float(self.sigma),
                    init_size=self.init_size,
                    verbose=False,
                )
            except (IndexError, RecursionError):  # ART's schedule fails for a few plans: plan one query more
                plan += 1

    def generate(self, attack, x, y, adversarial, kit):
        # ART caches its DCT basis as a .npy file in the working directory: keep it in a folder of its own
        # (rebuilding the basis per example costs nothing next to the queries).
        with tempfile.TemporaryDirectory(prefix="gavel-geoda-") as basis_dir, contextlib.chdir(basis_dir):
            try:
                return attack.generate(x, y=y)
            except _NoStart:
                return x


class _NoStart(Exception):
    """No random input fooled the judge: GeoDA has nowhere to start from."""


class _BoxedGeoDA(ArtGeoDA):
    """ART's GeoDA, with three repairs: its random search for a starting point, unbounded in ART, gives up
    after `init_size` inputs (with an unlimited budget it could run forever); the DCT basis is built without
    `np.mat`, which NumPy 2 removed; and (through `_clipped`) its probes around the boundary stay in [0, 1]."""

    def __init__(self, estimator, *, init_size: int, **kwargs) -> None:
        super().__init__(estimator, **kwargs)
        self.init_size = init_size
        self._tries_left: int | None = None

    @staticmethod
    def _generate_2d_dct_basis(sub_dim: int, res: int) -> np.ndarray:
        lent = not hasattr(np, "mat")
        if lent:
            np.mat = np.asmatrix
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", PendingDeprecationWarning)  # np.matrix, ART's choice
                return np.asarray(ArtGeoDA._generate_2d_dct_basis(sub_dim, res))
        finally:
            if lent:
                del np.mat

    def _find_random_adversarial(self, x, y):
        self._tries_left = self.init_size
        try:
            return super()._find_random_adversarial(x, y)
        finally:
            self._tries_left = None

    def _is_adversarial(self, x_adv, y_true):
        if self._tries_left is not None:
            if self._tries_left == 0:
                raise _NoStart
            self._tries_left -= 1
        return super()._is_adversarial(x_adv, y_true)


def _clipped(estimator) -> BlackBoxClassifierNeuralNetwork:
    """GeoDA probes Gaussian noise around a point on the boundary, which can leave [0, 1]; the attacker
    clips what it sends, since the API takes images only."""
    return BlackBoxClassifierNeuralNetwork(
        lambda x: estimator.predict(np.clip(x, 0.0, 1.0)),
        estimator.input_shape,
        estimator.nb_classes,
        clip_values=estimator.clip_values,
    )
