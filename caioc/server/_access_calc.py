"""EPICS CALC expressions for access security rules, evaluated without ``eval``.

An ACF rule may carry ``CALC("...")``: a condition over the values of its
group's inputs INPA..INPL, true when the result is 1 (epics-base tests
``0.99 < result < 1.01``). The language is the one of epics-base's
``postfix.c`` / ``calcPerform.c``, minus what makes no sense in a rule:

- operands: numbers (``1``, ``2.5``, ``.5``, ``1e3``, ``0x1F``), the inputs
  ``A``..``L``, constants ``PI D2R R2D INF NAN``;
- arithmetic ``+ - * / %`` and power ``^`` / ``**``; unary ``-``;
- comparisons ``= == # != < <= > >=`` (``=`` tests equality and ``#``
  inequality, as in every EPICS CALC), yielding 1 or 0;
- logic ``&& || !``; bitwise ``& | AND OR XOR ~ NOT << >> >>>`` on 32-bit
  integers; the conditional ``a ? b : c``;
- functions ``ABS SQR SQRT EXP LN LOG LOGE CEIL FLOOR NINT ISINF SIN COS TAN
  ASIN ACOS ATAN SINH COSH TANH``, ``FMOD(a, b)``, ``ATAN2(a, b)`` (which is
  ``atan2(b, a)``: epics-base's argument order) and the variadic ``MIN MAX
  ISNAN FINITE``.

Names are case-insensitive and, as in ``postfix.c``, matched by longest
prefix (``NOTA`` is ``NOT A``). Precedence, tightest first: unary operators
and functions; ``^ **``; ``* / %``; ``+ -``; comparisons; ``&& & AND << >>
>>>``; ``|| | OR XOR``; ``?:``. Binary operators associate to the left, so
``2^3^2`` is 64 and ``-2^2`` is 4, exactly as epics-base computes them.

Arithmetic is IEEE double like C's: division by zero gives an infinity or
NaN, domain errors give NaN, never an exception. Conversions to integer
(``%``, bitwise operators, ``NINT``) truncate and wrap modulo 2**32; NaN and
infinities, undefined behaviour in C, convert to 0. Assignments (``:=``),
``;``, ``VAL`` and ``RNDM`` are rejected: epics-base forbids stores in access
security and the other two have no meaning in a rule.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

__all__ = ["INPUT_LETTERS", "CalcError", "CalcExpression", "calc_is_true", "compile_calc"]

#: The CALC variables, one per ASG input INPA..INPL.
INPUT_LETTERS = "ABCDEFGHIJKL"

Evaluator = Callable[[Sequence[float]], float]

_INF = math.inf
_NAN = math.nan
_PI = 3.14159265358979323  # calcPerform.c's PI (== math.pi as a double)


class CalcError(ValueError):
    """A CALC expression that epics-base would refuse, with the offset of the fault."""

    def __init__(self, message: str, expression: str, offset: int) -> None:
        self.message = message
        self.expression = expression
        self.offset = offset
        super().__init__(f"{message} at offset {offset} in CALC expression {expression!r}")


def calc_is_true(result: float) -> bool:
    """Whether a CALC result grants the rule (epics-base: ``0.99 < result < 1.01``)."""
    return 0.99 < result < 1.01


# -- C arithmetic ------------------------------------------------------------


def _int32(x: float) -> int:
    """C's double -> epicsInt32, wrapping out-of-range values; NaN/inf -> 0."""
    if not math.isfinite(x):
        return 0
    return ((int(x) + 0x80000000) & 0xFFFFFFFF) - 0x80000000


def _div(a: float, b: float) -> float:
    if b == 0.0:
        if a == 0.0 or math.isnan(a):
            return _NAN
        return math.copysign(_INF, a) * math.copysign(1.0, b)
    return a / b


def _mod(a: float, b: float) -> float:
    divisor = _int32(b)
    if divisor == 0:
        return _NAN
    dividend = _int32(a)
    remainder = abs(dividend) % abs(divisor)  # C: the sign follows the dividend
    return float(-remainder if dividend < 0 else remainder)


def _odd_integer(x: float) -> bool:
    return math.isfinite(x) and x.is_integer() and int(x) % 2 == 1


def _pow(a: float, b: float) -> float:
    try:
        return math.pow(a, b)
    except OverflowError:
        return -_INF if a < 0 and _odd_integer(b) else _INF
    except ValueError:
        if a == 0.0:  # zero to a negative power
            return math.copysign(_INF, a) if _odd_integer(b) else _INF
        return _NAN  # negative base, non-integer exponent


