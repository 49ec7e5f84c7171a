"""Go templates for ``--format``: the part of text/template docker users type.

Docker's CLI renders ``--format`` with Go's text/template
(https://pkg.go.dev/text/template) plus eight functions of its own
(https://docs.docker.com/go/formatting/ and docker/cli templates/templates.go:
``json join split lower upper title pad truncate``). This module re-implements
that in three plain steps, each a section below:

    lex      "{{.ID}}\\t{{.Size}}"  ->  tokens: open, field .ID, close, text...
    parse    tokens                ->  a tree: Text, Action, If, Range, With...
    execute  tree + a value (dot)  ->  text

and finally docker's formatter (cli/command/formatter/formatter.go): the
``table`` prefix, header rows, tab alignment, and the ``\\t`` / ``\\n``
typed in a shell. The grammar (Go's, minus define/template/block)::

    {{pipeline}}                      {{- trims white space before, -}} after
    {{/* a comment */}}
    {{if P}} .. {{else if P}} .. {{else}} .. {{end}}
    {{with P}} .. {{else with P}} .. {{else}} .. {{end}}
    {{range P}} .. {{else}} .. {{end}}    {{range $i, $v := P}}   {{break}} {{continue}}
    pipeline:  [$x := | $x =] command [| command ...]   (a value piped in is the last argument)
    command:   operand [operand ...]
    operand:   .  .Field.Field  $x  $x.Field  "string"  `raw`  'c'  12  1.5  true  false  nil
               (pipeline)  (pipeline).Field  function

How Python values play Go's: an object's attributes starting with an upper-case
letter are its exported fields (a method takes arguments: ``{{.Label "k"}}``);
a dict whose values are all strings is a Go ``map[string]string`` (a missing
key prints ``<no value>``, as Go does); any other dict -- ``inspect``'s Config,
State... -- stands for a Go struct, so a missing key is an error, as docker
reports it for inspect (``map has no entry for key "Nope"``).
"""

from __future__ import annotations

import inspect
import json
import math
import re
from dataclasses import dataclass
from decimal import Decimal
from typing import Callable

from ..errors import UsageError
from .output import PADDING, go_quote


class TemplateError(UsageError):
    """A template that does not parse or fails while executing; the message is Go's."""


# -- lexing: the format string becomes tokens ---------------------------------

SPACE = " \t\r\n"
KEYWORDS = {"if", "else", "end", "range", "with", "break", "continue", "define", "template", "block"}

# Go's number syntax (decimal, hex, octal, binary, underscores, exponents).
NUMBER = re.compile(r"[+-]?(?:0[xX][0-9a-fA-F_]+|0[oO][0-7_]+|0[bB][01_]+"
                    r"|(?:\d[\d_]*\.?[\d_]*|\.\d[\d_]*)(?:[eE][+-]?\d+)?)")
NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
FIELDS = re.compile(r"(?:\.[A-Za-z_][A-Za-z0-9_]*)+")
VARIABLE = re.compile(r"\$[A-Za-z0-9_]*")


@dataclass
class Token:
    kind: str          # text open close field var ident string number char dot pipe
                       # lparen rparen declare assign comma eof
    text: str          # as written (for error messages)
    pos: int           # offset in the format string: Go reports line:column from it
    space: bool = False    # white space before it: ".A .B" is two operands, ".A.B" one
    value: object = None   # a literal's value; the names of a field or variable chain


def lex(src: str) -> list[Token]:
    """Split ``src`` into text and the tokens of each ``{{ }}`` action."""
    tokens: list[Token] = []
    pos = 0
    while True:
        start = src.find("{{", pos)
        if start < 0:
            tokens.append(Token("text", src[pos:], pos))
            break
        text, at = src[pos:start], start + 2
        # "{{- " (a dash then white space) trims the white space before the action.
        if src.startswith("-", at) and src[at + 1:at + 2] in tuple(SPACE):
            text, at = text.rstrip(SPACE), at + 2
        tokens.append(Token("text", text, pos))
        if src.startswith("/*", at):  # a comment: {{/* ... */}}, nothing else inside
            end = src.find("*/", at + 2)
            if end < 0:
                raise _parse_error(src, start, "unclosed comment")
            found, trim, pos = _right_delim(src, end + 2)
            if not found:
                raise _parse_error(src, start, "comment ends before closing delimiter")
        else:
            tokens.append(Token("open", "{{", start))
            pos, trim = _lex_action(src, at, tokens)
        if trim:  # " -}}" trims the white space after the action
            while pos < len(src) and src[pos] in SPACE:
                pos += 1
    tokens.append(Token("eof", "", len(src)))
    return tokens


def _right_delim(src: str, at: int) -> tuple[bool, bool, int]:
    """(is there a "}}" at ``at``, with a " -" trim marker?, position after it)."""
    if src[at:at + 1] in tuple(SPACE) and src.startswith("-}}", at + 1):
        return True, True, at + 4
    if src.startswith("}}", at):
        return True, False, at + 2
    return False, False, at


