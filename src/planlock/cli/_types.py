"""``PlanlockTyper``: a Typer app whose ``--help`` reads like a command line's, and never eats text.

Two things Typer does by default that do not suit planlock's help:

- it shows Python types (``<str>``, ``<list[str]>``, ``<bool>`` after every flag); here an option
  shows its ``metavar`` if it has one (``NAME=JSON``, ``MODULE:ATTR``), else the type in words
  (TEXT, INTEGER, FLOAT, PATH), and a flag shows nothing;
- it names arguments in lower case (``{plan}``); here they are upper case (``PLAN``), as the
  README and every other command line write them;
- it reads help texts as Rich markup, so ``[default: $PLANLOCK_JOURNAL]`` vanished from the page;
  here every help text is escaped once, when the command is built, so brackets print as written.

Every ``planlock`` app and sub-app is a ``PlanlockTyper``; its commands and groups use the
classes below, which do both when Typer builds them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer
from rich.markup import escape
from typer.core import TyperArgument, TyperCommand, TyperGroup, TyperOption

_WORDS: dict[str, str | None] = {
    "str": "TEXT",
    "int": "INTEGER",
    "float": "FLOAT",
    "path": "PATH",
    "datetime": "DATETIME",
    "bool": None,  # a flag takes no value: nothing to show
}


def readable_type(label: str | None) -> str | None:
    """Typer's ``<list[str]>`` as ``TEXT``, ``<int range>`` as ``INTEGER``, ``<bool>`` as nothing.

    Choices (``<a|b>``) stay as they are: they are the values to type.
    """
    if label is None or not label.startswith("<"):
        return label
    inner = label.removeprefix("<").removesuffix("...").removesuffix(">")
    more = "..." if label.endswith("...") else ""
    if inner.startswith("list[") and inner.endswith("]"):
        inner = inner[len("list[") : -1]
    inner = inner.removesuffix(" range")
    if "|" in inner:
        return inner + more
    word = _WORDS.get(inner, inner.upper())
    return None if word is None else word + more


class _Option(TyperOption):
    def display_type_rich(self, ctx: Any) -> str | None:
        if self.metavar is not None:
            return self.metavar or None
        if self.is_flag or self.count:
            return None
        return readable_type(super().display_type_rich(ctx))


class _Argument(TyperArgument):
    def display_type_rich(self, ctx: Any) -> str | None:
        return readable_type(super().display_type_rich(ctx))


def _adopt(param: Any) -> None:
    """Give a parameter built by Typer the readable type column and escaped help."""
    if type(param) is TyperOption:
        param.__class__ = _Option
    elif type(param) is TyperArgument:
        param.__class__ = _Argument
        if param.metavar is None and param.name:
            param.metavar = param.name.upper()  # PLAN, GOAL, APPROVAL_ID: as click writes them
    if isinstance(getattr(param, "help", None), str) and not getattr(param, "_escaped", False):
        param.help = escape(param.help)
        param._escaped = True  # noqa: SLF001  (our own marker, so help is escaped once)


def _escape_command(command: Any) -> None:
    for name in ("help", "short_help"):
        text = getattr(command, name, None)
        if isinstance(text, str):
            setattr(command, name, escape(text))
    for param in command.params:
        _adopt(param)


class PlanlockCommand(TyperCommand):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _escape_command(self)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            _adopt(option)
        return option


class PlanlockGroup(TyperGroup):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        _escape_command(self)

    def get_help_option(self, ctx: Any) -> Any:
        option = super().get_help_option(ctx)
        if option is not None:
            _adopt(option)
        return option


class PlanlockTyper(typer.Typer):
    """A ``typer.Typer`` whose commands and groups are ``PlanlockCommand`` / ``PlanlockGroup``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", PlanlockGroup)
        kwargs.setdefault("rich_markup_mode", "rich")
        super().__init__(**kwargs)

    def command(
        self, name: str | None = None, **kwargs: Any
    ) -> Callable[[typer.models.CommandFunctionType], typer.models.CommandFunctionType]:
        kwargs.setdefault("cls", PlanlockCommand)
        return super().command(name, **kwargs)

    def callback(
        self, **kwargs: Any
    ) -> Callable[[typer.models.CommandFunctionType], typer.models.CommandFunctionType]:
        kwargs.setdefault("cls", PlanlockGroup)
        return super().callback(**kwargs)
