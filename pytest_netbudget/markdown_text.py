"""Text from code under review made inert in the Markdown report, which is posted as a PR comment.

Model names, layer paths, module type names and exception text come from the pull request itself.
Every Markdown writer passes them through here, so that none of them can close a table cell, open
an HTML tag, start a link, emphasis or math, mention a team, or end a code fence:

- ``inline`` for table cells and HTML (``<summary>``): every character that GFM or HTML reads as
  markup becomes a numeric character reference, which renders as the character itself in both
  places (a backslash escape would show in HTML), so no link or autolink forms either; an ``@``
  gets a zero-width space after it.
- ``code`` is ``inline`` in a ``<code>`` element: how names are shown.
- ``fence`` puts lines in a code block whose fence is longer than any backtick run inside.
- Both show Unicode's bidirectional controls by their code point (``<U+202E>``), so that none
  reorders the text around it.
- ``mermaid_label`` keeps a chart label to characters Mermaid reads as plain text.
"""

from __future__ import annotations

import re

#: Characters that GFM or HTML read as markup. ``_`` only where it can start emphasis: inside a
#: word (``mnist_cnn``) it cannot, and stays readable.
#: The ``:`` of ``://`` and the dot of ``www.``: GFM turns ``https://...`` and ``www....`` into links
#: by themselves (any other link needs ``[``, ``]`` or ``<``, escaped already).
_MARKUP = re.compile(r"[&<>\"'|\\`*\[\]~$\n\r\t]|:(?=//)|(?<![A-Za-z0-9])_|_(?![A-Za-z0-9])|(?<=[wW]{3})\.")
#: Unicode's bidirectional controls (embeddings, overrides, isolates, marks): live, they reorder
#: the text after them ("Trojan Source" names), so they are shown by their code point, <U+202E>.
_BIDI = re.compile("[\u061c\u200e\u200f\u202a-\u202e\u2066-\u2069]")
#: After an @, so that "@everyone" renders as text and notifies nobody.
ZERO_WIDTH_SPACE = "\u200b"


def inline(text: str) -> str:
    """``text`` as literal characters in a table cell, in Markdown text or inside an HTML element."""
    escaped = _MARKUP.sub(lambda match: f"&#{ord(match.group())};", visible_controls(str(text)))
    return escaped.replace("@", "@" + ZERO_WIDTH_SPACE)


def visible_controls(text: str) -> str:
    """``text`` with every bidirectional control written as its code point (``<U+202E>``)."""
    return _BIDI.sub(lambda match: f"<U+{ord(match.group()):04X}>", text)


def code(text: str) -> str:
    """``text`` shown as code in a table cell or a ``<summary>``."""
    return f"<code>{inline(text)}</code>"


def fence(lines: list[str], info: str = "") -> list[str]:
    """``lines`` in a fenced code block that nothing inside can close (a fence longer than any
    backtick run in it); mentions are neutralised too, for renderers that make them in code."""
    body = [
        visible_controls(line).replace("@", "@" + ZERO_WIDTH_SPACE)
        for text in lines
        for line in str(text).splitlines() or [""]
    ]
    longest = max((len(run) for line in body for run in re.findall(r"`+", line)), default=0)
    marker = "`" * max(3, longest + 1)
    return [marker + info, *body, marker]


def mermaid_label(text: str) -> str:
    """A pie-chart label: letters, digits and a few signs (the braces, commas and × of a repeated
    block, ``layers.{0..31} ×32``); anything else becomes ``_``, so no quote ends the label and
    no ``%%{`` starts a directive."""
    return re.sub(r"[^A-Za-z0-9_ .:()/{},×-]", "_", str(text))
