"""The one exception type that the CLI turns into a one-line message and exit code 2."""


class MaxkError(Exception):
    """A problem with the user's input (file, config, option) rather than a bug in maxk."""
