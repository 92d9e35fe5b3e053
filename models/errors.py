"""The one exception type that means "the user asked for something we cannot do".

Every layer raises it for bad input; the command line turns it into one line on stderr
and exit code 2. Anything else escaping is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: an unknown name, an impossible target, a file that does not fit."""


class SettingError(UserError):
    """A setting out of its range or choices: `setting` is the field's name, `detail` the rest
    of the sentence ("must be at least 1, got 0"). The command line names its flag instead."""

    def __init__(self, setting: str, detail: str):
        super().__init__(f"{setting} {detail}")
        self.setting, self.detail = setting, detail
