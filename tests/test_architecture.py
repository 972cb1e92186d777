"""The package's shape: imports point one way, modules stay small, serving never loads training code."""

from __future__ import annotations

import ast
import json
import os
import subprocess
import sys
from pathlib import Path

import digitlab

PACKAGE = Path(digitlab.__file__).parent
MAX_LINES = 500
#: what an API worker must never import: training, synthesis, evaluation, the CLI's commands, torch
FORBIDDEN_IN_SERVING = ("torch", "digitlab.training", "digitlab.synth", "digitlab.evaluation", "digitlab.cli")


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for p in PACKAGE.rglob("*.py") if "migrations" not in p.parts}


def import_graph() -> dict[str, set[str]]:
    """Module -> the package modules it imports anywhere in its body (lazy imports included)."""
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        edges = set()
        is_package = path.name == "__init__.py"
        for node in ast.walk(ast.parse(path.read_text())):
            targets = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative import
                    pkg = name if is_package else name.rpartition(".")[0]
                    for _ in range(node.level - 1):
                        pkg = pkg.rpartition(".")[0]
                    base = f"{pkg}.{base}" if base else pkg
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
            for target in targets:
                while target and target not in modules:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    edges.add(target)
        graph[name] = edges
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (cycle := visit(node)):
            return cycle
    return None


def test_cycle_finder_finds_a_cycle():
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]
    assert find_cycle({"a": {"b"}, "b": {"c"}, "c": set()}) is None


def test_no_import_cycle_in_the_package():
    graph = import_graph()
    assert "digitlab.api.prediction" in graph and "digitlab.synth.render" in graph
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_modules_are_small_or_say_why_not():
    big = []
    for name, path in _modules().items():
        text = path.read_text()
        lines = len(text.splitlines())
        doc = ast.get_docstring(ast.parse(text)) or ""
        if lines > MAX_LINES and "one piece" not in doc.lower():
            big.append(f"{name} ({lines} lines)")
    assert not big, f"over {MAX_LINES} lines without a docstring saying why it is one piece: {big}"


def test_serving_imports_no_training_or_synthesis_code(tmp_path):
    """An API worker (app + lifespan: models, detector, store) and the UI's client load none of it."""
    code = f"""
import json, sys
from fastapi.testclient import TestClient
from digitlab.api.main import create_app
import digitlab.ui.client
with TestClient(create_app()) as client:
    assert client.get("/health").status_code == 200
    client.post("/api/v1/predict", files={{"image": ("d.png", __import__("digitlab.api.upkeep").api.upkeep.sample_drawing())}})
bad = sorted(m for m in sys.modules if m.startswith({FORBIDDEN_IN_SERVING!r}))
print(json.dumps(bad))
"""
    env = {**os.environ, "DIGITLAB_DATA_DIR": str(tmp_path), "DIGITLAB_MODEL_DIR": str(tmp_path / "models")}
    env.pop("DATABASE_URL", None)
    out = subprocess.run([sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_the_ui_loads_no_database_code():
    """The UI reads the store's record types only: importing the package pulled in SQLAlchemy and Alembic,
    1.6 s of the first page's imports (the first visit after a start was blank for seconds)."""
    code = (
        "import sys, digitlab.ui.common, digitlab.ui.client, digitlab.ui.charts, digitlab.ui.answers\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('sqlalchemy', 'alembic', 'psycopg')))"
    )
    out = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


#: Streamlit calls that show something on the page.
_SHOWING = {"toast", "markdown", "write", "caption", "info", "warning", "error", "success", "image", "html"}


def test_no_widget_callback_shows_anything():
    """An element shown by a widget's callback during a fragment's run replaces the page's first element: on Draw,
    the "not saved" toast of an answer's callback took the place of the style sheet, and the page lost all its
    styling for the rest of the visit (5 of 6 sessions of a newcomer's tour, session 32). Callbacks only change
    the session state; the page shows what they leave there."""
    offenders = []
    for path in sorted((PACKAGE / "ui").rglob("*.py")):
        tree = ast.parse(path.read_text(encoding="utf-8"))
        functions = {f.name: f for f in ast.walk(tree) if isinstance(f, ast.FunctionDef)}
        callbacks = {
            kw.value.id
            for call in ast.walk(tree) if isinstance(call, ast.Call)
            for kw in call.keywords if kw.arg in ("on_change", "on_click") and isinstance(kw.value, ast.Name)
        }  # fmt: skip
        assert callbacks or path.name not in ("draw.py", "canvas.py"), path  # (the walk finds them)
        for name in callbacks & functions.keys():
            for node in ast.walk(functions[name]):
                if isinstance(node, ast.Attribute) and node.attr in _SHOWING and getattr(node.value, "id", "") == "st":
                    offenders.append(f"{path.name}:{node.lineno} {name} calls st.{node.attr}")
    assert not offenders, offenders
