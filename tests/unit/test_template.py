"""--format templates: Go's text/template as docker uses it, and docker's row objects.

Most tests are tables: (template, data, expected output) or (template, data,
expected error). Expected values come from Go's and docker's documented
behaviour, not from running this code.
"""

import time
from datetime import timezone
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.cli.output import go_quote, go_time
from engine.cli.rows import (CONTAINER_FORMAT, CONTAINER_HEADERS, HISTORY_FORMAT, HISTORY_HEADERS,
                             IMAGE_FORMAT, IMAGE_HEADERS, ContainerRow, HistoryRow, ImageRow,
                             truncate_id)
from engine.cli.template import Template, go_json, render, render_one, tabwrite
from engine.errors import UsageError
from engine.runtime.container import Container

NOW = 1_778_155_200  # 2026-05-07 12:00:00 UTC


@pytest.fixture
def frozen(monkeypatch):
    """Time stands still at NOW, in UTC, so "N minutes ago" and local times are fixed."""
    monkeypatch.setattr(time, "time", lambda: float(NOW))
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


class Row:
    """A tiny row object: upper-case attributes are fields, Label is a method."""

    def __init__(self, **fields):
        self.__dict__.update(fields)

    def Label(self, name):
        return {"tier": "web"}.get(name, "")

    def lower_is_private(self):  # not exported: templates cannot see it
        return "secret"


INSPECT = {  # the shape of `dockyard inspect` (docker's), trimmed to what the cases use
    "Id": "3f2a5b" + "0" * 58,
    "Name": "/Web_App",
    "Path": "sh",
    "Args": ["-c", "echo hi"],
    "Image": "sha256:" + "ab" * 32,
    "LogPath": "",
    "State": {"Status": "exited", "Running": False, "ExitCode": 3},
    "Config": {"Hostname": "3f2a5b000000", "Cmd": ["sh"], "Image": "busybox:latest", "Tty": False,
               "Labels": {"tier": "web", "com.example.vendor": "ACME"}},
    "Mounts": [{"Type": "bind", "Source": "/srv/<data>", "Destination": "/data", "RW": True}],
    "NetworkSettings": {
        "Networks": {"bridge": {"IPAddress": "172.17.0.2", "MacAddress": "02:42:ac:11:00:02"},
                     "alpha": {"IPAddress": "10.0.0.5", "MacAddress": "02:42:0a:00:00:05"}},
        "Ports": {"8787/tcp": [{"HostIp": "0.0.0.0", "HostPort": "8080"}],
                  "9999/tcp": [{"HostIp": "0.0.0.0", "HostPort": "9000"}]},
    },
}

DATA = {
    "S": "héllo", "N": 42, "F": 2.5, "T": True, "E": "", "Z": 0, "L": ["a", "b", "c"],
    "Nums": [3, 1, 2], "M": {"b": "2", "a": "1"}, "Nil": None, "Empty": [], "Obj": Row(Name="x"),
    "name": "lower", "Name": "Upper", "Deep": {"A": {"B": {"C": "deep"}}}, "HTML": "<a&b>",
}

