"""Errors a person can act on. The CLI prints their message (which says what to do) and exits 2."""


class UserError(Exception):
    """Bad input or a missing resource: a clear message, no traceback."""
