"""The Dockerfile parser follows the Dockerfile reference and BuildKit's parser."""

import pytest

from engine.build.dockerfile import DockerfileError, Healthcheck, parse, parse_duration
from engine.build.expand import expand
from engine.errors import EXIT_ENGINE, UsageError

# A realistic multi-stage Dockerfile that uses every instruction.
MULTI_STAGE = """\
# syntax=docker/dockerfile:1
# escape=\\

# Global build arguments come before the first FROM.
ARG BASE=busybox VERSION
FROM --platform=linux/amd64 ${BASE}:latest AS Builder
LABEL maintainer.team="core" version=1.0 \\
      description="a test image"
MAINTAINER Jane Doe <jane@example.com>
ENV APP_HOME=/app PATH="/app/bin:$PATH"
ENV LEGACY some value
WORKDIR $APP_HOME
COPY --chown=1000:1000 --chmod=755 src/ ./src/
COPY ["file with spaces.txt", "/app/"]
ADD --checksum=sha256:abc https://example.com/x.tar.gz /tmp/
RUN set -e; \\
    # comments inside a continuation are dropped
    echo building \\
      && touch /app/built
RUN ["/bin/sh", "-c", "echo exec form"]

FROM busybox
ARG VERSION
COPY --from=builder --link /app/built /built
EXPOSE 8080 53/udp
VOLUME ["/data", "/logs"]
VOLUME /cache /tmp/x
USER app:app
HEALTHCHECK --interval=30s --timeout=5s --start-period=1m --start-interval=2s --retries=3 \\
    CMD wget -q -O- http://localhost:8080/ || exit 1
ONBUILD COPY . /src
ONBUILD RUN make
SHELL ["/bin/sh", "-ec"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["/bin/app"]
CMD ["--help"]
"""


def test_multi_stage_dockerfile_with_every_instruction():
    df = parse(MULTI_STAGE)
    assert df.syntax == "docker/dockerfile:1"
    assert df.escape == "\\"
    assert df.filename == "Dockerfile"
    keywords = [i.keyword for i in df]
    assert keywords == [
        "ARG", "FROM", "LABEL", "MAINTAINER", "ENV", "ENV", "WORKDIR", "COPY", "COPY", "ADD",
        "RUN", "RUN", "FROM", "ARG", "COPY", "EXPOSE", "VOLUME", "VOLUME", "USER",
        "HEALTHCHECK", "ONBUILD", "ONBUILD", "SHELL", "STOPSIGNAL", "ENTRYPOINT", "CMD",
    ]
    by_line = {i.start_line: i for i in df}

    arg = by_line[5]
    assert arg.args == ("BASE=busybox", "VERSION")

    base = by_line[6]
    assert base.args == ("${BASE}:latest", "AS", "Builder")
    assert base.flags == {"platform": "linux/amd64"}
    assert base.stage_name == "builder"
    assert base.original == "FROM --platform=linux/amd64 ${BASE}:latest AS Builder"

    label = by_line[7]
    assert (label.start_line, label.end_line) == (7, 8)
    assert label.pairs() == [("maintainer.team", '"core"'), ("version", "1.0"),
                             ("description", '"a test image"')]
    assert [expand(v, {}) for _, v in label.pairs()] == ["core", "1.0", "a test image"]

    assert by_line[9].args == ("Jane Doe <jane@example.com>",)
    assert by_line[10].pairs() == [("APP_HOME", "/app"), ("PATH", '"/app/bin:$PATH"')]
    assert by_line[11].pairs() == [("LEGACY", "some value")]
    assert by_line[12].args == ("$APP_HOME",)

    copy = by_line[13]
    assert copy.args == ("src/", "./src/")
    assert copy.flags == {"chown": "1000:1000", "chmod": "755"}
    assert not copy.json
    spaced = by_line[14]
    assert spaced.args == ("file with spaces.txt", "/app/") and spaced.json
    add = by_line[15]
    assert add.flags == {"checksum": "sha256:abc"}
    assert add.args == ("https://example.com/x.tar.gz", "/tmp/")

    run = by_line[16]
    assert (run.start_line, run.end_line) == (16, 19)
    assert not run.json
    assert run.args == ("set -e;     echo building       && touch /app/built",)
    exec_run = by_line[20]
    assert exec_run.json and exec_run.args == ("/bin/sh", "-c", "echo exec form")

    assert by_line[22].args == ("busybox",) and by_line[22].stage_name is None
    copy_from = by_line[24]
    assert copy_from.flags == {"from": "builder", "link": True}
    assert by_line[25].args == ("8080", "53/udp")
    assert by_line[26].args == ("/data", "/logs") and by_line[26].json
    assert by_line[27].args == ("/cache", "/tmp/x") and not by_line[27].json
    assert by_line[28].args == ("app:app",)

    health = by_line[29]
    assert (health.start_line, health.end_line) == (29, 30)
    assert health.healthcheck == Healthcheck(
        test=("CMD-SHELL", "wget -q -O- http://localhost:8080/ || exit 1"),
        interval=30_000_000_000, timeout=5_000_000_000, start_period=60_000_000_000,
        start_interval=2_000_000_000, retries=3)

    onbuild = by_line[31]
    assert onbuild.args == ("COPY . /src",)
    assert onbuild.trigger.keyword == "COPY" and onbuild.trigger.args == (".", "/src")
    assert by_line[32].trigger.args == ("make",)

    assert by_line[33].args == ("/bin/sh", "-ec") and by_line[33].json
    assert by_line[34].args == ("SIGTERM",)
    assert by_line[35].args == ("/bin/app",) and by_line[35].json
    assert by_line[36].args == ("--help",) and by_line[36].json
    assert df.warnings == ()