CASES = [
    # --- fields, nesting, the dot, case-sensitive keys
    ("plain text", DATA, "plain text"),
    ("{{.Name}}", DATA, "Upper"),
    ("{{.name}}", DATA, "lower"),
    ("{{.Deep.A.B.C}}", DATA, "deep"),
    ("{{.Obj.Name}}", DATA, "x"),
    ("{{.}}", "just a string", "just a string"),
    ("{{.L}}", DATA, "[a b c]"),
    ("{{.M}}", DATA, "map[a:1 b:2]"),
    ("{{.T}} {{.F}} {{.N}}", DATA, "true 2.5 42"),
    ("{{.Nil}}", DATA, "<no value>"),
    ("{{.M.missing}}", DATA, "<no value>"),  # a string map lacks the key: Go prints <no value>
    ('{{.Label "tier"}}|{{.Label "nope"}}', Row(), "web|"),
    ('{{"tier" | .Label}}', Row(), "web"),
    # --- variables
    ("{{$x := .N}}{{$x}}", DATA, "42"),
    ("{{$x := 1}}{{if .T}}{{$x = 2}}{{end}}{{$x}}", DATA, "2"),
    ("{{range .L}}{{$.N}}{{end}}", DATA, "424242"),
    ("{{$.Name}}", DATA, "Upper"),
    ("{{with $x := .Deep.A}}{{$x.B.C}}{{end}}", DATA, "deep"),
    # --- pipelines, parentheses, literals
    ("{{.Name | upper}}", DATA, "UPPER"),
    ("{{.Name | lower | upper}}", DATA, "UPPER"),
    ('{{.N | printf "%d items"}}', DATA, "42 items"),
    ('{{printf "%s-%s" "a" (upper "b")}}', DATA, "a-B"),
    ("{{(index .Deep.A \"B\").C}}", DATA, "deep"),
    ('{{"a\\tb\\u00e9\\x41"}}', DATA, "a\tbéA"),
    ("{{`raw \\n`}}", DATA, "raw \\n"),
    ("{{'a'}} {{0x1F}} {{1_000}} {{1.5e3}} {{-7}} {{017}}", DATA, "97 31 1000 1500 -7 15"),
    ("{{true}} {{false}}", DATA, "true false"),
    # --- if / else if / else and Go's truth
    ("{{if .T}}yes{{end}}", DATA, "yes"),
    ("{{if .E}}yes{{else}}no{{end}}", DATA, "no"),
    ("{{if .Z}}a{{else if .Empty}}b{{else if .Nil}}c{{else if .Obj}}d{{end}}", DATA, "d"),
    ("{{if .M}}map{{end}}{{if .L}}list{{end}}{{if .F}}float{{end}}", DATA, "maplistfloat"),
    ("{{if not .Nil}}nil is false{{end}}", DATA, "nil is false"),
    # --- range
    ("{{range .L}}<{{.}}>{{end}}", DATA, "<a><b><c>"),
    ("{{range $i, $v := .L}}{{$i}}={{$v}} {{end}}", DATA, "0=a 1=b 2=c "),
    ("{{range $v := .L}}{{$v}}{{end}}", DATA, "abc"),
    ("{{range $k, $v := .M}}{{$k}}{{$v}}{{end}}", DATA, "a1b2"),  # maps: in key order
    ("{{range .Empty}}x{{else}}empty{{end}}", DATA, "empty"),
    ("{{range .Nil}}x{{else}}nothing{{end}}", DATA, "nothing"),
    ("{{range .L}}{{if eq . \"b\"}}{{break}}{{end}}{{.}}{{end}}", DATA, "a"),
    ("{{range .L}}{{if eq . \"b\"}}{{continue}}{{end}}{{.}}{{end}}", DATA, "ac"),
    ("{{range 3}}{{.}}{{end}}", DATA, "012"),
    # --- with
    ("{{with .Deep.A.B}}{{.C}}{{end}}", DATA, "deep"),
    ("{{with .E}}set{{else}}unset{{end}}", DATA, "unset"),
    ("{{with .E}}a{{else with .N}}{{.}}{{end}}", DATA, "42"),
    # --- comparisons and logic
    ("{{eq .N 42}} {{eq .Name \"x\" \"Upper\"}} {{ne .N 1}}", DATA, "true true true"),
    ("{{lt 1 2}} {{le 2 2}} {{gt \"b\" \"a\"}} {{ge 1 2}}", DATA, "true true true false"),
    ("{{eq .Nil nil}} {{eq .N nil}}", DATA, "true false"),
    ("{{and 1 0 2}} {{and 1 2}} {{or 0 \"\" \"x\"}} {{or 0 \"\"}}", DATA, "0 2 x "),
    ("{{or .N (index .L 99)}}", DATA, "42"),  # or stops at the first true argument
    ("{{not 0}} {{not .L}}", DATA, "true false"),
    # --- len, index, slice
    ("{{len .S}} {{len .L}} {{len .M}}", DATA, "6 3 2"),  # a string's length is in bytes
    ("{{index .L 1}} {{index .M \"b\"}} {{index .Deep \"A\" \"B\" \"C\"}}", DATA, "b 2 deep"),
    ('{{index .M "zz"}}|', DATA, "|"),  # a missing map key: the zero value
    ("{{index .S 0}}", DATA, "104"),  # a string's elements are bytes
    ("{{slice .L 1}} {{slice .L 0 2}} {{slice .Name 1 3}}", DATA, "[b c] [a b] pp"),
    # --- printf, print, println
    ('{{printf "%s|%v|%d|%q|%t" "s" .L 7 "q\\"" true}}', DATA, 's|[a b c]|7|"q\\""|true'),
    ('{{printf "[%5s][%-5s][%05d][%+d][%x][%X][%o][%b]" "ab" "ab" 42 3 255 255 8 5}}', DATA,
     "[   ab][ab   ][00042][+3][ff][FF][10][101]"),
    ('{{printf "%.2f %e %g %v %c %U %%" 3.14159 1500.0 0.5 1e21 65 65}}', DATA,
     "3.14 1.500000e+03 0.5 1e+21 A U+0041 %"),
    ('{{printf "%.3s|%x|%q" "abcdef" "hi" 97}}', DATA, "abc|6869|'a'"),
    ('{{printf "%d %s" "str" 5}}', DATA, "%!d(string=str) %!s(int=5)"),
    ('{{printf "%s %s" "only"}}', DATA, "only %!s(MISSING)"),
    ('{{printf "%s" "a" 1 true}}', DATA, "a%!(EXTRA int=1, bool=true)"),
    ('{{printf "%d" .Nil}}', DATA, "%!d(<nil>)"),
    ('{{print "a" "b" 1 2 "c"}}', DATA, "ab1 2c"),  # spaces only between non-strings
    ('{{println "a" 1}}', DATA, "a 1\n"),
    # --- docker's functions
    ('{{join .L ", "}}', DATA, "a, b, c"),
    ('{{split "a:b:c" ":"}} {{len (split "a:b" ":")}} {{split "ab" ""}}', DATA, "[a b c] 2 [a b]"),
    ("{{lower \"MiXed\"}} {{upper \"MiXed\"}}", DATA, "mixed MIXED"),
    ('{{title "hello wORLD-foo_bar"}}', DATA, "Hello WORLD-Foo_bar"),  # strings.Title keeps the rest
    ('[{{pad "x" 2 3}}][{{pad "" 2 3}}]', DATA, "[  x   ][]"),
    ('{{truncate "abcdef" 3}} {{truncate "ab" 5}}', DATA, "abc ab"),
    ("{{json .L}} {{json .N}} {{json .T}} {{json .Nil}} {{json .F}}", DATA, '["a","b","c"] 42 true null 2.5'),
    ("{{json .HTML}}", DATA, '"<a&b>"'),  # docker's json turns HTML escaping off
    ("{{json .M}}", DATA, '{"a":"1","b":"2"}'),  # a map's keys come out sorted
    ('{{json "line\\nbreak\\u2028"}}', DATA, '"line\\nbreak\\u2028"'),
    ('{{printf "%v %v %v %v" 1e6 123456.0 0.0001 0.00001}}', DATA, "1e+06 123456 0.0001 1e-05"),
    # --- white space trimming and comments
    ("a  {{- .N -}}  b", DATA, "a42b"),
    ("a {{- .N}} b", DATA, "a42 b"),
    ("a\n\t{{- /* a comment */ -}}\n  b", DATA, "ab"),
    ("{{/* comment */}}x", DATA, "x"),
    ("{{range .L -}}\n  {{.}}\n{{- end}}", DATA, "abc"),
    ("{{-3}}", DATA, "-3"),  # a dash without a space is a minus sign
]


