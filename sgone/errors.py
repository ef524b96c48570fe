"""User-facing errors: the CLI prints the message on one line and exits with code 2."""


class SgoneError(Exception):
    """A problem with the user's input (file, argument, data set), stated as 'path: problem'."""


class SgoneWarning(UserWarning):
    """A suspicious input that is still processed (e.g. a tiny query); the CLI prints it on one line."""
