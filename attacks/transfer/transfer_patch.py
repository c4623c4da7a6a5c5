"""Universal adversarial patch trained on the attacker's surrogate (ART), then stuck on every evaluation example
and each submitted once through the Oracle."""

from __future__ import annotations

from gavel.attacks.transfer.base import TransferAttack
from gavel.attacks.white_box.patch import Patch


class TransferPatch(TransferAttack):
    crafter_class = Patch
