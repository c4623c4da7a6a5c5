"""No sanitiser (`sanitise=none`, the default): the judge is trained on the pool as contributed."""

from gavel.defenses.sanitise.base import NoSanitiser

__all__ = ["NoSanitiser"]
