"""Every relative link of README.md and docs/*.md points to a file (or folder) that exists, and a link with an
``#anchor`` to a heading of that file; the README stays short enough to read to the end."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)(?:\s+\"[^\"]*\")?\)|!\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```.*?^```", flags=re.S | re.M)


def relative_links(text: str) -> list[str]:
    """The link targets of ``text`` outside code blocks that are not URLs (``http:``, ``mailto:``, ...)."""
    text = FENCE.sub("", text)
    targets = [a or b for a, b in LINK.findall(text)]
    return [t for t in targets if not re.match(r"^[a-z][a-z0-9+.-]*:", t)]


def anchors(page: Path) -> set[str]:
    """GitHub's anchors of the page's headings: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+\s+(.*)$", FENCE.sub("", page.read_text()), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in relative_links(page.read_text()):
        path, _, anchor = target.partition("#")
        resolved = (page.parent / path).resolve() if path else page
        if not resolved.exists():
            broken.append(f"{target} (no such file)")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target} (no such heading)")
    return broken


def test_the_link_checker_finds_what_is_broken(tmp_path):
    """The checker itself: a missing file, a missing heading and a link inside a code block (not a link)."""
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A page\n\n## Some section: here\n")
    page = tmp_path / "README.md"
    page.write_text("[ok](docs/a.md) [ok](docs/a.md#some-section-here) [web](https://example.org/x.md)\n"
                    "[gone](docs/b.md) [bad anchor](docs/a.md#nowhere) ![img](docs/missing.png)\n"
                    "```python\nx = '[not a link](nowhere.md)'\n```\n")
    assert broken_links(page) == ["docs/b.md (no such file)", "docs/a.md#nowhere (no such heading)",
                                  "docs/missing.png (no such file)"]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(page):
    assert broken_links(page) == []


def test_readme_is_short_and_links_every_guide():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) <= 250
    linked = {Path(t.partition("#")[0]).name for t in relative_links(readme)}
    guides = {p.name for p in (ROOT / "docs").glob("*.md")} - {"pretraining-ablation.md"}  # linked from pretraining.md
    assert guides <= linked, sorted(guides - linked)