def _lex_action(src: str, at: int, tokens: list[Token]) -> tuple[int, bool]:
    """Tokens up to the closing "}}"; returns (position after it, trim marker seen)."""
    depth = 0  # open parentheses
    space = False
    while True:
        found, trim, after = _right_delim(src, at)
        if found:
            if depth:
                raise _parse_error(src, at, "unclosed left paren")
            tokens.append(Token("close", "}}", at, space))
            return after, trim
        if at >= len(src):
            raise _parse_error(src, at, "unclosed action")
        c = src[at]
        if c in SPACE:
            space, at = True, at + 1
            continue
        start = at
        if src.startswith(":=", at):
            kind, at = "declare", at + 2
        elif c in "=,|()":
            kind, at = {"=": "assign", ",": "comma", "|": "pipe", "(": "lparen", ")": "rparen"}[c], at + 1
            if c == "(":
                depth += 1
            elif c == ")":
                if not depth:
                    raise _parse_error(src, start, "unexpected right paren")
                depth -= 1
        elif c in "\"`'":
            kind, at, value = _lex_quoted(src, at)
            tokens.append(Token(kind, src[start:at], start, space, value))
            space = False
            continue
        elif c == "$":
            name = VARIABLE.match(src, at).group()
            chain = FIELDS.match(src, at + len(name))
            names = chain.group()[1:].split(".") if chain else []
            at = chain.end() if chain else at + len(name)
            tokens.append(Token("var", name, start, space, names))
            space = False
            continue
        elif c == "." and FIELDS.match(src, at):
            m = FIELDS.match(src, at)
            tokens.append(Token("field", m.group(), start, space, m.group()[1:].split(".")))
            at, space = m.end(), False
            continue
        elif c == "." and not src[at + 1:at + 2].isdigit():
            kind, at = "dot", at + 1
        elif NUMBER.match(src, at) and (c.isdigit() or c in "+-."):
            m = NUMBER.match(src, at)
            at = m.end()
            if at < len(src) and (src[at].isalnum() or src[at] == "_"):
                raise _parse_error(src, start, f"bad number syntax: {src[start:at + 1]!r}")
            tokens.append(Token("number", m.group(), start, space, _number(m.group())))
            space = False
            continue
        elif NAME.match(src, at):
            kind, at = "ident", NAME.match(src, at).end()
        else:
            raise _parse_error(src, at, f"bad character U+{ord(c):04X} '{c}'")
        tokens.append(Token(kind, src[start:at], start, space))
        space = False


def _lex_quoted(src: str, at: int) -> tuple[str, int, object]:
    """A "string", `raw string` or 'c' character constant starting at ``at``."""
    quote = src[at]
    if quote == "`":
        end = src.find("`", at + 1)
        if end < 0:
            raise _parse_error(src, at, "unterminated raw quoted string")
        return "string", end + 1, src[at + 1:end]
    i = at + 1
    while True:
        if i >= len(src) or src[i] == "\n":
            what = "quoted string" if quote == '"' else "character constant"
            raise _parse_error(src, at, f"unterminated {what}")
        if src[i] == "\\":
            i += 2
            continue
        if src[i] == quote:
            break
        i += 1
    value = _unquote(src[at + 1:i], src, at)
    if quote == "'":
        if len(value) != 1:
            raise _parse_error(src, at, f"malformed character constant: {src[at:i + 1]}")
        return "char", i + 1, ord(value)
    return "string", i + 1, value


_ESCAPE = re.compile(r"\\(?:([abfnrtv\\'\"])|x([0-9a-fA-F]{2})|([0-7]{3})|u([0-9a-fA-F]{4})"
                     r"|U([0-9a-fA-F]{8})|(.))", re.S)
_SIMPLE = {"a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
           "\\": "\\", "'": "'", '"': '"'}


def _unquote(body: str, src: str, pos: int) -> str:
    """Go's escapes inside a quoted string (strconv.Unquote)."""
    def one(m):
        simple, hex2, octal, u4, u8, bad = m.groups()
        if bad is not None:
            raise _parse_error(src, pos, "invalid syntax")
        if simple:
            return _SIMPLE[simple]
        return chr(int(hex2 or u4 or u8, 16) if not octal else int(octal, 8))
    return _ESCAPE.sub(one, body)


def _number(text: str) -> int | float:
    digits = text.replace("_", "")
    if re.fullmatch(r"[+-]?0[0-7]+", digits):  # Go: a leading 0 means octal
        return int(digits, 8)
    if re.fullmatch(r"[+-]?0[xXoObB].*", digits):
        return int(digits, 0)
    if re.fullmatch(r"[+-]?\d+", digits):
        return int(digits)
    return float(digits)


def _line(src: str, pos: int) -> int:
    return src.count("\n", 0, pos) + 1


def _parse_error(src: str, pos: int, message: str) -> TemplateError:
    return TemplateError(f"template: :{_line(src, pos)}: {message}")


# -- parsing: tokens become a tree --------------------------------------------
#
# Each node's str() is how Go prints it in error messages ("at <.Nope>").


@dataclass
class Text:
    text: str


@dataclass
class Field:
    pos: int
    names: list[str]

    def __str__(self):
        return "." + ".".join(self.names)


@dataclass
class Variable:
    pos: int
    name: str
    names: list[str]  # fields after it: $x.A.B

    def __str__(self):
        return self.name + "".join("." + n for n in self.names)


@dataclass
class Ident:  # a function name
    pos: int
    name: str

    def __str__(self):
        return self.name


@dataclass
class Literal:  # a string, number, character, true/false, nil or the dot
    pos: int
    value: object
    text: str

    def __str__(self):
        return self.text


@dataclass
class Command:
    pos: int
    args: list

    def __str__(self):
        return " ".join(f"({a})" if isinstance(a, Pipe) else str(a) for a in self.args)


@dataclass
class Pipe:
    pos: int
    decl: list[str]
    is_assign: bool
    cmds: list[Command]

    def __str__(self):
        decl = f"{', '.join(self.decl)} {'=' if self.is_assign else ':='} " if self.decl else ""
        return decl + " | ".join(str(c) for c in self.cmds)


@dataclass
class Chain:  # (pipeline).Field.Field
    pos: int
    node: object
    names: list[str]

    def __str__(self):
        inner = f"({self.node})" if isinstance(self.node, Pipe) else str(self.node)
        return inner + "".join("." + n for n in self.names)