@pytest.mark.parametrize("fmt, data, expected", CASES, ids=[c[0][:40] for c in CASES])
def test_template(fmt, data, expected):
    assert render_one(fmt, data) == expected


# The examples of docker's "Format command and log output" and inspect pages, verbatim.
DOCKER_EXAMPLES = [
    ('{{join .Args " , "}}', "-c , echo hi"),
    ("{{json .Mounts}}", '[{"Type":"bind","Source":"/srv/<data>","Destination":"/data","RW":true}]'),
    ("{{lower .Name}}", "/web_app"),
    ('{{split .Image ":"}}', "[sha256 " + "ab" * 32 + "]"),
    ("{{title .Name}}", "/Web_App"),
    ("{{upper .Name}}", "/WEB_APP"),
    ("{{range .NetworkSettings.Networks}}{{println .IPAddress}}{{end}}", "10.0.0.5\n172.17.0.2\n"),
    ("{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}", "10.0.0.5172.17.0.2"),
    ("{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}", "02:42:0a:00:00:0502:42:ac:11:00:02"),
    ("{{.LogPath}}", ""),
    ("{{.Config.Image}}", "busybox:latest"),
    ("{{range $p, $conf := .NetworkSettings.Ports}} {{$p}} -> {{(index $conf 0).HostPort}} {{end}}",
     " 8787/tcp -> 8080  9999/tcp -> 9000 "),
    ('{{(index (index .NetworkSettings.Ports "8787/tcp") 0).HostPort}}', "8080"),
    ("{{json .Config}}", '{"Hostname":"3f2a5b000000","Cmd":["sh"],"Image":"busybox:latest","Tty":false,'
                         '"Labels":{"com.example.vendor":"ACME","tier":"web"}}'),
    ("{{.State.Status}} {{.State.ExitCode}}", "exited 3"),
    ('{{index .Config.Labels "com.example.vendor"}}', "ACME"),
]


@pytest.mark.parametrize("fmt, expected", DOCKER_EXAMPLES, ids=[e[0][:40] for e in DOCKER_EXAMPLES])
def test_docker_inspect_examples(fmt, expected):
    assert render_one(fmt, INSPECT) == expected


