"""The configuration reference (Markdown table) generated from `digitlab.core.config.Settings`.

    python docker/config_reference.py            # print the table
    python docker/config_reference.py --write    # rewrite it in every doc that has the markers
    python docker/config_reference.py --check    # exit 1 when one of them is out of date (tests do this)

The docs are docs/deploy.md and README.md; a doc takes part when it holds the two marker lines
`<!-- settings-table:start -->` and `<!-- settings-table:end -->` (docs/deploy.md must).

The meaning comes from each field's `description`; the few fields without one get theirs from
`MEANINGS` below (tests fail when a new setting has neither).
"""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "deploy.md"
DOCS = [DOC, REPO / "README.md"]
START, END = "<!-- settings-table:start -->", "<!-- settings-table:end -->"

MEANINGS = {
    "postgres_host": "PostgreSQL host; when set (and DATABASE_URL is not), the store uses PostgreSQL from the "
    "POSTGRES_* variables instead of SQLite.",
    "postgres_port": "PostgreSQL port (with POSTGRES_HOST).",
    "postgres_db": "PostgreSQL database name (with POSTGRES_HOST).",
    "postgres_user": "PostgreSQL user (with POSTGRES_HOST).",
    "postgres_password": "PostgreSQL password (with POSTGRES_HOST); empty: none.",
    "host": "Address the API listens on (`digitlab serve`, `digitlab run`).",
    "port": "Port the API listens on.",
    "workers": "uvicorn worker processes of one API (each has its own models and spool).",
    "ui_host": "Address the Streamlit UI listens on (`digitlab ui`, `digitlab run`).",
    "ui_port": "Port the Streamlit UI listens on.",
}


def env_names(name: str, field) -> list[str]:
    alias = field.validation_alias
    if alias is None:
        from digitlab.core.config import Settings

        return [Settings.model_config.get("env_prefix", "").upper() + name.upper()]
    if isinstance(alias, str):
        return [alias]
    return [str(choice) for choice in alias.choices]


def show_default(value) -> str:
    if value is None:
        return "(unset)"
    if isinstance(value, Path):
        return f"`{value.as_posix()}`"
    if isinstance(value, list):
        return f"`{json.dumps(value)}` (a JSON list)"
    if value == "":
        return '`""` (empty)'
    return f"`{value}`"


def rows() -> list[tuple[str, str, str]]:
    from digitlab.core.config import Settings

    out = []
    for name, field in Settings.model_fields.items():
        meaning = field.description or MEANINGS.get(name)
        if not meaning:
            raise SystemExit(f"Settings.{name} has no description: add one (or an entry in MEANINGS)")
        names = env_names(name, field)
        shown = f"`{names[0]}`" + "".join(f" (or `{n}`)" for n in names[1:])
        default = show_default(field.get_default(call_default_factory=True))
        meaning = re.sub(r"[\w/-]*(?:<[\w-]+>[\w/-]*)+", lambda m: f"`{m.group(0)}`", meaning)  # not HTML
        out.append((shown, default, meaning.replace("|", "\\|")))
    return out


def table() -> str:
    lines = ["| variable | default | meaning |", "| --- | --- | --- |"]
    lines += [f"| {v} | {d} | {m} |" for v, d, m in rows()]
    return "\n".join(lines)


def render(doc: str) -> str:
    head, _, rest = doc.partition(START)
    _, _, tail = rest.partition(END)
    return f"{head}{START}\n{table()}\n{END}{tail}"


def docs() -> list[Path]:
    found = [p for p in DOCS if p.exists() and START in p.read_text() and END in p.read_text()]
    if DOC not in found:
        raise SystemExit(f"{DOC} has no {START} ... {END} section")
    return found


def main(argv: list[str]) -> int:
    if "--write" in argv:
        for path in docs():
            path.write_text(render(path.read_text()))
        return 0
    if "--check" in argv:
        stale = [path for path in docs() if render(path.read_text()) != path.read_text()]
        for path in stale:
            print(f"{path} is out of date: python docker/config_reference.py --write", file=sys.stderr)
        return 1 if stale else 0
    print(table())
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
