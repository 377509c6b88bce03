"""A griffe extension for the docs site: Sphinx roles in docstrings become code spans.

The docstrings are Google style with Sphinx cross-reference roles (``:func:`map_region```,
``:class:`~arctic_rts.config.LoadConfig```), which Markdown would show as ``:func:`` followed
by the name. mkdocstrings renders each docstring as Markdown, so each role is turned into the
code span of its target, shortened to the last name where the role says ``~``.
"""

from __future__ import annotations

import re
from typing import Any

import griffe

ROLE = re.compile(r":(?:py:)?(?:func|class|meth|mod|attr|data|exc|obj|const):`(~?)([^`<>]+)`")


def plain(text: str) -> str:
    """``:role:`~a.b.c``` -> ```c```, ``:role:`a.b``` -> ```a.b```."""
    return ROLE.sub(lambda m: f"`{m[2].rsplit('.', 1)[-1] if m[1] else m[2]}`", text)


class SphinxRoles(griffe.Extension):
    """Rewrites the roles of every docstring once the object tree is complete."""

    def on_object(self, *, obj: griffe.Object, **kwargs: Any) -> None:
        if obj.docstring is not None:
            obj.docstring.value = plain(obj.docstring.value)