ERRORS = [
    # parse errors: "template: :LINE: ..."
    ("{{.X", "template: :1: unclosed action"),
    ("{{if .T}}x", "template: :1: unexpected EOF"),
    ("{{end}}", "template: :1: unexpected {{end}}"),
    ("{{else}}", "template: :1: unexpected {{else}}"),
    ("{{}}", "template: :1: missing value for command"),
    ("{{if}}{{end}}", "template: :1: missing value for if"),
    ("x\n{{nope .X}}", 'template: :2: function "nope" not defined'),
    ("{{$x}}", 'template: :1: undefined variable "$x"'),
    ("{{$x = 1}}", 'template: :1: undefined variable "$x"'),
    ('{{"abc}}', "template: :1: unterminated quoted string"),
    ("{{(.X}}", "template: :1: unclosed left paren"),
    ("{{.X)}}", "template: :1: unexpected right paren"),
    ("{{#}}", "template: :1: bad character U+0023 '#'"),
    ("{{break}}", "template: :1: {{break}} outside {{range}}"),
    ("{{.X | 3}}", "template: :1: non executable command in pipeline stage 2"),
    ('{{.X"a"}}', 'template: :1: unexpected "\\"a\\"" in operand'),
    ("{{range $a, $b, $c := .L}}{{end}}", "template: :1: range can only initialize variables"),
    ("{{if $a, $b := .L}}{{end}}", "template: :1: too many declarations in if"),
    ("{{/* open", "template: :1: unclosed comment"),
    ("{{define \"x\"}}{{end}}", "template: :1: {{define}} is not supported in a --format template"),
    # execution errors: "template: :LINE:COLUMN: executing "" at <NODE>: ..."
    ("{{.Nope}}", 'template: :1:2: executing "" at <.Nope>: map has no entry for key "Nope"'),
    ("x {{.Obj.Nope}}", 'template: :1:4: executing "" at <.Obj.Nope>: can\'t evaluate field Nope in type Row'),
    ("{{.Obj.lower_is_private}}",
     # Go cuts the node at 20 characters
     'template: :1:2: executing "" at <.Obj.lower_is_privat...>: can\'t evaluate field lower_is_private in type Row'),
    ("{{.N.X}}", 'template: :1:2: executing "" at <.N.X>: can\'t evaluate field X in type int'),
    ("{{.Nil.X}}", 'template: :1:2: executing "" at <.Nil.X>: nil pointer evaluating interface {}.X'),
    ("a\nbc {{.Nope}}", 'template: :2:5: executing "" at <.Nope>: map has no entry for key "Nope"'),
    ("{{index .L 5}}", 'template: :1:2: executing "" at <index .L 5>: error calling index: index out of range: 5'),
    ("{{lt 1 \"a\"}}",
     'template: :1:2: executing "" at <lt 1 "a">: error calling lt: incompatible types for comparison'),
    ("{{eq .N \"42\"}}",
     'template: :1:2: executing "" at <eq .N "42">: error calling eq: incompatible types for comparison'),
    ("{{upper .N}}", 'template: :1:8: executing "" at <.N>: wrong type for value; expected string; got int'),
    ("{{join .Nums \",\"}}",
     'template: :1:7: executing "" at <.Nums>: wrong type for value; expected []string; got []interface {}'),
    ("{{lower .Nil}}", 'template: :1:8: executing "" at <.Nil>: invalid value; expected string'),
    ("{{upper}}", 'template: :1:2: executing "" at <upper>: wrong number of args for upper: want 1 got 0'),
    ("{{len 3}}", 'template: :1:2: executing "" at <len 3>: error calling len: len of type int'),
    ('{{.M.a "x"}}', 'template: :1:2: executing "" at <.M.a>: a is not a method but has arguments'),
    ("{{.Obj.Label}}", 'template: :1:2: executing "" at <.Obj.Label>: wrong number of args for Label: want 1 got 0'),
    ('{{.Obj.Name "x"}}', 'template: :1:2: executing "" at <.Obj.Name>: Name has arguments but cannot be invoked as function'),
    ('{{"x" 1}}', 'template: :1:2: executing "" at <"x">: can\'t give argument to non-function "x"'),
    ("{{nil}}", 'template: :1:2: executing "" at <nil>: nil is not a command'),
    ("{{range .Obj}}{{end}}", 'template: :1:8: executing "" at <.Obj>: range can\'t iterate over {x}'),
    ('{{truncate "ab" -1}}',
     'template: :1:2: executing "" at <truncate "ab" -1>: error calling truncate: '
     "runtime error: slice bounds out of range [:-1]"),
    ('{{printf "%s" "a-very-long-string-indeed" | lower | upper | nope_not_here}}',
     'template: :1: function "nope_not_here" not defined'),
    ('{{index .Deep "A" "B" "C" "D" | upper | lower | printf "%s"}}',
     'template: :1:2: executing "" at <index .Deep "A" "B" ...>: error calling index: '
     "cannot index slice/array with type string"),
    ("{{index .N 0}}", 'template: :1:2: executing "" at <index .N 0>: error calling index: '
                       "can't index item of type int"),
]


