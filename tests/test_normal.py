"""Is my training normal? The counting floor in a whole run, the nearest proverb in every file that
shows a sample, --eval completing proverbs, and the class's own experiment (--class) with the lines
a class pastes, bad ones included."""
import re
import statistics

import pytest
import torch

import LLM
from conftest import PROVERBS, TINY_ARGV, one_line_error


def proverbs_data(**changes):
    """The data a run of TINY_ARGV reads: the split depends on the seed, fractions and context only."""
    return LLM.prepare_data(LLM.read_text(PROVERBS), LLM.RunConfig(data=str(PROVERBS), **changes))


# --- the counting floor, in a run -------------------------------------------------------------

def test_a_run_prints_the_floor_compares_with_it_and_ends_with_its_result_line(tmp_path, capsys):
    assert LLM.main(TINY_ARGV + ["--epochs", "1", "--pictures", "loss", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.splitlines()
    counting = LLM.Counting.of(proverbs_data())  # worked out again, apart from the run
    floor = next(line for line in printed if line.startswith("counting, no network"))
    assert f"unigram {counting.val[0]:.3f}, bigram {counting.val[1]:.3f} nats/char" in floor
    test_loss = float(re.search(r"test split, never seen in training: loss ([\d.]+)", "\n".join(printed)).group(1))
    after = next(line for line in printed if line.startswith("the test loss"))
    gap = abs(counting.test[1] - test_loss)
    assert f"{gap:.3f} nats/char" in after and ("below" if test_loss < counting.test[1] else "above") in after
    result = LLM.read_result(printed[-1])  # the last line is the result line, and --class reads it
    assert printed[-1].startswith("result ") and result["seed"] == 1337 and result["lr"] == 0.004
    assert result["test_loss"] == pytest.approx(test_loss, abs=5e-4)
    assert result["bigram"] == pytest.approx(counting.test[1], abs=5e-5)
    gallery = (tmp_path / "README.md").read_text(encoding="utf-8").split("## loss.png")[1].split("\n## ")[0]
    assert f"the unigram ({counting.val[0]:.3f}) and the bigram ({counting.val[1]:.3f})" in gallery


def test_the_loss_picture_draws_the_two_counting_models_as_flat_lines():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    counting = LLM.Counting(torch.ones(3, 3), (3.05, 2.19), None)
    ax = plt.figure().subplots()
    LLM.draw_guides(ax, [2], counting)
    flat = [line.get_ydata() for line in ax.get_lines() if list(line.get_ydata()) in ([3.05, 3.05], [2.19, 2.19])]
    assert len(flat) == 2
    labels = [line.get_label() for line in ax.get_lines()]
    assert "counting, unigram: 3.050 (validation)" in labels and "counting, bigram: 2.190 (validation)" in labels


def test_a_vocabulary_too_large_to_count_its_pairs_is_said_and_skipped(monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(LLM, "COUNTING_MOST", 20)  # the proverbs' 60-odd characters: too many
    assert LLM.main(TINY_ARGV + ["--epochs", "1", "--pictures", "--out", str(tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert "counting (section 10) left out: " in printed and "pairs (at most 20 tokens)" in printed
    assert "bigram=-" in printed.splitlines()[-1] and "the test loss" not in printed
    assert LLM.main(["--eval", "--checkpoint", str(tmp_path / "model.pt")]) == 0
    assert "the bigram, the test" not in capsys.readouterr().out


def test_word_pieces_report_the_floor_per_piece_and_in_bits_per_character():
    data = LLM.prepare_any_text(LLM.read_text(PROVERBS), LLM.RunConfig(tokenizer="bpe", vocab_size=120))
    counting = LLM.Counting.of(data)
    said = counting.before_training(data)
    unigram_bits = counting.val[0] * data.val_split.n_tokens / data.val_split.n_chars / LLM.math.log(2)
    assert f"nats/piece ({unigram_bits:.3f} and" in said and "bits/char)" in said


# --- the nearest proverb, in every file that shows a sample ------------------------------------

def test_every_sample_names_its_nearest_training_proverb_in_the_gallery_and_table(tiny_run):
    data = proverbs_data()
    table = (tiny_run / "table.txt").read_text(encoding="utf-8")
    gallery = (tiny_run / "README.md").read_text(encoding="utf-8").split("## What it wrote")[1].split("\n## ")[0]
    results = re.findall(r"^result: (.*)\n(.*)$", table, flags=re.M)
    assert len(results) == 2  # the tiny run's two prompts
    for text, said in results:
        edits = LLM.edit_distances(text, data.train_text)
        nearest = data.train_text[int(edits.argmin())]
        assert f"{int(edits.min())} edits away: «{nearest}»" in said
        assert said.split(";")[0] in ("memorised", "rediscovered", "new")
        assert f"- {text} *[{said.split(';')[0]}]* " in gallery


# --- --eval: completing proverbs ----------------------------------------------------------------

def oracle(lines, tok, change=None):
    """next_ids that writes each line's true continuation (with `change` applied), then ⏎."""
    wanted = {tuple([tok.eol_id] + tok.encode(line[:len(line) // 2])): (change or (lambda x: x))(line[len(line) // 2:])
              for line in lines}

    def next_ids(ids):
        chosen = []
        for row in ids.tolist():
            prompt = next(p for p in wanted if tuple(row[:len(p)]) == p)
            written = tok.encode(wanted[prompt] + "\n")
            chosen.append(written[len(row) - len(prompt)] if len(row) - len(prompt) < len(written) else tok.eol_id)
        return torch.tensor(chosen)
    return next_ids


def test_completing_proverbs_counts_characters_right_and_exact_completions():
    lines = ["Más vale tarde que nunca.", "No hay mal que por bien no venga.", "Quien calla, otorga."]
    tok = LLM.CharTokenizer("".join(lines) + "\nX")
    rests = [line[len(line) // 2:] for line in lines]
    perfect = LLM.complete_halves(oracle(lines, tok), tok, lines, 80)
    assert (perfect.proverbs, perfect.exact, perfect.right, perfect.chars) == (3, 3, sum(map(len, rests)),
                                                                               sum(map(len, rests)))
    one_left_out = LLM.complete_halves(oracle(lines, tok, lambda rest: rest[1:]), tok, lines, 80)
    assert (one_left_out.exact, one_left_out.right) == (0, sum(map(len, rests)) - 3)  # one edit each, not all after it
    silent = LLM.complete_halves(lambda ids: torch.full((len(ids),), tok.eol_id), tok, lines, 80)
    assert (silent.exact, silent.right) == (0, 0)
    assert "0 of 3 completed exactly (0.0%)" in str(silent)


def test_eval_completes_test_and_training_proverbs_beside_the_bigram(trained, capsys):
    assert LLM.main(["--eval", "--checkpoint", str(trained), "--data", str(PROVERBS)]) == 0
    printed = capsys.readouterr().out
    block = printed.split("completing lines from their first half")[1]  # a text of one's own: lines, not proverbs
    assert re.search(r"the 60 test lines +[\d.]+% of the characters right, +\d+ of 60 completed exactly", block)
    assert re.search(r"60 training lines +[\d.]+% of the characters right", block)
    assert re.search(r"the bigram, the test lines +[\d.]+% of the characters right", block)
    assert "of the characters against" in block


# --- the class's own experiment ----------------------------------------------------------------

GOOD = ["result seed=1 lr=0.002 epochs=3 layers=2 d_model=64 tokenizer=char without=- data=refranes.txt "
        "test_loss=1.95 val_loss=1.93 bigram=2.19",
        "Ana: result seed=2 lr=0.002 epochs=3 layers=2 d_model=64 tokenizer=char without=- data=refranes.txt "
        "test_loss=1.99 val_loss=1.97 bigram=2.20",
        "result seed=3 lr=0.004 epochs=3 layers=2 d_model=64 tokenizer=char without=- data=refranes.txt "
        "test_loss=1.83 val_loss=1.81 bigram=2.19",
        "result seed=4 lr=0.004 epochs=3 layers=2 d_model=64 tokenizer=char without=- data=refranes.txt "
        "test_loss=1.85 val_loss=1.83 bigram=2.19"]
BAD = {"result seed=5 lr=0.004": "no test_loss=",
       "result seed=x lr=0.004 test_loss=1.8": "seed=x is not a number",
       "result seed=6 lr=0.004 test_loss=nan": "test_loss=nan is not a number the run could have printed",
       "result seed=7 lr=0 test_loss=1.8": "lr=0 is not a number the run could have printed",
       "epoch 3/3 | train loss 1.834": "no seed= and no lr= and no test_loss=",
       GOOD[0]: "the same as line 1"}


def test_the_class_file_is_read_line_by_line_and_every_bad_line_is_named(tmp_path):
    source = tmp_path / "class.txt"
    source.write_text("\n".join(GOOD[:1] + ["", "# the 3rd period"] + list(BAD) + GOOD[1:]) + "\n", encoding="utf-8")
    said = []
    results = LLM.read_results(source, log=said.append)
    assert [r["seed"] for r in results] == [1, 2, 3, 4] and [r["line"] for r in results] == [1, 10, 11, 12]
    for number, why in enumerate(BAD.values(), 4):
        assert any(line.startswith(f"line {number} left out: {why}") for line in said), (number, said)
    assert said[-1].endswith(": 4 results, 6 lines left out, 2 blank or comments")  # 12 lines, none lost


def test_the_class_table_gives_each_rate_its_mean_and_spread_over_the_seeds():
    results = [LLM.read_result(line) for line in GOOD]
    rows = LLM.class_table(results)
    low, high = [1.95, 1.99], [1.83, 1.85]
    assert f"| all the same | 0.002 | 2 | 1, 2 | {statistics.mean(low):.3f} ± {statistics.stdev(low):.3f} | 1.950 | 1.990 |" in rows
    assert f"| 0.004 | 2 | 3, 4 | {statistics.mean(high):.3f} ± {statistics.stdev(high):.3f} |" in rows[3]
    assert "lr 0.004: 1.840 ± 0.014" in LLM.class_verdict(results) and "more than the two spreads" in LLM.class_verdict(results)
    close = [dict(r, test_loss=t) for r, t in zip(results, [1.84, 1.90, 1.83, 1.88])]
    assert "cannot tell the two rates apart" in LLM.class_verdict(close)
    other = dict(results[0], epochs="10")  # settings other than seed and lr: drawn and listed apart
    assert any(row.startswith("| epochs=10 layers=2") for row in LLM.class_table(results + [other]))


def test_the_class_command_draws_and_writes_and_refuses_bad_input_in_one_line(tmp_path, capsys):
    source = tmp_path / "class.txt"
    source.write_text("\n".join(GOOD + ["result seed=9 lr=0.004"]) + "\n", encoding="utf-8")
    assert LLM.main(["--class", str(source), "--out", str(tmp_path / "out")]) == 0
    printed = capsys.readouterr().out
    assert "line 5 left out: no test_loss=" in printed and "wrote" in printed
    folder = tmp_path / "out" / "class"
    assert (folder / "class.png").stat().st_size > 10_000
    report = (folder / "README.md").read_text(encoding="utf-8")
    assert "![the class's runs](class.png)" in report and "| all the same | 0.004 | 2 | 3, 4 |" in report
    one_line_error(capsys, ["--class", str(tmp_path / "absent.txt")], "--class", "absent.txt")
    (tmp_path / "empty.txt").write_text("# nothing yet\n\n", encoding="utf-8")
    one_line_error(capsys, ["--class", str(tmp_path / "empty.txt"), "--out", str(tmp_path / "out")],
                   "holds no result line")
    inside = folder / "pasted.txt"
    inside.write_text(GOOD[0] + "\n", encoding="utf-8")
    one_line_error(capsys, ["--class", str(inside), "--out", str(tmp_path / "out")], "which this command writes")
    assert inside.read_text(encoding="utf-8") == GOOD[0] + "\n"
