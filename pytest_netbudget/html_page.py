"""One self-contained HTML page: inline CSS and script, no request to anywhere, and model text inert.

Both HTML files netbudget writes (the report and the history chart) are built here. The page's
Content-Security-Policy allows nothing from outside and only its own inline style and script (by
their hashes), so even a bug that let markup through could neither run a script nor fetch a thing.
Data for the script travels as JSON in a ``<script type="application/json">`` element with ``<``,
``>`` and ``&`` escaped, which nothing in it can close.
"""

from __future__ import annotations

import base64
import hashlib
import html
import json
import re
from pathlib import Path
from typing import Any

ASSETS = Path(__file__).parent / "assets"

#: Characters that would reorder or hide the text around them (bidirectional overrides and
#: isolates, as in "Trojan Source") and other invisible controls: shown as their code point.
_INVISIBLE = re.compile(r"[\x00-\x08\x0b-\x1f\x7f\u200e\u200f\u202a-\u202e\u2066-\u2069]")


def asset(name: str) -> str:
    """The text of a file shipped in ``pytest_netbudget/assets``."""
    return (ASSETS / name).read_text(encoding="utf-8")


def visible(value: Any) -> str:
    """``value`` with every control that would reorder or hide text written as its code point
    (``<U+202E>``): for model text the page's script sets as text, and :func:`text`."""
    return _INVISIBLE.sub(lambda match: f"<U+{ord(match.group()):04X}>", str(value))


def text(value: Any) -> str:
    """``value`` as literal text in an element or a quoted attribute."""
    return html.escape(visible(value), quote=True)


def code(value: Any) -> str:
    return f"<code>{text(value)}</code>"


def _hash(source: str) -> str:
    return "'sha256-" + base64.b64encode(hashlib.sha256(source.encode("utf-8")).digest()).decode("ascii") + "'"


def json_for_script(data: Any) -> str:
    """JSON that is safe inside a ``<script>`` element: no ``</script>``, no ``<!--``."""
    return (
        json.dumps(data, separators=(",", ":")).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    )


def page(title: str, body: list[str], data: Any = None, script: str | None = None) -> str:
    """The whole document: ``body`` (HTML already made inert), the report's CSS, and ``script``
    with ``data`` for it as JSON."""
    style = asset("report.css")
    policy = f"default-src 'none'; style-src {_hash(style)}; img-src data:; base-uri 'none'; form-action 'none'"
    if script is not None:
        policy += f"; script-src {_hash(script)}"
    head = [
        "<!DOCTYPE html>",
        '<html lang="en">',
        "<head>",
        '<meta charset="utf-8">',
        f'<meta http-equiv="Content-Security-Policy" content="{policy}">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        '<link rel="icon" href="data:,">',
        f"<title>{text(title)}</title>",
        f"<style>{style}</style>",
        "</head>",
        "<body>",
    ]
    tail = []
    if data is not None:
        tail.append(f'<script type="application/json" id="netbudget-data">{json_for_script(data)}</script>')
    if script is not None:
        tail.append(f"<script>{script}</script>")
    return "\n".join([*head, *body, *tail, "</body>", "</html>", ""])
