"""The package is grouped into wings, and none imports upward.

Read from the source with ``ast`` (every import statement, also those inside functions), not from
a list kept here: a new module lands in its folder's wing, and an upward import fails the test.
"""

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "keras_saliency_monitor"
PACKAGE_DIR = ROOT / PACKAGE
# Lowest first: a module imports its own wing or those before it. The front (the package's
# top level: command line, demo, public names, forwarding modules) may import every wing.
WINGS = ["signals", "drawing", "attribution", "storage", "monitor", "views"]
FRONT = len(WINGS)
FRONT_MODULES = {"__init__", "__main__", "cli", "demo", "demo_data"}
# Old import paths the guides (or an installed entry point) name, kept as sys.modules aliases.
FORWARDERS = {"explain", "store", "arrays", "dashboard/__init__", "dashboard/plugin"}


def modules():
    """{dotted module name: path} of every module in the package."""
    found = {}
    for path in sorted(PACKAGE_DIR.rglob("*.py")):
        parts = path.relative_to(ROOT).with_suffix("").parts
        found[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    return found


def rank(module):
    """The wing's place in :data:`WINGS`; the front ranks above every wing."""
    parts = module.split(".")
    return WINGS.index(parts[1]) if len(parts) > 1 and parts[1] in WINGS else FRONT


def imported(path, module):
    """The package's modules (or the package itself) that ``path`` imports."""
    names = []
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            # `from pkg.wing import module` imports pkg.wing.module; `from pkg import Name`, pkg.
            names += [f"{base}.{alias.name}" for alias in node.names] + [base]
    return {n for n in names if n == PACKAGE or n.startswith(PACKAGE + ".")}


MODULES = modules()


@pytest.mark.parametrize("module", sorted(MODULES))
def test_no_module_imports_upward(module):
    upward = sorted(name for name in imported(MODULES[module], module) if rank(name) > rank(module))
    assert not upward, (
        f"{module} ({(WINGS + ['front'])[rank(module)]}) imports {upward} from a wing above it; "
        f"the order, lowest first, is {WINGS}"
    )


def test_the_top_level_listing_shows_the_wings():
    folders = {p.name for p in PACKAGE_DIR.iterdir() if p.is_dir() and p.name != "__pycache__"}
    assert folders == set(WINGS) | {"dashboard"}
    for wing in WINGS:  # each wing says what it holds
        assert ast.get_docstring(ast.parse((PACKAGE_DIR / wing / "__init__.py").read_text()))
    top = {p.stem for p in PACKAGE_DIR.glob("*.py")}
    assert top == FRONT_MODULES | {f for f in FORWARDERS if "/" not in f}
    layout = (ROOT / "docs" / "reference" / "layout.md").read_text(encoding="utf-8")
    assert all(f"`{wing}/`" in layout for wing in WINGS)


@pytest.mark.parametrize("name", sorted(FORWARDERS))
def test_forwarding_modules_only_forward(name):
    tree = ast.parse((PACKAGE_DIR / f"{name}.py").read_text(encoding="utf-8"))
    body = [node for node in tree.body if not isinstance(node, (ast.Import, ast.Expr))]
    if name.endswith("__init__"):
        assert body == []
    else:  # one statement: sys.modules[__name__] = importlib.import_module("...")
        assert len(body) == 1 and "sys.modules[__name__]" in ast.unparse(body[0])


def test_the_reports_modules_import_in_reading_order():
    order = ["reading", "drawing", "writing"]
    report = f"{PACKAGE}.views.report"
    for i, name in enumerate(order):
        module = f"{report}.{name}"
        later = {f"{report}.{other}" for other in order[i + 1 :]}
        assert not imported(MODULES[module], module) & later, module
