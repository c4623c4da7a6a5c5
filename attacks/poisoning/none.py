"""No poison (`poison=none`, the default): the judge's training pool as its contributors gave it."""

from gavel.attacks.poisoning.base import NoPoison

__all__ = ["NoPoison"]