def _c_math(function: Callable[[float], float], odd: bool = False) -> Callable[[float], float]:
    """Wrap a ``math`` function to return C's NaN / infinity instead of raising.

    ``odd`` functions overflow to an infinity of the argument's sign.
    """

    def wrapped(x: float) -> float:
        try:
            return function(x)
        except ValueError:
            return _NAN
        except OverflowError:
            return math.copysign(_INF, x) if odd else _INF

    return wrapped


def _log(function: Callable[[float], float]) -> Callable[[float], float]:
    def wrapped(x: float) -> float:
        if x == 0.0:
            return -_INF
        if x < 0.0 or math.isnan(x):
            return _NAN
        return function(x)

    return wrapped


def _rounding(function: Callable[[float], int]) -> Callable[[float], float]:
    # C's ceil(-0.5) is -0.0: the result always has the argument's sign
    return lambda x: math.copysign(float(function(x)), x) if math.isfinite(x) else x


def _nint(x: float) -> float:
    return float(_int32(x + 0.5 if x >= 0 else x - 0.5))


def _fmod(a: float, b: float) -> float:
    try:
        return math.fmod(a, b)
    except ValueError:
        return _NAN


def _maximum(args: Sequence[float]) -> float:
    result = args[-1]  # calcPerform folds from the top of the stack
    for x in reversed(args[:-1]):
        result = result if (x < result or math.isnan(result)) else x
    return result


def _minimum(args: Sequence[float]) -> float:
    result = args[-1]
    for x in reversed(args[:-1]):
        result = result if (x > result or math.isnan(result)) else x
    return result


_BINARY: dict[str, Callable[[float, float], float]] = {
    "+": lambda a, b: a + b,
    "-": lambda a, b: a - b,
    "*": lambda a, b: a * b,
    "/": _div,
    "%": _mod,
    "^": _pow,
    "**": _pow,
    "=": lambda a, b: float(a == b),
    "==": lambda a, b: float(a == b),
    "#": lambda a, b: float(a != b),
    "!=": lambda a, b: float(a != b),
    "<": lambda a, b: float(a < b),
    "<=": lambda a, b: float(a <= b),
    ">": lambda a, b: float(a > b),
    ">=": lambda a, b: float(a >= b),
    "&&": lambda a, b: float(a != 0.0 and b != 0.0),
    "||": lambda a, b: float(a != 0.0 or b != 0.0),
    "&": lambda a, b: float(_int32(a) & _int32(b)),
    "AND": lambda a, b: float(_int32(a) & _int32(b)),
    "|": lambda a, b: float(_int32(a) | _int32(b)),
    "OR": lambda a, b: float(_int32(a) | _int32(b)),
    "XOR": lambda a, b: float(_int32(a) ^ _int32(b)),
    "<<": lambda a, b: float(_int32(_int32(a) << (_int32(b) & 31))),
    ">>": lambda a, b: float(_int32(a) >> (_int32(b) & 31)),
    ">>>": lambda a, b: float((_int32(a) & 0xFFFFFFFF) >> (_int32(b) & 31)),
}

_UNARY: dict[str, Callable[[float], float]] = {
    "-": lambda x: -x,
    "!": lambda x: float(x == 0.0),
    "~": lambda x: float(~_int32(x)),
    "NOT": lambda x: float(~_int32(x)),
    "ABS": abs,
    "SQR": _c_math(math.sqrt),
    "SQRT": _c_math(math.sqrt),
    "EXP": _c_math(math.exp),
    "LN": _log(math.log),
    "LOGE": _log(math.log),
    "LOG": _log(math.log10),
    "CEIL": _rounding(math.ceil),
    "FLOOR": _rounding(math.floor),
    "NINT": _nint,
    "ISINF": lambda x: float(math.isinf(x)),
    "SIN": _c_math(math.sin),
    "COS": _c_math(math.cos),
    "TAN": _c_math(math.tan),
    "ASIN": _c_math(math.asin),
    "ACOS": _c_math(math.acos),
    "ATAN": _c_math(math.atan),
    "SINH": _c_math(math.sinh, odd=True),
    "COSH": _c_math(math.cosh),
    "TANH": _c_math(math.tanh),
}

_TWO_ARGUMENTS: dict[str, Callable[[float, float], float]] = {
    "FMOD": _fmod,
    "ATAN2": lambda a, b: math.atan2(b, a),  # calcPerform.c: "Args backwards!"
}

