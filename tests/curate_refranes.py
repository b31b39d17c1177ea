"""How refranes.txt is made: the classroom's proverbs plus those of Debian's fortunes-es, tidied,
without duplicates and without what a school could not show. Run by hand, from the project's
root, when the corpus changes:

    python tests/curate_refranes.py            # rewrites refranes.txt, prints what it left out

The program itself never reads the source: refranes.txt is shipped. tests/test_refranes.py
checks that refranes.txt obeys these rules and, where the source is at hand, that this script
still makes exactly it.

The source: `refranes.fortunes` of Debian's package fortunes-es 1.36, whose copyright file says
"All fortunes' text and quotes are presumed to be in the public domain."
"""
from __future__ import annotations

import difflib
import re
import sys
import unicodedata
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SOURCE = ROOT.parent / "shared" / "corpora" / "refranes-fortunes-es.txt"
CORPUS = ROOT / "refranes.txt"

# A line is left out when one of its words (lower case, accents removed) is one of these.
# Sexual and scatological words, and insults:
VULGAR = {
    "puta", "putas", "puto", "putos", "putero", "puteria", "hideputa", "hijoputa", "ramera", "rameras",
    "culo", "culos", "mierda", "mierdas", "cagar", "caga", "cagas", "cagan", "cago", "cague", "cagado", "cagada",
    "cagon", "cagando", "cagajon", "cagalera", "mear", "mea", "meas", "mean", "meo", "meado", "meada", "meando",
    "pedo", "pedos", "peer", "pee", "peerse", "pedorro", "cojon", "cojones", "carajo",
    "joder", "jode", "jodido", "jodida", "polla", "pollas", "teta", "tetas", "nalga", "nalgas", "cornudo",
    "cornudos", "cornuda", "cabron", "cabrones", "verga", "pija", "burdel", "mancebia", "putana",
    "alcahueta", "alcahuete", "cono", "marica", "maricon",
}
# Groups of people that old proverbs name to mock them: Jews, Moors, Gypsies, and women as such
# ("mujer", "hembra": the few proverbs that speak of women as a kind). Words that are also
# ordinary words are not here ("judías" are beans, "mora" is a verb and a fruit, "negro" a
# colour); the lines where they name people were read and are in EXCLUDED_LINES.
GROUPS = {
    "judio", "judios", "moro", "moros", "morisco", "moriscos", "gitano", "gitana", "gitanos", "gitanas",
    "mujer", "mujeres", "hembra", "hembras",
}
EXCLUDED_WORDS = VULGAR | GROUPS
EXCLUDED_LINES = {  # read one by one: they mock Black people
    "Fue la negra al baño y tuvo que contar para todo el año.",
    "Sacar lo que el negro en el sermón.",
}

# Misspellings fixed where the right spelling is certain (the word and its meaning are clear).
FIXES = {"A bien obrar bien pagar .": "A bien obrar, bien pagar."}  # whole lines
WORD_FIXES = {"leéla": "léela", "perjucio": "perjuicio"}  # single words, wherever they are


def key(line: str) -> str:
    """Lower case, accents and punctuation removed: what two copies of a proverb share."""
    letters = "".join(c for c in unicodedata.normalize("NFKD", line.lower()) if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9ñ]+", " ", letters.replace("n\u0303", "ñ")).strip()


def words(line: str) -> list[str]:
    return key(line).split()


def tidy(line: str) -> str:
    """NFC; single spaces; no space before punctuation; a capital first letter; a full stop at
    the end of a proverb that had none."""
    line = FIXES.get(line.strip(), line)
    line = re.sub(r"[^\W\d_]+", lambda word: WORD_FIXES.get(word.group(), word.group()), line)
    line = unicodedata.normalize("NFC", re.sub(r"\s+", " ", line).strip())
    line = re.sub(r"\s+([.,;:!?)])", r"\1", line)
    line = re.sub(r"([¿¡(])\s+", r"\1", line)
    line = re.sub(r"([,;])(?=[^\W\d])", r"\1 ", line)  # "ciervo,es" -> "ciervo, es"
    first = next((i for i, c in enumerate(line) if c.isalpha()), None)
    if first is not None:
        line = line[:first] + line[first].upper() + line[first + 1:]
    if line and line[-1].isalnum():
        line += "."
    return line