@dataclass
class Action:  # {{pipeline}}: print its value unless it declares variables
    pos: int
    pipe: Pipe


@dataclass
class Control:  # {{if}}, {{with}}, {{range}}
    kind: str
    pos: int
    pipe: Pipe
    body: list
    else_body: list | None


@dataclass
class Jump:  # {{break}} or {{continue}}
    kind: str


DOT = object()  # Literal.value of "." (the dot is not a constant: it is looked up)


class Parser:
    """Recursive descent over the tokens, following Go's text/template/parse."""

    def __init__(self, src: str, functions):
        self.src = src
        self.functions = functions
        self.tokens = lex(src)
        self.i = 0
        self.vars = ["$"]     # variables in scope; "$" is always the data
        self.ranges = 0       # how many {{range}} bodies we are in ({{break}} needs one)

    def error(self, tok: Token, message: str):
        raise _parse_error(self.src, tok.pos, message)

    def peek(self, ahead: int = 0) -> Token:
        return self.tokens[min(self.i + ahead, len(self.tokens) - 1)]

    def next(self) -> Token:
        tok = self.peek()
        self.i += 1
        return tok

    def unexpected(self, tok: Token, context: str):
        if tok.kind == "eof":
            shown = "EOF"
        elif tok.kind == "ident" and tok.text in KEYWORDS:
            shown = f"<{tok.text}>"
        else:
            shown = go_quote(tok.text[:10]) + ("..." if len(tok.text) > 10 else "")
        self.error(tok, f"unexpected {shown} in {context}")

    def parse(self) -> list:
        nodes, stop = self.item_list()
        if stop is not None:
            self.error(stop, f"unexpected {{{{{stop.text}}}}}")
        return nodes

    def item_list(self) -> tuple[list, Token | None]:
        """Nodes up to {{end}} or {{else}} (returned as the stop token) or the end."""
        nodes = []
        while True:
            tok = self.next()
            if tok.kind == "eof":
                return nodes, None
            if tok.kind == "text":
                if tok.text:
                    nodes.append(Text(tok.text))
                continue
            word = self.peek()  # tok is "{{"
            if word.kind == "ident" and word.text in ("end", "else"):
                self.next()
                if word.text == "end":
                    self.expect_close("end")
                return nodes, word
            nodes.append(self.action())

    def expect_close(self, context: str):
        tok = self.next()
        if tok.kind != "close":
            self.unexpected(tok, context)

    def action(self):
        tok = self.peek()
        if tok.kind == "ident" and tok.text in ("if", "with", "range"):
            self.next()
            return self.control(tok)
        if tok.kind == "ident" and tok.text in ("break", "continue"):
            self.next()
            if not self.ranges:
                self.error(tok, f"{{{{{tok.text}}}}} outside {{{{range}}}}")
            self.expect_close(tok.text)
            return Jump(tok.text)
        if tok.kind == "ident" and tok.text in ("define", "template", "block"):
            self.error(tok, f"{{{{{tok.text}}}}} is not supported in a --format template")
        return Action(tok.pos, self.pipeline("command"))

    def control(self, keyword: Token) -> Control:
        kind = keyword.text
        scope = len(self.vars)  # variables declared from here end at {{end}}
        pipe = self.pipeline(kind)
        if kind == "range":
            self.ranges += 1
        body, stop = self.item_list()
        if kind == "range":
            self.ranges -= 1
        if stop is None:
            self.error(self.peek(), "unexpected EOF")
        else_body = None
        if stop.text == "else":
            after = self.peek()
            if kind != "range" and after.kind == "ident" and after.text == kind:
                # {{else if ...}} is {{else}}{{if ...}}...{{end}} sharing one {{end}}
                self.next()
                else_body = [self.control(after)]
            else:
                self.expect_close("else")
                else_body, stop = self.item_list()
                if stop is None:
                    self.error(self.peek(), "unexpected EOF")
                if stop.text != "end":
                    self.error(stop, "expected end; found {{else}}")
        del self.vars[scope:]
        return Control(kind, keyword.pos, pipe, body, else_body)

    def pipeline(self, context: str, end: str = "close") -> Pipe:
        start = self.peek()
        decl, is_assign = [], False
        first, second = self.peek(), self.peek(1)
        if first.kind == "var" and not first.value:
            if second.kind in ("declare", "assign"):
                self.i += 2
                decl, is_assign = [first.text], second.kind == "assign"
                if is_assign and first.text not in self.vars:
                    self.error(first, f'undefined variable "{first.text}"')
            elif second.kind == "comma":
                third, op = self.peek(2), self.peek(3)
                if context != "range":
                    self.error(second, f"too many declarations in {context}")
                if third.kind != "var" or third.value or op.kind != "declare":
                    self.error(second, "range can only initialize variables")
                self.i += 4
                decl = [first.text, third.text]
        cmds = []
        while True:
            tok = self.peek()
            if tok.kind == end:
                self.next()
                break
            if tok.kind in ("close", "rparen", "eof"):
                self.unexpected(tok, context)
            cmds.append(self.command(end))
        if not cmds:
            self.error(start, f"missing value for {context}")
        for stage, cmd in enumerate(cmds[1:], 2):
            if isinstance(cmd.args[0], Literal):
                self.error(start, f"non executable command in pipeline stage {stage}")
        if not is_assign:
            self.vars.extend(decl)
        return Pipe(start.pos, decl, is_assign, cmds)

    def command(self, end: str) -> Command:
        cmd = Command(self.peek().pos, [])
        while True:
            operand = self.operand()
            if operand is not None:
                cmd.args.append(operand)
            tok = self.peek()
            if tok.kind in (end, "close", "rparen"):
                break
            if tok.kind == "pipe":
                self.next()
                if self.peek().kind in (end, "close", "rparen"):
                    self.error(tok, "missing command after |")
                break
            if operand is None or not tok.space:
                self.unexpected(tok, "operand")
        if not cmd.args:
            self.error(self.peek(), "empty command")
        return cmd

    def operand(self):
        node = self.term()
        if node is None:
            return None
        tok = self.peek()
        if tok.kind == "field" and not tok.space:  # (pipeline).Field
            self.next()
            if isinstance(node, Literal):
                self.error(tok, f"unexpected . after term {str(node)!r}")
            return Chain(node.pos, node, tok.value)
        return node

    def term(self):
        tok = self.peek()
        kind = tok.kind
        if kind == "ident" and tok.text in KEYWORDS:
            return None
        self.next()
        if kind == "ident":
            if tok.text in ("true", "false"):
                return Literal(tok.pos, tok.text == "true", tok.text)
            if tok.text == "nil":
                return Literal(tok.pos, None, "nil")
            if tok.text not in self.functions:
                self.error(tok, f'function "{tok.text}" not defined')
            return Ident(tok.pos, tok.text)
        if kind == "dot":
            return Literal(tok.pos, DOT, ".")
        if kind == "var":
            if tok.text not in self.vars:
                self.error(tok, f'undefined variable "{tok.text}"')
            return Variable(tok.pos, tok.text, tok.value)
        if kind == "field":
            return Field(tok.pos, tok.value)
        if kind in ("string", "number", "char"):
            return Literal(tok.pos, tok.value, tok.text)
        if kind == "lparen":
            return self.pipeline("parenthesized pipeline", end="rparen")
        self.i -= 1
        return None


