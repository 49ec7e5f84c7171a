"""Variable substitution follows docker's (BuildKit's shell lexer) rules."""

import pytest

from engine.build.expand import EXPANDED_INSTRUCTIONS, SubstitutionError, expand, expand_words
from engine.errors import UsageError

ENV = {"FOO": "/bar", "EMPTY": "", "SP": "a  b", "PATH": "/usr/bin", "FILE": "dir/name.tar.gz"}


@pytest.mark.parametrize("word, expected", [
    ("$FOO", "/bar"),
    ("${FOO}", "/bar"),
    ("${FOO}_x", "/bar_x"),
    ("$FOO_x", ""),                       # the name is FOO_x, which is unset
    ("$UNSET", ""),
    ("pre$FOO/post", "pre/bar/post"),
    ("$PATH:/bin", "/usr/bin:/bin"),
    # The documented modifiers.
    ("${FOO:-word}", "/bar"),
    ("${UNSET:-word}", "word"),
    ("${EMPTY:-word}", "word"),
    ("${FOO:+word}", "word"),
    ("${UNSET:+word}", ""),
    ("${EMPTY:+word}", ""),
    ("${UNSET:-$FOO/x}", "/bar/x"),       # word may hold variables
    ("${UNSET:-${FOO:+yes}}", "yes"),
    ("${UNSET:-a b}", "a b"),
    # The colon-less forms test "set" only.
    ("${EMPTY-word}", ""),
    ("${UNSET-word}", "word"),
    ("${EMPTY+word}", "word"),
    ("${UNSET+word}", ""),
    # Prefix and suffix removal.
    ("${FILE#*.}", "tar.gz"),
    ("${FILE##*.}", "gz"),
    ("${FILE%.*}", "dir/name.tar"),
    ("${FILE%%.*}", "dir/name"),
    ("${FILE#nomatch}", "dir/name.tar.gz"),
    ("${FILE#dir/}", "name.tar.gz"),
    # Escapes make things literal and are removed.
    ("\\$FOO", "$FOO"),
    ("\\${FOO}", "${FOO}"),
    ("a\\ b", "a b"),
    ("a\\", "a"),                         # an escape at the end is dropped
    # Quotes.
    ("'$FOO'", "$FOO"),
    ("'a\\b'", "a\\b"),
    ('"$FOO"', "/bar"),
    ('"a\\"b"', 'a"b'),
    ('"\\$FOO"', "$FOO"),
    ('"a\\b"', "a\\b"),                   # only " $ and the escape are escapable
    ('"a\\\\b"', "a\\b"),
    ('x"y z"', "xy z"),
    ("it'\"s'", 'it"s'),
    # A dollar without a name stays.
    ("$", "$"),
    ("a$ b", "a$ b"),
    ("$/", "$/"),
    ("cost: 5$", "cost: 5$"),
    ("$1x", "x"),                         # positional parameters are names too (unset)
])
def test_expand(word, expected):
    assert expand(word, ENV) == expected


def test_backtick_escape():
    assert expand("`$FOO", ENV, escape="`") == "$FOO"
    assert expand("c:\\dir", ENV, escape="`") == "c:\\dir"
    assert expand('"a`"b"', ENV, escape="`") == 'a"b'


@pytest.mark.parametrize("word, message", [
    ("${FOO", "syntax error: missing '}'"),
    ("${", "syntax error: missing '}'"),
    ("${}", "syntax error: bad substitution"),
    ("${:-x}", "syntax error: bad substitution"),
    ("${UNSET:-x", "syntax error: missing '}'"),
    ("${FOO/a/b}", "unsupported modifier (/) in substitution"),
    ("${FOO:#x}", "unsupported modifier (:#) in substitution"),
    ("'abc", "unexpected end of statement while looking for matching single-quote"),
    ('"abc', "unexpected end of statement while looking for matching double-quote"),
    ("${UNSET?}", "UNSET: is not allowed to be unset"),
    ("${EMPTY:?must be set}", "EMPTY: must be set"),
])
def test_bad_words(word, message):
    with pytest.raises(SubstitutionError) as e:
        expand(word, ENV)
    assert str(e.value) == message
    assert isinstance(e.value, UsageError)


def test_question_mark_passes_set_values():
    assert expand("${FOO?}", ENV) == "/bar"
    assert expand("${EMPTY?}", ENV) == ""


@pytest.mark.parametrize("text, expected", [
    ("a b  c", ["a", "b", "c"]),
    ('a "b c" d', ["a", "b c", "d"]),
    ("k='v 1' k2=\"$FOO\"", ["k=v 1", "k2=/bar"]),
    ("$SP", ["a", "b"]),                  # unquoted values are split
    ('"$SP"', ["a  b"]),                  # quoted ones are not
    ("x\\ y z", ["x y", "z"]),
    ("", []),
    ('""', []),
    ("  lead trail  ", ["lead", "trail"]),
])
def test_expand_words(text, expected):
    assert expand_words(text, ENV) == expected


def test_expanded_instructions_follow_the_reference():
    assert {"ADD", "COPY", "ENV", "EXPOSE", "FROM", "LABEL", "STOPSIGNAL", "USER",
            "VOLUME", "WORKDIR", "ONBUILD"} <= EXPANDED_INSTRUCTIONS
    assert not {"RUN", "CMD", "ENTRYPOINT", "SHELL", "HEALTHCHECK"} & EXPANDED_INSTRUCTIONS