def test_instructions_are_frozen_values():
    first = parse("FROM busybox\nCOPY --link a b\n")[1]
    again = parse("FROM busybox\nCOPY --link a b\n")[1]
    assert first == again and hash(first) == hash(again)
    with pytest.raises(AttributeError):
        first.keyword = "ADD"
    with pytest.raises(TypeError):
        first.flags["link"] = False


def test_keywords_are_case_insensitive():
    df = parse("from busybox as base\nrun echo hi\n")
    assert [i.keyword for i in df] == ["FROM", "RUN"]
    assert df[0].stage_name == "base"


def test_backtick_escape_directive_windows_style():
    df = parse(
        "# escape=`\n"
        "\n"
        "FROM mcr.microsoft.com/windows/servercore\n"
        "COPY testfile.txt c:\\\n"
        "RUN dir c:\\\n"
        "RUN echo one `\n"
        "    two\n"
        'ENV A="x`"y"\n'
    )
    assert df.escape == "`"
    assert df[1].args == ("testfile.txt", "c:\\")
    assert df[2].args == ("dir c:\\",)
    assert df[3].args == ("echo one     two",) and df[3].end_line == 7
    assert expand(df[4].pairs()[0][1], {}, escape=df.escape) == 'x"y'


def test_directives_are_case_insensitive_and_allow_blanks():
    df = parse("#  ESCAPE = `\n# Syntax=example/frontend\nFROM busybox\n")
    assert (df.escape, df.syntax) == ("`", "example/frontend")


def test_directives_only_count_at_the_top():
    # After a comment, an empty line or an instruction, "# escape=" is a comment.
    for text in ("# hello\n# escape=`\nFROM busybox\nRUN a \\\n b\n",
                 "\n# escape=`\nFROM busybox\nRUN a \\\n b\n",
                 "FROM busybox\n# escape=`\nRUN a \\\n b\n",
                 "# unknown=x\n# escape=`\nFROM busybox\nRUN a \\\n b\n"):
        df = parse(text)
        assert df.escape == "\\"
        assert df[-1].args == ("a  b",)


@pytest.mark.parametrize("text, expected_args, lines", [
    # Comment and blank lines inside a continuation are skipped.
    ("FROM x\nRUN a \\\n# c\n  # indented\n b\n", ("a  b",), (2, 5)),
    # Blanks after the escape still continue the line.
    ("FROM x\nRUN a \\  \t\nb\n", ("a b",), (2, 3)),
    # A continuation still open at the end of the file ends there (docker accepts it).
    ("FROM x\nRUN a \\\n", ("a",), (2, 2)),
    ("FROM x\nRUN a \\", ("a",), (2, 2)),
    ("FROM x\nRUN a \\\n# only a comment\n", ("a",), (2, 3)),
    # Leading whitespace of continuation lines is kept, of the first line dropped.
    ("FROM x\n   RUN a\\\n   b\n", ("a   b",), (2, 3)),
    # A # that is not first on the line is an argument, not a comment.
    ("FROM x\nRUN echo hi # there\n", ("echo hi # there",), (2, 2)),
    # CRLF line endings.
    ("FROM x\r\nRUN a \\\r\n b\r\n", ("a  b",), (2, 3)),
])
def test_continuations(text, expected_args, lines):
    run = parse(text)[-1]
    assert run.args == expected_args
    assert (run.start_line, run.end_line) == lines


