"""`package.module:name` specs: a user's model or data factory, imported by name."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from rlprune.models.errors import UserError


def import_callable(spec: str, what: str) -> Callable[..., Any]:
    """The callable `spec` names (`package.module:name`); `what` ("model", "dataset") opens the
    message when it cannot be imported."""
    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as exc:  # an import of user code can fail in any way
        raise UserError(f"{what} {spec!r}: cannot import {module_name!r} ({exc}); is its "
                        "folder on PYTHONPATH?") from None
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise UserError(f"{what} {spec!r}: {module_name!r} has no callable {attr!r}")
    return factory


def call_user(spec: str, what: str, factory: Callable[..., Any], **kwargs: Any) -> Any:
    """Call a user's factory; whatever it raises becomes one line naming it."""
    try:
        return factory(**kwargs)
    except Exception as exc:  # user code can fail in any way
        raise UserError(f"{what} {spec!r}: the factory failed "
                        f"({type(exc).__name__}: {exc})") from None
