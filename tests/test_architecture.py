"""The habits import-linter, ruff and mypy do not check, checked on the source (docs/architecture.md)."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ["lorawatch", "alerts", "monitors", "registry", "incidents", "serving", "app"]


def _sources() -> list[Path]:
    files = []
    for package in PACKAGES:
        for path in sorted((ROOT / package).rglob("*.py")):
            if path.is_symlink() or any(p.is_symlink() for p in path.relative_to(ROOT).parents if p != Path(".")):
                continue  # lorawatch/alerts -> ../alerts: read once, under its real folder
            if "migrations" in path.parts:
                continue
            files.append(path)
    return files


def test_the_sources_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in _sources()}
    assert "alerts/engine.py" in names and "lorawatch/settings.py" in names and "monitors/canary.py" in names
    assert not any(n.startswith("lorawatch/alerts/") for n in names)


def test_imports_inside_functions_are_deferred_on_purpose_and_say_why():
    """Imports go at the top of a module; one inside a function defers a heavy dependency and
    says so in a ``# Deferred: ...`` comment on the line above (a run of imports shares one)."""
    offenders = []
    for path in _sources():
        lines = path.read_text(encoding="utf-8").splitlines()
        tree = ast.parse("\n".join(lines))
        for function in ast.walk(tree):
            if not isinstance(function, (ast.FunctionDef, ast.AsyncFunctionDef)):
                continue
            for node in ast.walk(function):
                if not isinstance(node, (ast.Import, ast.ImportFrom)):
                    continue
                above = node.lineno - 2
                while above >= 0 and lines[above].strip().startswith(("import ", "from ")):
                    above -= 1  # the first import of the run carries the comment
                comment = []
                while above >= 0 and lines[above].strip().startswith("#"):
                    comment.append(lines[above].strip())
                    above -= 1
                if not any(line.startswith("# Deferred:") for line in comment):
                    offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}: {lines[node.lineno - 1].strip()}")
    assert not offenders, "move these imports to the top, or say why they are deferred:\n" + "\n".join(
        sorted(set(offenders))
    )


def test_only_the_data_layer_commits():
    """One service convention: a function that takes a Session works inside its caller's
    transaction; one that takes a Database opens its own with ``db.session()``, which commits
    at the end of the block. Nothing else commits or rolls back."""
    offenders = []
    for path in _sources():
        if path.relative_to(ROOT).parts[:2] == ("lorawatch", "db"):
            continue
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Attribute)
                and node.func.attr in {"commit", "rollback"}
                and not node.args
            ):
                offenders.append(f"{path.relative_to(ROOT)}:{node.lineno}")
    assert not offenders, offenders


def test_settings_are_typed_wherever_they_are_passed():
    offenders = []
    for path in _sources():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                args = node.args.posonlyargs + node.args.args + node.args.kwonlyargs
                for arg in args:
                    if arg.arg == "settings" and (
                        arg.annotation is None or "Settings" not in ast.unparse(arg.annotation)
                    ):
                        offenders.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}")
    assert not offenders, offenders
