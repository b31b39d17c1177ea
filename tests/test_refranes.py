"""The corpus: real proverbs, one per line, UTF-8, no blanks, no duplicates, nothing a school
could not show; made by tests/curate_refranes.py from the classroom's proverbs and Debian's."""
import re
import unicodedata

import pytest

import curate_refranes as curation
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


def test_at_least_4000_proverbs_without_blank_or_padded_lines():
    body = lines()[:-1]  # the text after the final newline is empty
    assert len(body) >= 4000
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


def test_every_proverb_ends_in_its_punctuation():
    assert all(line[-1] in '.!?"»)' for line in lines()[:-1])


def test_no_word_a_school_could_not_show():
    """The rule of curate_refranes.py: no line holds a word of EXCLUDED_WORDS (vulgar words,
    and names of groups that old proverbs mock), nor one of the lines read and left out."""
    body = lines()[:-1]
    for line in body:
        assert not set(curation.words(line)) & curation.EXCLUDED_WORDS, line
        assert line not in curation.EXCLUDED_LINES
    assert {"puta", "culo", "mierda", "judio", "moro", "gitano", "mujer"} <= curation.EXCLUDED_WORDS


def test_the_rule_catches_what_it_names():
    """The rule applied to lines it must refuse and to ordinary words it must keep."""
    assert curation.why_excluded("A buen culo, buen pedo.") == "the word 'culo'"
    assert curation.why_excluded("Abad, judío y madona, jamás perdona.") == "the word 'judio'"
    assert curation.why_excluded("Buenas judías la Mancha las cría.") is None  # beans
    assert curation.why_excluded("El que a orilla del río mora, mucho bebe y mucho llora.") is None  # dwells
    assert curation.why_excluded("Sacar lo que el negro en el sermón.") == "a line read and left out"


def test_tidying_and_variants():
    assert curation.tidy("a bien obrar bien pagar .") == "A bien obrar bien pagar."
    assert curation.tidy("Aullar contra el ciervo,es perder voces y tiempo") == \
        "Aullar contra el ciervo, es perder voces y tiempo."
    kept, left_out = curation.curate(["Cría cuervos y te sacarán los ojos."],
                                     ["Cría cuervo y te sacaran los ojos.", "Cuando el sabio llerra, el necio se alegra.",
                                      "Cuando el sabio yerra, el necio se alegra.", "El sabio yerra poco."])
    assert kept == ["Cría cuervos y te sacarán los ojos.", "Cuando el sabio yerra, el necio se alegra.",
                    "El sabio yerra poco."]  # 'yerra' is in two lines, 'llerra' in one: the typo goes
    assert [why.split(":")[0] for _, why in left_out] == ["a variant of", "a variant of"]


@pytest.mark.beside_the_project  # the raw material is not shipped: a clean clone skips this, CI too
@pytest.mark.skipif(not curation.SOURCE.exists(), reason="the Debian source is not beside the project")
def test_the_curation_makes_exactly_this_corpus():
    kept, left_out = curation.curate(lines(), curation.read_lines(curation.SOURCE))
    assert kept == lines()[:-1]
    assert sum(why.startswith(("the word", "a line read")) for _, why in left_out) >= 100


def test_the_readme_shows_the_longer_run_the_benchmark_measures():
    import LLM
    from benchmark import LONGER_RUN
    readme = (ROOT / "README.md").read_text(encoding="utf-8") + (ROOT / "tests" / "BENCHMARK.md").read_text(encoding="utf-8")
    assert LONGER_RUN == ["--preset", "longer"] and re.search(r"^python LLM\.py --preset longer( +#.*)?$", readme, re.M)
    typed = vars(LLM.build_parser(defaults=False).parse_args(LONGER_RUN))
    cfg = LLM.validate(LLM.config_of(typed, "longer"))
    assert cfg.epochs > LLM.RunConfig().epochs and cfg.d_model > LLM.RunConfig().d_model and cfg.out == "outputs/longer"
