"""The error type for problems a user can fix (an option, a value, a file, a data spec).

:class:`UserError` subclasses :class:`ValueError`, so library callers that catch ``ValueError`` keep working;
the command line reports it (and :class:`vitkit.CheckpointError`, missing files, argument errors) on one line,
and anything else as an internal error with a short traceback. Validation sites that check what the user
passed raise it; a bare ``ValueError`` from deep inside is treated as a bug.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class UserError(ValueError):
    """A problem with the user's input, reported as one line without a traceback."""


def did_you_mean(word: str, choices: Iterable[str], *, n: int = 3) -> str:
    """`` (did you mean X?)`` / `` (did you mean X, Y or Z?)`` for the closest choices, or ``""``.

    difflib's ratio (case-insensitive), cut-off 0.6 as its default: a typo of one or two characters in a
    model or preset name matches; an unrelated word does not."""
    pool = {c.lower(): c for c in choices}
    close = [pool[c] for c in difflib.get_close_matches(word.lower(), list(pool), n=n)]
    if not close:
        return ""
    listed = close[0] if len(close) == 1 else ", ".join(close[:-1]) + " or " + close[-1]
    return f" (did you mean {listed}?)"


class UnknownNameError(UserError, KeyError):
    """An unknown name (model, preset, ...): a :class:`UserError` that is also a ``KeyError`` for callers that
    look names up with ``except KeyError``."""

    def __str__(self) -> str:  # KeyError's own __str__ would quote the message
        return str(self.args[0]) if self.args else ""


def unknown_name(kind: str, name: str, known: Iterable[str], listing: str) -> UnknownNameError:
    """``unknown KIND 'NAME' (did you mean X?); LISTING`` — the closest names, not all of them on one line."""
    return UnknownNameError(f"unknown {kind} {name!r}{did_you_mean(name, known)}; {listing}")
