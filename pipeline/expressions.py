"""Safe per-frame expressions for motion and prompt weights, such as "1.01 + 0.04 * beat".

An expression is parsed and checked once (only arithmetic, comparisons, conditionals,
the known variables and the known functions), then evaluated for every frame by
simpleeval with all numbers as floats, so that nothing can hang on a huge integer or
reach an attribute, a subscript or a Python builtin.
"""

from __future__ import annotations

import ast
import difflib
import math
import operator
from collections.abc import Mapping
from dataclasses import dataclass, field

import simpleeval

# Variables every expression may use; the audio ones need an `audio:` block.
TIME_VARIABLES = ("t", "frame", "fps")
AUDIO_VARIABLES = ("beat", "onset", "rms", "bass", "mid", "treble")
CONSTANTS = {"pi": math.pi}

MAX_LENGTH = 500


class ExpressionError(ValueError):
    """An expression that cannot be used; the message names the problem."""


def _clamp(x: float, lo: float, hi: float) -> float:
    return min(max(x, lo), hi)


def _smoothstep(edge0: float, edge1: float, x: float) -> float:
    if edge0 == edge1:
        return 0.0 if x < edge0 else 1.0
    u = _clamp((x - edge0) / (edge1 - edge0), 0.0, 1.0)
    return u * u * (3.0 - 2.0 * u)


def _float_result(function):
    """Wrap an integer-valued function so results stay floats (no unbounded integers)."""

    def wrapped(*args: float) -> float:
        return float(function(*args))

    return wrapped


FUNCTIONS = {
    "sin": math.sin,
    "cos": math.cos,
    "tan": math.tan,
    "abs": abs,
    "min": min,
    "max": max,
    "clamp": _clamp,
    "exp": math.exp,
    "log": math.log,
    "sqrt": math.sqrt,
    "floor": _float_result(math.floor),
    "ceil": _float_result(math.ceil),
    "round": _float_result(round),
    "smoothstep": _smoothstep,
}

# How many arguments each function takes (min, max), checked at parse time.
_ARITY = {
    "min": (1, 32),
    "max": (1, 32),
    "clamp": (3, 3),
    "smoothstep": (3, 3),
    "log": (1, 2),
    "round": (1, 1),
}

_OPERATORS = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.FloorDiv: operator.floordiv,
    ast.Mod: operator.mod,
    ast.Pow: operator.pow,
    ast.USub: operator.neg,
    ast.UAdd: operator.pos,
    ast.Not: operator.not_,
    ast.Eq: operator.eq,
    ast.NotEq: operator.ne,
    ast.Lt: operator.lt,
    ast.LtE: operator.le,
    ast.Gt: operator.gt,
    ast.GtE: operator.ge,
}

_ALLOWED_NODES = (
    ast.Expression,
    ast.BinOp,
    ast.UnaryOp,
    ast.BoolOp,
    ast.Compare,
    ast.IfExp,
    ast.Call,
    ast.Name,
    ast.Load,
    ast.Constant,
    ast.And,
    ast.Or,
    *_OPERATORS,
)

_DESCRIBE = {
    ast.Attribute: "attribute access (the '.' after a name)",
    ast.Subscript: "indexing with [ ]",
    ast.Lambda: "lambda",
    ast.List: "lists",
    ast.Tuple: "tuples",
    ast.Dict: "dicts",
    ast.Set: "sets",
    ast.ListComp: "comprehensions",
    ast.GeneratorExp: "comprehensions",
    ast.NamedExpr: "assignment (:=)",
    ast.JoinedStr: "strings",
}


def _suggest(name: str, known: list[str]) -> str:
    close = difflib.get_close_matches(name, known, n=1)
    return f" (did you mean '{close[0]}'?)" if close else ""


