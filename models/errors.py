"""The one exception type that means "the user asked for something we cannot do".

Every layer raises it for bad input; the command line turns it into one line on stderr
and exit code 2. Anything else escaping is a bug and keeps its traceback.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence


class UserError(Exception):
    """Bad input: an unknown name, an impossible target, a file that does not fit."""


class SettingError(UserError):
    """A setting that cannot be used: `setting` is the field's name, `detail` the rest of the
    sentence ("must be at least 1, got 0").

    The message names settings by their field names, as the Python API and the HTTP API spell
    them; the command line writes their flags instead (`text`). Further settings the detail
    names are written in backticks (`` `workers` ``) and listed in `others`. With `lead=False`
    the detail is the whole message (it names `setting` in backticks where it needs to).
    """

    def __init__(self, setting: str, detail: str, *, others: Sequence[str] = (),
                 lead: bool = True):
        super().__init__(f"{setting} {detail}" if lead else detail)
        self.setting, self.detail = setting, detail
        self.others, self.lead = tuple(others), lead

    def __reduce__(self):  # keyword arguments survive a trip to another process
        return _rebuild, (self.setting, self.detail, self.others, self.lead)

    def text(self, name_of: Callable[[str], str]) -> str:
        """The message with each setting written as `name_of(field)` (the CLI: its flag)."""
        detail = self.detail
        for name in (self.setting, *self.others):
            detail = detail.replace(f"`{name}`", name_of(name))
        return f"{name_of(self.setting)} {detail}" if self.lead else detail


def _rebuild(setting: str, detail: str, others: tuple[str, ...], lead: bool) -> SettingError:
    return SettingError(setting, detail, others=others, lead=lead)
