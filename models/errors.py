"""The one exception type that means "the user asked for something we cannot do".

Every layer raises it for bad input; the command line turns it into one line on stderr
and exit code 2. Anything else escaping is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: an unknown name, an impossible target, a file that does not fit."""
