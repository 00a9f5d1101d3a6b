"""Access Security Configuration Files (.acf): the data model and the parser.

The grammar is epics-base's ``asLib.y`` over the tokens of ``asLib_lex.l``:
``UAG(name) [{ user, ... }]``, ``HAG(name) [{ host, ... }]`` and ``ASG(name)
[{ INP<A-L>(pv) ... RULE(level, NONE|READ|WRITE|RPC [, TRAPWRITE|NOTRAPWRITE])
[{ UAG(name, ...) HAG(name, ...) CALC("expression") }] ... }]``, ``#``
comments, names quoted or not (unquoted: letters, digits and ``_-+:.[]<>;``).
Groups must be defined before the rules that use them; a name defined twice
is an error (except an ``ASG(DEFAULT)`` still empty). Errors are
:class:`AccessConfigError` with the file, line and column. See
:mod:`caioc.server._access` for what a configuration means.
"""

from __future__ import annotations

import ipaddress
import logging
import re
import socket
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import IntEnum

from .._macros import MacroError, expand_macros
from ._access_calc import INPUT_LETTERS, CalcError, CalcExpression, compile_calc

__all__ = [
    "DEFAULT_GROUP",
    "AccessConfig",
    "AccessConfigError",
    "AccessGroup",
    "AccessRule",
    "Resolver",
    "RuleAccess",
    "parse_acf",
]

log = logging.getLogger(__name__)

#: The group of PVs that name none, or name one the file does not define.
DEFAULT_GROUP = "DEFAULT"

#: Resolves a HAG host name to a dotted IPv4 address; raises OSError if it cannot.
Resolver = Callable[[str], str]


class AccessConfigError(ValueError):
    """An access security configuration that cannot be loaded, and where it goes wrong."""

    def __init__(self, message: str, filename: str, line: int, column: int) -> None:
        self.message = message
        self.filename = filename
        self.line = line
        self.column = column
        super().__init__(f"{filename}:{line}:{column}: {message}")


class RuleAccess(IntEnum):
    """The access a RULE grants (asLib's asAccessRights)."""

    NONE = 0
    READ = 1
    WRITE = 2
    RPC = 3


_ACCESS_WORDS = {
    "NONE": RuleAccess.NONE,
    "READ": RuleAccess.READ,
    "WRITE": RuleAccess.WRITE,
    "RPC": RuleAccess.RPC,
    "RWX": RuleAccess.WRITE,  # caioc alias: read, write (and "execute", i.e. put)
}


@dataclass(frozen=True)
class AccessRule:
    """One ``RULE(level, access[, TRAPWRITE]) { ... }`` of an ASG."""

    level: int
    access: RuleAccess
    trap_write: bool
    #: The UAG / HAG names of the rule's clauses (empty: anyone / anywhere).
    uags: tuple[str, ...]
    hags: tuple[str, ...]
    calc: CalcExpression | None
    #: Members of all the rule's UAGs (None: the rule has no UAG clause).
    users: frozenset[str] | None
    #: Normalised hosts of all the rule's HAGs (None: the rule has no HAG clause).
    hosts: frozenset[str] | None
    #: Where the rule starts in the file.
    line: int


@dataclass(frozen=True)
class AccessGroup:
    """One ASG: its inputs (letter -> PV name) and its rules, in file order."""

    name: str
    inputs: Mapping[str, str]
    rules: tuple[AccessRule, ...]


@dataclass(frozen=True)
class AccessConfig:
    """A parsed configuration; groups always include :data:`DEFAULT_GROUP`."""

    filename: str
    uags: Mapping[str, frozenset[str]]
    hags: Mapping[str, frozenset[str]]
    groups: Mapping[str, AccessGroup]
    #: Things epics-base would only log (unresolved hosts, duplicate members).
    warnings: tuple[str, ...]
    check_client_ip: bool = False


# -- tokens ------------------------------------------------------------------

