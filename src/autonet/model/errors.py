"""Errors a user can act on: each renders as one line that names what is wrong."""


class ValidationError(ValueError):
    """Bad input in a manifest or request; `str()` is the one-line message for the user."""


class ExhaustedError(RuntimeError):
    """A pool (addresses, VNIs) has nothing left to hand out."""
