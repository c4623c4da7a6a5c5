"""What the operator's side refuses before any run starts."""

from __future__ import annotations


class SourceError(ValueError):
    """A data set or a judge that cannot be used as configured (a missing or unreadable file, a model that does not
    take the data's shape): one line naming the key, what it got and what is allowed; `gavel run` exits 2 before
    any run is recorded."""
