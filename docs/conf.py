"""Sphinx configuration: the Markdown pages of docs/ (MyST) plus an API reference from docstrings.

Build: ``sphinx-build -W -b html docs docs/_build`` (tests/test_docs_site.py runs it).
The build needs no network: intersphinx reads the small inventories shipped in
``docs/_inventories`` (written by ``scripts/docs_inventories.py``), never a remote URL.
"""

from __future__ import annotations

import sys
from pathlib import Path

DOCS = Path(__file__).resolve().parent
sys.path.insert(0, str(DOCS.parent))  # autodoc imports the checkout's aiotmc

from sphinx.ext.napoleon.docstring import GoogleDocstring  # noqa: E402

from aiotmc import __version__  # noqa: E402

project = "aiotmc"
author = "aiotmc contributors"
copyright = "aiotmc contributors"
version = release = __version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.intersphinx",
    "sphinx.ext.napoleon",
    "sphinx_autodoc_typehints",
    "sphinxcontrib_trio",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "_inventories", "Thumbs.db", ".DS_Store"]

# MyST: the pages are also read on GitHub, so keep to CommonMark + tables; `#anchor` links
# to headings work on both.
myst_enable_extensions = ["colon_fence", "deflist"]
myst_heading_anchors = 4

# New pages join the guide through the toctree's glob in docs/index.md (after the three
# pages listed first), so adding docs/foo.md needs no change here and is never an orphan.


# Napoleon reads the Google-style "Args:" sections. aiotmc's ``#:`` attribute comments are
# prose ("REN off: every device goes to local"), never "type: description": their types
# come from the annotations, so the text before a colon must not become a type.
def _attribute_text_is_prose(self: GoogleDocstring) -> tuple[str, list[str]]:
    lines = [self._lines.next(), *self._dedent(self._consume_to_end())]
    return "", self.__class__(lines, self._config).lines()


GoogleDocstring._consume_inline_attribute = _attribute_text_is_prose  # type: ignore[method-assign]

# Autodoc: public names only, in source order; type hints go into the description.
autodoc_member_order = "bysource"
autodoc_default_options = {"members": True, "show-inheritance": True}
autodoc_typehints = "description"
typehints_use_signature = False
always_document_param_types = False

# Intersphinx without the network: (URL the links point to, local inventory file).
_INV = DOCS / "_inventories"
intersphinx_mapping = {
    "python": ("https://docs.python.org/3", str(_INV / "python.inv")),
    "anyio": ("https://anyio.readthedocs.io/en/stable", str(_INV / "anyio.inv")),
    "trio": ("https://trio.readthedocs.io/en/stable", str(_INV / "trio.inv")),
}
intersphinx_timeout = 1

html_theme = "furo"
html_title = f"aiotmc {release}"
html_static_path: list[str] = []  # no custom assets
