"""Errors a user can fix, shared by every layer; the entry points print them as one line (mycolens.cli)."""


class UserError(RuntimeError):
    """An error the user can fix (bad input, missing file); printed as one line, exit code 2."""
