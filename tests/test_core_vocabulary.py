"""The core names no business: no shipped pack's words or id formats in the core's code.

Scans the code of the core's folders (identifiers, string literals, and the text of the web page's
HTML and JavaScript) for each shipped pack's vocabulary: its domain nouns and its id formats. Comments
and docstrings are prose about the code and are left out; Python's ``return`` keyword is not a word of
the shop's. A hit names the file, the line and the word, so the fix is to derive the fact from the
pack's declarations (``tools.packs.Pack``), not to spell it in the core.

Run ``python -m tests.test_core_vocabulary`` for the count per folder (the figure in the closing notes).
"""

from __future__ import annotations

import io
import keyword
import re
import tokenize
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
CORE = ("contract", "tools", "agents", "pipeline", "web", "evals", "stack")

# Each shipped pack's words: its domain nouns, and its id formats (examples and prefixes).
VOCABULARY: dict[str, re.Pattern[str]] = {
    "shop": re.compile(
        r"\b(?:orders?|ordered|refund\w*|returns|returned|returnable|returning|shipments?|shipped|shipping|"
        r"carriers?|parcels?)\b|\bO-C\d|\bT-C\d|\bC\d{4}\b|\bC\\d|\bRMA-",
        re.IGNORECASE,
    ),
    "telco": re.compile(
        r"\b(?:invoices?|outages?|sims?|data packs?|broadband|tariffs?)\b|\bACC-|\bINV-", re.IGNORECASE
    ),
}
# "return" alone is the shop's noun only in prose and strings; in Python it is also the keyword (skipped).
RETURN_NOUN = re.compile(r"\breturn\b", re.IGNORECASE)
# Names libraries give us that only look like a pack's word: asyncio.wait's and a tokenizer's keywords,
# Firestore's query sort.
LIBRARY_NAMES = frozenset({"return_when", "return_tensors", "order_by"})


def _docstring_lines(source: str) -> set[int]:
    """Lines of string statements on their own (docstrings and the like): prose, as comments are."""
    import ast

    lines: set[int] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str):
            lines.update(range(node.lineno, (node.end_lineno or node.lineno) + 1))
    return lines


def _python_words(path: Path) -> Iterator[tuple[int, str]]:
    source = path.read_text()
    prose = _docstring_lines(source)
    for tok in tokenize.generate_tokens(io.StringIO(source).readline):
        if tok.type == tokenize.NAME and not keyword.iskeyword(tok.string) and tok.string not in LIBRARY_NAMES:
            yield tok.start[0], tok.string.replace("_", " ")
        elif tok.type in (tokenize.STRING, getattr(tokenize, "FSTRING_MIDDLE", -1)) and tok.start[0] not in prose:
            yield tok.start[0], tok.string


def _web_words(path: Path) -> Iterator[tuple[int, str]]:
    for n, line in enumerate(path.read_text().splitlines(), 1):
        code = re.sub(r"//.*$|<!--.*?-->|/\*.*?\*/", "", line)  # comments are prose here too
        code = re.sub(r"\breturn\b(?=\s*[;(\w\[{!\"'`-]|$)", "", code)  # JavaScript's keyword
        yield n, code


def hits(folder: str) -> list[tuple[str, int, str, str]]:
    """(file, line, pack, word) for every pack word in the code of ``folder``."""
    out: list[tuple[str, int, str, str]] = []
    for path in sorted((ROOT / folder).rglob("*")):
        if "__pycache__" in path.parts or not path.is_file():
            continue
        if path.suffix == ".py":
            words = _python_words(path)
        elif path.suffix in (".js", ".html", ".yaml", ".yml", ".sql", ".json"):
            words = _web_words(path)
        else:
            continue
        for line, text in words:
            for pack, pattern in VOCABULARY.items():
                for m in pattern.finditer(text):
                    out.append((str(path.relative_to(ROOT)), line, pack, m.group(0)))
            for m in RETURN_NOUN.finditer(text):
                out.append((str(path.relative_to(ROOT)), line, "shop", m.group(0)))
    return out


@pytest.mark.parametrize("folder", CORE)
def test_core_names_no_pack(folder: str) -> None:
    found = hits(folder)
    assert not found, f"{len(found)} pack words in {folder}/:\n" + "\n".join(
        f"  {f}:{n}: {w!r} ({p})" for f, n, p, w in found[:40]
    )


def main() -> None:
    total = 0
    for folder in CORE:
        found = hits(folder)
        lines = {(f, n) for f, n, _, _ in found}
        total += len(lines)
        by_pack = Counter(p for *_, p, _ in found)
        print(f"{folder:10} {len(lines):5} lines  {dict(by_pack)}")
    print(f"{'all':10} {total:5} lines")


if __name__ == "__main__":
    main()
