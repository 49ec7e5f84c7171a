"""Docker's variable substitution ("environment replacement") in Dockerfiles.

The Dockerfile reference, section "Environment replacement", says that
``$variable`` and ``${variable}`` are replaced by the value of a build
argument (ARG) or environment variable (ENV) in some instructions, with two
documented bash-like modifiers:

``${variable:-word}``
    the value if the variable is set and not empty, else ``word``;
``${variable:+word}``
    ``word`` if the variable is set and not empty, else the empty string.

``word`` may itself contain variables. Escaping the dollar with the escape
character (``\\$foo``, or ```$foo`` with ``# escape=```) keeps it literal.

What this module does, following BuildKit's lexer (moby/buildkit,
``frontend/dockerfile/shell/lex.go``), which is what ``docker build`` runs:

* the documented forms above, plus the ones BuildKit also accepts:
  ``${variable-word}`` and ``${variable+word}`` (test "set" only, not
  "set and not empty"), ``${variable?message}`` / ``${variable:?message}``
  (fail when unset / unset or empty), and prefix/suffix removal
  ``${variable#pattern}``, ``##``, ``%``, ``%%`` with shell patterns
  (``*``, ``?``, ``[...]``);
* single quotes keep everything literal (no substitution, no escapes);
* double quotes allow substitution, and inside them the escape character
  only escapes ``"``, ``$`` and itself (as in sh);
* outside quotes the escape character makes the next character literal and
  is itself removed;
* an unset variable expands to the empty string.

Not supported (BuildKit has them in newer releases): ``${variable/pat/repl}``
replacement and ``${#variable}`` length. They raise "unsupported modifier".

Which instructions get substitution is the builder's business; the
reference's list is :data:`EXPANDED_INSTRUCTIONS`. Errors raise
:class:`SubstitutionError` without a line number: the builder knows the line
and re-raises it as a ``DockerfileError``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from engine.errors import UsageError

# The instructions that get variable substitution, as listed by the
# Dockerfile reference ("Environment replacement"). ONBUILD gets it when the
# trigger instruction is one of these (substitution happens when the trigger
# runs in the child build). ARG values are substituted too (BuildKit does it,
# and the reference's ARG section shows `ARG CONT_IMG_VER=${CONT_IMG_VER:-v1.0.0}`).
# RUN, CMD and ENTRYPOINT are *not* in the list: their shell form is handed
# to the shell, which does its own substitution at run time.
EXPANDED_INSTRUCTIONS = frozenset({
    "ADD", "ARG", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "ONBUILD",
    "STOPSIGNAL", "USER", "VOLUME", "WORKDIR",
})

# Single-character "special parameters" of sh that BuildKit accepts as names
# after `$` (lex.go isSpecialParam). Build environments rarely define them, so
# they usually expand to "".
_SPECIAL_PARAMS = "@*#?-$!0"


class SubstitutionError(UsageError):
    """A word could not be expanded: bad `${...}` syntax or unbalanced quotes."""


def expand(word: str, env: Mapping[str, str], escape: str = "\\") -> str:
    """Expand one word: substitute variables and remove quotes and escapes.

    Whitespace is kept as it is (BuildKit's ``ProcessWord``): this is what
    WORKDIR, USER, the value of ``ENV k=v`` and each COPY source get.

    >>> expand('${HOME:-/root}/"my dir"', {})
    '/root/my dir'
    """
    result, _ = _Lexer(word, env, escape).process()
    return result


def expand_words(text: str, env: Mapping[str, str], escape: str = "\\") -> list[str]:
    """Expand ``text`` and split it into words the way docker does.

    Words are separated by unquoted whitespace; quotes and escapes are removed.
    As in sh, the value of an *unquoted* variable is split on whitespace too,
    while a quoted one stays a single word (BuildKit's ``ProcessWords``).
    Quotes with nothing in them (``""``) produce no word, as in BuildKit.

    >>> expand_words('a "b c" $X', {"X": "d e"})
    ['a', 'b c', 'd', 'e']
    """
    _, words = _Lexer(text, env, escape).process()
    return words.finish()


class _Words:
    """Collects words while the lexer walks the text (lex.go's wordsStruct).

    ``add_char`` is for unquoted text, where whitespace ends a word;
    ``add_raw_char`` is for quoted or escaped text, which always belongs to
    the current word.
    """

    def __init__(self):
        self.words: list[str] = []
        self.word = ""

    def add_char(self, ch: str) -> None:
        if not ch.isspace():
            self.word += ch
        elif self.word:
            self.words.append(self.word)
            self.word = ""

    def add_raw_char(self, ch: str) -> None:
        self.word += ch

    def add_string(self, text: str) -> None:
        for ch in text:
            self.add_char(ch)

    def add_raw_string(self, text: str) -> None:
        self.word += text

    def finish(self) -> list[str]:
        if self.word:
            self.words.append(self.word)
            self.word = ""
        return self.words


class _Lexer:
    """One pass over one piece of text; ``pos`` only moves forward."""

    def __init__(self, text: str, env: Mapping[str, str], escape: str):
        if escape not in ("\\", "`"):
            raise ValueError(f"escape must be \\ or `, not {escape!r}")
        self.text = text
        self.env = env
        self.escape = escape
        self.pos = 0

    # -- scanning ---------------------------------------------------------

    def peek(self) -> str:
        """The next character, or "" at the end of the text."""
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def next(self) -> str:
        ch = self.peek()
        self.pos += len(ch)
        return ch

    # -- the grammar ------------------------------------------------------

    def process(self, stop: str = "", raw_escapes: bool = False) -> tuple[str, _Words]:
        """Read up to ``stop`` (consumed) or the end; return (text, words).

        ``raw_escapes`` keeps escape characters in the result: a ``#``/``%``
        pattern needs them to tell a literal ``\\*`` from a wildcard.
        """
        result: list[str] = []
        words = _Words()
        while self.peek():
            ch = self.peek()
            if stop and ch == stop:
                self.next()
                return "".join(result), words
            if ch == "'":
                text = self.single_quoted()
                words.add_raw_string(text)
            elif ch == '"':
                text = self.double_quoted()
                words.add_raw_string(text)
            elif ch == "$":
                text = self.dollar()
                # An unquoted variable's value is split into words, as in sh.
                words.add_string(text)
            else:
                self.next()
                if ch == self.escape:
                    if raw_escapes:
                        result.append(ch)
                        words.add_raw_char(ch)
                    ch = self.next()
                    if not ch:
                        break  # an escape at the very end is dropped
                    words.add_raw_char(ch)
                else:
                    words.add_char(ch)
                text = ch
            result.append(text)
        if stop:
            raise SubstitutionError(f"unexpected end of statement while looking for matching {stop}")
        return "".join(result), words

    def single_quoted(self) -> str:
        """'...': everything literal up to the next quote; it cannot be escaped (sh)."""
        self.next()
        chars = []
        while True:
            ch = self.next()
            if not ch:
                raise SubstitutionError(
                    "unexpected end of statement while looking for matching single-quote")
            if ch == "'":
                return "".join(chars)
            chars.append(ch)

    def double_quoted(self) -> str:
        """"...": variables expand; the escape only escapes ", $ and itself (sh)."""
        self.next()
        chars = []
        while True:
            ch = self.peek()
            if not ch:
                raise SubstitutionError(
                    "unexpected end of statement while looking for matching double-quote")
            if ch == '"':
                self.next()
                return "".join(chars)
            if ch == "$":
                chars.append(self.dollar())
                continue
            self.next()
            if ch == self.escape and self.peek() and self.peek() in ('"', "$", self.escape):
                ch = self.next()
            chars.append(ch)

    def name(self) -> str:
        """A variable name: letters, digits and _; or all-digit; or one special char."""
        first = self.peek()
        if first.isdecimal():
            start = self.pos
            while self.peek().isdecimal():
                self.next()
            return self.text[start:self.pos]
        if first and first in _SPECIAL_PARAMS:
            return self.next()
        start = self.pos
        while self.peek() and (self.peek().isalnum() or self.peek() == "_"):
            self.next()
        return self.text[start:self.pos]

    def dollar(self) -> str:
        """``$name`` or ``${name[modifier word]}``; the scanner is on the ``$``."""
        self.next()
        if self.peek() != "{":
            name = self.name()
            # "$" followed by no name ("$", "$/", "a$ b") stays a literal dollar.
            return self.env.get(name, "") if name else "$"
        self.next()
        if not self.peek():
            raise SubstitutionError("syntax error: missing '}'")
        if self.peek() in "{}:":
            raise SubstitutionError("syntax error: bad substitution")
        name = self.name()
        ch = self.next()
        if ch == "}":
            return self.env.get(name, "")
        if not ch:
            raise SubstitutionError("syntax error: missing '}'")
        modifier = ch
        # With a colon, "empty" counts as "unset" (sh's ${x:-word} vs ${x-word}).
        null_is_unset = ch == ":"
        if null_is_unset:
            modifier = self.next()
        spelled = (":" if null_is_unset else "") + modifier
        if modifier not in ("-", "+", "?", "#", "%") or (null_is_unset and modifier in "#%"):
            raise SubstitutionError(f"unsupported modifier ({spelled}) in substitution")
        try:
            word, _ = self.process(stop="}", raw_escapes=modifier in "#%")
        except SubstitutionError:
            if not self.peek():
                raise SubstitutionError("syntax error: missing '}'") from None
            raise

        set_ = name in self.env
        value = self.env.get(name, "")
        missing = not set_ or (null_is_unset and value == "")
        if modifier == "-":
            return word if missing else value
        if modifier == "+":
            return "" if missing else word
        if modifier == "?":
            if not set_:
                raise SubstitutionError(f"{name}: {word or 'is not allowed to be unset'}")
            if missing:
                raise SubstitutionError(f"{name}: {word or 'is not allowed to be empty'}")
            return value
        # '#' removes a matching prefix, '%' a matching suffix; doubled, the
        # longest match instead of the shortest (sh "Parameter Expansion").
        greedy = word.startswith(modifier)
        if greedy:
            word = word[1:]
        pattern = re.compile(_pattern_regex(word, self.escape), re.DOTALL)
        cuts = range(len(value) + 1)
        if modifier == "#":
            for i in (reversed(cuts) if greedy else cuts):
                if pattern.fullmatch(value[:i]):
                    return value[i:]
        else:
            for i in (cuts if greedy else reversed(cuts)):
                if pattern.fullmatch(value[i:]):
                    return value[:i]
        return value


def _pattern_regex(pattern: str, escape: str) -> str:
    """Translate a sh pattern (``*``, ``?``, ``[...]``, escapes) to a regex."""
    out = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == escape and i + 1 < len(pattern):
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        if ch == "*":
            out.append(".*")
        elif ch == "?":
            out.append(".")
        elif ch == "[" and "]" in pattern[i + 2:]:
            end = pattern.index("]", i + 2)
            body = pattern[i + 1:end]
            if body.startswith("!"):
                body = "^" + body[1:]
            out.append("[" + body.replace("\\", "\\\\") + "]")
            i = end + 1
            continue
        else:
            out.append(re.escape(ch))
        i += 1
    return "".join(out)