_VARIADIC: dict[str, Callable[[Sequence[float]], float]] = {
    "MAX": _maximum,
    "MIN": _minimum,
    "ISNAN": lambda args: float(any(math.isnan(x) for x in args)),
    "FINITE": lambda args: float(all(math.isfinite(x) for x in args)),
}

_CONSTANTS = {"PI": _PI, "D2R": _PI / 180.0, "R2D": 180.0 / _PI, "INF": _INF, "NAN": _NAN}
_REFUSED = {
    "VAL": "VAL (the previous result) is not supported in access security",
    "RNDM": "RNDM is not supported in access security",
}

# Binary operators by precedence level, loosest first (postfix.c priorities 1..6).
_LEVELS: tuple[frozenset[str], ...] = (
    frozenset({"||", "|", "OR", "XOR"}),
    frozenset({"&&", "&", "AND", "<<", ">>", ">>>"}),
    frozenset({"=", "==", "#", "!=", "<", "<=", ">", ">="}),
    frozenset({"+", "-"}),
    frozenset({"*", "/", "%"}),
    frozenset({"^", "**"}),
)
_PREFIX_OPERATORS = frozenset({"-", "!", "~", "NOT"})

_WORDS = sorted(
    {
        *INPUT_LETTERS,
        *_CONSTANTS,
        *_REFUSED,
        *_UNARY,
        *_TWO_ARGUMENTS,
        *_VARIADIC,
        "AND",
        "OR",
        "XOR",
    },
    key=len,
    reverse=True,
)
_WORDS = [word for word in _WORDS if word[0].isalpha()]  # drop the symbols "-", "!", "~"
_SYMBOLS = sorted(
    {op for op in _BINARY if not op.isalpha()} | {"!", "~", "(", ")", ",", "?", ":", ":=", ";"},
    key=len,
    reverse=True,
)
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
_NUM, _WORD, _SYMBOL, _END = "number", "word", "symbol", "end"


@dataclass(frozen=True)
class _Token:
    kind: str
    text: str
    offset: int


def _tokenize(expression: str) -> list[_Token]:
    tokens: list[_Token] = []
    position = 0
    upper = expression.upper()
    while position < len(expression):
        char = expression[position]
        if char.isspace():
            position += 1
            continue
        number = _NUMBER.match(expression, position)
        if number:
            tokens.append(_Token(_NUM, number.group(), position))
            position = number.end()
            continue
        for word in _WORDS:
            if upper.startswith(word, position):
                tokens.append(_Token(_WORD, word, position))
                position += len(word)
                break
        else:
            for symbol in _SYMBOLS:
                if expression.startswith(symbol, position):
                    tokens.append(_Token(_SYMBOL, symbol, position))
                    position += len(symbol)
                    break
            else:
                raise CalcError("Syntax error, unknown operator/operand", expression, position)
    tokens.append(_Token(_END, "", len(expression)))
    return tokens


def _literal(text: str, expression: str, offset: int) -> float:
    if text[:2] in ("0x", "0X"):
        value = int(text, 16)
        if value > 0xFFFFFFFF:
            raise CalcError("Badly formed numeric literal", expression, offset)
        return float(value - (1 << 32) if value & 0x80000000 else value)
    return float(text)