@pytest.mark.parametrize("fmt, message", ERRORS, ids=[e[0][:40] for e in ERRORS])
def test_template_errors(fmt, message):
    with pytest.raises(UsageError) as caught:
        render_one(fmt, {**DATA, "Obj": Row(Name="x")})
    assert str(caught.value) == "template parsing error: " + message
    assert "\n" not in str(caught.value)


def test_map_lookups_error_like_docker_inspect_for_structs_but_not_for_maps():
    # inspect's dicts stand for Go structs: a missing key is an error...
    with pytest.raises(UsageError, match='map has no entry for key "Nope"'):
        render_one("{{.State.Nope}}", INSPECT)
    # ...while Labels is a map[string]string: <no value>, and index gives "".
    assert render_one('{{.Config.Labels.nope}}|{{index .Config.Labels "nope"}}|', INSPECT) == "<no value>||"


def test_variables_end_with_their_block():
    with pytest.raises(UsageError, match='undefined variable "\\$x"'):
        render_one("{{if .T}}{{$x := 1}}{{end}}{{$x}}", DATA)
    # the body of a range sees a fresh $v each time
    assert render_one("{{range $v := .L}}{{$v}}{{end}}{{range $v := .Nums}}{{$v}}{{end}}", DATA) == "abc312"


def test_a_template_is_parsed_once_and_runs_many_times():
    template = Template("{{.A}}-{{.B}}")
    assert [template.execute({"A": i, "B": i * 2}) for i in range(3)] == ["0-0", "1-2", "2-4"]


def test_json_escapes_like_go_and_marshals_rows_like_docker():
    assert go_json("<&>") == '"<&>"'
    assert go_json("<&>", escape_html=True) == '"\\u003c\\u0026\\u003e"'
    assert go_json({"b": 1, "a": [True, None]}) == '{"b":1,"a":[true,null]}'  # a struct keeps its order
    assert go_json("tab\there\x01") == '"tab\\there\\u0001"'
    assert go_json(1.0) == "1" and go_json(0.25) == "0.25"


# -- docker's formatter: render() ---------------------------------------------

ROWS = [{"ID": "aaa", "Name": "web", "Size": "1.5MB"}, {"ID": "bbbbbbbb", "Name": "db", "Size": "12kB"}]
HEADERS = {"ID": "ID", "Name": "NAME", "Size": "SIZE"}


def test_render_table_has_a_header_and_aligned_columns():
    text = render("table {{.ID}}\\t{{.Name}}\\t{{.Size}}", ROWS, HEADERS)
    assert text.split("\n") == [
        "ID         NAME   SIZE",
        "aaa        web    1.5MB",
        "bbbbbbbb   db     12kB",
    ]


def test_render_without_table_keeps_tabs_and_prints_a_line_per_row():
    assert render("{{.ID}}\\t{{.Name}}", ROWS, HEADERS) == "aaa\tweb\nbbbbbbbb\tdb"
    assert render("{{.ID}}:\\n{{.Name}}", ROWS, HEADERS) == "aaa:\nweb\nbbbbbbbb:\ndb"
    assert render("{{.ID}}", [], HEADERS) == ""


def test_render_escapes_are_replaced_before_parsing_as_docker_does():
    # a real tab inside a quoted string is fine...
    assert render('{{join .L "\\t"}}', [{"L": ["a", "b"]}], {}) == "a\tb"
    # ...but "\n" becomes a newline inside the quotes, which Go refuses: docker fails the same way
    with pytest.raises(UsageError, match="unterminated quoted string"):
        render('{{join .L "\\n"}}', [{"L": ["a", "b"]}], {})


def test_render_table_headers_come_from_the_placeholders():
    rows = [{"ID": "x", "Foo": "y", "Names": "web"}]
    text = render("table {{.ID}}\t{{.Foo}}\t{{upper .Names}}\t{{json .Names}}", rows, {"ID": "IMAGE ID", "Names": "NAMES"})
    header, line = text.split("\n")
    # unknown field: its name in upper case; upper/json leave the header alone (HeaderFunctions)
    assert header.split() == ["IMAGE", "ID", "FOO", "NAMES", "NAMES"]
    assert line.split() == ["x", "y", "WEB", '"web"']


