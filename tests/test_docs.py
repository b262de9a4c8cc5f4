"""The documentation's links resolve, its wording is current, and the README stays short.

A renamed heading or a moved page breaks links silently on GitHub; this test breaks instead.
Fragments follow GitHub's heading slugs, so `#terminal-jobs` must name a heading of the target.
"""

import re
from collections import Counter
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
README_MAX_LINES = 300


def _documents() -> list[Path]:
    pages = [
        README,
        ROOT / "CONTRIBUTING.md",
        ROOT / "helm" / "cloudjob-exporter" / "README.md",
        *sorted((ROOT / "docs").glob("*.md")),
    ]
    return [page for page in pages if page.exists()]


FENCE = re.compile(r"^ {0,3}(```|~~~).*?^ {0,3}\1[^\n]*$", re.MULTILINE | re.DOTALL)
INLINE_CODE = re.compile(r"(`+)(?:(?!\1).)+?\1", re.DOTALL)
LINK = re.compile(r"\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")
HEADING = re.compile(r"^ {0,3}(#{1,6})\s+(.*?)\s*#*\s*$", re.MULTILINE)
EXTERNAL = re.compile(r"^[a-z][a-z0-9+.-]*:", re.IGNORECASE)


def _prose(text: str) -> str:
    """The text without code, where a `[x](y)` or a `# line` is not a link or a heading."""
    return INLINE_CODE.sub("", FENCE.sub("", text))


def github_slug(heading: str) -> str:
    """GitHub's anchor for a heading: lowercase, punctuation dropped, spaces become `-`."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link in a heading keeps its text
    text = text.replace("`", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every fragment GitHub generates for the page; repeated headings get `-1`, `-2`, ..."""
    seen: Counter[str] = Counter()
    result = set()
    for match in HEADING.finditer(FENCE.sub("", page.read_text(encoding="utf-8"))):
        slug = github_slug(match.group(2))
        result.add(slug if not seen[slug] else f"{slug}-{seen[slug]}")
        seen[slug] += 1
    return result


def broken_links(page: Path) -> list[str]:
    """One line per relative link of `page` whose file or `#fragment` does not exist."""
    problems = []
    for target in LINK.findall(_prose(page.read_text(encoding="utf-8"))):
        if EXTERNAL.match(target):
            continue
        path_part, _, fragment = target.partition("#")
        destination = (page.parent / path_part).resolve() if path_part else page
        if not destination.exists():
            problems.append(f"{page.name}: {target}: no file {path_part}")
        elif fragment and destination.suffix == ".md" and fragment not in anchors(destination):
            problems.append(f"{page.name}: {target}: no heading #{fragment} in {destination.name}")
    return problems


def test_the_documentation_pages_exist() -> None:
    names = {page.relative_to(ROOT).as_posix() for page in _documents()}
    assert {
        "README.md",
        "CONTRIBUTING.md",
        "helm/cloudjob-exporter/README.md",
        "docs/configuration.md",
        "docs/metrics.md",
        "docs/operations.md",
        "docs/http-api.md",
        "docs/performance.md",
    } <= names


@pytest.mark.parametrize("page", _documents(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_every_relative_link_resolves_to_a_file_and_heading(page: Path) -> None:
    problems = broken_links(page)
    assert not problems, "\n".join(problems)


def test_a_broken_file_or_fragment_is_reported(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text("# Other page\n\n## Terminal jobs\n\n## Terminal jobs\n")
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n"
        "[ok](other.md#terminal-jobs) [ok](other.md#terminal-jobs-1) [ok](#page)\n"
        "[gone](missing.md) [bad](other.md#terminal-job) [bad](#nowhere)\n"
        "`[not a link](missing.md)` [web](https://example.com/x#y)\n"
        "```\n[in code](missing-too.md)\n```\n"
    )
    assert broken_links(page) == [
        "page.md: missing.md: no file missing.md",
        "page.md: other.md#terminal-job: no heading #terminal-job in other.md",
        "page.md: #nowhere: no heading #nowhere in page.md",
    ]


@pytest.mark.parametrize(
    ("heading", "slug"),
    [
        ("Huawei account keys (`accounts.<name>.*`)", "huawei-account-keys-accountsname"),
        ("TLS and basic auth", "tls-and-basic-auth"),
        ("How polling behaves", "how-polling-behaves"),
        ("Job keys (`jobs[*].*`)", "job-keys-jobs"),
        ("The `--demo` simulators", "the---demo-simulators"),
    ],
)
def test_headings_slug_as_github_slugs_them(heading: str, slug: str) -> None:
    assert github_slug(heading) == slug


@pytest.mark.parametrize("page", _documents(), ids=lambda page: page.relative_to(ROOT).as_posix())
def test_no_page_speaks_of_things_outside_the_repository(page: Path) -> None:
    text = page.read_text(encoding="utf-8")
    stale = [
        phrase
        for phrase, pattern in {
            "closing note": re.compile(r"closing note", re.IGNORECASE),
            "the issue": re.compile(r"\bthe issue", re.IGNORECASE),
            "STYLE": re.compile(r"\bSTYLE\b"),
        }.items()
        if pattern.search(text)
    ]
    assert not stale, f"{page.name} mentions {stale}: say it in terms of this repository"


def test_the_readme_reads_in_ten_minutes() -> None:
    lines = README.read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move detail into docs/"
