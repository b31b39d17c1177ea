"""The corpus: real proverbs, one per line, UTF-8, no blanks, no duplicates."""
import re
import unicodedata

from conftest import ROOT

PATH = ROOT / "refranes.txt"


def lines():
    return PATH.read_bytes().decode("utf-8").split("\n")


def normalized(line: str) -> str:
    """Lower case, accents and punctuation removed: 'A quien madruga, Dios le ayuda.' ->
    'a quien madruga dios le ayuda'."""
    decomposed = unicodedata.normalize("NFKD", line.lower())
    letters = "".join(c for c in decomposed if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", " ", letters).strip()


def test_file_is_utf8_and_ends_with_a_newline():
    raw = PATH.read_bytes()
    raw.decode("utf-8")  # raises if not UTF-8
    assert raw.endswith(b"\n") and not raw.startswith(b"\xef\xbb\xbf")  # no byte-order mark


def test_at_least_500_proverbs_without_blank_or_padded_lines():
    body = lines()[:-1]  # the text after the final newline is empty
    assert len(body) >= 500
    assert all(line.strip() == line and line for line in body)
    assert all("\r" not in line and "\t" not in line for line in body)


def test_no_duplicates_ignoring_case_accents_and_punctuation():
    body = lines()[:-1]
    seen = {}
    for number, line in enumerate(body, 1):
        key = normalized(line)
        assert key not in seen, f"line {number} repeats line {seen[key]}: {line}"
        seen[key] = number


def test_spanish_spelling_is_kept():
    text = PATH.read_text(encoding="utf-8")
    for char in "ñáéíóú¿¡":
        assert char in text, f"no '{char}' in the corpus"
    assert unicodedata.normalize("NFC", text) == text  # accents are single characters
    # every ¿ has its ?, every ¡ its !
    for line in lines():
        assert line.count("¿") == line.count("?") and line.count("¡") == line.count("!"), line


def test_well_known_proverbs_are_there():
    text = PATH.read_text(encoding="utf-8")
    for proverb in ["No hay mal que por bien no venga.", "Más vale tarde que nunca.",
                    "A quien madruga, Dios le ayuda.", "Dime con quién andas y te diré quién eres."]:
        assert proverb + "\n" in text
