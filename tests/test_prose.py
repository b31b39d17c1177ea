"""The numbers and promises the book's prose and the README make, checked against the code and
the data: a sentence that stops being true fails here. Figures that depend on the machine (times,
speeds) are stated in the README and tests/BENCHMARK.md with their machine and date instead."""
import ast
import inspect
import math
import re

import pytest
import torch

import LLM
from conftest import ROOT

SOURCE = (ROOT / "LLM.py").read_text(encoding="utf-8")
LINES = SOURCE.splitlines()
BANNER = next(i for i, line in enumerate(LINES) if line.startswith("# # APPENDIX"))
README = (ROOT / "README.md").read_text(encoding="utf-8")
# README.md keeps its first screens for the model; the reference it points to (tests/README.md: the tests
# and the faults; tests/BENCHMARK.md: the measurements) says the rest, checked here the same way.
DOCS = "\n".join([README] + [(ROOT / "tests" / name).read_text(encoding="utf-8") for name in ("README.md", "BENCHMARK.md")])


def prose(lines: list[str]) -> str:
    """The markdown cells of these lines, comment marks taken off, as one text (lines joined)."""
    cells = re.split(r"^# %%", "\n".join(lines), flags=re.M)
    markdown = [cell for cell in cells if cell.startswith(" [markdown]")]
    return " ".join(line[2:] if line.startswith("# ") else line.lstrip("#")
                    for cell in markdown for line in cell.splitlines()[1:])


STORY = prose(LINES[:BANNER])


def said(text: str, pattern: str) -> tuple:
    """The groups of the one place `pattern` matches `text` (spaces in the pattern match any run of
    white space, so a sentence may wrap anywhere)."""
    found = re.search(pattern.replace(" ", r"\s+"), text)
    assert found, f"not said any more: {pattern}"
    return found.groups()


def number(text: str) -> int:
    return int(text.replace(",", ""))


@pytest.fixture(scope="module")
def corpus():
    text = LLM.read_text(ROOT / "refranes.txt")
    cfg = LLM.RunConfig()
    data = LLM.prepare_data(text, cfg)
    torch.manual_seed(cfg.seed)
    model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
    return text, data, model


# --- Part I ---------------------------------------------------------------------------------------

def test_the_settings_section_counts_the_corpus_the_epochs_and_the_parameters(corpus):
    text, data, model = corpus
    passes, proverbs = said(STORY, r"The defaults are the classroom run: (\w+) passes over the ([\d,]+) proverbs")
    assert ["one", "two", "three", "four"].index(passes) + 1 == LLM.RunConfig().epochs
    assert number(proverbs) == len(LLM.text_lines(text))
    thousands, = said(STORY, r"The model has about (\d+) thousand parameters")
    assert round(LLM.count_parameters(model), -4) == int(thousands) * 1000
    said(STORY, r"the presets \(`--preset longer`, a bigger model to train before class\) live in Part II")
    assert LLM.PRESETS["longer"]["d_model"] > LLM.RunConfig().d_model


def test_the_ids_section_2_quotes_are_the_ids_of_the_run(corpus):
    tokenizer = corpus[1].tokenizer
    pairs = re.findall(r"(⏎|`'.'`) → (\d+)", said(STORY, r"(For `refranes.txt` that gives .*? → \d+\.)")[0])
    assert len(pairs) == 4
    for shown, i in pairs:
        char = "\n" if shown == "⏎" else shown[2]
        assert tokenizer.encode(char) == [int(i)], shown


def test_the_embedding_example_and_its_scale(corpus):
    tokenizer, model = corpus[1].tokenizer, corpus[2]
    a, row = said(STORY, r"id (\d+) \(`a`\) → row (\d+)")
    assert tokenizer.encode("a") == [int(a)] == [int(row)]
    said(STORY, r"after the scaling every number is about 1 in size")
    scaled = model.token_embedding(torch.arange(tokenizer.vocab_size)).detach()  # (V, C), E[id] * sqrt(C)
    assert float(scaled.std()) == pytest.approx(1.0, abs=0.05)


def test_the_lines_the_context_cuts(corpus):
    text, data, _ = corpus
    cut, total, share = said(STORY, r"\((\d+) of the ([\d,]+) in `refranes.txt`, (\d+)%\)")
    assert int(cut) == data.truncated and number(total) == len(LLM.text_lines(text))
    assert round(100 * data.truncated / number(total)) == int(share)
    said(STORY, r"targets with −100, the value the loss is told to ignore")
    assert LLM.IGNORE == -100