_NAME_CHARS = frozenset(string.ascii_letters + string.digits + "_-+:.[]<>;")
_PUNCTUATION = frozenset("(){},")
_INPUT_WORDS = {f"INP{letter}": letter for letter in INPUT_LETTERS}
_KEYWORDS = frozenset({"UAG", "HAG", "ASG", "RULE", "CALC", *_INPUT_WORDS})
_INTEGER = re.compile(r"[-+]?\d+")
_WORD, _STRING, _PUNCT, _EOF = "word", "string", "punct", "eof"


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    line: int
    column: int

    def describe(self) -> str:
        if self.kind == _EOF:
            return "end of file"
        if self.kind == _STRING:
            return f'"{self.text}"'
        if self.text in _KEYWORDS:
            return f"keyword {self.text}"
        return f"'{self.text}'"


def _tokenize(text: str, filename: str) -> list[_Token]:
    """Split an ACF into tokens as ``asLib_lex.l`` does; quoted strings keep escapes."""
    tokens: list[_Token] = []
    i, line, line_start, end = 0, 1, 0, len(text)
    while i < end:
        char = text[i]
        column = i - line_start + 1
        if char == "\n":
            i += 1
            line, line_start = line + 1, i
        elif char in " \t\r":
            i += 1
        elif char == "#":
            newline = text.find("\n", i)
            i = end if newline < 0 else newline
        elif char in _PUNCTUATION:
            tokens.append(_Token(_PUNCT, char, line, column))
            i += 1
        elif char == '"':
            j = i + 1
            while j < end and text[j] not in '"\n':
                j += 2 if text[j] == "\\" and j + 1 < end and text[j + 1] != "\n" else 1
            if j >= end or text[j] != '"':
                raise AccessConfigError(
                    "newline in quoted string, closing quote missing", filename, line, column
                )
            tokens.append(_Token(_STRING, text[i + 1 : j], line, column))
            i = j + 1
        elif char in _NAME_CHARS:
            j = i + 1
            while j < end and text[j] in _NAME_CHARS:
                j += 1
            tokens.append(_Token(_WORD, text[i:j], line, column))
            i = j
        else:
            shown = repr(char) if char.isprintable() else f"0x{ord(char):02x}"
            raise AccessConfigError(f"invalid character {shown}", filename, line, column)
    tokens.append(_Token(_EOF, "", line, i - line_start + 1))
    return tokens


def _expand_macros(text: str, macros: Mapping[str, str], filename: str) -> str:
    """Substitute ``$(NAME)`` / ``${NAME}`` (with ``=default``) line by line, as asInitFP."""
    lines = text.split("\n")
    for number, line in enumerate(lines, 1):
        try:
            lines[number - 1] = expand_macros(line, macros)
        except MacroError as error:
            raise AccessConfigError(str(error), filename, number, error.column) from None
    return "\n".join(lines)


# -- parser ------------------------------------------------------------------


def ipv4_address(address: str) -> str | None:
    """The dotted IPv4 form of an address (IPv4-mapped IPv6 included), else None."""
    try:
        parsed = ipaddress.ip_address(address.strip())
    except ValueError:
        return None
    if isinstance(parsed, ipaddress.IPv6Address) and parsed.ipv4_mapped is not None:
        parsed = parsed.ipv4_mapped
    return str(parsed) if isinstance(parsed, ipaddress.IPv4Address) else None


