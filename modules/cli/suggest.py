"""The one did-you-mean: the closest known name to a mistyped one, for every parser's error line."""

import difflib
from collections.abc import Iterable


def did_you_mean(name: str, known: Iterable[str], prefix: str = "--") -> str:
    """` (did you mean --learning_rate?)` for the known name closest to `name`, or "" when none is close."""
    match = difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.75)
    return f" (did you mean {prefix}{match[0]}?)" if match else ""
