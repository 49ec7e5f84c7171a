"""The documentation builds cleanly, and the CLI reference keeps up with the CLI.

The build is the one ``make docs`` runs: Sphinx with warnings as errors, so a
broken reference, a malformed table or an autodoc target that no longer
exists fails the suite. The reference checks read the real argument parser,
so adding a command or a flag without documenting it fails here too.
"""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
DOCS = REPO / "docs"
CLI_REFERENCE = DOCS / "cli.rst"

# A section title: a line of text, then a line of one repeated punctuation
# character at least as long (reStructuredText's underline-only titles, the
# only kind the docs use).
_UNDERLINE = re.compile(r"^([=\-~^\"'`#*+.:_])\1*$")


def section_titles(text: str) -> list[str]:
    lines = text.splitlines()
    titles = []
    for title, underline in zip(lines, lines[1:]):
        title = title.rstrip()
        if (title and not title[0].isspace() and not _UNDERLINE.match(title)
                and _UNDERLINE.match(underline.rstrip()) and len(underline.rstrip()) >= len(title)):
            titles.append(title.replace("``", ""))
    return titles


def cli_commands() -> dict[str, argparse.ArgumentParser]:
    """Every top-level command the ``dockyard`` parser registers, with its parser."""
    from engine.cli import build_parser

    parser = build_parser()
    subparsers = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    assert len(subparsers) == 1, "expected one set of sub-commands on the dockyard parser"
    return dict(subparsers[0].choices)


def test_docs_build_without_warnings(tmp_path):
    out = tmp_path / "html"
    result = subprocess.run(
        [sys.executable, "-m", "sphinx", "-W", "--keep-going", "-b", "html", str(DOCS), str(out)],
        cwd=REPO, capture_output=True, text=True,
    )
    if result.returncode != 0:
        print(result.stdout)
        print(result.stderr)
    assert result.returncode == 0, "sphinx-build -W failed (its output is printed above):\n" + result.stderr
    assert (out / "index.html").exists()


def test_cli_reference_has_a_section_per_command():
    commands = cli_commands()
    assert commands, "the dockyard parser registers no commands?"
    titles = section_titles(CLI_REFERENCE.read_text(encoding="utf-8"))
    documented = {t.split()[1] for t in titles if t.startswith("dockyard ") and len(t.split()) == 2}
    missing = sorted(set(commands) - documented)
    assert not missing, (f"docs/cli.rst has no section titled 'dockyard <command>' for: {missing}. "
                         "Document every command the CLI registers.")
    stale = sorted(documented - set(commands))
    assert not stale, (f"docs/cli.rst documents commands the CLI does not have: {stale}. "
                       "The reference must describe only what exists.")


def test_cli_reference_mentions_every_flag():
    """Each command's flags appear in that command's section of docs/cli.rst,
    and the global flags in "Global options"."""
    from engine.cli import build_parser

    text = CLI_REFERENCE.read_text(encoding="utf-8")
    titles = set(section_titles(text))
    lines = text.splitlines()
    starts = [i for i, (a, b) in enumerate(zip(lines, lines[1:]))
              if a.rstrip().replace("``", "") in titles and _UNDERLINE.match(b.rstrip())]
    sections = {lines[s].replace("``", "").strip(): "\n".join(lines[s:e])
                for s, e in zip(starts, starts[1:] + [len(lines)])}
    wanted = [("Global options", build_parser())]
    wanted += [(f"dockyard {name}", parser) for name, parser in cli_commands().items()]
    missing = []
    for title, parser in wanted:
        section = sections.get(title, "")
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction) and title != "Global options":
                continue  # every command has --help; the page says so once
            for flag in action.option_strings:
                if not re.search(rf"``{re.escape(flag)}(``| )", section):
                    missing.append(f"{title}: {flag}")
    assert not missing, f"flags missing from their section of docs/cli.rst: {missing}"
