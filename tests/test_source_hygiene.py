"""Comments and docs are self-contained: no source file or user-guide page cites a document
outside this repository or uses in-house labels; papers are cited by title and arXiv id."""

from __future__ import annotations

import re

from conftest import REPO

OUTSIDE = re.compile(r"\bALGORITHMS\b|DESIGN\.md|\bseed 00\d\b|\bissue \d+\b|\bREF\b"
                     r"|\bH\d\b|\bH\d's|\bseed (?:Eq|Fig|Figure|Table|paper)\b")
#: a section sign must name its paper on the same line ("DeepFool paper §3.4", "arXiv:…, §3.3"):
#: a bare "(§11)" points into a document that is not in this repository
PAPER = re.compile(r"paper|arXiv:|Algorithm")


def test_no_external_or_in_house_references():
    files = (sorted((REPO / "src").rglob("*.py")) + sorted((REPO / "docs").glob("*.md"))
             + sorted((REPO / "tests").glob("*.py")) + sorted((REPO / "benchmarks").glob("*.py"))
             + sorted((REPO / "experiments").rglob("*.toml"))
             + sorted((REPO / "experiments").rglob("*.md")) + [REPO / "README.md"])
    files = [p for p in files if p.name != "test_source_hygiene.py"]
    hits = [f"{p.relative_to(REPO)}:{i}: {line.strip()[:80]}" for p in files
            for i, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1)
            if OUTSIDE.search(line) or ("§" in line and not PAPER.search(line))]
    assert hits == [], "\n".join(hits)


def test_algorithms_page_cites_every_paper_by_arxiv_id():
    text = (REPO / "docs" / "algorithms.md").read_text(encoding="utf-8")
    for arxiv in ("1511.04599", "1910.03624", "1802.09707", "1911.07198"):
        assert f"arXiv:{arxiv}" in text
