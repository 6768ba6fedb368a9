"""A small, safe expression language for alarm conditions over several signals.

Grammar (lowest precedence first)::

    expr    := or
    or      := and ("or" and)*
    and     := not ("and" not)*
    not     := "not" not | compare
    compare := sum (("<" | "<=" | ">" | ">=" | "==" | "!=") sum)?
    sum     := product (("+" | "-") product)*
    product := unary (("*" | "/") unary)*
    unary   := "-" unary | atom
    atom    := NUMBER | STRING | "true" | "false" | NAME | `PATH` | FUNC "(" args ")"
             | "(" expr ")"

``NAME`` (letters, digits, ``_``) and ```PATH``` (back-quoted, may hold ``/``, ``-`` and
``.``) are signal references, resolved by whoever uses the expression (for alarm rules:
relative to the rule's asset). Strings are single- or double-quoted. Functions: ``abs(x)``,
``min(a, b, …)``, ``max(a, b, …)``.

Nothing is ever handed to Python's ``eval``: the text is tokenised and parsed into the
frozen nodes below, which :func:`check_types` types statically (``number``, ``bool``,
``string``, and ``state`` for a machine-state signal whose values are standard state
names) and the alarm engine evaluates on NumPy arrays.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

__all__ = [
    "FUNCTIONS",
    "Binary",
    "Call",
    "Const",
    "ExprError",
    "Node",
    "Ref",
    "Unary",
    "check_types",
    "parse_expression",
    "refs_of",
]

FUNCTIONS: tuple[str, ...] = ("abs", "min", "max")
"""The functions an expression may call."""

_COMPARE = ("<", "<=", ">", ">=", "==", "!=")
_KEYWORDS = ("and", "or", "not", "true", "false")

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<number>(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<string>'[^']*'|"[^"]*")
  | (?P<path>`[^`]*`)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|==|!=|[<>+\-*/(),])
    """,
    re.VERBOSE,
)


class ExprError(ValueError):
    """An expression is malformed or ill-typed; ``column`` is 1-based within the text."""

    def __init__(self, message: str, column: int) -> None:
        self.column = column
        self.reason = message
        super().__init__(f"{message} (at column {column})")


@dataclass(frozen=True, slots=True)
class Const:
    """A constant: a number, a string or a boolean."""

    value: float | str | bool
    column: int


@dataclass(frozen=True, slots=True)
class Ref:
    """A reference to a signal, as written (``pressure`` or ```cell-1/press-7/state```)."""

    path: str
    column: int


@dataclass(frozen=True, slots=True)
class Unary:
    """``not x`` or ``-x``."""

    op: str
    operand: Node
    column: int


@dataclass(frozen=True, slots=True)
class Binary:
    """An arithmetic, comparison or boolean operation."""

    op: str
    left: Node
    right: Node
    column: int


@dataclass(frozen=True, slots=True)
class Call:
    """A call of one of :data:`FUNCTIONS`."""

    name: str
    args: tuple[Node, ...]
    column: int


Node = Const | Ref | Unary | Binary | Call
"""Any node of a parsed expression."""


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str
    text: str
    column: int


def _tokens(text: str) -> list[_Token]:
    out: list[_Token] = []
    pos = 0
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:
            raise ExprError(f"unexpected character {text[pos]!r}", pos + 1)
        kind = m.lastgroup or ""
        if kind != "ws":
            value = m.group()
            if kind == "name" and value in _KEYWORDS:
                kind = value
            out.append(_Token(kind, value, pos + 1))
        pos = m.end()
    out.append(_Token("end", "", len(text) + 1))
    return out


