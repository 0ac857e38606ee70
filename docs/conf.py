"""Sphinx configuration for the hitl-vault docs (Markdown pages through MyST, the Furo theme).

Build them strictly, as CI does: ``sphinx-build -W --keep-going -b html docs docs/_build/html``
(``pip install -e '.[docs]'`` first). about.md says why Sphinx, and how the examples are tested.
"""

from __future__ import annotations

import hitl_vault

project = "hitl-vault"
author = "the hitl-vault authors"
copyright = "the hitl-vault authors"
release = version = hitl_vault.__version__

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx_click",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build"]

# Links to a heading in the same or another page: [text](page.md#a-heading).
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# The Python API page: signatures as written, members in the order of the source.
autodoc_member_order = "bysource"
autodoc_typehints = "signature"
autodoc_preserve_defaults = True

html_theme = "furo"
html_title = f"hitl-vault {release}"
# A note's example is shown as Markdown; "output" blocks are what a command printed.
pygments_style = "sphinx"