def why_excluded(line: str) -> str | None:
    """What leaves the line out (a word of EXCLUDED_WORDS, or the line itself), or None."""
    if line in EXCLUDED_LINES:
        return "a line read and left out"
    return next((f"the word '{word}'" for word in words(line) if word in EXCLUDED_WORDS), None)


def balanced(line: str) -> bool:
    return line.count("¿") == line.count("?") and line.count("¡") == line.count("!")


def near_duplicate(line: str, kept_by_end_word: dict[str, list[str]]) -> str | None:
    """A kept proverb this one only varies from (92% of its letters in common), or None. Only
    proverbs with the same first or last word are compared (a typo rarely hits both)."""
    k = key(line)
    for other in dict.fromkeys(kept_by_end_word.get(k.split()[0], []) + kept_by_end_word.get(k.split()[-1], [])):
        matcher = difflib.SequenceMatcher(None, k, other, autojunk=False)
        if matcher.real_quick_ratio() >= 0.92 and matcher.quick_ratio() >= 0.92 and matcher.ratio() >= 0.92:
            return other
    return None


def curate(current: list[str], source: list[str]) -> tuple[list[str], list[tuple[str, str]]]:
    """(the corpus, [(line left out, why)]): the lines of refranes.txt (at first the 632 proverbs
    the project started with), then the source's new ones in its order. A line already in
    refranes.txt is never dropped as a variant: run again on its own output, this gives the same
    file. Of two variants from the source the one spelled like the rest of the corpus stays (its
    rarest word is commoner: a misspelt word occurs once); on a tie, the first."""
    lines = [tidy(raw) for raw in current + source if raw.strip()]
    frequency = Counter(word for line in lines for word in set(spelt_words(line)))  # lines each word is in
    spelling = lambda line: min(frequency[word] for word in spelt_words(line))  # noqa: E731
    kept, slot_of, by_end_word, left_out = [], {}, {}, []
    protected = len([raw for raw in current if raw.strip()])  # kept[:protected] came from refranes.txt
    for number, line in enumerate(lines):
        k = key(line)
        why = why_excluded(line)
        if why:
            left_out.append((line, why))
        elif not balanced(line):
            left_out.append((line, "a ¿ or ¡ without its ? or !"))
        elif k in slot_of:
            left_out.append((line, f"a copy of: {kept[slot_of[k]]}"))
        elif number >= protected and (other := near_duplicate(line, by_end_word)) is not None:
            slot = slot_of[other]
            if slot >= protected and spelling(line) > spelling(kept[slot]):  # the better spelt one takes its place
                left_out.append((kept[slot], f"a variant of: {line}"))
                kept[slot], slot_of[k] = line, slot_of.pop(other)
                for word in {other.split()[0], other.split()[-1]}:
                    by_end_word[word].remove(other)
                for word in {k.split()[0], k.split()[-1]}:
                    by_end_word.setdefault(word, []).append(k)
            else:
                left_out.append((line, f"a variant of: {kept[slot]}"))
        else:
            slot_of[k] = len(kept)
            kept.append(line)
            for word in {k.split()[0], k.split()[-1]}:
                by_end_word.setdefault(word, []).append(k)
    return kept, left_out


def spelt_words(line: str) -> list[str]:
    """The words as written, accents included, in lower case."""
    return re.findall(r"[^\W\d_]+", line.lower())


def read_lines(path: Path) -> list[str]:
    return path.read_text(encoding="utf-8").split("\n")


def main() -> int:
    current = read_lines(CORPUS)
    while True:  # to the fixed point: a line left out beside a variant that was replaced may come back once
        kept, left_out = curate(current, read_lines(SOURCE))
        if kept == [line for line in current if line]:
            break
        current = kept
    CORPUS.write_text("\n".join(kept) + "\n", encoding="utf-8")
    for line, why in left_out:
        print(f"left out ({why}): {line}")
    reasons = {}
    for _, why in left_out:
        reasons[why.split(":")[0].split("'")[0].strip()] = reasons.get(why.split(":")[0].split("'")[0].strip(), 0) + 1
    print(f"{len(kept)} proverbs kept; left out: {reasons}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