# -- values: Go's printing, truth, types and JSON ----------------------------


def is_string_map(value) -> bool:
    """A dict of strings plays a Go ``map[string]string``; other dicts play structs."""
    return isinstance(value, dict) and all(isinstance(v, str) for v in value.values())


def row_fields(value) -> dict | None:
    """The fields of a row object (see rows.py), or None for anything else."""
    method = getattr(value, "json_fields", None)
    return method() if callable(method) and not isinstance(value, dict) else None


def go_type(value) -> str:
    """The Go type docker would have for ``value``, for error messages."""
    if value is None:
        return "<nil>"
    for python, go in ((bool, "bool"), (int, "int"), (float, "float64"), (str, "string")):
        if isinstance(value, python):
            return go
    if isinstance(value, (list, tuple)):
        return "[]string" if all(isinstance(v, str) for v in value) and value else "[]interface {}"
    if isinstance(value, dict):
        return "map[string]string" if is_string_map(value) else "map[string]interface {}"
    return type(value).__name__


def truth(value) -> bool:
    """Go's truth for if/with/and/or/not: false, 0, nil and empty things are false."""
    if value is None or value is False:
        return False
    if isinstance(value, (int, float, str, list, tuple, dict)):
        return bool(value)
    return True  # a struct is always true


def go_float(x: float) -> str:
    """``%v`` of a float64: the shortest digits, in exponent form below 1e-4 or
    from 1e+06 on (Go's %g rule), so ``1e6`` prints as ``1e+06``."""
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "+Inf" if x > 0 else "-Inf"
    if x == 0:
        return "0"
    sign, digits, exponent = Decimal(repr(x)).normalize().as_tuple()
    power = len(digits) + exponent - 1  # x = d.ddd * 10**power
    if -4 <= power < 6:
        return format(Decimal(repr(x)).normalize(), "f")
    mantissa = str(digits[0]) + ("." + "".join(map(str, digits[1:])) if len(digits) > 1 else "")
    return f"{'-' if sign else ''}{mantissa}e{'+' if power >= 0 else '-'}{abs(power):02d}"


def go_str(value) -> str:
    """How Go's fmt prints a value (``%v``): [a b], map[k:v], {struct fields}, <nil>."""
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return go_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, (list, tuple)):
        return "[" + " ".join(go_str(v) for v in value) + "]"
    if is_string_map(value):
        return "map[" + " ".join(f"{k}:{value[k]}" for k in sorted(value)) + "]"
    fields = value if isinstance(value, dict) else row_fields(value)
    if fields is None and type(value).__str__ is not object.__str__:
        return str(value)  # Go's fmt calls a value's String() method; Python's is __str__
    if fields is None and hasattr(value, "__dict__"):  # an object: its exported attributes
        fields = {k: v for k, v in vars(value).items() if k[:1].isupper()}
    if fields is not None:
        return "{" + " ".join(go_str(v) for v in fields.values()) + "}"
    return str(value)


def go_json(value, escape_html: bool = False) -> str:
    """Go's encoding/json, compact. ``escape_html`` writes < > & as \\u003c \\u003e \\u0026."""
    fields = row_fields(value)
    if fields is not None:
        # Docker's rows marshal themselves with json.Marshal of a map: keys
        # sorted, HTML characters escaped (formatter/reflect.go). That is why
        # `{{json .}}` shows "\u003cnone\u003e" while `{{json .Tag}}` shows "<none>".
        return go_json(dict(sorted(fields.items())), escape_html=True)
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        if not math.isfinite(value):
            raise FuncError(f"json: unsupported value: {go_float(value)}")
        return str(int(value)) if value.is_integer() and abs(value) < 1e21 else repr(value)
    if isinstance(value, str):
        text = json.dumps(value, ensure_ascii=False)
        text = text.replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
        if escape_html:
            text = text.replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
        return text
    if isinstance(value, (list, tuple)):
        return "[" + ",".join(go_json(v, escape_html) for v in value) + "]"
    if isinstance(value, dict):
        # A Go map's keys come out sorted; a struct's in declaration order,
        # which is the order of inspect's dicts.
        keys = sorted(value) if is_string_map(value) else list(value)
        return "{" + ",".join(f"{go_json(str(k), escape_html)}:{go_json(value[k], escape_html)}"
                              for k in keys) + "}"
    raise FuncError(f"json: unsupported type: {go_type(value)}")


