"""The documentation holds together: every relative link, #anchor and image in the README, BENCHMARKS.md, docs/
and the two model cards resolves, and the README stays short. No model, no network; nothing heavy imported."""

from __future__ import annotations

import re
import unicodedata
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README_MAX_LINES = 300  # a newcomer reads it in five minutes; the rest lives in docs/


def documents() -> list[Path]:
    """The Markdown files whose links must resolve."""
    found = [ROOT / "README.md", ROOT / "BENCHMARKS.md", *sorted((ROOT / "docs").glob("*.md")),
             ROOT / "assets" / "offline-model" / "README.md", ROOT / "assets" / "offline-mmdit" / "README.md"]
    return [p for p in found if p.is_file()]


FENCE = re.compile(r"^(```|~~~)")
# [text](target) and ![alt](target); the text may hold one level of brackets ("[black]" in an alt text)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]*)>?(?:\s+\"[^\"]*\")?\s*\)")
HTML_SRC = re.compile(r"<(?:img|a)\s[^>]*?(?:src|href)=\"([^\"]+)\"", re.I)
HTML_ID = re.compile(r"<a\s[^>]*?(?:id|name)=\"([^\"]+)\"", re.I)
HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")


def prose_lines(text: str) -> list[str]:
    """The lines outside fenced code blocks, with inline code spans blanked (a link in code is not a link)."""
    lines, fenced = [], False
    for line in text.splitlines():
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if not fenced:
            lines.append(re.sub(r"`[^`]*`", lambda m: "`" + " " * (len(m.group(0)) - 2) + "`", line))
    return lines


def front_matter_skipped(text: str) -> str:
    """The text without a leading YAML block (the Space's configuration at the top of the README)."""
    if text.startswith("---\n"):
        end = text.find("\n---\n", 4)
        if end != -1:
            return "\n" * text[:end + 5].count("\n") + text[end + 5:]
    return text


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text (links, emphasis and code marks dropped), lower case, every
    character that is not a letter, digit, space, hyphen or underscore removed, spaces made hyphens."""
    text = re.sub(r"!?\[((?:[^\[\]]|\[[^\[\]]*\])*)\]\([^)]*\)", r"\1", heading)
    text = re.sub(r"<[^>]+>", "", text).replace("`", "").replace("**", "").replace("*", "")
    kept = "".join(c for c in text.lower()
                   if c.isalnum() or c in " -_" or unicodedata.category(c).startswith("M"))
    return kept.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor a Markdown file offers: its headings' slugs (repeats numbered as GitHub does) and HTML ids."""
    text = front_matter_skipped(path.read_text(encoding="utf-8"))
    seen: dict[str, int] = {}
    found: set[str] = set()
    raw_lines = text.splitlines()
    fenced = False
    for line in raw_lines:
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if fenced:
            continue
        m = HEADING.match(line)
        if m:
            base = slug(m.group(2))
            n = seen.get(base, 0)
            seen[base] = n + 1
            found.add(base if n == 0 else f"{base}-{n}")
        found.update(HTML_ID.findall(line))
    return found


def links(path: Path) -> list[tuple[int, str]]:
    """(line number, target) of every link and image in the file's prose."""
    text = front_matter_skipped(path.read_text(encoding="utf-8"))
    out, fenced, number = [], False, 0
    for number, line in enumerate(text.splitlines(), 1):
        if FENCE.match(line.strip()):
            fenced = not fenced
            continue
        if fenced:
            continue
        line = re.sub(r"`[^`]*`", lambda m: "`" + " " * (len(m.group(0)) - 2) + "`", line)
        out += [(number, t) for t in LINK.findall(line) + HTML_SRC.findall(line)]
    return out


def is_external(target: str) -> bool:
    return bool(re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I))  # http:, https:, mailto:


def broken_links(path: Path) -> list[str]:
    """What does not resolve in `path`: 'file:line: target (why)' for each."""
    broken = []
    for line, target in links(path):
        if not target or is_external(target):
            continue
        where, _, anchor = target.partition("#")
        dest = (path.parent / where).resolve() if where else path
        name = f"{path.relative_to(ROOT)}:{line}: {target}"
        if ROOT not in dest.parents and dest != ROOT:
            broken.append(f"{name} (outside the repository)")
        elif not dest.exists():
            broken.append(f"{name} (no such file)")
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(f"{name} (no heading with that anchor)")
    return broken


@pytest.mark.parametrize("path", documents(), ids=lambda p: str(p.relative_to(ROOT)))
def test_every_link_anchor_and_image_resolves(path):
    assert not broken_links(path), "\n".join(broken_links(path))


def test_the_readme_stays_short():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; at most {README_MAX_LINES} (move detail to docs/)"


def test_the_model_cards_and_guides_are_checked():
    names = {str(p.relative_to(ROOT)) for p in documents()}
    assert {"README.md", "BENCHMARKS.md", "assets/offline-model/README.md", "assets/offline-mmdit/README.md"} <= names
    assert len([n for n in names if n.startswith("docs/")]) >= 10


def test_slugs_follow_github():
    assert slug("The evolution, runnable: SD 2.x, SDXL and its refiner, SD3") == \
        "the-evolution-runnable-sd-2x-sdxl-and-its-refiner-sd3"
    assert slug("`MAX_SIZE` and **fair turns**") == "max_size-and-fair-turns"
    assert slug("2026-12-06: UNet step 8,508 shipped") == "2026-12-06-unet-step-8508-shipped"
    assert slug("Where CFG stops: speed against quality") == "where-cfg-stops-speed-against-quality"


def test_every_setting_is_in_the_configuration_reference():
    """Each environment variable and flag playground/settings.py reads is named in docs/configuration.md."""
    source = (ROOT / "playground" / "settings.py").read_text(encoding="utf-8")
    names = set(re.findall(r"(?:os\.environ\.get|_env_[a-z]+)\(\s*\"([A-Z][A-Z0-9_]+)\"", source))
    names |= {f"PLAYGROUND_CONTROLNET_{kind.upper()}" for kind in re.findall(
        r"\"([a-z]+)\": \"lllyasviel/control", source)}
    flags = set(re.findall(r"add_argument\(\s*\"(--[a-z0-9-]+)\"", source))
    reference = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    assert names and flags
    missing = sorted(n for n in names | flags if f"`{n}" not in reference)
    assert not missing, f"settings.py reads {missing}; say what each does in docs/configuration.md"


def test_ci_runs_the_readmes_install_and_test_commands():
    """The README's two commands that matter on a fresh machine are the ones CI runs."""
    readme, ci = (ROOT / "README.md").read_text(), (ROOT / ".ci" / "run").read_text()
    test = next(line for line in readme.splitlines() if line.startswith("pip install -r requirements-test.txt"))
    assert test.replace("pip install", "python -m pip install -q").split("   #")[0].strip() in ci
    install = next(line for line in readme.splitlines() if line.startswith("python3 -m venv .venv"))
    assert "pip install -r requirements.txt && pip install --no-deps controlnet_aux==0.0.10" in install
    pip_own = ci.replace(" -q --no-compile", " -q")  # pip's quiet and bytecode flags change what it prints and when
    assert "python -m pip install -q -r requirements.txt && python -m pip install -q --no-deps controlnet_aux==0.0.10" in pip_own