def test_empty_continuation_line_is_a_warning():
    df = parse("FROM x\nRUN a \\\n\n b\n")
    assert df[1].args == ("a  b",)
    assert df[1].end_line == 4
    assert df.warnings == ("Dockerfile:2: empty continuation line found in: RUN a  b",)


def test_byte_order_mark_is_ignored():
    assert parse("\ufeffFROM busybox\n")[0].args == ("busybox",)


@pytest.mark.parametrize("line, args, is_json", [
    ('CMD ["a", "b c"]', ("a", "b c"), True),
    ("CMD []", (), True),
    ("CMD [\"a\"", ('["a"',), False),               # not valid JSON: shell form
    ("CMD ['a', 'b']", ("['a', 'b']",), False),    # single quotes are not JSON
    ("ENTRYPOINT exec app", ("exec app",), False),
    ('RUN [ "echo" , "x" ]', ("echo", "x"), True),
    ('RUN ["echo", "\\u00e9"]', ("echo", "é"), True),
    ("CMD", (), False),
])
def test_json_or_shell_form(line, args, is_json):
    ins = parse("FROM x\n" + line)[1]
    assert (ins.args, ins.json) == (args, is_json)


def test_env_and_label_forms():
    df = parse('FROM x\nENV a=1 b="two words" c=\'3\' d= e=x\\ y\nENV K  spaced   value  \n'
               'LABEL "com.example.vendor"="ACME Inc" other=x\n')
    assert df[1].pairs() == [("a", "1"), ("b", '"two words"'), ("c", "'3'"), ("d", ""),
                             ("e", "x\\ y")]
    assert [expand(v, {}) for _, v in df[1].pairs()] == ["1", "two words", "3", "", "x y"]
    assert df[2].pairs() == [("K", "spaced   value")]
    assert df[3].pairs() == [('"com.example.vendor"', '"ACME Inc"'), ("other", "x")]


def test_arg_forms():
    df = parse('ARG A\nARG B=1 C="x y" D=\nFROM x\nARG E')
    assert df[0].args == ("A",)
    assert df[1].args == ("B=1", 'C="x y"', "D=")


def test_flags_may_be_quoted_and_end_with_double_dash():
    copy = parse('FROM x\nCOPY --chown="app user" -- --weird dest\n')[1]
    assert copy.flags == {"chown": "app user"}
    assert copy.args == ("--weird", "dest")
    assert parse("FROM x\nCOPY --link=false a b")[1].flags == {"link": False}


def test_healthcheck_forms():
    none = parse("FROM x\nHEALTHCHECK NONE")[1]
    assert none.healthcheck == Healthcheck(("NONE",))
    exec_form = parse('FROM x\nHEALTHCHECK CMD ["/bin/check", "-q"]')[1]
    assert exec_form.healthcheck == Healthcheck(("CMD", "/bin/check", "-q"))
    assert exec_form.json
    zero = parse("FROM x\nHEALTHCHECK --interval=0s CMD true")[1]
    assert zero.healthcheck.interval == 0


def test_onbuild_keeps_the_trigger_text_and_parses_it():
    ins = parse('FROM x\nONBUILD  ADD --chown=1:1 ["a", "b"]\n')[1]
    assert ins.args == ('ADD --chown=1:1 ["a", "b"]',)
    assert ins.trigger.keyword == "ADD"
    assert ins.trigger.flags == {"chown": "1:1"}
    assert ins.trigger.json and ins.trigger.start_line == 2


@pytest.mark.parametrize("text, ns", [
    ("0", 0), ("1ns", 1), ("1us", 1_000), ("1µs", 1_000), ("1ms", 1_000_000),
    ("1.5s", 1_500_000_000), (".5s", 500_000_000), ("1h30m", 5_400_000_000_000),
    ("-2ms", -2_000_000), ("+3s", 3_000_000_000), ("1m0.25s", 60_250_000_000),
])
def test_parse_duration_like_go(text, ns):
    assert parse_duration(text) == ns