class _Parser:
    """Recursive descent over the tokens of one file (the grammar of ``asLib.y``)."""

    def __init__(self, tokens: list[_Token], filename: str, check_ip: bool, resolver: Resolver):
        self.tokens = tokens
        self.index = 0
        self.filename = filename
        self.check_ip = check_ip
        self.resolver = resolver
        self.uags: dict[str, set[str]] = {}
        self.hags: dict[str, set[str]] = {}
        self.groups: dict[str, AccessGroup] = {DEFAULT_GROUP: AccessGroup(DEFAULT_GROUP, {}, ())}
        self.defined: dict[tuple[str, str], int] = {}
        self.warnings: list[str] = []

    # token helpers

    def next(self) -> _Token:
        token = self.tokens[self.index]
        if token.kind != _EOF:
            self.index += 1
        return token

    def peek(self) -> _Token:
        return self.tokens[self.index]

    def error(self, message: str, token: _Token) -> AccessConfigError:
        return AccessConfigError(message, self.filename, token.line, token.column)

    def expected(self, what: str, token: _Token) -> AccessConfigError:
        return self.error(f"expected {what}, found {token.describe()}", token)

    def punct(self, char: str, context: str) -> _Token:
        token = self.next()
        if token.kind != _PUNCT or token.text != char:
            raise self.expected(f"'{char}' {context}", token)
        return token

    def take_punct(self, char: str) -> bool:
        token = self.peek()
        if token.kind == _PUNCT and token.text == char:
            self.index += 1
            return True
        return False

    def name(self, what: str) -> _Token:
        token = self.next()
        if token.kind == _STRING or (token.kind == _WORD and token.text not in _KEYWORDS):
            return token
        if token.kind == _WORD:
            raise self.error(f"expected {what}, found keyword {token.text} (quote it)", token)
        raise self.expected(what, token)

    def names(self, what: str, close: str) -> list[_Token]:
        """``name (, name)*`` up to ``close``, which is consumed."""
        names = [self.name(what)]
        while not self.take_punct(close):
            token = self.next()
            if token.kind != _PUNCT or token.text != ",":
                raise self.expected(f"',' or '{close}'", token)
            names.append(self.name(what))
        return names

    # grammar

    def parse(self) -> AccessConfig:
        while (token := self.next()).kind != _EOF:
            if token.kind == _WORD and token.text in ("UAG", "HAG"):
                self.member_group(token)
            elif token.kind == _WORD and token.text == "ASG":
                self.access_group(token)
            else:
                raise self.expected("UAG, HAG or ASG", token)
        return AccessConfig(
            self.filename,
            {name: frozenset(users) for name, users in self.uags.items()},
            {name: frozenset(hosts) for name, hosts in self.hags.items()},
            dict(self.groups),
            tuple(self.warnings),
            self.check_ip,
        )

    def define(self, kind: str, name: _Token) -> None:
        first = self.defined.get((kind, name.text))
        if first is not None:
            message = f"duplicate {kind} {name.text!r} (first defined at line {first})"
            raise self.error(message, name)
        self.defined[kind, name.text] = name.line

    def member_group(self, keyword: _Token) -> None:
        """``UAG(name) [{ user, ... }]`` or ``HAG(name) [{ host, ... }]``."""
        kind = keyword.text
        self.punct("(", f"after {kind}")
        name = self.name(f"a {kind} name")
        self.punct(")", f"after the {kind} name")
        self.define(kind, name)
        members: set[str] = set()
        (self.uags if kind == "UAG" else self.hags)[name.text] = members
        if not self.take_punct("{"):
            return
        what = "a user name" if kind == "UAG" else "a host name"
        for member in self.names(what, "}"):
            value = member.text if kind == "UAG" else self.host(member.text)
            if value in members:
                self.warnings.append(f"line {member.line}: {value!r} twice in {kind} {name.text}")
            members.add(value)

    def host(self, host: str) -> str:
        if not self.check_ip:
            return host.lower()
        address = ipv4_address(host)
        if address is None:
            try:
                address = ipv4_address(self.resolver(host))
            except (OSError, UnicodeError, ValueError):
                address = None
        if address is None:
            self.warnings.append(f"unable to resolve host {host!r}")
            log.warning("ACF %s: unable to resolve host %r", self.filename, host)
            return f"unresolved:{host}"
        return address

    def access_group(self, keyword: _Token) -> None:
        """``ASG(name) [{ INPx(pv) ... RULE(...) ... }]``."""
        self.punct("(", "after ASG")
        name = self.name("an ASG name")
        self.punct(")", "after the ASG name")
        existing = self.groups.get(name.text)
        if name.text == DEFAULT_GROUP and existing and not existing.inputs and not existing.rules:
            self.defined.pop(("ASG", name.text), None)  # asAsgAdd reuses an empty DEFAULT
        self.define("ASG", name)
        inputs: dict[str, str] = {}
        rules: list[AccessRule] = []
        if self.take_punct("{"):
            while True:
                token = self.next()
                if token.kind == _WORD and token.text in _INPUT_WORDS:
                    self.input(token, inputs)
                elif token.kind == _WORD and token.text == "RULE":
                    rules.append(self.rule(token))
                elif token.kind == _PUNCT and token.text == "}" and (inputs or rules):
                    break
                else:
                    what = "INP<A-L>, RULE or '}'" if inputs or rules else "INP<A-L> or RULE"
                    raise self.expected(what, token)
        self.groups[name.text] = AccessGroup(name.text, inputs, tuple(rules))

    def input(self, keyword: _Token, inputs: dict[str, str]) -> None:
        letter = _INPUT_WORDS[keyword.text]
        self.punct("(", f"after {keyword.text}")
        pv = self.name("a PV name")
        self.punct(")", "after the PV name")
        if letter in inputs:
            raise self.error(f"{keyword.text} is already defined in this ASG", keyword)
        inputs[letter] = pv.text

    def rule(self, keyword: _Token) -> AccessRule:
        """``RULE(level, access [, TRAPWRITE|NOTRAPWRITE]) [{ UAG(..) HAG(..) CALC(..) }]``."""
        self.punct("(", "after RULE")
        level_token = self.next()
        if level_token.kind != _WORD or not _INTEGER.fullmatch(level_token.text):
            raise self.expected("the rule's level (an integer)", level_token)
        level = int(level_token.text)
        if level < 0:
            raise self.error(f"RULE level must not be negative: {level}", level_token)
        self.punct(",", "after the rule's level")
        access_token = self.next()
        access = _ACCESS_WORDS.get(access_token.text) if access_token.kind != _PUNCT else None
        if access is None or access_token.kind == _EOF:
            raise self.expected("NONE, READ, WRITE, RPC or RWX", access_token)
        trap_write = False
        if self.take_punct(","):
            option = self.next()
            if option.kind == _PUNCT or option.text not in ("TRAPWRITE", "NOTRAPWRITE"):
                raise self.expected("TRAPWRITE or NOTRAPWRITE", option)
            trap_write = option.text == "TRAPWRITE"
        self.punct(")", "to close RULE(...)")
        uags: list[str] = []
        hags: list[str] = []
        calc: CalcExpression | None = None
        if self.take_punct("{"):
            while True:
                token = self.next()
                if token.kind == _WORD and token.text in ("UAG", "HAG"):
                    self.punct("(", f"after {token.text}")
                    target = uags if token.text == "UAG" else hags
                    for name in self.names(f"a {token.text} name", ")"):
                        if (token.text, name.text) not in self.defined:
                            message = f"no {token.text} named {name.text!r} is defined above"
                            raise self.error(message, name)
                        target.append(name.text)
                elif token.kind == _WORD and token.text == "CALC":
                    if calc is not None:
                        raise self.error("a RULE takes at most one CALC", token)
                    calc = self.calc()
                elif token.kind == _PUNCT and token.text == "}" and (uags or hags or calc):
                    break
                else:
                    what = "UAG, HAG, CALC or '}'" if uags or hags or calc else "UAG, HAG or CALC"
                    raise self.expected(what, token)
        users = frozenset().union(*(self.uags[n] for n in uags)) if uags else None
        hosts = frozenset().union(*(self.hags[n] for n in hags)) if hags else None
        return AccessRule(
            level, access, trap_write, tuple(uags), tuple(hags), calc, users, hosts, keyword.line
        )

    def calc(self) -> CalcExpression:
        self.punct("(", "after CALC")
        token = self.next()
        if token.kind not in (_STRING, _WORD):
            raise self.expected("a CALC expression", token)
        self.punct(")", "after the CALC expression")
        try:
            return compile_calc(token.text)
        except CalcError as error:
            column = token.column + (1 if token.kind == _STRING else 0) + error.offset
            where = _Token(token.kind, token.text, token.line, column)
            raise self.error(f"invalid CALC expression: {error.message}", where) from None


def parse_acf(
    text: str,
    filename: str = "<string>",
    *,
    check_client_ip: bool = False,
    resolver: Resolver | None = None,
    substitutions: Mapping[str, str] | None = None,
) -> AccessConfig:
    """Parse the text of an access security configuration file.

    With ``check_client_ip``, HAG hosts are resolved with ``resolver``
    (``socket.gethostbyname`` by default, which may block). ``substitutions``
    expands ``$(NAME)`` macros first, like ``asSetSubstitutions``.
    Raises :class:`AccessConfigError` with the file, line and column.
    """
    if substitutions is not None:
        text = _expand_macros(text, substitutions, filename)
    parser = _Parser(
        _tokenize(text, filename), filename, check_client_ip, resolver or socket.gethostbyname
    )
    return parser.parse()
