"""Sphinx configuration for the trio_sse documentation site (`nox -s docs`).

The pages are Markdown (MyST). docs/design.md, docs/threat-model.md and
docs/benchmarks.md are pages of the site as they are, so the site follows them as they
change. The API reference is generated from the docstrings (Google style, napoleon).
Warnings are errors: the nox session runs ``sphinx-build -W --keep-going``.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from typing import Any

from sphinx.util import logging

# Document this checkout, whichever trio_sse the environment has installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import trio_sse

project = "trio_sse"
author = "the trio_sse authors"
copyright = "the trio_sse authors"
release = trio_sse.__version__
version = release

extensions = [
    "myst_parser",
    "sphinx.ext.autodoc",
    "sphinx.ext.napoleon",
    "sphinx.ext.viewcode",
]

source_suffix = {".md": "markdown"}
root_doc = "index"
exclude_patterns = ["_build", "Thumbs.db", ".DS_Store"]

# MyST: anchors for headings down to ### so that pages can link to sections
# (`[text](page.md#section)`), and ::: fences for directives.
myst_heading_anchors = 3
myst_enable_extensions = ["colon_fence", "deflist"]

# autodoc: members in source order, signatures with their annotations, and the types
# shown in the description rather than in a long signature line.
autodoc_member_order = "bysource"
autodoc_typehints = "description"
autodoc_typehints_description_target = "documented_params"
autodoc_default_options = {"members": True}
# Google-style docstrings only.
napoleon_google_docstring = True
napoleon_numpy_docstring = False
napoleon_use_rtype = False
napoleon_attr_annotations = True

html_theme = "furo"
html_title = f"trio_sse {release}"


# Napoleon reads the first line of an attribute's or a property's docstring as
# "TYPE: DESCRIPTION" (Google style), so "Stopped for good: closed, ..." would render
# with "Stopped for good" as its type, silently. The code states types in annotations,
# never in that line: warn (an error under -W) so that the line is reworded instead.
_COLON_OUTSIDE_CODE = re.compile(r"(?<!:):(?!:)")
_CODE_OR_ROLE = re.compile(r"(:\w+:`[^`]*`|``[^`]*``|`[^`]*`)")


def _check_attribute_summary(  # noqa: PLR0917 (the signature Sphinx calls)
    app: Any, what: str, name: str, obj: Any, options: Any, lines: list[str]
) -> None:
    if what not in {"attribute", "property", "data"} or not lines:
        return
    if _COLON_OUTSIDE_CODE.search(_CODE_OR_ROLE.sub("", lines[0])):
        logging.getLogger(__name__).warning(
            "%s: napoleon would read the text before the colon in its docstring's first "
            "line as a type; reword that line (%r)",
            name,
            lines[0],
        )


def setup(app: Any) -> None:
    # Before napoleon (priority 500), which rewrites the lines.
    app.connect("autodoc-process-docstring", _check_attribute_summary, priority=100)
