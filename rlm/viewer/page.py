"""Assemble the single self-contained HTML file: template, CSS, script and data.

Model output is untrusted. It reaches the page only as JSON inside
``<script type="application/json">`` (never parsed as markup or code), with ``<``, ``>``
and ``&`` written as ``\\u`` escapes so no string can close the block. The page script
(``SCRIPTS``, joined into one inline script) only assigns ``textContent`` and builds
elements; it never parses markup. A Content-Security-Policy pins that one inline script
by hash and forbids every network fetch, as a second line of defence.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from functools import cache
from importlib import resources
from typing import Any

_TOKEN = re.compile(r"\{\{(TITLE|CSP|CSS|DATA|JS)\}\}")
# In order: each of the first four defines one global (rlmMarkdown, rlmChart, rlmDom,
# rlmCards); viewer.js, the page itself, uses them.
SCRIPTS = ("markdown.js", "chart.js", "dom.js", "cards.js", "viewer.js")

# U+2028/2029 are valid in JSON strings but worth spelling out for older parsers.
_JSON_ESCAPES = str.maketrans(
    {"<": "\\u003c", ">": "\\u003e", "&": "\\u0026", "\u2028": "\\u2028", "\u2029": "\\u2029"}
)


@cache
def _asset(name: str) -> str:
    return (resources.files("rlm.viewer") / "assets" / name).read_text(encoding="utf-8")


def embed_json(data: Any) -> str:
    """``data`` as JSON that is safe inside a ``<script>`` element."""
    raw = json.dumps(data, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    return raw.translate(_JSON_ESCAPES)


def _csp(script: str) -> str:
    digest = base64.b64encode(hashlib.sha256(script.encode("utf-8")).digest()).decode()
    return (
        "default-src 'none'; "
        f"script-src 'sha256-{digest}'; "
        "style-src 'unsafe-inline'; "
        "img-src data:; "
        "base-uri 'none'; form-action 'none'"
    )


def assemble(data: Any, title: str) -> str:
    """The whole page for ``data`` (a ``ViewModel``)."""
    script = "\n".join(_asset(name) for name in SCRIPTS)
    parts = {
        "TITLE": html.escape(title),
        "CSP": _csp(script),  # fixed text and base64: nothing to escape in the attribute
        "CSS": _asset("viewer.css"),
        "DATA": embed_json(data),
        "JS": script,
    }
    # One pass: text substituted in is never scanned for tokens again.
    return _TOKEN.sub(lambda m: parts[m.group(1)], _asset("page.html"))