def test_render_table_keeps_pad_in_the_header_and_if_blocks():
    rows = [{"ID": "x", "CreatedSince": ""}]
    text = render("table {{.ID}}\t{{if .CreatedSince}}{{.CreatedSince}}{{else}}N/A{{end}}|{{pad .ID 1 1}}|",
                  rows, {"ID": "IMAGE ID", "CreatedSince": "CREATED"})
    assert text.split("\n") == ["IMAGE ID   CREATED| IMAGE ID |", "x          N/A| x |"]


def test_render_table_alone_or_empty_means_the_default_format():
    default = "table {{.ID}}\t{{.Name}}"
    expected = "ID         NAME\naaa        web\nbbbbbbbb   db"
    assert render("table", ROWS, HEADERS, default=default) == expected
    assert render("", ROWS, HEADERS, default=default) == expected
    assert render("table", [], HEADERS, default=default) == "ID   NAME"


def test_render_json_is_json_of_each_row():
    assert render("json", ROWS[:1], HEADERS) == '{"ID":"aaa","Name":"web","Size":"1.5MB"}'
    # `table {{json .}}`: docker's header row is empty
    assert render("table {{json .}}", ROWS[:1], HEADERS) == '\n{"ID":"aaa","Name":"web","Size":"1.5MB"}'


def test_render_errors_use_dockers_prefix():
    with pytest.raises(UsageError) as caught:
        render("table {{.Nope}}", [Row(ID="x")], HEADERS)  # docker's rows are structs
    assert str(caught.value) == ('template parsing error: template: :1:2: executing "" at <.Nope>: '
                                 "can't evaluate field Nope in type Row")
    # rows that are Go maps (string-valued dicts) just lack the key, as in Go
    assert render("{{.Nope}}", ROWS[:1], HEADERS) == "<no value>"


def test_render_one_does_not_replace_escapes_as_docker_inspect_does_not():
    assert render_one("{{.A}}\\t{{.B}}", {"A": 1, "B": 2}) == "1\\t2"


@pytest.mark.parametrize("text, expected", [
    ("a\tb\nccc\td", "a     b\nccc   d"),
    ("a\tb\tc\nxx\ty", "a    b   c\nxx   y"),
    # a line without the cell ends the column block: widths restart below it
    ("aaaa\tb\nno tabs\nc\td", "aaaa   b\nno tabs\nc   d"),
    ("only text", "only text"),
    ("\tlead\nx\ty", "    lead\nx   y"),
])
def test_tabwrite_follows_go_tabwriter_blocks(text, expected):
    assert tabwrite(text) == expected


@given(st.lists(st.lists(st.text(alphabet="abcxyz…", max_size=8), min_size=3, max_size=3),
                min_size=1, max_size=6))
def test_tabwrite_starts_every_column_at_the_same_place(rows):
    lines = tabwrite("\n".join("\t".join(r) for r in rows)).split("\n")
    starts = {len(r[0]) for r in rows}
    width0 = max(starts) + 3
    assert all(line[:width0].rstrip(" ") == r[0] for line, r in zip(lines, rows))


@given(st.text().filter(lambda s: "{{" not in s))
def test_text_without_actions_renders_unchanged(text):
    assert render_one(text, {}) == text


@given(st.text())
def test_printf_s_and_the_dot_print_any_string_as_is(text):
    assert render_one('{{printf "%s" .}}|{{.}}', text) == f"{text}|{text}"


# -- output helpers -------------------------------------------------------------


def test_go_time_is_gos_time_string():
    assert go_time(NOW, timezone.utc) == "2026-05-07 12:00:00 +0000 UTC"
    assert go_time(NOW + 0.9, timezone.utc) == "2026-05-07 12:00:00 +0000 UTC"  # whole seconds


@pytest.mark.parametrize("text, quoted", [
    ("sh -c 'x'", "\"sh -c 'x'\""),
    ('say "hi"\\', '"say \\"hi\\"\\\\"'),
    ("tab\tnl\n\x01\x7f", '"tab\\tnl\\n\\x01\\x7f"'),
    ("sh -c 'while true; …", "\"sh -c 'while true; …\""),  # printable Unicode stays
    ("\u200b", '"\\u200b"'),
])
def test_go_quote_is_strconv_quote(text, quoted):
    assert go_quote(text) == quoted


# -- rows --------------------------------------------------------------------

IMAGE_ID = "sha256:4dd97cefde62cf2d6bcfd8f2c0300a24fbcddbe0ebcd577cc8b420c29106869a"


def image(**fields):
    base = {"id": IMAGE_ID, "created": "2026-05-02T12:00:00Z", "size": 72_900_000, "tags": ["ubuntu:latest"]}
    return SimpleNamespace(**{**base, **fields})


