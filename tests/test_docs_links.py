"""README is an entry point: short, and every relative link of it and of docs/ leads to a file.

Anchors (``page.md#section``) are not checked, only that ``page.md`` exists. Links inside fenced
code blocks and inline code are not links.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
MAX_README_LINES = 300

PAGES = [README, *sorted((ROOT / "docs").rglob("*.md"))]

# [text](target) and ![alt](target); the target ends at whitespace or ")" (a title may follow).
_LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
_FENCE = re.compile(r"^(```|~~~).*?^\1", flags=re.M | re.S)
_CODE = re.compile(r"`[^`\n]*`")


def relative_links(page: Path) -> list[str]:
    """The link targets of ``page`` that point into the repository (no scheme, no bare anchor)."""
    text = _CODE.sub("", _FENCE.sub("", page.read_text(encoding="utf-8")))
    targets = [match.group(1) for match in _LINK.finditer(text)]
    return [t for t in targets if not re.match(r"^([a-z][a-z0-9+.-]*:|#)", t, flags=re.I)]


def test_readme_is_short() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= MAX_README_LINES, (
        f"README.md has {lines} lines (at most {MAX_README_LINES}): move details to docs/"
    )


def test_the_pages_link_to_something() -> None:
    assert len(PAGES) > 1
    assert relative_links(README), "README.md links to no page at all"


@pytest.mark.parametrize("page", PAGES, ids=[str(p.relative_to(ROOT)) for p in PAGES])
def test_every_relative_link_resolves(page: Path) -> None:
    broken = []
    for target in relative_links(page):
        path = target.split("#", 1)[0].split("?", 1)[0]
        if path and not (page.parent / path).exists():
            broken.append(target)
    assert not broken, f"{page.relative_to(ROOT)}: links to missing files: {broken}"


def test_no_page_cites_a_file_outside_the_repository() -> None:
    """The method notes live in docs/methods/; nothing cites a METHODS.md the repository lacks."""
    for page in PAGES:
        assert "METHODS.md" not in page.read_text(encoding="utf-8"), page.relative_to(ROOT)
