"""The one exception type that means "the user asked for something we cannot do".

The CLI turns a `MinicapsError` into one line on stderr and a non-zero exit; any other
exception is a bug in minicaps and keeps its traceback.
"""


class MinicapsError(Exception):
    """A user-facing error: bad input, a missing file, a configuration that cannot run."""
