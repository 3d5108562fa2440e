"""Regenerate the policies and tasks tables in docs/ from the registries (never copy them by hand).

    python docs/make_tables.py
"""

import re
from pathlib import Path

from metalr.policies import list_policies
from metalr.tasks import list_tasks

DOCS = Path(__file__).resolve().parent


def markdown(rows: list[dict]) -> str:
    cols = list(rows[0])
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(str(r[c]).replace("|", "\\|") for c in cols) + " |" for r in rows]
    return "\n".join(lines)


def fill(page: str, name: str, rows: list[dict]) -> None:
    path = DOCS / page
    text = path.read_text()
    pattern = re.compile(rf"(<!-- begin {name} table[^>]*-->\n).*?(<!-- end {name} table -->)", re.S)
    if not pattern.search(text):
        raise SystemExit(f"{path}: no '<!-- begin {name} table -->' ... '<!-- end {name} table -->' markers")
    path.write_text(pattern.sub(lambda m: m.group(1) + markdown(rows) + "\n" + m.group(2), text))
    print(f"wrote {len(rows)} rows into {path}")


if __name__ == "__main__":
    fill("policies.md", "policies", list_policies())
    fill("tasks.md", "tasks", list_tasks())