def test_what_section_3_says_word_pieces_cost_and_buy(corpus):
    text, data, _ = corpus
    pieces = LLM.prepare_any_text(text, LLM.RunConfig(tokenizer="bpe", vocab_size=512))
    per_piece, context, chars, V, vocab = said(
        STORY, r"at 512 pieces a piece of the proverbs is about ([\d.]+) characters, so a context of (\d+) tokens holds "
               r"about (\d+) characters .*? V grows from (\d+) to (\d+),")
    measured = pieces.train_split.n_chars / pieces.train_split.n_tokens
    assert float(per_piece) == round(measured, 1) and int(context) == LLM.RunConfig().context
    assert int(chars) == round(LLM.RunConfig().context * measured, -1)
    assert int(V) == data.tokenizer.vocab_size and int(vocab) == pieces.tokenizer.vocab_size == 512
    said(STORY, r"a word takes the space before it: `No`, `␣hay`")
    assert LLM.WORD.findall("No hay,") == ["No", " hay", ","]


def test_what_a_model_that_knows_nothing_scores(corpus):
    vocabulary = corpus[1].tokenizer.vocab_size
    ln_v, v = said(STORY, r"scores \$\\ln V\$, about ([\d.]+) for the (\d+) characters of the proverbs")
    assert int(v) == vocabulary and float(ln_v) == round(math.log(vocabulary), 1)


def test_the_schedule_fractions_are_the_settings():
    cap, floor = said(STORY, r"\(at most `warmup_cap`, a (\w+), of all steps\).*?`lr_floor` × `lr` \(a (\w+)\)")
    assert {"fifth": 0.2, "tenth": 0.1}[cap] == LLM.RunConfig().warmup_cap
    assert {"fifth": 0.2, "tenth": 0.1}[floor] == LLM.RunConfig().lr_floor


def test_the_kernel_launches_fast_adam_costs():
    per_group, with_decay, per_tensor = map(int, said(
        prose(LINES), r"a step costs (\d+) launches per group \((\d+) with AdamW's decay\) instead of (\d+) per tensor"))
    fast = inspect.getsource(LLM.FastAdam.step)
    assert fast.count("torch._foreach_") == with_decay and with_decay == per_group + 1  # the decay is one more
    plain = re.sub(r"#.*", "", inspect.getsource(LLM.Adam.step))  # the code, without its comments
    calls = len(re.findall(r"\.(?:lerp_|mul_|addcmul_|sqrt|addcdiv_)\(|/ math\.sqrt|\+ self\.eps", plain))
    assert calls == with_decay and per_tensor == per_group


@pytest.mark.parametrize("shape", [{}, {"d_model": 32, "n_heads": 2, "n_layers": 3, "d_ff": 48}, {"n_layers": 1}])
def test_the_parameter_formula_of_section_15_counts_the_tensors(shape):
    said(STORY, r"\$N_\{params\} = VC \+ N\(4C\^2 \+ 2CF \+ F \+ 9C\) \+ 2C \+ CV \+ V\$")
    cfg = LLM.replace(LLM.RunConfig(), **shape)
    V, C, N, F = 73, cfg.d_model, cfg.n_layers, cfg.d_ff
    assert LLM.count_parameters(LLM.TransformerLM(V, cfg)) == V * C + N * (4 * C ** 2 + 2 * C * F + F + 9 * C) + 2 * C + C * V + V


TEST_FILES = "\n".join(path.read_text(encoding="utf-8") for path in (ROOT / "tests").glob("test_*.py"))


@pytest.mark.parametrize("promise,test", [
    ("the tests check both", "test_a_padded_and_an_unpadded_batch_give_the_same_loss_for_the_same_lines"),
    ("the tests check both", "test_padding_is_masked_out_of_the_loss"),
    ("a test checks exactly that", "test_encoding_is_added_per_position_the_same_for_every_sequence_of_the_batch"),
    ("the same numbers in one fused kernel; a test proves them equal",
     "test_hand_written_attention_equals_scaled_dot_product_attention"),
    ("learns the very same merges faster (it counts again only the words a merge changed); a test proves the two equal",
     "test_section_3s_merges_step_by_step_are_the_fast_learners_on_the_proverbs"),
    ("A test proves it equal to PyTorch's `nn.TransformerEncoderLayer(norm_first=True)`",
     "test_encoder_layer_equals_torch_transformer_encoder_layer_with_the_same_weights"),
    ("a test proves both take `torch.optim.Adam`'s and `AdamW`'s steps", "test_the_hand_written_adam_takes_torch_optims_steps"),
])
def test_every_test_the_story_promises_exists(promise, test):
    said(STORY, re.escape(promise).replace(r"\ ", " "))
    assert f"def {test}(" in TEST_FILES