def test_image_row_fields(frozen):
    row = ImageRow(image(), "ubuntu:latest")
    assert [getattr(row, f) for f in ("ID", "Repository", "Tag", "Digest", "CreatedSince", "CreatedAt",
                                      "Size", "VirtualSize", "SharedSize", "UniqueSize", "Containers")] == [
        "4dd97cefde62", "ubuntu", "latest", "<none>", "5 days ago", "2026-05-02 12:00:00 +0000 UTC",
        "72.9MB", "72.9MB", "N/A", "N/A", "N/A"]
    assert ImageRow(image(), None, no_trunc=True).ID == IMAGE_ID
    assert (ImageRow(image(), None).Repository, ImageRow(image(), None).Tag) == ("<none>", "<none>")
    assert ImageRow(image(), "localhost:5000/team/app:1.0").Repository == "localhost:5000/team/app"
    assert ImageRow(image(size=1_234_567), None).VirtualSize == "1.235MB"  # HumanSize: 4 digits


def test_image_row_json_is_dockers_documented_output(frozen):
    # `docker image ls --format json` in docker's reference (only the date differs)
    assert render("json", [ImageRow(image(), "ubuntu:latest")], IMAGE_HEADERS) == (
        '{"Containers":"N/A","CreatedAt":"2026-05-02 12:00:00 +0000 UTC","CreatedSince":"5 days ago",'
        '"Digest":"\\u003cnone\\u003e","ID":"4dd97cefde62","Repository":"ubuntu","SharedSize":"N/A",'
        '"Size":"72.9MB","Tag":"latest","UniqueSize":"N/A","VirtualSize":"72.9MB"}')


def test_image_without_creation_time_shows_na_in_the_default_table(frozen):
    rows = [ImageRow(image(created="0001-01-01T00:00:00Z"), "scratch:latest")]
    assert rows[0].CreatedAt == "0001-01-01 00:00:00 +0000 UTC"
    assert render("table", rows, IMAGE_HEADERS, default=IMAGE_FORMAT).split("\n") == [
        "REPOSITORY   TAG      IMAGE ID       CREATED   SIZE",
        "scratch      latest   4dd97cefde62   N/A       72.9MB",
    ]


def test_docker_images_documented_formats(frozen):
    rows = [ImageRow(image(), None), ImageRow(image(), "ubuntu:latest")]
    assert render("{{.ID}}: {{.Repository}}", rows, IMAGE_HEADERS) == "4dd97cefde62: <none>\n4dd97cefde62: ubuntu"
    assert render("table {{.ID}}\\t{{.Repository}}\\t{{.Tag}}", rows, IMAGE_HEADERS).split("\n") == [
        "IMAGE ID       REPOSITORY   TAG",
        "4dd97cefde62   <none>       <none>",
        "4dd97cefde62   ubuntu       latest",
    ]


def container_attrs(**state):
    return {
        "Id": "a87ecb4f327c" + "1" * 52, "Name": "/web", "Created": "2026-05-07T11:55:00.123456789Z",
        "Path": "sh", "Args": ["-c", "while true; do echo hi; done"], "Image": IMAGE_ID,
        "State": {"Status": "running", "Running": True, "ExitCode": 0,
                  "StartedAt": "2026-05-07T11:58:00Z", "FinishedAt": "0001-01-01T00:00:00Z", **state},
        "Config": {"Image": "busybox", "Labels": {"com.docker.swarm.storage": "ssd",
                                                  "com.docker.swarm.node": "ubuntu"}},
        "Mounts": [{"Type": "volume", "Name": "a-very-long-volume-name", "Driver": "local"},
                   {"Type": "bind", "Source": "/srv", "Driver": ""}],
        "NetworkSettings": {"Networks": {}},
    }


def test_container_row_fields(frozen):
    row = ContainerRow(Container(None, container_attrs()))
    assert row.ID == "a87ecb4f327c"
    assert row.Image == "busybox"
    assert row.Command == '"sh -c \'while true; …"'  # 'quoted' argument, 20 characters, Go-quoted
    assert row.CreatedAt == "2026-05-07 11:55:00 +0000 UTC"
    assert row.RunningFor == "5 minutes ago"
    assert row.Status == "Up 2 minutes"
    assert row.State == "running"
    assert row.Names == "web"
    assert row.Labels == "com.docker.swarm.node=ubuntu,com.docker.swarm.storage=ssd"
    assert row.Label("com.docker.swarm.node") == "ubuntu" and row.Label("nope") == ""
    assert row.Mounts == "a-very-long-vo…,/srv"
    assert row.LocalVolumes == "1"
    assert (row.Ports, row.Networks, row.Size) == ("", "", "0B")
    full = ContainerRow(Container(None, container_attrs()), no_trunc=True)
    assert full.ID == "a87ecb4f327c" + "1" * 52
    assert full.Command == "\"sh -c 'while true; do echo hi; done'\""
    assert full.Mounts == "a-very-long-volume-name,/srv"


