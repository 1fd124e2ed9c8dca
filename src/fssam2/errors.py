"""The one exception type for bad user input (files, options, tensors handed to the API)."""


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
