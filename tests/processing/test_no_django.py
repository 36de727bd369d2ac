"""``processing`` runs in workers and tools without Django: it must never import it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PROCESSING_DIR = Path(__file__).resolve().parents[2] / "processing"
FORBIDDEN = {"django", "videos", "findface_videos", "rest_framework"}
MODULES = sorted(PROCESSING_DIR.rglob("*.py"))


def imported_modules(tree: ast.AST) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names.add(node.module)
        elif (
            # importlib.import_module("django...") / __import__("django...") with a literal name
            isinstance(node, ast.Call)
            and (
                (isinstance(node.func, ast.Attribute) and node.func.attr == "import_module")
                or (isinstance(node.func, ast.Name) and node.func.id in {"import_module", "__import__"})
            )
            and node.args
            and isinstance(node.args[0], ast.Constant)
            and isinstance(node.args[0].value, str)
        ):
            names.add(node.args[0].value)
    return names


def test_processing_has_modules() -> None:
    assert PROCESSING_DIR.is_dir() and MODULES


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(PROCESSING_DIR)))
def test_module_does_not_import_django(path: Path) -> None:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    offending = sorted(name for name in imported_modules(tree) if name.split(".")[0] in FORBIDDEN)
    assert not offending, f"{path} imports {offending}"


def test_the_checker_catches_each_import_form() -> None:
    source = "import django\nfrom videos.models import X\nimport importlib\nimportlib.import_module('django.conf')\n"
    assert imported_modules(ast.parse(source)) >= {"django", "videos.models", "django.conf"}
