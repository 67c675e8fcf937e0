"""The errors a user can cause (bad input, settings, files, models): the CLI prints their message as one line;
anything else is a bug and shows its traceback. Each also derives from the built-in a Python caller expects
(ValueError, KeyError, NotImplementedError), so ``except ValueError`` keeps working."""


class RnnpoolError(Exception):
    """A user-facing error whose message names the bad value and what was expected."""


class InvalidInputError(RnnpoolError, ValueError):
    """A bad argument, setting, shape or file content."""


class UnknownModelError(RnnpoolError, KeyError):
    """A model name that is not in the zoo (or torchvision); the message suggests the closest one."""

    def __str__(self) -> str:  # KeyError quotes its message; this one reads as a sentence
        return str(self.args[0]) if self.args else ""


class UnsupportedError(RnnpoolError, NotImplementedError):
    """Something valid that this library does not do (e.g. a layer the int8 deployment cannot express)."""


__all__ = ["InvalidInputError", "RnnpoolError", "UnknownModelError", "UnsupportedError"]