class _Parser:
    def __init__(self, text: str) -> None:
        self.tokens = _tokens(text)
        self.i = 0

    @property
    def tok(self) -> _Token:
        return self.tokens[self.i]

    def take(self) -> _Token:
        tok = self.tokens[self.i]
        self.i += 1
        return tok

    def expect(self, text: str) -> _Token:
        if self.tok.text != text or self.tok.kind in ("string", "path"):
            raise ExprError(f"expected {text!r}, found {_shown(self.tok)}", self.tok.column)
        return self.take()

    def parse(self) -> Node:
        node = self.or_()
        if self.tok.kind != "end":
            raise ExprError(f"unexpected {_shown(self.tok)}", self.tok.column)
        return node

    def or_(self) -> Node:
        node = self.and_()
        while self.tok.kind == "or":
            col = self.take().column
            node = Binary("or", node, self.and_(), col)
        return node

    def and_(self) -> Node:
        node = self.not_()
        while self.tok.kind == "and":
            col = self.take().column
            node = Binary("and", node, self.not_(), col)
        return node

    def not_(self) -> Node:
        if self.tok.kind == "not":
            col = self.take().column
            return Unary("not", self.not_(), col)
        return self.compare()

    def compare(self) -> Node:
        node = self.sum()
        if self.tok.kind == "op" and self.tok.text in _COMPARE:
            tok = self.take()
            node = Binary(tok.text, node, self.sum(), tok.column)
            if self.tok.kind == "op" and self.tok.text in _COMPARE:
                raise ExprError(
                    "comparisons do not chain: write 'a < b and b < c'", self.tok.column
                )
        return node

    def sum(self) -> Node:
        node = self.product()
        while self.tok.kind == "op" and self.tok.text in ("+", "-"):
            tok = self.take()
            node = Binary(tok.text, node, self.product(), tok.column)
        return node

    def product(self) -> Node:
        node = self.unary()
        while self.tok.kind == "op" and self.tok.text in ("*", "/"):
            tok = self.take()
            node = Binary(tok.text, node, self.unary(), tok.column)
        return node

    def unary(self) -> Node:
        if self.tok.kind == "op" and self.tok.text == "-":
            col = self.take().column
            return Unary("-", self.unary(), col)
        return self.atom()

    def atom(self) -> Node:
        tok = self.take()
        if tok.kind == "number":
            return Const(float(tok.text), tok.column)
        if tok.kind == "string":
            return Const(tok.text[1:-1], tok.column)
        if tok.kind in ("true", "false"):
            return Const(tok.kind == "true", tok.column)
        if tok.kind == "path":
            path = tok.text[1:-1].strip()
            if not path:
                raise ExprError("empty signal reference ``", tok.column)
            return Ref(path, tok.column)
        if tok.kind == "name":
            if self.tok.kind == "op" and self.tok.text == "(":
                return self.call(tok)
            return Ref(tok.text, tok.column)
        if tok.kind == "op" and tok.text == "(":
            node = self.or_()
            self.expect(")")
            return node
        raise ExprError(f"expected a value, found {_shown(tok)}", tok.column)

    def call(self, name: _Token) -> Node:
        if name.text not in FUNCTIONS:
            raise ExprError(
                f"unknown function {name.text!r} (known: {', '.join(FUNCTIONS)})", name.column
            )
        self.expect("(")
        args: list[Node] = []
        if not (self.tok.kind == "op" and self.tok.text == ")"):
            args.append(self.or_())
            while self.tok.kind == "op" and self.tok.text == ",":
                self.take()
                args.append(self.or_())
        self.expect(")")
        if name.text == "abs" and len(args) != 1:
            raise ExprError(f"abs() takes one argument, got {len(args)}", name.column)
        if name.text in ("min", "max") and len(args) < 2:
            raise ExprError(f"{name.text}() takes two or more arguments", name.column)
        return Call(name.text, tuple(args), name.column)


def _shown(tok: _Token) -> str:
    return "the end of the expression" if tok.kind == "end" else repr(tok.text)


def parse_expression(text: str) -> Node:
    """Parse ``text``; raises :class:`ExprError` naming the column of the problem."""
    if not text.strip():
        raise ExprError("empty expression", 1)
    return _Parser(text).parse()


def refs_of(node: Node) -> Iterator[Ref]:
    """Every signal reference in ``node``, left to right."""
    if isinstance(node, Ref):
        yield node
    elif isinstance(node, Unary):
        yield from refs_of(node.operand)
    elif isinstance(node, Binary):
        yield from refs_of(node.left)
        yield from refs_of(node.right)
    elif isinstance(node, Call):
        for arg in node.args:
            yield from refs_of(arg)


ExprType = str
"""``number``, ``bool``, ``string`` or ``state`` (a standard machine-state name)."""


def check_types(
    node: Node, ref_type: Callable[[Ref], ExprType], states: tuple[str, ...] = ()
) -> ExprType:
    """The type of ``node``; raises :class:`ExprError` on a type mismatch.

    ``ref_type`` gives the type of a signal reference (and raises :class:`ExprError` for an
    unknown one); ``states`` are the names a ``state`` value may be compared with.
    """
    if isinstance(node, Const):
        if isinstance(node.value, bool):
            return "bool"
        return "string" if isinstance(node.value, str) else "number"
    if isinstance(node, Ref):
        return ref_type(node)
    if isinstance(node, Unary):
        inner = check_types(node.operand, ref_type, states)
        want = "bool" if node.op == "not" else "number"
        if inner != want:
            raise ExprError(f"'{node.op}' needs a {want}, got a {inner}", node.column)
        return want
    if isinstance(node, Call):
        for arg in node.args:
            t = check_types(arg, ref_type, states)
            if t != "number":
                raise ExprError(f"{node.name}() takes numbers, got a {t}", node.column)
        return "number"
    left = check_types(node.left, ref_type, states)
    right = check_types(node.right, ref_type, states)
    if node.op in ("and", "or"):
        for side in (left, right):
            if side != "bool":
                raise ExprError(f"'{node.op}' needs booleans, got a {side}", node.column)
        return "bool"
    if node.op in ("+", "-", "*", "/"):
        if left != "number" or right != "number":
            raise ExprError(f"'{node.op}' needs numbers, got a {left} and a {right}", node.column)
        return "number"
    # comparisons
    kinds = {left, right}
    if "state" in kinds:
        other = (kinds - {"state"}) or {"state"}
        if other not in ({"state"}, {"string"}):
            raise ExprError(
                f"a machine state compares with a state name, not a {other.pop()}", node.column
            )
        for operand in (node.left, node.right):
            if (
                isinstance(operand, Const)
                and isinstance(operand.value, str)
                and states
                and operand.value not in states
            ):
                raise ExprError(
                    f"unknown state {operand.value!r} (standard states: {', '.join(states)})",
                    operand.column,
                )
        left = right = "string"
    if left != right:
        raise ExprError(f"cannot compare a {left} with a {right}", node.column)
    if left in ("string", "bool") and node.op not in ("==", "!="):
        raise ExprError(f"a {left} compares with '==' or '!=' only, not '{node.op}'", node.column)
    return "bool"