# -- the functions ------------------------------------------------------------


class FuncError(Exception):
    """A function refused its arguments; shown as "error calling NAME: ..."."""


@dataclass(frozen=True)
class Func:
    fn: Callable
    params: tuple[str, ...] = ()   # Go types of the fixed parameters: any, string, int, []string
    variadic: bool = False          # more arguments of any type may follow


def _fits(value, go_param: str) -> bool:
    if go_param == "any":
        return True
    if go_param == "string":
        return isinstance(value, str)
    if go_param == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value)  # []string


def _length(item):
    if item is None:
        raise FuncError("len of nil pointer")
    if isinstance(item, str):
        return len(item.encode())  # Go counts the bytes of a string
    if isinstance(item, (list, tuple, dict)):
        return len(item)
    raise FuncError(f"len of type {go_type(item)}")


def _index(item, *indexes):
    for ix in indexes:
        if isinstance(item, dict):
            if not isinstance(ix, str):
                raise FuncError(f"value has type {go_type(ix)}; should be string")
            # A missing key gives the map's zero value, without error.
            item = item[ix] if ix in item else ("" if is_string_map(item) else None)
        elif isinstance(item, (list, tuple, str)):
            if not isinstance(ix, int) or isinstance(ix, bool):
                raise FuncError(f"cannot index slice/array with type {go_type(ix)}")
            seq = item.encode() if isinstance(item, str) else item  # a string's items are bytes
            if not 0 <= ix < len(seq):
                raise FuncError(f"index out of range: {ix}")
            item = seq[ix]
        elif item is None:
            raise FuncError("index of untyped nil")
        else:
            raise FuncError(f"can't index item of type {go_type(item)}")
    return item


def _slice(item, *indexes):
    if not isinstance(item, (str, list, tuple)):
        raise FuncError(f"can't slice item of type {go_type(item)}")
    if len(indexes) > (2 if isinstance(item, str) else 3):
        raise FuncError(f"too many slice indexes: {len(indexes)}")
    bounds = [*indexes[:2], *[len(item)] * (2 - len(indexes[:2]))]
    for ix in bounds:
        if not isinstance(ix, int) or not 0 <= ix <= len(item):
            raise FuncError(f"index out of range: {ix}")
    if bounds[0] > bounds[1]:
        raise FuncError(f"invalid slice index: {bounds[0]} > {bounds[1]}")
    return item[bounds[0]:bounds[1]]


def _kind(value) -> str:
    if value is None:
        return "nil"
    for python, kind in ((bool, "bool"), (int, "int"), (float, "float"), (str, "string")):
        if isinstance(value, python):
            return kind
    return "other"


def _eq(arg1, *others):
    """eq a b c: a == b or a == c. Go refuses to compare a number with a string."""
    if not others:
        raise FuncError("missing argument for comparison")
    for arg in others:
        k1, k2 = _kind(arg1), _kind(arg)
        if k1 != k2:
            if "nil" not in (k1, k2):
                raise FuncError("incompatible types for comparison")
            equal = False
        elif k1 == "other":
            if isinstance(arg1, (list, tuple, dict)):
                raise FuncError(f"non-comparable type {go_str(arg1)}: {go_type(arg1)}")
            equal = arg1 is arg
        else:
            equal = arg1 == arg
        if equal:
            return True
    return False


def _lt(a, b):
    k1, k2 = _kind(a), _kind(b)
    if k1 not in ("int", "float", "string") or k2 not in ("int", "float", "string", "bool"):
        raise FuncError("invalid type for comparison")
    if k1 != k2:
        raise FuncError("incompatible types for comparison")
    return a < b


def _sprint(*args) -> str:
    """fmt.Sprint: a space between two operands when neither is a string."""
    out = []
    for i, arg in enumerate(args):
        if i and not isinstance(arg, str) and not isinstance(args[i - 1], str):
            out.append(" ")
        out.append(go_str(arg))
    return "".join(out)


_VERB = re.compile(r"%([-+# 0]*)(\d+)?(?:\.(\d*))?(.)", re.S)


def go_sprintf(fmt: str, *args) -> str:
    """fmt.Sprintf with Go's verbs (%v %s %q %d %t %x %f %e %g %c...), flags and widths.

    Like Go, a wrong argument is shown, not raised: %!d(string=hi),
    %!s(MISSING), %!(EXTRA int=1).
    """
    out, used, pos = [], 0, 0
    while True:
        pct = fmt.find("%", pos)
        if pct < 0:
            out.append(fmt[pos:])
            break
        out.append(fmt[pos:pct])
        m = _VERB.match(fmt, pct)
        if m is None:
            out.append("%!(NOVERB)")
            break
        pos = m.end()
        flags, width, precision, verb = m.groups()
        if verb == "%":
            out.append("%")
        elif used >= len(args):
            out.append(f"%!{verb}(MISSING)")
        else:
            out.append(_format_one(args[used], verb, flags, width, precision))
            used += 1
    if used < len(args):
        out.append("%!(EXTRA " + ", ".join(f"{go_type(a)}={go_str(a)}" for a in args[used:]) + ")")
    return "".join(out)


