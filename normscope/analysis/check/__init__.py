"""`check`: rules over analyze's (and simulate's) measurements, for CI gates."""

from .command import check, check_model

__all__ = ["check", "check_model"]
