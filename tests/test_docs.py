"""The docs site and the README that leads into it.

`mkdocs build --strict` (as `make docs` runs it) must pass on this checkout, and must fail on a copy
with a broken link, a missing anchor, a page left out of the nav or a nav entry with no page: the
`validation:` settings in mkdocs.yml make each of those a warning, and `--strict` an error. The
README keeps the two commands first and links only to pages and anchors that exist.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT

DOCS = REPO_ROOT / "docs"
CONFIG = REPO_ROOT / "mkdocs.yml"
# Material 9.7+ prints a banner about MkDocs 2.0 on every build; it says nothing about the site.
QUIET = {"NO_MKDOCS_2_WARNING": "1"}


def build_docs(config: Path, site: Path) -> subprocess.CompletedProcess:
    """`mkdocs build --strict` of `config` into `site`; never raises (the caller reads the outcome)."""
    return subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--config-file", str(config),
                           "--site-dir", str(site)], capture_output=True, text=True, env={**os.environ, **QUIET},
                          timeout=300)


def copy_docs(destination: Path) -> Path:
    """docs/ and mkdocs.yml in a folder of their own, to break; returns the copy's mkdocs.yml."""
    shutil.copytree(DOCS, destination / "docs")
    return Path(shutil.copy(CONFIG, destination / "mkdocs.yml"))


def append(path: Path, text: str) -> None:
    path.write_text(path.read_text() + text)


class _Ids(HTMLParser):
    def __init__(self):
        super().__init__()
        self.ids: set[str] = set()
        self.remote: list[str] = []

    def handle_starttag(self, tag, attrs):
        attributes = dict(attrs)
        if attributes.get("id"):
            self.ids.add(attributes["id"])
        # what the browser loads by itself: scripts, stylesheets, images, frames (not <a> links)
        source = attributes.get("src") if tag in ("script", "img", "iframe") else (
            attributes.get("href") if tag == "link" and attributes.get("rel") in ("stylesheet", "preload") else None)
        if source and re.match(r"(https?:)?//", source):
            self.remote.append(f"<{tag}> {source}")


def parse(html: Path) -> _Ids:
    parser = _Ids()
    parser.feed(html.read_text(encoding="utf-8"))
    return parser


@pytest.fixture(scope="module")
def site(tmp_path_factory) -> Path:
    site = tmp_path_factory.mktemp("site")
    built = build_docs(CONFIG, site)
    assert built.returncode == 0, f"mkdocs build --strict failed:\n{built.stderr}"
    return site


# --- this checkout's site ---

def test_every_page_builds_strict_and_is_in_the_nav(site: Path):
    pages = sorted(path.relative_to(DOCS).with_suffix(".html") for path in DOCS.rglob("*.md"))
    assert len(pages) >= 9
    assert all((site / page).is_file() for page in pages), [str(p) for p in pages if not (site / p).is_file()]


def test_the_site_loads_nothing_from_the_network(site: Path):
    for html in site.rglob("*.html"):
        assert parse(html).remote == [], f"{html.name} loads from the network: {parse(html).remote}"
    assert (site / "search" / "search_index.js").is_file(), "no offline search index (the offline plugin)"
    assert "fonts.googleapis.com" not in (site / "index.html").read_text(encoding="utf-8")


# Markdown that Python-Markdown left as text (GitHub renders it; MkDocs does not): a list straight
# after a paragraph line, an unclosed fence or emphasis, a heading or a link that did not parse.
RAW_MARKDOWN = re.compile(r"\n\s*[-*] |\*\*|```|\n#+ |\]\(")


def test_no_page_shows_markdown_as_text(site: Path):
    for html in sorted(site.glob("*.html")):
        article = re.search(r"<article.*?</article>", html.read_text(encoding="utf-8"), re.S)
        text = re.sub(r"<[^>]+>", "", re.sub(r"<pre.*?</pre>", "", article.group(0), flags=re.S))
        shown = [match.group(0) for match in RAW_MARKDOWN.finditer(text)]
        assert not shown, f"{html.name} shows markdown as text: {shown[:5]}"


# --- a broken site fails the build, naming what broke ---

BREAKAGES = {
    "a link to a missing page": ("testing.md", "\n[gone](no-such-page.md)\n", "no-such-page.md"),
    "a missing anchor on another page": ("testing.md", "\n[gone](pipeline.md#no-such-anchor)\n", "#no-such-anchor"),
    "a missing anchor on the page": ("testing.md", "\n[gone](#no-such-anchor)\n", "#no-such-anchor"),
    "a link out of docs/": ("testing.md", "\n[gone](../README.md)\n", "../README.md"),
}


@pytest.mark.parametrize("breakage", BREAKAGES, ids=list(BREAKAGES))
def test_a_broken_link_fails_the_strict_build(tmp_path: Path, breakage: str):
    page, text, named = BREAKAGES[breakage]
    config = copy_docs(tmp_path)
    assert build_docs(config, tmp_path / "unbroken").returncode == 0
    append(tmp_path / "docs" / page, text)
    built = build_docs(config, tmp_path / "site")
    assert built.returncode != 0, f"{breakage} built without an error"
    assert named in built.stderr and "strict mode" in built.stdout + built.stderr, built.stderr


def test_a_page_missing_from_the_nav_fails_the_strict_build(tmp_path: Path):
    config = copy_docs(tmp_path)
    (tmp_path / "docs" / "orphan.md").write_text("# A page nobody can reach\n")
    built = build_docs(config, tmp_path / "site")
    assert built.returncode != 0 and "orphan.md" in built.stderr, built.stderr


def test_a_nav_entry_with_no_page_fails_the_strict_build(tmp_path: Path):
    config = copy_docs(tmp_path)
    config.write_text(config.read_text().replace("  - Testing: testing.md\n", "  - Testing: testing.md\n  - Gone: gone.md\n"))
    built = build_docs(config, tmp_path / "site")
    assert built.returncode != 0 and "gone.md" in built.stderr, built.stderr


# --- the README, the door ---

README = REPO_ROOT / "README.md"
TWO_COMMANDS = re.compile(r"\A# dnnlab\n\n```bash\nmake pipeline +# [^\n]+\nmake test +# [^\n]+\n```\n")


def test_the_readme_opens_with_the_two_commands():
    # .ci/run runs `make test`: the README's second command, exactly as a newcomer reads it
    assert TWO_COMMANDS.match(README.read_text()), "README.md no longer opens with `make pipeline` and `make test`"
    assert re.search(r"^make test$", (REPO_ROOT / ".ci" / "run").read_text(), re.M)


def test_the_readme_links_only_to_pages_and_anchors_that_exist(site: Path):
    links = re.findall(r"\]\(([^)\s]+)\)", README.read_text())
    local = [link for link in links if not re.match(r"[a-z]+:", link)]
    assert any(link.startswith("docs/") for link in local), "README.md links nowhere into docs/"
    for link in local:
        path, _, anchor = link.partition("#")
        target = REPO_ROOT / path
        assert target.exists(), f"README.md links to {path}, which does not exist"
        if anchor:
            page = site / target.relative_to(DOCS).with_suffix(".html")
            assert anchor in parse(page).ids, f"README.md links to {link}: {page.name} has no anchor #{anchor}"
