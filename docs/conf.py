"""Sphinx configuration for Dockyard's documentation.

Built with warnings as errors (``make docs``; ``tests/test_docs.py`` runs the
same build), using only Sphinx's own theme and extensions.
"""

import os
import sys

# The API page documents the engine's classes with autodoc: import them from
# this checkout, not from whatever is installed.
sys.path.insert(0, os.path.abspath(".."))

project = "Dockyard"
author = "Dockyard developers"
copyright = "Dockyard developers"

try:
    from engine import __version__ as release
except ImportError:  # the API page will say why; the rest still builds
    release = ""
version = release

extensions = ["sphinx.ext.autodoc"]

root_doc = "index"
source_suffix = {".rst": "restructuredtext"}
exclude_patterns = ["_build"]
templates_path = []
html_static_path = []  # a missing _static directory would be a warning

html_theme = "alabaster"
html_title = "Dockyard"
html_theme_options = {
    "description": "a real container engine, made to be read",
    "fixed_sidebar": False,
}

nitpicky = False
pygments_style = "sphinx"

autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_default_options = {"undoc-members": False}
