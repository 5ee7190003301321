"""Every reference in the repository stays inside it: no file (doc, docstring, comment, test,
script or the text of the verify report) points to a file the users of the repository do not
have, every Markdown link resolves to an existing file, every path into the repository's
folders exists, and every section a reference names ("docs/conventions.md, "Data"") is a
heading of that document."""

from __future__ import annotations

import ast
import os
import re
import subprocess
from urllib.parse import unquote

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Folders that are never part of the repository's content (virtualenvs, caches, build output,
# verify reports); used only when git cannot list the tracked files (e.g. an unpacked sdist).
_SKIP_DIRS = {".git", "__pycache__", "build", "dist", ".pytest_cache", ".hypothesis", "node_modules",
              "scratch_engine"}

# Assembled from pieces so that this file does not match its own patterns.
OUTSIDE_MARKERS = [
    ".." + "/shared",
    "shared" + "/design",
    "exact" + "-expectations" + ".md",
]
# Examples for the negative controls below are assembled at run time too: a file name that
# does not exist written out in this file would (rightly) fail the checks on this file.
MISSING = "nothing" + "-here"
OUTSIDE = "outside" + "-notes"
# An absolute path on a machine (not a URL path: the slash must not follow a word character).
ABSOLUTE_PATH = re.compile(r"(?<![\w.~:/])/(?:" + "|".join(["wo" + "rk", "home", "root", "Users", "mnt"]) + r")/")

# Markdown files the code writes rather than the repository holds.
GENERATED_MD = {"report.md"}


