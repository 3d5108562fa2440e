"""Spec strings, ``name:key=value,key=value``: how tasks and policies are named on the CLI.

One parser for both: :func:`split_spec` for the syntax, :func:`parse_bool` for switches.
"""

from __future__ import annotations

from metalr.errors import MetalrError


def split_spec(spec: str, what: str) -> tuple[str, dict[str, str]]:
    """Split a ``what`` spec (``"task"``, ``"policy"``) into its name and raw string values."""
    name, _, rest = spec.strip().partition(":")
    params: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in rest.split(","))):
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise MetalrError(f"{what} spec {spec!r}: {item!r} is not of the form key=value")
        if key in params:
            raise MetalrError(f"{what} spec {spec!r}: key {key!r} is given twice")
        params[key] = value
    return name.strip(), params


TRUE_WORDS = ("true", "yes", "1")
FALSE_WORDS = ("false", "no", "0")


def parse_bool(text: str) -> bool:
    """``true``/``yes``/``1`` or ``false``/``no``/``0`` (any case); anything else is a ValueError."""
    lowered = str(text).strip().lower()
    if lowered in TRUE_WORDS:
        return True
    if lowered in FALSE_WORDS:
        return False
    raise ValueError(f"accepted: {', '.join(TRUE_WORDS + FALSE_WORDS)}")
