"""EPICS macro expansion (macLib): ``$(NAME)``, ``${NAME}``, ``$(NAME=default)``.

Shared by the readers of the files EPICS expands macros in: database files
(``caioc softioc -m``) and access security files (``-a`` with ``-m``).
Names and defaults may hold macros themselves, and a value is expanded
again, as macLib does; a macro that refers to itself is an error, not a hang.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = ["MacroError", "UndefinedMacro", "expand_macros"]

_START = re.compile(r"\$([({])")
_CLOSING = {"(": ")", "{": "}"}
#: How deep macros may refer to macros.
MAX_DEPTH = 50


class MacroError(ValueError):
    """Text whose macros cannot be expanded; ``column`` (from 1) of the macro at fault."""

    def __init__(self, message: str, column: int) -> None:
        super().__init__(message)
        self.column = column


class UndefinedMacro(MacroError):
    """A macro with neither a value nor a default; ``name`` is its name."""

    def __init__(self, name: str, column: int) -> None:
        super().__init__(f"macro {name!r} is undefined", column)
        self.name = name


def expand_macros(text: str, macros: Mapping[str, str]) -> str:
    """``text`` with every macro expanded; :class:`MacroError` if one cannot be."""
    return _expand(text, macros, 0, None)


def _expand(text: str, macros: Mapping[str, str], depth: int, column: int | None) -> str:
    if depth > MAX_DEPTH:
        raise MacroError(
            f"macros nested more than {MAX_DEPTH} deep (a macro refers to itself?)", column or 1
        )
    out: list[str] = []
    position = 0
    while (match := _START.search(text, position)) is not None:
        out.append(text[position : match.start()])
        # errors name the outermost macro's column in the text as given
        at = match.start() + 1 if column is None else column
        end = _matching(text, match.end(), match.group(1))
        if end < 0:
            raise MacroError(f"a macro {text[match.start() :]!r} is not closed", at)
        name, sep, default = _split_default(text[match.end() : end])
        name = _expand(name, macros, depth + 1, at)
        if name in macros:
            out.append(_expand(macros[name], macros, depth + 1, at))
        elif sep:
            out.append(_expand(default, macros, depth + 1, at))
        else:
            raise UndefinedMacro(name, at)
        position = end + 1
    out.append(text[position:])
    return "".join(out)


def _matching(text: str, start: int, opening: str) -> int:
    """The index of the bracket closing the one before ``start``, or -1."""
    closing, depth = _CLOSING[opening], 1
    for index in range(start, len(text)):
        char = text[index]
        if char == opening:
            depth += 1
        elif char == closing:
            depth -= 1
            if depth == 0:
                return index
    return -1


def _split_default(inner: str) -> tuple[str, str, str]:
    """``NAME=default`` -> (NAME, "=", default), the ``=`` outside nested macros."""
    depth = 0
    for index, char in enumerate(inner):
        if char in "({":
            depth += 1
        elif char in ")}":
            depth -= 1
        elif char == "=" and depth == 0:
            return inner[:index], "=", inner[index + 1 :]
    return inner, "", ""
