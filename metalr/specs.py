"""What the command line hands over: spec strings, switches, input files and output locations.

Spec strings, ``name:key=value,key=value``, are how tasks and policies are named on the CLI. One
parser for both: :func:`split_spec` for the syntax, :func:`canonical` for the one spelling a
spec is stored under, :func:`parse_bool` for switches. Files a user names are read with
:func:`read_regular` (regular files only, size capped before reading: a FIFO or ``/dev/zero``
cannot hang a command) and :func:`parse_json`; where a command will write is checked with
:func:`check_output` before it does any work.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path

from metalr.errors import MetalrError


def split_spec(spec: str, what: str) -> tuple[str, dict[str, str]]:
    """Split a ``what`` spec (``"task"``, ``"policy"``) into its name and raw string values."""
    name, colon, rest = spec.strip().partition(":")
    if colon and not rest.strip():
        raise MetalrError(f"{what} spec {spec!r} ends in ':' with no parameters; write "
                          f"{name.strip()!r} alone or {name.strip()}:key=value")
    params: dict[str, str] = {}
    for item in (s.strip() for s in rest.split(",")) if colon else ():
        if not item:
            raise MetalrError(f"{what} spec {spec!r} has an empty parameter (a stray ','); "
                              "write name:key=value,key=value")
        key, eq, value = item.partition("=")
        key, value = key.strip(), value.strip()
        if not eq or not key or not value:
            raise MetalrError(f"{what} spec {spec!r}: {item!r} is not of the form key=value")
        if key in params:
            raise MetalrError(f"{what} spec {spec!r}: key {key!r} is given twice")
        params[key] = value
    return name.strip(), params


def canonical(spec: str, what: str) -> str:
    """The one spelling of a spec: no spaces around items (``" cancer-mlp "`` is
    ``"cancer-mlp"``), parameters in the order given."""
    name, params = split_spec(spec, what)
    return f"{name}:{','.join(f'{k}={v}' for k, v in params.items())}" if params else name


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


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split()) or type(err).__name__


def read_regular(path: str | Path, what: str, cap: int, prefix: bool = False) -> bytes:
    """The bytes of the regular file at ``path`` (at most ``cap``; more is refused unless
    ``prefix``, which returns the first ``cap`` bytes).

    ``os.stat`` follows symlinks, so a link to ``/dev/zero``, a FIFO or a directory is refused
    here, unopened. The file is then opened non-blocking (a FIFO swapped in after the stat
    cannot block the open) and checked again on the open descriptor.
    """
    def check(info: os.stat_result) -> None:
        if not stat.S_ISREG(info.st_mode):
            raise MetalrError(f"{what} {path} is not a regular file (a directory, device, FIFO "
                              "or socket)")
        if info.st_size > cap and not prefix:
            raise MetalrError(f"{what} {path} has {info.st_size} bytes, more than the {cap} "
                              "it may have")

    try:
        check(os.stat(path))
        fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0))
    except MetalrError:
        raise
    except FileNotFoundError:
        raise MetalrError(f"{what} {path} is missing") from None
    except (OSError, ValueError) as err:  # permissions, a name too long, an embedded NUL
        raise MetalrError(f"cannot read {what} {path}: {_one_line(err)}") from None
    with os.fdopen(fd, "rb") as fh:
        check(os.fstat(fd))
        data = fh.read(cap + 1)
    if len(data) > cap and not prefix:
        raise MetalrError(f"{what} {path} grew past the {cap} bytes it may have while read")
    return data[:cap]


def parse_json(data: bytes, what: str):
    """Strict JSON (``NaN``/``Infinity`` are not JSON); any parse failure, absurd nesting
    included, is a one-line MetalrError."""
    def refuse(constant):
        raise ValueError(f"{constant} is not a JSON number")

    try:
        return json.loads(data, parse_constant=refuse)
    except RecursionError:
        raise MetalrError(f"{what} is nested too deeply") from None
    except (ValueError, UnicodeDecodeError) as err:  # JSONDecodeError, ints over 4300 digits
        raise MetalrError(f"{what} is not valid JSON: {_one_line(err)}") from None


def check_output(path: str | Path, option: str, directory: bool) -> Path:
    """Refuse, before any work, an output location the command could not write.

    ``path`` is a directory (``directory``) or a file to be created or replaced. Nothing is
    created: the nearest existing ancestor must be a directory in which a file can be made,
    tried with an anonymous temporary file (``os.access`` says yes to root even on ``/proc``).
    """
    try:
        path = Path(path).expanduser()
        target = path.resolve()
        if target.exists():
            if directory and not target.is_dir():
                raise MetalrError(f"{option} {path} exists and is not a directory")
            if not directory and not target.is_file():
                raise MetalrError(f"{option} {path} exists and is not a regular file")
        folder = target if directory else target.parent
        while not folder.exists():
            folder = folder.parent
        if not folder.is_dir():
            raise MetalrError(f"{option} {path}: {folder} is not a directory")
        try:
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise MetalrError(f"{option} {path} cannot be written: no file can be made in "
                              f"{folder} ({err.strerror})") from None
    except MetalrError:
        raise
    except (OSError, ValueError, RuntimeError) as err:  # ENAMETOOLONG, NUL, symlink loops
        raise MetalrError(f"{option} {path} cannot be written: {_one_line(err)}") from None
    return path
