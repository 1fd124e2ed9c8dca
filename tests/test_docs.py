"""The handbook against the code: every key a test writes is documented, and every link resolves."""

import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from fssam2.cli import run_cli
from helpers import TESTS, TINY

ROOT = TESTS.parent
PAGES = [
    ROOT / "README.md",
    ROOT / "CONTRIBUTING.md",
    ROOT / "experiments" / "README.md",
    *(ROOT / "docs").glob("*.md"),
]


def section(page: Path, heading: str) -> str:
    """The text under `heading` (a `## ` heading) of `page`, up to the next heading of that level."""
    text = page.read_text()
    start = text.index(f"\n## {heading}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else None]


@pytest.mark.slow
def test_every_key_of_test_metrics_json_is_documented(tmp_path):
    """docs/usage.md, "What a test writes", names each key of a real test_metrics.json in backticks."""
    run_cli(["test", "--config", str(TINY), "--trainer.default_root_dir", str(tmp_path)])
    keys = json.loads((tmp_path / "test_metrics.json").read_text())
    documented = set(re.findall(r"`([a-z_0-9]+)`", section(ROOT / "docs" / "usage.md", "What a test writes")))
    undocumented = sorted(set(keys) - documented)
    assert not undocumented, f"docs/usage.md, What a test writes, does not name {undocumented}"


def heading_anchors(page: Path) -> Iterator[str]:
    """The #anchors GitHub gives the headings of `page`: lower case, punctuation dropped, spaces to
    hyphens, a repeated heading numbered -1, -2, ..."""
    seen: dict[str, int] = {}
    for line in re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M).splitlines():
        if heading := re.match(r"#{1,6} (.*)", line):
            text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading.group(1)).replace("`", "").strip().lower()
            slug = re.sub(r"[^\w\- ]", "", text).replace(" ", "-")
            seen[slug] = seen.get(slug, -1) + 1
            yield slug if seen[slug] == 0 else f"{slug}-{seen[slug]}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_and_anchor_resolves(page):
    """The README, CONTRIBUTING, the handbook and experiments/README: each link to a file of the
    repository names one that exists, and each #anchor a heading of its page."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.S | re.M)  # code blocks hold no links
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path).resolve() if path else page
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in set(heading_anchors(linked))):
            broken.append(target)
    assert broken == []