def test_the_tokenizer_interface_is_all_the_rest_of_the_file_asks_of_a_tokenizer():
    """Section 2 says the rest of the file asks a tokenizer only what CharTokenizer answers: every
    `tokenizer.x` (or `something.tokenizer.x`) outside the class is one of its public names."""
    tree = ast.parse(SOURCE)
    tokenizer_class = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "CharTokenizer")
    interface = {n.name for n in tokenizer_class.body if isinstance(n, ast.FunctionDef) and not n.name.startswith("_")}
    interface |= {name.id for n in tokenizer_class.body if isinstance(n, ast.Assign) for t in n.targets
                  for name in (t.elts if isinstance(t, ast.Tuple) else [t])}
    classes = [n for n in tree.body if isinstance(n, ast.ClassDef) and n.name in ("CharTokenizer", "BPETokenizer")]
    inside = {id(n) for c in classes for n in ast.walk(c)}  # a tokenizer may ask itself anything
    asked = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and id(node) not in inside:
            owner = node.value
            name = owner.id if isinstance(owner, ast.Name) else owner.attr if isinstance(owner, ast.Attribute) else ""
            if name in ("tokenizer", "tok", "bigger"):
                asked.add(node.attr)
    assert asked and asked <= interface, asked - interface


# --- the README -----------------------------------------------------------------------------------

def test_the_readme_counts_the_corpus_the_vocabulary_and_the_model(corpus):
    text, data, model = corpus
    lines = len(LLM.text_lines(text))
    assert said(README, r"trains it on ([\d,]+) Spanish proverbs")[0] == f"{lines:,}"
    assert said(README, r"`refranes.txt` holds ([\d,]+) Spanish proverbs")[0] == f"{lines:,}"
    assert said(README, r"the vocabulary is tiny \((\d+) for the proverbs\)")[0] == str(data.tokenizer.vocab_size)
    train, val, test = said(DOCS, r"(\d+) lines to train on, (\d+) for validation, (\d+) for the final test")
    assert (int(train), int(val), int(test)) == (len(data.train_split), len(data.val_split), len(data.test_split))
    cut, context = said(DOCS, r"note: (\d+) lines are longer than the context \((\d+) characters\) and were cut")
    assert int(cut) == data.truncated and int(context) == LLM.RunConfig().context
    assert said(README, r"model: ([\d,]+) parameters = V\*C")[0] == f"{LLM.count_parameters(model):,}"


def test_the_readme_describes_the_longer_preset_as_it_is():
    longer = LLM.PRESETS["longer"]
    described = said(DOCS, r"`--preset longer` is (.*?) \(")[0]
    for name, value in longer.items():
        if name != "out":
            assert f"{LLM.flag_of(name)} {value:g}" in described if isinstance(value, float) else \
                f"{LLM.flag_of(name)} {value}" in described, name
    assert said(DOCS, r"writes into `(outputs/longer)/`")[0] == longer["out"]


def test_the_readme_test_time_is_a_measurement_with_its_machine_and_date():
    """The suite's time is a measurement with its machine and date, next to the earlier version's
    measured in the same hour (the machine's speed drifts by 2x): the growth it states is the
    ratio of the two, and it stays under 1.3x."""
    low, high, date, before = said(DOCS, r"The tests \(\d+\) took (\d+) to (\d+) s on the 2-core (?:Intel|AMD EPYC) CPU "
                                         r"of tests/BENCHMARK.md on (\d{4}-\d\d-\d\d), measured twice, in an hour when "
                                         r"the same machine ran the \d+ tests of the version before .*? in (\d+) s")
    grown = said(DOCS, r"Side by side the suite has grown by ([\d.]+)x to ([\d.]+)x")
    assert int(low) <= int(high)
    assert grown == (f"{int(low) / int(before):.2f}", f"{int(high) / int(before):.2f}") and int(high) / int(before) < 1.3
    said(DOCS, r"python -m pytest -q tests -m slow")  # the long tests are named, and how to run them