def _git_files():
    try:
        out = subprocess.run(["git", "-C", ROOT, "ls-files", "-z"], capture_output=True, check=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    files = [f for f in out.stdout.decode("utf-8").split("\0") if f]
    return [f for f in files if os.path.isfile(os.path.join(ROOT, f))] or None


def _walked_files():
    found = []
    for folder, dirs, files in os.walk(ROOT):
        dirs[:] = [d for d in dirs if d not in _SKIP_DIRS and not d.startswith((".venv", "venv"))
                   and not d.endswith(".egg-info") and not d.startswith("looptheory-verify-")]
        found += [os.path.relpath(os.path.join(folder, f), ROOT) for f in files if f != ".git"]
    return found


def repository_files() -> list[str]:
    """Paths (relative to the root, with '/') of the repository's files: git's tracked files, or
    a walk that skips .git, virtualenvs and caches when git is not available."""
    files = _git_files() or _walked_files()
    return sorted(f.replace(os.sep, "/") for f in files)


def _text(rel):
    with open(os.path.join(ROOT, rel), "rb") as fh:
        data = fh.read()
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


@pytest.fixture(scope="module")
def texts():
    out = {}
    for rel in repository_files():
        text = _text(rel)
        if text is not None:
            out[rel] = text
    assert "docs/conventions.md" in out and "README.md" in out, "the repository's files were not found"
    return out


def outside_references(text: str) -> list[tuple[int, str]]:
    """(line number, line) of every line that names a file outside the repository."""
    bad = []
    for k, line in enumerate(text.splitlines(), 1):
        if any(m in line for m in OUTSIDE_MARKERS) or ABSOLUTE_PATH.search(line):
            bad.append((k, line.strip()))
    return bad


def test_no_file_refers_outside_the_repository(texts):
    bad = [f"{rel}:{k}: {line}" for rel, text in texts.items() for k, line in outside_references(text)]
    assert not bad, "references to files outside the repository:\n" + "\n".join(bad)


def test_the_outside_patterns_are_caught():
    # negative controls, so that a broken pattern cannot pass silently
    for line in ["see ../" + "shared" + "/design/conventions.md", "(exact" + "-expectations" + ".md)",
                 "open('/" + "work/main/x')", "`/" + "home/me/notes`"]:
        assert outside_references(line), line
    for line in ["https://github.com/x/home/y", "docs/conventions.md", "a/b", "see ../README.md"]:
        assert not outside_references(line), line


# ------------------------------------------------------------------------------------------
# Markdown links
# ------------------------------------------------------------------------------------------

_FENCE = re.compile(r"^(```|~~~).*?^\1[^\n]*$", re.S | re.M)
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+?\1", re.S)
_INLINE_LINK = re.compile(r"!?\[(?:[^\]\\]|\\.)*\]\(\s*<?([^)\s>]*)>?(?:\s+[\"'(][^)]*)?\)")
_REF_DEF = re.compile(r"^ {0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s|$)", re.M)
_HEADING = re.compile(r"^ {0,3}#{1,6}\s+(.*?)\s*#*\s*$", re.M)


def _prose(text: str) -> str:
    """Markdown without fenced code blocks and code spans (links there are not links)."""
    return _CODE_SPAN.sub("", _FENCE.sub("", text))


def headings(text: str) -> list[str]:
    """Heading texts of a Markdown document, with link syntax reduced to the link text."""
    return [re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", h).strip() for h in _HEADING.findall(_FENCE.sub("", text))]


def anchors(text: str) -> set[str]:
    """GitHub's anchors for the headings: lower case, punctuation dropped, spaces to hyphens,
    repeated anchors numbered -1, -2, ..."""
    seen, out = {}, set()
    for h in headings(text):
        slug = re.sub(r"[^\w\- ]", "", h.replace("`", "").lower()).replace(" ", "-")
        k = seen.get(slug, 0)
        seen[slug] = k + 1
        out.add(slug if k == 0 else f"{slug}-{k}")
    return out


def link_targets(text: str) -> list[str]:
    prose = _prose(text)
    return _INLINE_LINK.findall(prose) + _REF_DEF.findall(prose)


def link_problem(rel: str, target: str, texts: dict) -> str | None:
    """Why a link in file rel to target is broken, or None if it resolves inside the repository.
    URLs (any scheme) are not checked."""
    if not target or re.match(r"^[A-Za-z][A-Za-z0-9+.-]*:", target) or target.startswith("//"):
        return None
    path, _, fragment = target.partition("#")
    path = unquote(path)
    if path.startswith("/"):
        return "absolute path (write it relative to the linking file)"
    if path:
        resolved = os.path.normpath(os.path.join(ROOT, os.path.dirname(rel), path))
        if os.path.commonpath([ROOT, resolved]) != ROOT:
            return "leaves the repository"
        if not os.path.exists(resolved):
            return "no such file"
        target_rel = os.path.relpath(resolved, ROOT).replace(os.sep, "/")
    else:
        target_rel = rel
    if fragment and target_rel.endswith(".md"):
        text = texts.get(target_rel)
        if text is None:
            with open(os.path.join(ROOT, target_rel), encoding="utf-8") as fh:
                text = fh.read()
        if fragment.lower() not in anchors(text):
            return f"no heading with anchor #{fragment} in {target_rel}"
    return None


def test_markdown_links_resolve_inside_the_repository(texts):
    md = {rel: text for rel, text in texts.items() if rel.endswith(".md")}
    assert "docs/conventions.md" in md
    bad = []
    for rel, text in md.items():
        for target in link_targets(text):
            why = link_problem(rel, target, texts)
            if why:
                bad.append(f"{rel}: ({target}): {why}")
    assert not bad, "broken Markdown links:\n" + "\n".join(bad)


def test_the_link_check_catches_bad_links(texts):
    rel = "docs/claims.md"
    links = link_targets(f"[a](../../{OUTSIDE}.md) [b]({MISSING}.md) `[c](../../x)`\n```\n[d](../../y)\n```\n"
                         "[e](conventions.md#claims-under-test) [f](#nowhere) [g](https://x.org/a)")
    assert links == [f"../../{OUTSIDE}.md", f"{MISSING}.md", "conventions.md#claims-under-test", "#nowhere",
                     "https://x.org/a"]
    assert link_problem(rel, f"../../{OUTSIDE}.md", texts) == "leaves the repository"
    assert link_problem(rel, f"{MISSING}.md", texts) == "no such file"
    assert link_problem(rel, "conventions.md#claims-under-test", texts) is None
    assert link_problem(rel, "conventions.md#g4-out-of-distribution", texts) is None
    assert "no heading" in link_problem(rel, "#nowhere", texts)
    assert link_problem(rel, "https://x.org/a", texts) is None
    assert link_problem("README.md", "docs/conventions.md", texts) is None
    assert link_problem("README.md", "../README.md", texts) == "leaves the repository"


# ------------------------------------------------------------------------------------------
# Paths and file names in the text
# ------------------------------------------------------------------------------------------


def _top_folders(files):
    return sorted({f.split("/")[0] for f in files if "/" in f})


def path_problems(text: str, files: list[str]) -> list[str]:
    """Paths into the repository's top-level folders that do not exist, and Markdown file names
    that are not a file of the repository (outside `GENERATED_MD`)."""
    names = {f.rsplit("/", 1)[-1] for f in files if f.endswith(".md")}
    folders = _top_folders(files)
    bad = []
    pattern = re.compile(r"(?<![\w./-])((?:" + "|".join(map(re.escape, folders)) + r")/[\w./-]*\w)(.?)")
    for path, after in pattern.findall(text):
        if after in "{*<[" and after:
            continue  # a template or a glob, not a path
        if not os.path.exists(os.path.join(ROOT, path)):
            bad.append(path)
    for name in re.findall(r"(?<![\w./-])([\w.-]+\.md)\b", text):
        if name not in names and name not in GENERATED_MD:
            bad.append(name)
    return bad


def test_paths_and_markdown_names_exist(texts):
    files = list(texts) + [f for f in repository_files() if f not in texts]
    bad = [f"{rel}: {p}" for rel, text in texts.items() for p in path_problems(text, files)]
    assert not bad, "references to files the repository does not have:\n" + "\n".join(bad)


def test_the_path_check_catches_missing_files(texts):
    files = repository_files()
    assert path_problems(f"see docs/{MISSING}.md and tests/{MISSING}.py::test_x", files) == [
        f"docs/{MISSING}.md", f"tests/{MISSING}.py"]
    assert path_problems("`conventions.md`, docs/engine.md, DIR/report.md, looptheory/data/*.json.gz", files) == []
    assert path_problems(f"({OUTSIDE}.md)", files) == [f"{OUTSIDE}.md"]


# ------------------------------------------------------------------------------------------
# Cited sections
# ------------------------------------------------------------------------------------------

_CITATION = re.compile(r"(?<![\w.-])([\w-]+\.md)[`\])]*(?:,\s*|\s*\()\"([^\"]+)\"")


def _plain(text: str) -> str:
    return re.sub(r"\s+", " ", text.replace("\u2212", "-"))


def cited_sections(text: str) -> list[tuple[str, str]]:
    """(file name, quoted text) for every citation of a Markdown file followed by a quoted
    section, as in `, "Section"` or ` ("Section")`; whitespace (line breaks and indentation
    inside docstrings) is collapsed first."""
    return _CITATION.findall(_plain(text))


def citation_found(section: str, doc: str) -> bool:
    """A cited name that starts with a capital or a digit ("Data", "3.1 One step ...") must be a
    heading of the document; a lower-case one is a phrase quoted from its text (compared with
    whitespace collapsed and the minus sign written as a hyphen)."""
    if section[:1].isupper() or section[:1].isdigit():
        return section in headings(doc)
    return _plain(section) in _plain(doc)


def test_cited_sections_exist(texts):
    by_name = {}
    for rel in texts:
        if rel.endswith(".md"):
            by_name.setdefault(rel.rsplit("/", 1)[-1], []).append(rel)
    bad, seen = [], 0
    for rel, text in texts.items():
        for name, section in cited_sections(text):
            if name in GENERATED_MD or name not in by_name:
                continue  # a missing file is reported by test_paths_and_markdown_names_exist
            seen += 1
            if not any(citation_found(section, texts[doc]) for doc in by_name[name]):
                bad.append(f'{rel}: {name}, "{section}"')
    assert seen >= 10, "the citation pattern found too few citations; is it broken?"
    assert not bad, "citations of sections that are not headings:\n" + "\n".join(bad)


def test_the_conventions_page_has_the_sections_the_code_cites(texts):
    heads = headings(texts["docs/conventions.md"])
    for section in ["Names", "Data", "Prompt and layer", "What the sparse model computes", "The population loss",
                    "The population loss in closed form", "Claims under test"]:
        assert section in heads, section
    for claim in ["G1", "G2", "G3", "G4", "G5", "C1", "C2"]:
        assert any(h.startswith(claim + ":") for h in heads), claim
    wrapped = """(docs/conventions.md, "What the sparse
    model computes")"""
    assert cited_sections(wrapped) == [("conventions.md", "What the sparse model computes")]
    doc = texts["docs/conventions.md"]
    assert citation_found("Data", doc) and citation_found("G4: out of distribution", doc)
    # the intro's example sentence names a section but is no heading; a title must be a heading
    assert not citation_found("Where this page differs", doc)
    assert citation_found("brings f \u2212 f* below \u03be", doc)


# ------------------------------------------------------------------------------------------
# The verify report
# ------------------------------------------------------------------------------------------


def _string_constants(path):
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    return [node.value for node in ast.walk(tree) if isinstance(node, ast.Constant) and isinstance(node.value, str)]


def test_report_source_cites_the_conventions_page_and_nothing_outside():
    strings = _string_constants(os.path.join(ROOT, "looptheory", "report.py"))
    assert any("docs/conventions.md" in s for s in strings), "report.py no longer cites docs/conventions.md"
    bad = [s for s in strings if outside_references(s)]
    assert not bad, bad


def test_rendered_report_cites_the_conventions_page(tmp_path, monkeypatch):
    """write_report with no items and no figures: only the text the report itself contributes
    is written."""
    from looptheory import report, verify

    monkeypatch.setattr(verify, "all_items", lambda: [])
    monkeypatch.setattr(report, "draw_figures", lambda *a, **k: ([], [], {}))
    report.write_report(str(tmp_path), quick=True)
    text = (tmp_path / "report.md").read_text()
    assert "docs/conventions.md" in text
    assert not outside_references(text)
    assert not path_problems(text, repository_files())