class _Parser:
    """Recursive descent over the tokens, building closures over the inputs."""

    def __init__(self, expression: str) -> None:
        self.expression = expression
        self.tokens = _tokenize(expression)
        self.index = 0
        self.used: set[str] = set()

    @property
    def token(self) -> _Token:
        return self.tokens[self.index]

    def fail(self, message: str, token: _Token | None = None) -> CalcError:
        return CalcError(message, self.expression, (token or self.token).offset)

    def take(self, *texts: str) -> _Token | None:
        token = self.token
        if token.kind in (_WORD, _SYMBOL) and token.text in texts:
            self.index += 1
            return token
        return None

    def expect(self, text: str, message: str) -> None:
        if not self.take(text):
            raise self.fail(message)

    def parse(self) -> Evaluator:
        if self.token.kind == _END:
            raise self.fail("Incomplete expression, operand missing")
        result = self.conditional()
        token = self.token
        if token.kind == _END:
            return result
        if token.text == ")":
            raise self.fail("Close parenthesis found without open")
        if token.text == ",":
            raise self.fail("Comma without enclosing parentheses")
        if token.text in (":=", ";"):
            raise self.fail("Assignment (:= or ;) is not allowed in access security")
        if token.text == ":":
            raise self.fail("Unbalanced conditional ?: operators")
        raise self.fail("Syntax error, operator expected")

    def conditional(self) -> Evaluator:
        condition = self.binary(0)
        if not self.take("?"):
            return condition
        then = self.conditional()
        self.expect(":", "Unbalanced conditional ?: operators")
        otherwise = self.conditional()
        return lambda v: then(v) if condition(v) != 0.0 else otherwise(v)

    def binary(self, level: int) -> Evaluator:
        if level == len(_LEVELS):
            return self.unary()
        lhs = self.binary(level + 1)
        while (token := self.take(*_LEVELS[level])) is not None:
            rhs = self.binary(level + 1)
            lhs = self._combine(_BINARY[token.text], lhs, rhs)
        return lhs

    @staticmethod
    def _combine(op: Callable[[float, float], float], lhs: Evaluator, rhs: Evaluator) -> Evaluator:
        return lambda v: op(lhs(v), rhs(v))

    def arguments(self, name: _Token) -> list[Evaluator]:
        self.expect("(", f"'(' expected after {name.text}")
        arguments = [self.conditional()]
        while self.take(","):
            arguments.append(self.conditional())
        self.expect(")", "')' or ',' expected")
        return arguments

    def unary(self) -> Evaluator:
        token = self.token
        if token.kind in (_WORD, _SYMBOL) and (
            token.text in _PREFIX_OPERATORS or (token.kind == _WORD and token.text in _UNARY)
        ):
            self.index += 1
            operand = self.unary()
            op = _UNARY[token.text]
            return lambda v: op(operand(v))
        if token.kind == _WORD and token.text in _TWO_ARGUMENTS:
            self.index += 1
            arguments = self.arguments(token)
            if len(arguments) != 2:
                raise self.fail(f"{token.text} takes two arguments", token)
            function2 = _TWO_ARGUMENTS[token.text]
            first, second = arguments
            return lambda v: function2(first(v), second(v))
        if token.kind == _WORD and token.text in _VARIADIC:
            self.index += 1
            arguments = self.arguments(token)
            function_n = _VARIADIC[token.text]
            return lambda v: function_n([argument(v) for argument in arguments])
        return self.primary()

    def primary(self) -> Evaluator:
        token = self.token
        if token.kind == _NUM:
            self.index += 1
            value = _literal(token.text, self.expression, token.offset)
            return lambda v: value
        if token.kind == _WORD and token.text in _REFUSED:
            raise self.fail(_REFUSED[token.text])
        if token.kind == _WORD and token.text in _CONSTANTS:
            self.index += 1
            constant = _CONSTANTS[token.text]
            return lambda v: constant
        if token.kind == _WORD and len(token.text) == 1:
            self.index += 1
            self.used.add(token.text)
            index = INPUT_LETTERS.index(token.text)
            return lambda v: v[index]
        if self.take("("):
            inner = self.conditional()
            if self.token.text == ",":
                raise self.fail("Comma without enclosing function")
            self.expect(")", "Parenthesis still open at end of expression")
            return inner
        if token.kind == _END:
            raise self.fail("Incomplete expression, operand missing")
        raise self.fail("Syntax error, operand expected")


@dataclass(frozen=True)
class CalcExpression:
    """A compiled CALC expression; call :meth:`evaluate` with the input values."""

    #: The expression as written in the configuration.
    text: str
    #: The input letters (``"A"``..``"L"``) the expression reads.
    inputs_used: frozenset[str]
    _evaluator: Evaluator = field(repr=False, compare=False)

    def evaluate(self, values: Mapping[str, float] | Sequence[float] = ()) -> float:
        """The result for input values given by letter, or as a sequence A, B, ...

        Inputs not given are 0.0, as epics-base initialises them.
        """
        if isinstance(values, Mapping):
            vector = [float(values.get(letter, 0.0)) for letter in INPUT_LETTERS]
        else:
            vector = [float(x) for x in values][: len(INPUT_LETTERS)]
            vector += [0.0] * (len(INPUT_LETTERS) - len(vector))
        return self._evaluator(vector)

    def is_true(self, values: Mapping[str, float] | Sequence[float] = ()) -> bool:
        """Whether the result grants the rule (it is 1, within 0.01)."""
        return calc_is_true(self.evaluate(values))


def compile_calc(expression: str) -> CalcExpression:
    """Compile a CALC expression, or raise :class:`CalcError` saying where it is wrong."""
    parser = _Parser(expression)
    evaluator = parser.parse()
    return CalcExpression(expression, frozenset(parser.used), evaluator)