def _format_one(value, verb: str, flags: str, width: str | None, precision: str | None) -> str:
    is_int = isinstance(value, int) and not isinstance(value, bool)
    sign = "+" if "+" in flags else (" " if " " in flags else "")
    number = None  # a Python format spec type, when the verb prints a number
    if verb == "v" and (is_int or isinstance(value, float)):
        verb = "d" if is_int else "g"
    if verb == "v":
        text = go_str(value)
    elif verb == "s" and (isinstance(value, (str, list, tuple, dict)) or row_fields(value) is not None):
        text = go_str(value)
        if precision is not None:
            text = text[:int(precision or 0)]
    elif verb == "q" and isinstance(value, str):
        text = go_quote(value)
    elif verb == "q" and is_int:  # a character: 'x'
        inner = {"'": "\\'", '"': '"'}.get(chr(value)) or go_quote(chr(value))[1:-1]
        text = f"'{inner}'"
    elif verb == "t" and isinstance(value, bool):
        text = go_str(value)
    elif verb == "c" and is_int:
        text = chr(value)
    elif verb == "U" and is_int:
        text = f"U+{value:04X}"
    elif verb in "xX" and isinstance(value, str):
        text = value.encode().hex()
        text = text.upper() if verb == "X" else text
    elif verb in "dxXob" and is_int:
        number = verb
    elif verb in "eEfFgG" and isinstance(value, float):
        number = verb
    else:
        return f"%!{verb}(<nil>)" if value is None else f"%!{verb}({go_type(value)}={go_str(value)})"
    if number is not None:
        if number == "g" and precision is None:
            text = go_float(value)
            text = text if text.startswith("-") else sign + text
        else:
            alt = "#" if "#" in flags and number in "xXob" else ""
            prec = f".{precision or 0}" if precision is not None and number in "eEfFgG" else ""
            if number in "eEfF" and not prec:
                prec = ".6"
            text = format(value, f"{sign}{alt}{prec}{number}")
    if width and len(text) < int(width):
        if "-" in flags:
            text = text.ljust(int(width))
        elif "0" in flags and number is not None and text[:1] in "+- ":
            text = text[0] + text[1:].rjust(int(width) - 1, "0")
        else:
            text = text.rjust(int(width), "0" if "0" in flags else " ")
    return text


def _title(text: str) -> str:
    """strings.Title: upper-case the first letter of each word, leave the rest."""
    def separator(ch):
        if ord(ch) <= 0x7F:
            return not (ch.isalnum() or ch == "_")
        if ch.isalpha() or ch.isdecimal():
            return False
        return ch.isspace()
    out, previous = [], " "
    for ch in text:
        upper = ch.title() if len(ch.title()) == 1 else ch
        out.append(upper if separator(previous) else ch)
        previous = ch
    return "".join(out)


def _pad(text: str, prefix: int, suffix: int) -> str:
    """docker's pad: spaces around a non-empty string (an empty one stays empty)."""
    if prefix < 0 or suffix < 0:
        raise FuncError("strings: negative Repeat count")
    return text and " " * prefix + text + " " * suffix


def _truncate(text: str, length: int) -> str:
    """docker's truncate: the first ``length`` characters (no ellipsis)."""
    if length < 0:
        raise FuncError(f"runtime error: slice bounds out of range [:{length}]")
    return text[:length]


FUNCTIONS = {
    # Go's builtins (https://pkg.go.dev/text/template#hdr-Functions); and/or
    # are evaluated lazily by the executor.
    "and": Func(None, ("any",), True),
    "or": Func(None, ("any",), True),
    "not": Func(lambda v: not truth(v), ("any",)),
    "len": Func(_length, ("any",)),
    "index": Func(_index, ("any",), True),
    "slice": Func(_slice, ("any",), True),
    "print": Func(_sprint, (), True),
    "printf": Func(go_sprintf, ("string",), True),
    "println": Func(lambda *args: " ".join(go_str(a) for a in args) + "\n", (), True),
    "eq": Func(_eq, ("any",), True),
    "ne": Func(lambda a, b: not _eq(a, b), ("any", "any")),
    "lt": Func(_lt, ("any", "any")),
    "le": Func(lambda a, b: _lt(a, b) or _eq(a, b), ("any", "any")),
    "gt": Func(lambda a, b: not (_lt(a, b) or _eq(a, b)), ("any", "any")),
    "ge": Func(lambda a, b: not _lt(a, b), ("any", "any")),
    # docker's (templates/templates.go)
    "json": Func(go_json, ("any",)),
    "split": Func(lambda s, sep: list(s) if sep == "" else s.split(sep), ("string", "string")),
    "join": Func(lambda items, sep: sep.join(items), ("[]string", "string")),
    "title": Func(_title, ("string",)),
    "lower": Func(str.lower, ("string",)),
    "upper": Func(str.upper, ("string",)),
    "pad": Func(_pad, ("string", "int", "int")),
    "truncate": Func(_truncate, ("string", "int")),
}

# While a table's header row is rendered, docker swaps these for functions
# that return the header unchanged, so `{{upper .Names}}` is still headed
# NAMES (templates.HeaderFunctions; pad is kept, to keep the alignment).
HEADER_FUNCTIONS = {**FUNCTIONS, **{name: Func(lambda v, *rest: v, ("any",), True)
                                   for name in ("json", "split", "join", "title", "lower",
                                                "upper", "truncate")}}


# -- execution: the tree and a value become text ------------------------------

MISSING = object()  # "no value piped in" (Go's missingVal), not the same as None (nil)


class _Break(Exception):
    pass


class _Continue(Exception):
    pass


class Header:
    """The dot of a table's header row: each field names its column."""

    def __init__(self, headers: dict[str, str]):
        self.headers = headers

    def column(self, name: str) -> str:
        return self.headers.get(name) or name.upper()

    def __str__(self) -> str:  # `table {{json .}}`: docker's header is empty too
        return ""


