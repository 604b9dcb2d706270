"""docs/math uses one notation: the table at the top of docs/math/README.md.

The table is parsed; no symbol may appear in two rows. Every math span of every page in
docs/math ($...$ and $$...$$) is split into symbols, and each must be in the table (a
``g``-prefixed symbol is a gradient: ``gK`` is ∂L/∂K, so ``K`` must be in the table).
Known clashes that the notation removed are checked to stay gone.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MATH = ROOT / "docs" / "math"
TABLE_PAGE = MATH / "README.md"

# LaTeX that is markup or an operator, not a symbol of the notation
MARKUP = {
    "frac", "sum", "textstyle", "qquad", "quad", "begin", "end", "aligned", "left", "right",
    "lfloor", "rfloor", "lceil", "rceil", "cdot", "cdots", "dots", "top", "partial", "Big",
    "big", "bigl",
    "bigr", "Bigl", "Bigr", "times", "in", "le", "ge", "odot", "langle", "rangle", "mathrel",
    "leftarrow", "tfrac", "lvert", "rvert", "bmod", "max", "min", "exp", "log", "mean",
    "sqrt", "approx", "text", "operatorname", "mathrm", "hat", "tilde", "bar", "prime", "to",
    "infty", "sigma", "mathbb", "tanh", "pi", "ne", "pm",
}
WORDS = re.compile(r"\\(?:mathrm|operatorname)\{([^{}]*)\}")
GREEK = re.compile(r"\\([A-Za-z]+)")
TEXT = re.compile(r"\\text(?:tt)?\{[^{}]*\}|\\(?:begin|end)\{\w+\}")
GRAD_ACCENT = re.compile(r"(?<![A-Za-z\\])g\\(tilde|bar|hat)\s*\{?([A-Za-z])\}?")
ACCENT = re.compile(r"\\(tilde|bar|hat)\s*\{?([A-Za-z])\}?")
GRAD = re.compile(r"(?<![A-Za-z\\])g(?=\\(?!cdot|quad|qquad)[A-Za-z])")
SUPER = re.compile(r"\\mathrm\{(\w+)\}\^\{\\mathrm\{(\w+)\}\}")
AXIS = re.compile(r"(?<=[sdpP])_[hw](?![A-Za-z])")
SPAN = re.compile(r"\$\$(.+?)\$\$|\$(.+?)\$", re.S)


def _spans(text: str) -> list[str]:
    text = re.sub(r"```.*?```", "", text, flags=re.S)   # code blocks are Python, not math
    text = re.sub(r"`[^`\n]*`", "", text)               # inline code: names from the code
    return [a or b for a, b in SPAN.findall(text)]


def _symbols(span: str) -> set[str]:
    """Symbols in a math span: Greek letters and \\mathrm{...} names as wholes, the
    rest letter by letter except the multi-letter names the table defines."""
    found = set()
    span = TEXT.sub(" ", span)               # \text{...} and environments are prose
    span = AXIS.sub("", span)                # s_h, d_w, P_h: the axis is part of the name
    span = GRAD_ACCENT.sub(r" \2\1 ", span)  # g\bar x is the gradient of "xbar"
    span = ACCENT.sub(r" \2\1 ", span)       # \bar x is the symbol "xbar", not x
    span = GRAD.sub(" ", span)               # g\Theta, g\mathrm{bias}: the gradient of a symbol
    span = SUPER.sub(r" \1\2 ", span)       # bias^{mix} is one symbol, "biasmix"
    for name in WORDS.findall(span):
        found.update(w for w in re.findall(r"[A-Za-z]+", name))
    span = WORDS.sub(" ", span)
    for command in GREEK.findall(span):
        if command not in MARKUP:
            found.add("\\" + command)
    span = GREEK.sub(" ", span)
    for word in re.findall(r"[A-Za-z]+", span):
        found.add(word)
    return found


def notation_table() -> dict[str, str]:
    """symbol -> meaning, from the rows of the table under '## Notation'."""
    text = TABLE_PAGE.read_text(encoding="utf-8")
    section = text.split("## Notation", 1)[1].split("\n## ", 1)[0]
    table: dict[str, str] = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 2 or not cells[0].startswith("$"):
            continue
        for span in _spans(cells[0]):
            for symbol in _symbols(span):
                assert table.get(symbol, cells[1]) == cells[1], (
                    f"docs/math/README.md: {symbol} has two meanings: "
                    f"{table[symbol]!r} and {cells[1]!r}")
                table[symbol] = cells[1]
    return table


TABLE = notation_table()
ALLOWED_WORDS = {"Cin", "Cout", "Ho", "Wo", "kh", "kw", "oh", "ow", "cols", "bias", "mix",
                 "top", "bottom", "left", "right", "drop", "src", "var", "istd", "inside",
                 "div", "run", "max", "conv", "route", "classes", "onehot", "dropout",
                 "softmax", "im", "col", "padded", "group", "sum", "mean", "exp", "log",
                 "weight", "momentum", "out", "NaN",
                 # functions and the parameters of activations, by their code names
                 "sign", "softplus", "log1p", "slope", "beta", "threshold",
                 "X"}                      # X: any symbol, as in gX = ∂L/∂X


def _defined(symbol: str) -> bool:
    if symbol in TABLE or symbol in ALLOWED_WORDS:
        return True
    if symbol.startswith("g") and len(symbol) > 1:
        return _defined(symbol[1:])          # gK, gbias, gx: gradients of defined symbols
    if symbol.isalpha() and len(symbol) > 1:  # a product written without a dot: HW, rW
        return all(_defined(ch) for ch in symbol)
    return False


def test_table_has_the_decided_symbols() -> None:
    for symbol in ("B", "Cin", "Cout", "G", "E", "H", "W", "Ho", "Wo", "kh", "kw", "oh",
                   "ow", "i", "j", "s", "d", "p", "r", "\\Theta", "K", "\\rho", "L"):
        assert symbol in TABLE, symbol
    assert "g" not in TABLE, "g alone must mean nothing: gradients are g-prefixed names"
    assert "width" in TABLE["W"] or "input size" in TABLE["W"]


PAGES = sorted(MATH.glob("*.md"))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_math_symbol_is_in_the_table(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    if page == TABLE_PAGE:
        text = text.split("## The pages", 1)[1]
    unknown = sorted({s for span in _spans(text) for s in _symbols(span) if not _defined(s)})
    assert not unknown, f"docs/math/{page.name}: symbols not in the notation table: {unknown}"


# clashes the notation removed: the experts as W, the pooled input as p, the router bias as
# c, the bare gradient g, (u, v) taps, groups as a lower-case g; in docs/math also Euler's e
# (e is an expert there: write exp)
BANNED_IN_MATH = [r"(?<![\\\w])e\^"]
BANNED = [r"W_e\b", r"W_\{e", r"\bp_b\b", r"p_\{b", r"\+ c\b", r"\$g\$",
          r"\bg_b\b", r"\bu,\s*v\b", r"Cin/g\b", r"Cout/g\b", r"\\sum_\{i,j\} g"]


DOC_PAGES = PAGES + [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


@pytest.mark.parametrize("page", DOC_PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_removed_clashes_stay_gone(page: Path) -> None:
    text = re.sub(r"```.*?```", "", page.read_text(encoding="utf-8"), flags=re.S)
    for pattern in BANNED + (BANNED_IN_MATH if page in PAGES else []):
        match = re.search(pattern, text)
        assert match is None, (f"{page.relative_to(ROOT)}: {match.group(0)!r} uses an old "
                               "symbol; see the notation table in docs/math/README.md")
