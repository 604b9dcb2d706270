"""The figures in docs/figures/ show what the code computes today.

``docs/figures/make_figures.py`` computes the numbers of every figure with minicond and writes
them as JSON beside the SVG. Here the numbers are recomputed (without drawing) and compared
with the committed JSON, so a change to the code that a figure shows fails until the figures
are regenerated with ``python docs/figures/make_figures.py``.
"""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
FIGURES_DIR = ROOT / "docs" / "figures"


def _load_script():
    spec = importlib.util.spec_from_file_location("make_figures", FIGURES_DIR / "make_figures.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


make_figures = _load_script()


@pytest.mark.parametrize("name", sorted(make_figures.FIGURES))
def test_figure_numbers_match_the_code(name: str) -> None:
    compute, _ = make_figures.FIGURES[name]
    committed = (FIGURES_DIR / f"{name}.json").read_text(encoding="utf-8")
    assert make_figures.json_text(compute()) == committed, (
        f"docs/figures/{name}.json is stale: rerun python docs/figures/make_figures.py")


def test_json_only_run_writes_every_figure(tmp_path: Path) -> None:
    assert make_figures.main([str(tmp_path), "--json-only"]) == 0
    for name in make_figures.FIGURES:
        assert (tmp_path / f"{name}.json").read_text(encoding="utf-8") == \
            (FIGURES_DIR / f"{name}.json").read_text(encoding="utf-8")


def test_every_figure_is_committed_and_embedded() -> None:
    pages = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
    embedded = set()
    for page in pages:
        for target in re.findall(r"!\[[^\]]*\]\(([^)]+)\)", page.read_text(encoding="utf-8")):
            path = (page.parent / target).resolve()
            assert path.exists(), f"{page.relative_to(ROOT)} embeds a missing file {target}"
            embedded.add(path)
    for name in make_figures.FIGURES:
        svg = FIGURES_DIR / f"{name}.svg"
        assert svg.exists(), f"{svg.relative_to(ROOT)} is not committed"
        assert svg.resolve() in embedded, f"no page embeds {svg.relative_to(ROOT)}"


def test_the_layer_figure_and_the_architecture_page_name_the_same_modules() -> None:
    page = (ROOT / "docs" / "architecture.md").read_text(encoding="utf-8")
    for item in make_figures.compute_layer_stack()["layers"]:
        for module in item["modules"]:
            assert f"`{module}`" in page or f"`minicond/{module}/`" in page, (
                f"the layer figure shows minicond/{module}; docs/architecture.md does not")