class Template:
    """A parsed template; ``execute(value)`` renders it with ``value`` as the dot."""

    def __init__(self, text: str):
        self.text = text
        self.tree = Parser(text, FUNCTIONS).parse()

    def execute(self, data, *, header: bool = False) -> str:
        run = _Execution(self.text, HEADER_FUNCTIONS if header else FUNCTIONS)
        run.vars.append(("$", data))
        try:
            run.walk(data, self.tree)
        except TemplateError:
            if not header:
                raise
            # docker ignores a header that fails and keeps what came out
        return "".join(run.out)


class _Execution:
    """One run of a template: the output so far and the variables in scope."""

    def __init__(self, src: str, functions: dict):
        self.src = src
        self.functions = functions
        self.vars: list[tuple[str, object]] = []  # (name, value), innermost last
        self.out: list[str] = []

    def error(self, node, message: str):
        """Go's execution error: where, and the node (cut at 20 characters)."""
        pos = getattr(node, "pos", 0)
        line_start = self.src.rfind("\n", 0, pos) + 1
        column = len(self.src[line_start:pos].encode())
        context = str(node)
        if len(context) > 20:
            context = context[:20] + "..."
        raise TemplateError(f'template: :{_line(self.src, pos)}:{column}: executing "" '
                            f"at <{context}>: {message}")

    # statements

    def walk(self, dot, nodes: list) -> None:
        for node in nodes:
            if isinstance(node, Text):
                self.out.append(node.text)
            elif isinstance(node, Action):
                value = self.pipeline(dot, node.pipe)
                if not node.pipe.decl:
                    self.out.append("<no value>" if value is None else go_str(value))
            elif isinstance(node, Control):
                scope = len(self.vars)
                try:
                    if node.kind == "range":
                        self.range(dot, node)
                    else:
                        value = self.pipeline(dot, node.pipe)
                        if truth(value):
                            self.walk(value if node.kind == "with" else dot, node.body)
                        elif node.else_body is not None:
                            self.walk(dot, node.else_body)
                finally:
                    del self.vars[scope:]
            else:
                raise _Break() if node.kind == "break" else _Continue()

    def range(self, dot, node: Control) -> None:
        value = self.commands(dot, node.pipe)
        if isinstance(value, dict):
            items = [(k, value[k]) for k in sorted(value)]  # Go ranges over a map in key order
        elif isinstance(value, (list, tuple)):
            items = list(enumerate(value))
        elif isinstance(value, int) and not isinstance(value, bool):
            if len(node.pipe.decl) > 1:
                self.error(node.pipe, f"can't use {value} to iterate over more than one variable")
            items = [(i, i) for i in range(value)]
        elif value is None:
            items = []
        else:
            self.error(node.pipe, f"range can't iterate over {go_str(value)}")
        if not items and node.else_body is not None:
            self.walk(dot, node.else_body)
        for key, element in items:
            scope = len(self.vars)
            names = node.pipe.decl
            if len(names) == 2:
                self.vars += [(names[0], key), (names[1], element)]
            elif names:
                self.vars.append((names[0], element))
            try:
                self.walk(element, node.body)
            except _Continue:
                pass
            except _Break:
                break
            finally:
                del self.vars[scope:]

    # expressions

    def commands(self, dot, pipe: Pipe):
        """A pipeline's value: each command's result is the last argument of the next."""
        value = MISSING
        for cmd in pipe.cmds:
            value = self.command(dot, cmd, value)
        return value

    def pipeline(self, dot, pipe: Pipe):
        value = self.commands(dot, pipe)
        for name in pipe.decl:
            if pipe.is_assign:  # $x = ...: the innermost $x changes
                index = max(i for i, (n, _) in enumerate(self.vars) if n == name)
                self.vars[index] = (name, value)
            else:
                self.vars.append((name, value))
        return value

    def variable(self, node: Variable):
        for name, value in reversed(self.vars):
            if name == node.name:
                return value
        self.error(node, f"undefined variable: {node.name}")

    def command(self, dot, cmd: Command, final):
        first = cmd.args[0]
        if isinstance(first, Field):
            return self.field_chain(dot, dot, first, first.names, cmd.args, final)
        if isinstance(first, Chain):
            return self.field_chain(dot, self.arg(dot, first.node), first, first.names, cmd.args, final)
        if isinstance(first, Variable) and first.names:
            return self.field_chain(dot, self.variable(first), first, first.names, cmd.args, final)
        if isinstance(first, Ident):
            return self.call(dot, first, cmd, final)
        if isinstance(first, Literal) and first.text == "nil":
            self.error(first, "nil is not a command")
        if len(cmd.args) > 1 or final is not MISSING:
            self.error(first, f"can't give argument to non-function {first}")
        return self.arg(dot, first)

    def arg(self, dot, node):
        """The value of one operand (an argument, or the start of a command)."""
        if isinstance(node, Literal):
            return dot if node.value is DOT else node.value
        if isinstance(node, Variable):
            return self.field_chain(dot, self.variable(node), node, node.names, [node], MISSING) \
                if node.names else self.variable(node)
        if isinstance(node, Pipe):
            return self.pipeline(dot, node)
        if isinstance(node, Ident):
            return self.call(dot, node, Command(node.pos, [node]), MISSING)
        return self.command(dot, Command(node.pos, [node]), MISSING)  # a field or a chain

    def field_chain(self, dot, receiver, node, names, args, final):
        """.A.B.C: look up each name in turn; only the last one gets the arguments."""
        for name in names[:-1]:
            receiver = self.lookup(dot, node, name, receiver, [node], MISSING)
        return self.lookup(dot, node, names[-1], receiver, args, final)

    def lookup(self, dot, node, name: str, receiver, args, final):
        has_args = len(args) > 1 or final is not MISSING
        if isinstance(receiver, Header):
            return receiver.column(name)
        if isinstance(receiver, dict):
            if has_args:
                self.error(node, f"{name} is not a method but has arguments")
            if name in receiver:
                return receiver[name]
            if is_string_map(receiver):
                return None  # a Go map without the key: prints <no value>
            self.error(node, f'map has no entry for key "{name}"')
        if receiver is None:
            self.error(node, f"nil pointer evaluating interface {{}}.{name}")
        value = MISSING
        if name[:1].isupper() and not isinstance(receiver, (str, int, float, list, tuple)):
            value = getattr(receiver, name, MISSING)  # exported names only, as in Go
        if value is MISSING:
            self.error(node, f"can't evaluate field {name} in type {go_type(receiver)}")
        if callable(value):  # a method, like docker's {{.Label "com.example.key"}}
            argv = [self.arg(dot, a) for a in args[1:]] + ([] if final is MISSING else [final])
            wanted = [p for p in inspect.signature(value).parameters.values()
                      if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD]
            if len(argv) != len(wanted):
                self.error(node, f"wrong number of args for {name}: want {len(wanted)} got {len(argv)}")
            return value(*argv)
        if has_args:
            self.error(node, f"{name} has arguments but cannot be invoked as function")
        return value

    def call(self, dot, ident: Ident, cmd: Command, final):
        name, func = ident.name, self.functions[ident.name]
        arg_nodes = cmd.args[1:]
        count = len(arg_nodes) + (final is not MISSING)
        fixed = len(func.params)
        if count < fixed or (count > fixed and not func.variadic):
            least = "at least " if func.variadic else ""
            self.error(ident, f"wrong number of args for {name}: want {least}{fixed} got {count}")
        if name in ("and", "or"):
            # Stop at the first argument that decides: and -> a false one, or -> a true one.
            value = None
            for node in arg_nodes:
                value = self.arg(dot, node)
                if truth(value) == (name == "or"):
                    return value
            return final if final is not MISSING else value
        argv = []
        for i, node in enumerate([*arg_nodes, *([] if final is MISSING else [cmd])]):
            value = final if i == len(arg_nodes) else self.arg(dot, node)
            param = func.params[i] if i < fixed else "any"
            if value is None and param != "any":
                self.error(node, f"invalid value; expected {param}")
            if not _fits(value, param):
                self.error(node, f"wrong type for value; expected {param}; got {go_type(value)}")
            argv.append(value)
        try:
            return func.fn(*argv)
        except FuncError as e:
            self.error(cmd, f"error calling {name}: {e}")


