"""The one exception type for bad user input (files, options, tensors handed to the API)."""


class InputError(ValueError):
    """Raised for input a user can fix; the message names the file or option and the fix.

    The CLI prints it as a single line and exits with status 2, without a traceback.
    """
