"""Spec strings, ``name:key=value,key=value``: how tasks and policies are named on the CLI."""

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