@pytest.mark.parametrize("state, status", [
    ({"Status": "created", "Running": False}, "Created"),
    ({"Status": "exited", "Running": False, "ExitCode": 137, "FinishedAt": "2026-05-07T11:00:00Z"},
     "Exited (137) About an hour ago"),
    ({"Status": "paused"}, "Up 2 minutes (Paused)"),
    ({"Status": "restarting", "ExitCode": 1, "FinishedAt": "2026-05-07T11:59:58Z"}, "Restarting (1) 2 seconds ago"),
    ({"Status": "removing", "Running": False}, "Removal In Progress"),
    ({"Status": "dead", "Running": False}, "Dead"),
])
def test_container_row_status(frozen, state, status):
    assert ContainerRow(Container(None, container_attrs(**state))).Status == status


def test_container_image_given_by_id_is_truncated():
    attrs = container_attrs()
    attrs["Config"]["Image"] = IMAGE_ID
    assert ContainerRow(Container(None, attrs)).Image == "4dd97cefde62"
    assert ContainerRow(Container(None, attrs), no_trunc=True).Image == IMAGE_ID


def test_docker_ps_documented_formats(frozen):
    rows = [ContainerRow(Container(None, container_attrs()))]
    assert render("{{.ID}}: {{.Command}}", rows, CONTAINER_HEADERS) == 'a87ecb4f327c: "sh -c \'while true; …"'
    assert render("table {{.ID}}\\t{{.Labels}}", rows, CONTAINER_HEADERS).split("\n") == [
        "CONTAINER ID   LABELS",
        "a87ecb4f327c   com.docker.swarm.node=ubuntu,com.docker.swarm.storage=ssd",
    ]
    assert render('{{.Names}} {{.Label "com.docker.swarm.node"}}', rows, CONTAINER_HEADERS) == "web ubuntu"
    assert render("table", rows, CONTAINER_HEADERS, default=CONTAINER_FORMAT).split("\n") == [
        "CONTAINER ID   IMAGE     COMMAND                  CREATED         STATUS         PORTS   NAMES",
        "a87ecb4f327c   busybox   \"sh -c 'while true; …\"   5 minutes ago   Up 2 minutes           web",
    ]


def test_container_row_json_has_every_field_but_label(frozen):
    fields = ContainerRow(Container(None, container_attrs())).json_fields()
    assert sorted(fields) == sorted(CONTAINER_HEADERS)
    assert "Label" not in fields


def test_history_row(frozen):
    entry = {"id": IMAGE_ID, "created": "2026-05-07T10:00:00Z", "size": 4_260_000,
             "created_by": "/bin/sh -c #(nop) ADD file:\tabc in / with a very long tail indeed",
             "comment": "imported"}
    row = HistoryRow(entry)
    assert [row.ID, row.CreatedSince, row.CreatedAt, row.CreatedBy, row.Size, row.Comment] == [
        "4dd97cefde62", "2 hours ago", "2026-05-07T10:00:00Z",
        "/bin/sh -c #(nop) ADD file: abc in / with a …", "4.26MB", "imported"]
    raw = HistoryRow(entry, no_trunc=True, human=False)
    assert (raw.ID, raw.CreatedSince, raw.Size) == (IMAGE_ID, "2026-05-07T10:00:00Z", "4260000")
    assert raw.CreatedBy.endswith("with a very long tail indeed")
    # docker's API names work too, and a step without an image is <missing>
    api = HistoryRow({"Id": "<missing>", "Created": NOW - 60, "CreatedBy": "sh", "Size": 0, "Comment": ""})
    assert render("{{.ID}}: {{.CreatedSince}}", [api], HISTORY_HEADERS) == "<missing>: About a minute ago"
    assert render("table", [api], HISTORY_HEADERS, default=HISTORY_FORMAT).split("\n")[0] == \
        "IMAGE       CREATED              CREATED BY   SIZE   COMMENT"


def test_truncate_id():
    assert truncate_id(IMAGE_ID) == "4dd97cefde62"
    assert truncate_id("a87ecb4f327c1111") == "a87ecb4f327c"
    assert truncate_id("<missing>") == "<missing>"


def test_go_time_uses_the_local_zone_like_docker(monkeypatch):
    monkeypatch.setenv("TZ", "Europe/Berlin")
    time.tzset()
    try:
        assert go_time(NOW) == "2026-05-07 14:00:00 +0200 CEST"
    finally:
        monkeypatch.undo()
        time.tzset()

