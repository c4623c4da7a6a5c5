"""Transfer attack: PGD L-inf crafted on the attacker's surrogate (ART or foolbox), each result submitted once
through the Oracle."""

from __future__ import annotations

from gavel.attacks.transfer.base import TransferAttack
from gavel.attacks.white_box.pgd import PGD


class TransferPGD(TransferAttack):
    crafter_class = PGD