# -- docker's formatter: table, headers, alignment -----------------------------


def tabwrite(text: str, padding: int = PADDING, minwidth: int = 0) -> str:
    """Align tab-separated cells as Go's text/tabwriter does.

    A tab ends a cell. A column's width is the widest cell of the *block* of
    consecutive lines that have a cell there, plus ``padding``; the text after
    a line's last tab is not aligned. Docker's CLI uses padding 3 (and
    minwidth 10, which output.table() does not apply; neither does this, so
    ``--format table`` lines up exactly like the default output).
    """
    rows = [line.split("\t") for line in text.split("\n")]
    widths = [[0] * (len(row) - 1) for row in rows]

    def block(first: int, last: int, column: int) -> None:
        line = first
        while line < last:
            if column >= len(rows[line]) - 1:
                line += 1
                continue
            start, width = line, minwidth
            while line < last and column < len(rows[line]) - 1:
                width = max(width, len(rows[line][column]) + padding)
                line += 1
            for k in range(start, line):
                widths[k][column] = width
            block(start, line, column + 1)  # the next column, within this block

    block(0, len(rows), 0)
    return "\n".join("".join(cell.ljust(w) for cell, w in zip(row, widths[i])) + row[-1]
                     for i, row in enumerate(rows))


def render(fmt: str, rows: list, headers: dict[str, str], default: str | None = None) -> str:
    """Render a list command's ``--format``: one line (or more) per row, no final newline.

    ``table ...`` adds a header row -- each placeholder's column name from
    ``headers`` (an unknown field: its name in upper case) -- and aligns the
    tab-separated cells; ``json`` is ``{{json .}}``; ``table`` alone (or an
    empty format) means ``default``, the command's own columns. As docker does,
    ``\\t`` and ``\\n`` typed literally become a tab and a newline. With no rows
    and no table, the result is "" (print nothing then, as docker does).
    """
    if fmt in ("", "table") and default is not None:
        fmt = default
    elif fmt == "json":
        fmt = "{{json .}}"
    is_table = fmt.startswith("table")
    text = fmt[len("table"):] if is_table else fmt
    text = text.strip(" ").replace("\\t", "\t").replace("\\n", "\n")
    try:
        template = Template(text)
        body = "".join(template.execute(row) + "\n" for row in rows)
    except TemplateError as e:
        # docker's wording, whether parsing or executing failed
        raise UsageError(f"template parsing error: {e}") from None
    if is_table:
        header = template.execute(Header(headers), header=True)
        body = tabwrite(header + "\n" + body)
        body = "\n".join(line.rstrip(" ") for line in body.split("\n"))  # as output.table()
    return body[:-1] if body.endswith("\n") else body


def render_one(fmt: str, obj) -> str:
    """Render ``inspect -f``: the template once, with ``obj`` as the dot.

    Unlike the list commands, docker's inspect does not turn a typed ``\\t``
    into a tab, so neither does this.
    """
    try:
        return Template(fmt).execute(obj)
    except TemplateError as e:
        raise UsageError(f"template parsing error: {e}") from None
