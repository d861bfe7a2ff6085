"""Every import path the README, the docs and the package's docstrings name still imports.

The names are read from the text itself, not listed here, so a page that names a path that
moved (or a typo) fails: ``from keras_saliency_monitor... import a, b`` lines, dotted names
``keras_saliency_monitor.x.y``, the API page's ``::: name`` directives, ``name.attr`` uses of a
module imported in the same code block, and the entry points in pyproject.toml.
"""

import importlib
import re
from pathlib import Path

import pytest

import keras_saliency_monitor

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "keras_saliency_monitor"
TEXTS = sorted(
    [ROOT / "README.md", *(ROOT / "docs").rglob("*.md"), *(ROOT / PACKAGE).rglob("*.py")]
)
API_PAGE = ROOT / "docs" / "reference" / "api.md"

FROM_IMPORT = re.compile(rf"^\s*from ({PACKAGE}[\w.]*) import \(?([\w, ]+)", re.M)
DOTTED = re.compile(rf"\b{PACKAGE}(?:\.[A-Za-z_]\w*)+")
DIRECTIVE = re.compile(r"^::: ([\w.]+)", re.M)
CODE_BLOCK = re.compile(r"```python\n(.*?)```", re.S)


def resolve(dotted):
    """The object a dotted path names: the longest importable module, then attributes."""
    parts = dotted.split(".")
    for cut in range(len(parts), 0, -1):
        try:
            obj = importlib.import_module(".".join(parts[:cut]))
        except ModuleNotFoundError:
            continue
        for attr in parts[cut:]:
            obj = getattr(obj, attr)
        return obj
    raise ModuleNotFoundError(dotted)


def documented_paths():
    """{dotted path: first file naming it}."""
    found = {}
    for path in TEXTS:
        text = path.read_text(encoding="utf-8")
        where = str(path.relative_to(ROOT))
        names = []
        for module, imported in FROM_IMPORT.findall(text):
            names += [f"{module}.{n.strip()}" for n in imported.split(",") if n.strip()]
        names += [m.rstrip(".") for m in DOTTED.findall(text)]
        names += DIRECTIVE.findall(text)
        # `store.read_run(...)` after `from keras_saliency_monitor import store`, in one block.
        for block in CODE_BLOCK.findall(text):
            for module, imported in FROM_IMPORT.findall(block):
                for alias in (n.strip() for n in imported.split(",")):
                    for attr in re.findall(rf"\b{alias}\.([A-Za-z_]\w*)", block):
                        names.append(f"{module}.{alias}.{attr}")
        for name in names:
            found.setdefault(name, where)
    return found


DOCUMENTED = documented_paths()


def test_the_texts_name_the_public_api_and_more():
    assert {f"{PACKAGE}.{n}" for n in keras_saliency_monitor.__all__} <= set(DOCUMENTED)
    assert len(DOCUMENTED) > 20  # the scan finds the README's and the docstrings' paths


@pytest.mark.parametrize("dotted", sorted(DOCUMENTED))
def test_documented_name_imports(dotted):
    try:
        resolve(dotted)
    except (ImportError, AttributeError) as err:
        pytest.fail(f"{DOCUMENTED[dotted]} names {dotted}, which does not import: {err}")


def test_api_page_documents_every_public_name():
    directives = set(DIRECTIVE.findall(API_PAGE.read_text(encoding="utf-8")))
    assert {f"{PACKAGE}.{n}" for n in keras_saliency_monitor.__all__} <= directives


def test_readme_is_the_front_door_and_its_links_resolve_from_the_repository_root():
    # mkdocs checks the site's links; the README is not part of the site: it is read on the
    # repository page, from its root.
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)#\s]+)", text)
    assert targets
    assert [t for t in targets if "://" not in t and not (ROOT / t).exists()] == []
    assert len(text.splitlines()) <= 150  # issue 21: the front door is at most 150 lines
    # .ci/run runs the README's test line verbatim.
    assert '```bash\npip install ".[test]" && pytest\n```' in text


def test_entry_points_resolve():
    tomllib = pytest.importorskip("tomllib")  # Python 3.11+
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    targets = list(project["scripts"].values())
    for group in project["entry-points"].values():
        targets += group.values()
    for target in targets:
        module, _, attr = target.partition(":")
        assert callable(getattr(importlib.import_module(module), attr)), target
