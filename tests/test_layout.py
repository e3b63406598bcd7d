"""The package's folders follow the flow and import only from the folders before them
(laserkit/__init__.py's docstring); public names do not depend on import order; laserkit 0.1's
module paths still import, with a warning naming the new one."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import laserkit

PACKAGE = Path(laserkit.__file__).parent
ORDER = [
    "core",
    "io",
    "model",
    "spectral",
    "interventions",
    "edit",
    "tasks",
    "eval",
    "search",
    "cli",
]
ROOT_LAYER = {"laserkit._version": 0, "laserkit._deprecated": 0}  # leaves, like core


def module_name(path: Path) -> str:
    parts = ["laserkit", *path.relative_to(PACKAGE).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in PACKAGE.rglob("*.py")}


def imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every laserkit module ``path`` imports, at the top or inside a function, as the import
    system would resolve it (``from .x import y`` is module ``x.y`` when that is a module)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m.startswith("laserkit.") and m != name}


def layer(name: str) -> int | None:
    if name in ROOT_LAYER:
        return ROOT_LAYER[name]
    parts = name.split(".")
    return ORDER.index(parts[1]) if len(parts) > 1 and parts[1] in ORDER else None


def graph() -> dict[str, set[str]]:
    mods = modules()
    return {n: imports(n, p, set(mods)) for n, p in mods.items()}


def test_every_module_has_a_layer():
    loose = [
        n for n in modules() if n not in ("laserkit", "laserkit.__main__") and layer(n) is None
    ]
    assert loose == []


def test_no_import_against_the_flow():
    wrong = [
        f"{a} imports {b}"
        for a, deps in graph().items()
        for b in deps
        if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)
    ]
    assert wrong == []


def test_no_import_cycle():
    g = graph()
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    cycles: list[list[str]] = []

    def visit(n: str, path: list[str]) -> None:
        state[n] = 1
        for m in sorted(g.get(n, ())):
            if m not in g:
                continue
            if state.get(m) == 1:
                cycles.append(path[path.index(m) :] + [m] if m in path else [n, m])
            elif m not in state:
                visit(m, path + [m])
        state[n] = 2

    for n in sorted(g):
        if n not in state:
            visit(n, [n])
    assert cycles == []


def test_the_checker_sees_a_function_level_import_against_the_flow(tmp_path):
    """The check above could pass by not looking: a function-level import of search from io
    must be seen."""
    f = tmp_path / "load.py"
    f.write_text("def f():\n    from ..search import runner\n")
    known = {"laserkit.search", "laserkit.search.runner"}
    assert imports("laserkit.io.load", f, known) == {"laserkit.search.runner"}
    assert layer("laserkit.search.runner") > layer("laserkit.io.load")


def _python(code: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-W", "always::DeprecationWarning", "-c", code],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_public_names_do_not_depend_on_import_order():
    r = _python(
        "import laserkit as lk, laserkit.evaluate, laserkit.eval.evaluate as m\n"
        "assert lk.evaluate is m.evaluate, lk.evaluate\n"
        "assert callable(lk.evaluate) and lk.EvalResult is m.EvalResult\n"
        "import laserkit.edit; assert lk.Editor.__name__ == 'Editor'\n"
        "print('ok')"
    )
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"


def test_old_module_paths_import_with_a_warning_naming_the_new_one():
    r = _python(
        "import laserkit.loading as old, laserkit.io.load as new\n"
        "assert old is new and old.__spec__.name == 'laserkit.io.load'\n"
        "from laserkit.outofcore import edit_checkpoint\n"
        "from laserkit.edit.ondisk import edit_checkpoint as e2\n"
        "assert edit_checkpoint is e2\n"
        "from laserkit.spectral import mp_threshold\n"
        "from laserkit.spectral.mp import mp_threshold as m2\n"
        "assert mp_threshold is m2\n"
        "print('ok')"
    )
    assert r.returncode == 0, r.stderr
    assert "laserkit.loading is deprecated: import laserkit.io.load" in r.stderr
    assert "laserkit.outofcore is deprecated: import laserkit.edit.ondisk" in r.stderr
