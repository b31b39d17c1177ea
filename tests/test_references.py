"""Pointers that cannot go stale: every "section N" (or "§N") in LLM.py, the README files, the
gallery texts and the explorer pages names a section of Part I that says what the pointer's words
are about; every relative link of every Markdown file resolves; and the README's map of the
book links each section to the line of its heading."""
import re
from pathlib import Path

import pytest

from conftest import ROOT

LLM_TEXT = (ROOT / "LLM.py").read_text(encoding="utf-8")
PART_I = LLM_TEXT[:LLM_TEXT.index("# APPENDIX")]
HEADINGS = {int(n): title for n, title in re.findall(r"^# ## (\d+)\. (.+)$", PART_I, re.M)}
STOP = {"with", "from", "that", "this", "what", "each", "every", "their", "them", "they", "into", "there",
        "when", "where", "which", "only", "more", "than", "then", "does", "over", "after", "before", "about"}


def section_words(n: int) -> set[str]:
    """What section n is about: the words of its heading and of its prose, and the names its code
    defines (functions, classes, their words split at underscores)."""
    start = PART_I.index(f"# ## {n}. ")
    end = PART_I.index(f"# ## {n + 1}. ") if n + 1 in HEADINGS else len(PART_I)
    text = PART_I[start:end]
    names = re.findall(r"^(?:def|class) (\w+)", text, re.M)
    words = {w.lower() for w in re.findall(r"[A-Za-zÀ-ÿ]{4,}", text)} - STOP
    return words | {n.lower() for n in names} | {part for n in names for part in n.lower().split("_") if len(part) > 3}


# The Spanish words the Spanish pages (the explorer's labels, the README's guide) use for a section.
SPANISH = {3: {"piezas", "palabra"}, 5: {"embeddings", "incrustaciones"}, 7: {"atención", "máscara"},
           9: {"modelo", "logits"}, 10: {"pérdida"}, 14: {"bucle", "entrenamiento"},
           15: {"escribir", "temperatura", "carácter"}}
WORDS = {n: section_words(n) | SPANISH.get(n, set()) for n in HEADINGS}
REFERENCE = re.compile(r"(?:[Ss]ections?|[Ss]ecciones|[Ss]ecci[oó]n|§)\s*(\d+)(?![.\d]*\d)"
                       r"((?:(?:,| and| y| to| or)\s*\d+)*)")


def documents() -> dict[str, str]:
    found = {"LLM.py": LLM_TEXT}
    for path in [ROOT / "README.md", ROOT / "tests" / "README.md", ROOT / "tests" / "BENCHMARK.md",
                 *sorted((ROOT / "outputs").rglob("README.md")), *sorted((ROOT / "outputs").rglob("explorer.html"))]:
        found[str(path.relative_to(ROOT))] = path.read_text(encoding="utf-8")
    return found


def test_the_map_has_every_section_of_part_i():
    assert sorted(HEADINGS) == list(range(1, len(HEADINGS) + 1)) and len(HEADINGS) >= 16


@pytest.mark.parametrize("name", list(documents()))
def test_every_section_pointer_names_a_section_about_its_words(name):
    """"section 14 (the hooks)": 14 must be a section of Part I, and a word next to the pointer
    (40 characters on either side) must be one section 14 uses: its heading, prose or names."""
    text, wrong = documents()[name], []
    for match in REFERENCE.finditer(text):
        if re.match(r"§\d+\.\d", text[match.start():match.start() + 6]):  # the paper's §3.4, not ours
            continue
        numbers = [int(match.group(1))] + [int(n) for n in re.findall(r"\d+", match.group(2))]
        if "to" in match.group(2):
            numbers = list(range(numbers[0], numbers[-1] + 1))
        around = text[max(0, match.start() - 40):match.end() + 40]
        near = {w.lower() for w in re.findall(r"[A-Za-zÀ-ÿ]{4,}", around)} - STOP
        for n in numbers:
            if n not in HEADINGS:
                wrong.append(f"no section {n}: …{around}…")
            elif len(numbers) == 1 and not near & WORDS[n]:
                wrong.append(f"section {n} ({HEADINGS[n]}) says nothing of: …{around}…")
    assert not wrong, "\n".join(wrong)


MARKDOWN = sorted(p for p in ROOT.rglob("*.md") if ".venv" not in p.parts and ".git" not in p.parts
                  and "node_modules" not in p.parts)


def anchors(path: Path) -> set[str]:
    """GitHub's anchors of a Markdown file's headings."""
    found = set()
    for heading in re.findall(r"^#+ (.+)$", path.read_text(encoding="utf-8"), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        found.add(slug)
    return found


@pytest.mark.parametrize("path", MARKDOWN, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_relative_link_resolves(path):
    text, broken = path.read_text(encoding="utf-8"), []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"[a-z]+:", target):  # https:, mailto:: not a file of the project
            continue
        file, _, anchor = target.partition("#")
        resolved = (path.parent / file).resolve() if file else path
        if not resolved.exists():
            broken.append(target)
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(target)
        elif anchor.startswith("L") and resolved.suffix == ".py":
            line = int(anchor[1:])
            heading = resolved.read_text(encoding="utf-8").splitlines()[line - 1]
            label = text[:text.index(f"]({target})")].rsplit("[", 1)[-1]
            if not (heading.startswith("# ## ") and label.split(". ", 1)[-1] in heading):
                broken.append(f"{target}: line {line} is {heading!r}, not the heading of {label!r}")
    assert not broken, broken


def test_the_checks_above_can_fail():
    """A pointer to the wrong section, and a link to a line that is not its heading, are caught."""
    assert not {"attention", "mask"} & WORDS[11] and {"attention", "mask"} & WORDS[7]
    line = next(i for i, text in enumerate(LLM_TEXT.splitlines(), 1) if text.startswith("# ## 7. "))
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    assert f"[Attention, with the causal mask](LLM.py#L{line})" in readme


def test_the_readme_opens_with_the_model():
    """A newcomer's first screen: one sentence, a picture within 40 lines, the install-and-run line
    of each system, what the run prints in at most 15 lines, the Spanish guide linked; the map of
    the book starts within 80 lines; the whole README within 750 lines."""
    lines = (ROOT / "README.md").read_text(encoding="utf-8").splitlines()
    assert len(lines) <= 750
    first_picture = next(i for i, line in enumerate(lines, 1) if line.startswith("!["))
    sections = [i for i, line in enumerate(lines, 1) if line.startswith("## ")]
    assert first_picture <= 40 and sections[1] <= 80 and lines[sections[1] - 1] == "## The book: a map of LLM.py"
    screen = "\n".join(lines[:80])
    assert "(#guía-rápida-en-español)" in screen and "## Guía rápida en español" in lines
    assert all(system in screen for system in ("# Linux without an NVIDIA GPU", "# macOS", "# Windows"))
    printed = re.search(r"It prints, among other lines.*?\n```\n(.*?)```", screen, re.S).group(1).splitlines()
    assert 5 <= len(printed) <= 15 and printed[1].startswith("device: cpu, code: the story's")
