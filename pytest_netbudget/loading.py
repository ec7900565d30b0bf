"""Turn a ``"package.module:callable"`` string into the object it names, with errors a user can act on."""

from __future__ import annotations

import importlib
import re
import sys
from collections.abc import Iterable
from typing import Any

_FACTORY_PATH = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_][\w.]*$")
_MODULE_NAME = re.compile(r"^[A-Za-z_]\w*(\.[A-Za-z_]\w*)*$")


class LoadError(Exception):
    """The factory could not be imported or called; the message says why."""


def stops_the_run(error: BaseException) -> bool:
    """A real Ctrl-C (``KeyboardInterrupt`` itself, as Python's SIGINT handler raises it) or
    ``pytest.exit()``: these end the whole run. Anything else a project's code raises,
    ``SystemExit``, ``pytest.fail()`` and other ``BaseException`` subclasses included, is the
    failure of the one model whose code raised it."""
    if type(error) is KeyboardInterrupt:
        return True
    pytest = sys.modules.get("pytest")  # pytest.exit() can only come from code that imported pytest
    return pytest is not None and isinstance(error, pytest.exit.Exception)


def is_factory_path(text: object) -> bool:
    return isinstance(text, str) and bool(_FACTORY_PATH.match(text))


def is_module_name(text: object) -> bool:
    return isinstance(text, str) and bool(_MODULE_NAME.match(text))


def import_modules(names: Iterable[str], why: str) -> None:
    """Import each module (``why`` they are imported, for the message): formulas they register
    count from then on. A module that fails to import is a ``LoadError`` naming it."""
    for name in names:
        try:
            importlib.import_module(name)
        except BaseException as error:
            if stops_the_run(error):
                raise
            raise LoadError(f"{why}: cannot import module {name!r}: {type(error).__name__}: {error}") from None


def import_object(path: str) -> Any:
    """Import ``module:attr`` (``attr`` may be dotted: ``module:Class.method``)."""
    if not is_factory_path(path):
        raise LoadError(f"{path!r} is not of the form 'package.module:callable'")
    module_name, attribute = path.split(":")
    try:
        target: Any = importlib.import_module(module_name)
    except BaseException as error:  # an import error, or the module itself raising while it loads
        if stops_the_run(error):
            raise
        raise LoadError(
            f"cannot import module {module_name!r} (from {path!r}): {type(error).__name__}: {error}"
        ) from error
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise LoadError(f"module {module_name!r} has no attribute {attribute!r} (from {path!r})") from None
    return target


def import_callable(path: str) -> Any:
    target = import_object(path)
    if not callable(target):
        raise LoadError(f"{path!r} is a {type(target).__name__}, not a callable that builds a model")
    return target