@dataclass(frozen=True)
class Expression:
    """A parsed, checked expression; `evaluate` gives its value for one frame."""

    text: str
    names: frozenset[str]
    _body: ast.expr = field(repr=False, compare=False)

    @property
    def uses_audio(self) -> bool:
        return bool(self.names & set(AUDIO_VARIABLES))

    def evaluate(self, variables: Mapping[str, float]) -> float:
        """The expression's value for these variables; ExpressionError if not a finite number."""
        evaluator = simpleeval.SimpleEval(
            operators=_OPERATORS, functions=FUNCTIONS, names={**CONSTANTS, **variables}
        )
        try:
            value = evaluator.eval(self.text, previously_parsed=self._body)
        except ZeroDivisionError:
            raise ExpressionError(f"'{self.text}' divides by zero") from None
        except OverflowError:
            raise ExpressionError(f"'{self.text}' gives a number too large") from None
        except (ValueError, TypeError) as error:
            raise ExpressionError(f"'{self.text}' cannot be evaluated: {error}") from None
        except simpleeval.InvalidExpression as error:
            raise ExpressionError(f"'{self.text}': {error}") from None
        if isinstance(value, bool):
            value = float(value)
        if not isinstance(value, int | float):
            raise ExpressionError(f"'{self.text}' does not give a real number")
        value = float(value)
        if not math.isfinite(value):
            raise ExpressionError(f"'{self.text}' gives {value}, not a finite number")
        return value


def parse(text: str, *, audio: bool) -> Expression:
    """Parse and check `text`; `audio` says whether the audio variables are available."""
    if not text.strip():
        raise ExpressionError("the expression is empty")
    if len(text) > MAX_LENGTH:
        raise ExpressionError(f"the expression is longer than {MAX_LENGTH} characters")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as error:
        where = f" at column {error.offset}" if error.offset else ""
        raise ExpressionError(f"syntax error{where} in '{text}'") from None
    except (RecursionError, MemoryError, ValueError):
        raise ExpressionError(f"'{text}' is nested too deeply") from None

    known_names = [*TIME_VARIABLES, *AUDIO_VARIABLES, *CONSTANTS]
    names: set[str] = set()
    for node in ast.walk(tree):
        if not isinstance(node, _ALLOWED_NODES):
            what = _DESCRIBE.get(type(node), type(node).__name__)
            raise ExpressionError(f"{what} is not allowed in expressions: '{text}'")
        if isinstance(node, ast.Constant):
            _check_constant(node, text)
        elif isinstance(node, ast.Call):
            _check_call(node, text)
        elif isinstance(node, ast.Name) and not _is_called(tree, node):
            if node.id in FUNCTIONS:
                raise ExpressionError(f"'{node.id}' is a function: call it, as in {node.id}(t)")
            if node.id not in known_names:
                hint = _suggest(node.id, known_names + list(FUNCTIONS))
                raise ExpressionError(f"unknown name '{node.id}' in '{text}'{hint}")
            if node.id in AUDIO_VARIABLES and not audio:
                raise ExpressionError(
                    f"'{node.id}' comes from the soundtrack: add an `audio:` block "
                    "with a file, or use t/frame instead"
                )
            names.add(node.id)
    _floats_only(tree)
    return Expression(text=text, names=frozenset(names), _body=tree.body)


def _check_constant(node: ast.Constant, text: str) -> None:
    if isinstance(node.value, bool) or not isinstance(node.value, int | float):
        raise ExpressionError(f"only numbers may appear as constants in '{text}'")
    try:
        value = float(node.value)
    except OverflowError:
        raise ExpressionError(f"a number in '{text}' is too large") from None
    if not math.isfinite(value):
        raise ExpressionError(f"a number in '{text}' is too large")


def _check_call(node: ast.Call, text: str) -> None:
    if not isinstance(node.func, ast.Name):
        raise ExpressionError(f"only the known functions may be called in '{text}'")
    name = node.func.id
    if name not in FUNCTIONS:
        hint = _suggest(name, list(FUNCTIONS))
        raise ExpressionError(
            f"unknown function '{name}' in '{text}'{hint}; known: {', '.join(FUNCTIONS)}"
        )
    if node.keywords:
        raise ExpressionError(f"{name}() takes no keyword arguments in '{text}'")
    low, high = _ARITY.get(name, (1, 1))
    if not low <= len(node.args) <= high:
        count = str(low) if low == high else f"{low} to {high}"
        raise ExpressionError(f"{name}() takes {count} argument(s) in '{text}'")


def _is_called(tree: ast.AST, name: ast.Name) -> bool:
    return any(isinstance(n, ast.Call) and n.func is name for n in ast.walk(tree))


def _floats_only(tree: ast.AST) -> None:
    """Turn integer constants into floats, so '9**9**9' overflows at once instead of hanging."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, int):
            node.value = float(node.value)
