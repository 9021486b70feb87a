"""The layout's rules: imports point one way (web edge -> domain -> nothing Flask), and the README's
layout table names the modules the tree has."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PRODUCT = ("app.py", "sipguard", "webhooks", "xml_builders", "sandbox")
NOT_PRODUCT = {"tests", "bench", "devtools", "reliability"}
# Where Flask may be imported: the app factory, the web edge, the CLI and the sandbox's server.
FLASK_ALLOWED = ("app.py", "webhooks/", "sipguard/commands/", "sandbox/server.py", "sandbox/cli.py")


def _files() -> list[Path]:
    found: list[Path] = []
    for entry in PRODUCT:
        path = ROOT / entry
        found.extend([path] if path.is_file() else sorted(path.rglob("*.py")))
    return [path for path in found if "migrations" not in path.relative_to(ROOT).parts]


def _imports(path: Path) -> set[str]:
    """Every module `path` imports, at the top or inside a function."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


IMPORTS = {path.relative_to(ROOT).as_posix(): _imports(path) for path in _files()}


def _top(name: str) -> str:
    return name.split(".")[0]


def _modules(prefix: str) -> list[str]:
    return sorted(module for module in IMPORTS if module.startswith(prefix))


def test_the_rules_see_the_product() -> None:
    assert {"app.py", "sipguard/calls/routing.py", "webhooks/views.py"} <= set(IMPORTS)
    assert "sipguard.calls.routing" in IMPORTS["webhooks/views.py"]


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_flask_only_at_the_edges(module: str) -> None:
    if not module.startswith(FLASK_ALLOWED):
        assert not {n for n in IMPORTS[module] if _top(n) in ("flask", "werkzeug")}


@pytest.mark.parametrize("module", sorted(IMPORTS))
def test_the_product_never_imports_dev_or_test_code(module: str) -> None:
    assert not {n for n in IMPORTS[module] if _top(n) in NOT_PRODUCT}


@pytest.mark.parametrize("module", _modules("sipguard/"))
def test_the_domain_never_imports_the_edges(module: str) -> None:
    edges = {n for n in IMPORTS[module] if _top(n) in ("app", "webhooks", "sandbox")}
    if module.startswith("sipguard/commands/"):
        # The CLI is an edge beside webhooks/: it builds the app and reaches its routes and
        # runtime, but never imports the sandbox (its commands come through an entry point).
        assert not {n for n in edges if _top(n) == "sandbox"}
    else:
        assert not edges
        assert not {n for n in IMPORTS[module] if n.startswith("sipguard.commands")}


@pytest.mark.parametrize("module", _modules("xml_builders/"))
def test_xml_builders_know_only_the_errors(module: str) -> None:
    ours = {n for n in IMPORTS[module] if _top(n) in ("app", "sipguard", "webhooks", "sandbox")}
    assert ours <= {"sipguard.errors"}, ours


@pytest.mark.parametrize("module", _modules("sandbox/"))
def test_the_sandbox_stays_outside_the_app(module: str) -> None:
    assert not {n for n in IMPORTS[module] if _top(n) in ("app", "webhooks")}


def test_nothing_outside_the_sandbox_imports_it() -> None:
    """The sandbox's commands come in through an entry point, so the product never loads it."""
    users = [m for m, names in IMPORTS.items() if not m.startswith("sandbox/")]
    assert [m for m in users if any(_top(n) == "sandbox" for n in IMPORTS[m])] == []


def _layout_rows() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("\n## Layout\n", 1)[1].split("\n## ", 1)[0]
    return [line.rsplit("|", 2)[-2] for line in section.splitlines() if line.startswith("| ")]


def _listing(cell: str) -> tuple[str, list[str]]:
    """Return a cell's folder ("" when it names paths from the root) and the names it lists."""
    listed = re.match(r"\s*`([\w/]+/)`: (.*)", cell)
    if listed:
        return listed.group(1), re.findall(r"`([^`]+)`", listed.group(2))
    return "", re.findall(r"`([^`]+)`", cell)


def test_every_path_the_layout_names_exists() -> None:
    cells = _layout_rows()[1:]  # the header row names no path
    named = [
        (folder, name) for cell in cells for folder, names in [_listing(cell)] for name in names
    ]
    assert len(named) > 40
    missing = [folder + name for folder, name in named if not (ROOT / folder / name).exists()]
    assert missing == []


@pytest.mark.parametrize(
    "folder",
    [
        "sipguard/calls/",
        "sipguard/store/",
        "sipguard/monitoring/",
        "sipguard/plivo/",
        "sipguard/commands/",
        "sipguard/notify/",
        "sipguard/handoffs/",
        "xml_builders/",
        "sandbox/",
        "webhooks/",
        "devtools/",
    ],
)
def test_the_layout_lists_every_module_of_a_folder(folder: str) -> None:
    rows = [names for folder_, names in map(_listing, _layout_rows()) if folder_ == folder]
    assert len(rows) == 1, f"the layout table has no row listing {folder}'s modules"
    present = {
        p.name + ("/" if p.is_dir() else "")
        for p in (ROOT / folder).iterdir()
        if (p.suffix == ".py" and p.name != "__init__.py")
        or (p.is_dir() and p.name != "__pycache__")
    }
    assert present - set(rows[0]) == set()
