"""The model's errors: each renders as one line that names what is wrong."""


class ValidationError(ValueError):
    """Bad input in a manifest or request; `str()` is the one-line message for the user."""


class ExhaustedError(RuntimeError):
    """A pool (addresses, VNIs) has nothing left to hand out."""


class StatusError(Exception):
    """A status write its kind's model refuses (model/status.py): a key it does not
    declare, or a value of the wrong type. A bug in an operator or plugin, not a user's
    mistake; `str()` names the object, the key and what is wrong."""


def shown(value: object) -> str:
    """A value from user input as it may appear in a one-line message: printable text as
    it is, anything else (newlines, control characters, non-strings) as its repr."""
    return value if isinstance(value, str) and value.isprintable() else repr(value)