def test_the_mutation_testing_result_covers_the_whole_list_and_every_part():
    """tests/README.md's count and last result are those of tests/mutate.py's list as it is: every
    mutation caught, on a date and a machine; the list reaches every section and part of the book."""
    import mutate
    planted = len(mutate.MUTATIONS)
    assert said(DOCS, r"The list has (\d+) of them")[0] == str(planted)
    caught, of, _ = said(DOCS, r"Last result: \*\*(\d+) of (\d+) caught\*\* on (\d{4}-\d\d-\d\d), on the 2-core AMD EPYC")
    assert int(caught) == int(of) == planted
    assert said(README, r"`python tests/mutate.py` plants (\d+)")[0] == str(planted)
    assert {m.where for m in mutate.MUTATIONS} == {str(n) for n in range(1, 17)} | set("ABCDEFGHIJKL")
    source = (ROOT / "LLM.py").read_text(encoding="utf-8")
    assert all(source.count(m.old) == 1 for m in mutate.MUTATIONS)  # none stale


def test_the_training_craft_table_gives_the_defaults_of_the_settings():
    rows = re.findall(r"^\| ((?:`--[\w-]+`(?:, )?)+) \| ([^|]+) \|", README, re.M)
    checked = 0
    for flags, defaults in rows:
        names = re.findall(r"`(--[\w-]+)`", flags)
        values = [v.strip() for v in defaults.split(",")]
        if len(names) != len(values):  # a row of the measured table, not of defaults
            continue
        for flag, value in zip(names, values):
            name = next(f.name for f in LLM.fields(LLM.RunConfig) if LLM.flag_of(f.name) == flag)
            default = getattr(LLM.RunConfig(), name)
            if isinstance(default, bool):
                assert value == ("on" if default else "off"), flag
            elif isinstance(default, (int, float)):
                assert float(value) == default, flag
            else:
                assert value == default, flag
            checked += 1
    assert checked >= 12


def test_the_limits_the_readme_quotes_are_the_limits_the_code_keeps():
    low, high = said(DOCS, r"`--temperature` outside ([\d.]+) to ([\d,]+)")
    assert (float(low), float(high)) == LLM.TEMPERATURE_RANGE
    assert number(said(DOCS, r"`--max-chars` over ([\d,]+)")[0]) == LLM.MAX_CHARS
    assert number(said(DOCS, r"`--seed` outside 0 to ([\d,]+)")[0]) == 2 ** 32 - 1


def test_how_long_the_story_says_the_run_takes_is_what_the_benchmark_measured():
    said(STORY, r"in well under a minute on a laptop CPU")
    benchmark = (ROOT / "tests" / "BENCHMARK.md").read_text(encoding="utf-8")
    newest = re.search(r"^\| classroom run, `python LLM.py`, every output \| ([\d.]+) s wall[^|]*\| ([\d.]+) s wall", benchmark, re.M)
    assert newest and max(float(newest.group(1)), float(newest.group(2))) < 30  # "well under": half a minute at most


def test_the_readme_install_lines_put_the_cpu_build_first_on_linux_and_ci_runs_the_test_line():
    blocks = re.findall(r"```(?:bash|powershell)\n(.*?)```", README, re.S)
    first = blocks[0]
    assert first.startswith("# Linux without an NVIDIA GPU")
    assert "pip install torch --index-url https://download.pytorch.org/whl/cpu && pip install -r requirements.txt" in first
    test_line = next(line for block in blocks for line in block.splitlines() if "python -m pytest -q tests" in line)
    assert "--index-url https://download.pytorch.org/whl/cpu" in test_line
    assert test_line in (ROOT / ".ci" / "run").read_text().splitlines()  # CI runs it word for word
    said(DOCS, r"\| CPU build \(the first line\) \| ([\d,]+) MB of wheels")
    said(DOCS, r"\| PyPI's CUDA build \(the second line, on Linux\) \| ([\d,]+) MB of wheels")


def test_help_shows_each_default_as_a_user_would_type_it(capsys):
    with pytest.raises(SystemExit):
        LLM.main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    for wrong in ("(default: None)", "(default: False)", "(default: ()", "(default: ('", "below) (default"):
        assert wrong not in text, wrong
    assert "(default: all)" in text and "(default: '' 'No hay' 'Más vale' Quien 'El que' Cada)" in text
    assert "checkpoint to load (model.pt in the --out folder if not given) --chat-log" in text


def test_parameters_txt_counts_layers_from_1_as_the_pictures_do(tiny_run):
    text = (tiny_run / "parameters.txt").read_text(encoding="utf-8")
    assert re.search(r"^layer 1: attention ", text, re.M) and re.search(r"^layer 2: total ", text, re.M)
    assert not re.search(r"^layer 0:", text, re.M) and "layers.0.attention.query.weight" in text
    for committed in (ROOT / "outputs").rglob("parameters.txt"):
        assert not re.search(r"^layer 0:", committed.read_text(encoding="utf-8"), re.M), committed
