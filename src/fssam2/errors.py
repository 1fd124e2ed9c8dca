"""The one exception type for bad user input (files, options, tensors handed to the API), and the
checks of input that several modules make."""

import math
from collections.abc import Mapping
from typing import Any


class InputError(ValueError):
    """Raised for input a user can fix; the message names the file or option and the fix.

    The CLI prints it as a single line and exits with status 2, without a traceback.
    """


def cause_of(err: BaseException | None, kind: type[BaseException]) -> BaseException | None:
    """The `kind` exception behind `err`, if any (jsonargparse wraps errors raised while it
    instantiates a class)."""
    seen = set()
    while err is not None and id(err) not in seen:
        if isinstance(err, kind):
            return err
        seen.add(id(err))
        err = err.__cause__ or err.__context__
    return None


def state_mismatch(own: Mapping[str, Any], given: Mapping[str, Any]) -> str:
    """What keeps the state dict `given` from loading into one whose entries are `own` (tensors):
    "missing [...], unexpected [...], reshaped [...]", the first three keys of each, sorted; "" when
    the keys and shapes are the same."""
    missing, unexpected = sorted(set(own) - set(given)), sorted(set(given) - set(own))
    reshaped = sorted(k for k in set(own) & set(given) if own[k].shape != given[k].shape)
    if not (missing or unexpected or reshaped):
        return ""
    return f"missing {missing[:3]}, unexpected {unexpected[:3]}, reshaped {reshaped[:3]}"


def is_number(value: object) -> bool:
    """A finite int or float (not a bool), as options and prompts in JSON or yaml give numbers."""
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)