@pytest.mark.parametrize("text, message", [
    ("", 'time: invalid duration ""'),
    ("x", 'time: invalid duration "x"'),
    ("1", 'time: missing unit in duration "1"'),
    ("1d", 'time: unknown unit "d" in duration "1d"'),
    (".s", 'time: invalid duration ".s"'),
    ("-", 'time: invalid duration "-"'),
])
def test_parse_duration_errors(text, message):
    with pytest.raises(ValueError) as e:
        parse_duration(text)
    assert str(e.value) == message


# Every error, with its exact message and line number.
@pytest.mark.parametrize("text, message", [
    ("FROM x\n\nFOOBAR x\n", "Dockerfile:3: unknown instruction: FOOBAR"),
    ("FROM x\nRUNN x\n", "Dockerfile:2: unknown instruction: RUNN (did you mean run?)"),
    ("FROM x\nSHELL /bin/sh -c\n", "Dockerfile:2: SHELL requires the arguments to be in JSON form"),
    ("FROM x\nSHELL []\n", "Dockerfile:2: SHELL requires at least one argument"),
    ("FROM x\nSHELL\n", "Dockerfile:2: SHELL requires at least one argument"),
    ('FROM x\nCMD ["a", 1]\n',
     "Dockerfile:2: when using JSON array syntax, arrays must be comprised of strings only"),
    ("FROM x\nRUN\n", "Dockerfile:2: RUN requires at least one argument"),
    ("FROM\n", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a b\n", "Dockerfile:1: FROM requires either one or three arguments"),
    ("FROM a AS 1x\n", 'Dockerfile:1: invalid name for build stage: "1x", name can\'t start '
                       "with a number or contain symbols"),
    ("RUN echo\nFROM x\n", "Dockerfile:1: no build stage in current context: RUN must come "
                           "after FROM (only ARG may come before the first FROM)"),
    ("ARG A\n# c\nENV A=1\nFROM x\n", "Dockerfile:3: no build stage in current context: ENV "
                                      "must come after FROM (only ARG may come before the "
                                      "first FROM)"),
    ("ARG A\nARG B\n", "Dockerfile:2: dockerfile contains no stages to build (no FROM instruction)"),
    ("", "Dockerfile:1: file with no instructions"),
    ("# just\n\n# comments\n", "Dockerfile:3: file with no instructions"),
    ("FROM x\nENV A\n", "Dockerfile:2: ENV must have two arguments"),
    ("FROM x\nENV\n", "Dockerfile:2: ENV requires at least one argument"),
    ("FROM x\nENV a=1 b\n",
     "Dockerfile:2: Syntax error - can't find = in \"b\". Must be of the form: name=value"),
    ("FROM x\nENV =1\n", "Dockerfile:2: ENV names can not be blank"),
    ("FROM x\nLABEL a=\"x \\\n  y\n",
     "Dockerfile:2: unexpected end of statement while looking for matching double-quote"),
    ("FROM x\nLABEL a='x\n",
     "Dockerfile:2: unexpected end of statement while looking for matching single-quote"),
    ("FROM x\nARG\n", "Dockerfile:2: ARG requires at least one argument"),
    ("FROM x\nARG =x\n", "Dockerfile:2: ARG names can not be blank"),
    ('FROM x\nARG A="x\n',
     "Dockerfile:2: unexpected end of statement while looking for matching double-quote"),
    ("FROM x\nCOPY a\n", "Dockerfile:2: COPY requires at least two arguments, but only one was "
                         "provided. Destination could not be determined"),
    ('FROM x\nADD ["a"]\n', "Dockerfile:2: ADD requires at least two arguments, but only one "
                            "was provided. Destination could not be determined"),
    ("FROM x\nVOLUME\n", "Dockerfile:2: VOLUME requires at least one argument"),
    ('FROM x\nVOLUME ["/a", " "]\n', "Dockerfile:2: VOLUME specified can not be an empty string"),
    ("FROM x\nEXPOSE\n", "Dockerfile:2: EXPOSE requires at least one argument"),
    ("FROM x\nUSER\n", "Dockerfile:2: USER requires exactly one argument"),
    ("FROM x\nWORKDIR\n", "Dockerfile:2: WORKDIR requires exactly one argument"),
    ("FROM x\nSTOPSIGNAL\n", "Dockerfile:2: STOPSIGNAL requires exactly one argument"),
    ("FROM x\nMAINTAINER\n", "Dockerfile:2: MAINTAINER requires exactly one argument"),
    ("FROM x\nHEALTHCHECK\n", "Dockerfile:2: HEALTHCHECK requires at least one argument"),
    ("FROM x\nHEALTHCHECK NONE x\n", "Dockerfile:2: HEALTHCHECK NONE takes no arguments"),
    ("FROM x\nHEALTHCHECK CMD\n", "Dockerfile:2: Missing command after HEALTHCHECK CMD"),
    ("FROM x\nHEALTHCHECK RUN x\n", 'Dockerfile:2: Unknown type "RUN" in HEALTHCHECK (try CMD)'),
    ("FROM x\nHEALTHCHECK --interval=5 CMD x\n",
     'Dockerfile:2: time: missing unit in duration "5"'),
    ("FROM x\nHEALTHCHECK --timeout=1us CMD x\n",
     'Dockerfile:2: Interval "timeout" cannot be less than 1ms'),
    ("FROM x\nHEALTHCHECK --retries=x CMD x\n",
     'Dockerfile:2: strconv.ParseInt: parsing "x": invalid syntax'),
    ("FROM x\nHEALTHCHECK --retries=-1 CMD x\n",
     "Dockerfile:2: --retries cannot be negative (-1)"),
    ("FROM x\nHEALTHCHECK --period=1s CMD x\n", "Dockerfile:2: unknown flag: period"),
    ("FROM x\nCOPY --from a b\n", "Dockerfile:2: missing a value on flag: from"),
    ("FROM x\nCOPY --link=maybe a b\n",
     "Dockerfile:2: expecting boolean value for flag link, not: maybe"),
    ("FROM x\nCOPY --from=a --from=b c d\n", "Dockerfile:2: duplicate flag specified: from"),
    ("FROM x\nCOPY --checksum=x a b\n", "Dockerfile:2: unknown flag: checksum"),
    ("FROM x\nENV --x=1 a=b\n", "Dockerfile:2: unknown flag: x"),
    ("FROM x\nRUN --mount=type=cache,target=/c make\n",
     "Dockerfile:2: RUN --mount is not supported by dockyard"),
    ("FROM x\nONBUILD ONBUILD RUN x\n",
     "Dockerfile:2: Chaining ONBUILD via `ONBUILD ONBUILD` isn't allowed"),
    ("FROM x\nONBUILD from y\n", "Dockerfile:2: FROM isn't allowed as an ONBUILD trigger"),
    ("FROM x\nONBUILD MAINTAINER me\n",
     "Dockerfile:2: MAINTAINER isn't allowed as an ONBUILD trigger"),
    ("FROM x\nONBUILD\n", "Dockerfile:2: ONBUILD requires at least one argument"),
    ("FROM x\nONBUILD BOGUS\n", "Dockerfile:2: unknown instruction: BOGUS"),
    ("FROM x\nRUN <<EOF\necho hi\nEOF\n", "Dockerfile:2: heredocs are not supported (found <<EOF)"),
    ("FROM x\nCOPY <<-'END' /dst\nEND\n",
     "Dockerfile:2: heredocs are not supported (found <<-'END')"),
    ("# escape=x\nFROM x\n", "Dockerfile:1: invalid escape token 'x' does not match ` or \\"),
    ("# escape=`\n# escape=\\\nFROM x\n",
     "Dockerfile:2: only one escape parser directive can be used"),
    ("FROM x\nRUN a \\\n  b\nXYZZY \\\n more\n", "Dockerfile:4: unknown instruction: XYZZY"),
    # As in docker, leading --words are flags even for CMD: use the JSON form.
    ("FROM x\nCMD --help\n", "Dockerfile:2: unknown flag: help"),
])
def test_errors_name_file_and_line(text, message):
    with pytest.raises(DockerfileError) as e:
        parse(text)
    assert str(e.value) == message
    assert isinstance(e.value, UsageError)
    assert e.value.exit_code == EXIT_ENGINE


def test_error_carries_its_parts_and_the_given_filename():
    with pytest.raises(DockerfileError) as e:
        parse("FROM x\nNOPE\n", filename="app/Dockerfile.dev")
    assert str(e.value) == "app/Dockerfile.dev:2: unknown instruction: NOPE"
    assert (e.value.filename, e.value.line, e.value.reason) == (
        "app/Dockerfile.dev", 2, "unknown instruction: NOPE")


def test_shell_operators_are_not_heredocs():
    df = parse("FROM x\nRUN echo $((1<<2)) && cat <<< hi\n")
    assert df[1].args == ("echo $((1<<2)) && cat <<< hi",)
