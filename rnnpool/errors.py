"""The base class of the errors a user can cause (bad input, settings, files, models): the CLI prints their
message as one line; anything else is a bug and shows its traceback."""


class RnnpoolError(Exception):
    """A user-facing error whose message names the bad value and what was expected."""


__all__ = ["RnnpoolError"]
