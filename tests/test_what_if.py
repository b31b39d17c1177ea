"""Section 9's --without switches, --what-if (part I of the appendix), and the sentences a run
prints about its own numbers.

Each switch is proven to remove exactly its idea: with it the model computes what the formula
without that idea computes, and without it everything else stays as it was."""
import math
import os
import re
import statistics

import pytest
import torch
import torch.nn.functional as F

import LLM
from conftest import TINY_ARGV, one_line_error, run_into, tiny_config


def model_without(*ideas, **changes):
    """The tiny model, built as a run builds it: Part II takes the ideas out after building it."""
    torch.manual_seed(0)
    return LLM.build_model(11, tiny_config(without=ideas, **changes)).eval()


def logits_of(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids]))[0]  # (T, V)


IDS = [0, 3, 5, 2, 7, 1, 9, 4]


# --- each switch removes its idea, and only it -----------------------------------------------------

@pytest.mark.parametrize("code", ["fast", "story"])
def test_without_the_causal_mask_a_later_character_changes_an_earlier_position(code):
    changed = IDS[:-1] + [8]  # only the last character differs
    masked = model_without(code=code)
    assert torch.equal(logits_of(masked, IDS)[:-1], logits_of(masked, changed)[:-1])  # the future is hidden
    unmasked = model_without("causal-mask", code=code)
    assert unmasked.state_dict().keys() == masked.state_dict().keys()  # the same weights, only the mask is gone
    differs = (logits_of(unmasked, IDS)[:-1] - logits_of(unmasked, changed)[:-1]).abs().amax(dim=-1)  # (T-1,)
    assert (differs > 1e-4).all()  # every earlier position sees the last character


@pytest.mark.parametrize("code", ["fast", "story"])
def test_without_positions_the_model_cannot_tell_the_order(code):
    """With neither positions nor the mask, the model is permutation-equivariant: shuffling the
    characters shuffles the outputs the same way. Positions alone break that."""
    perm = torch.randperm(len(IDS), generator=torch.Generator().manual_seed(1)).tolist()
    shuffled = [IDS[i] for i in perm]
    orderless = model_without("positions", "causal-mask", code=code)
    torch.testing.assert_close(logits_of(orderless, shuffled), logits_of(orderless, IDS)[perm], rtol=1e-5, atol=1e-5)
    ordered = model_without("causal-mask", code=code)
    assert not torch.allclose(logits_of(ordered, shuffled), logits_of(ordered, IDS)[perm], atol=1e-3)
    idx = torch.tensor([IDS])
    torch.testing.assert_close(model_without("positions").embed(idx), model_without("positions").token_embedding(idx))


def test_without_scaling_the_scores_are_the_unscaled_formula():
    """The weights the model computes are softmax(QK^T + M), with Q, K from its own W_Q, W_K:
    no division by sqrt(d_k); with scaling they are softmax(QK^T / sqrt(d_k) + M)."""
    unscaled, scaled = model_without("scaling"), model_without()  # the same weights (seed 0)
    x = torch.randn(1, 5, 16, generator=torch.Generator().manual_seed(3))
    attention = scaled.layers[0].attention
    q = LLM.split_heads(x @ attention.query.weight.T + attention.query.bias, 2)  # (1, 2, 5, 8)
    k = LLM.split_heads(x @ attention.key.weight.T + attention.key.bias, 2)
    mask = LLM.causal_mask(5)
    by_hand = (q @ k.transpose(-2, -1)).masked_fill(~mask, float("-inf")).softmax(-1)  # no / sqrt(8)
    _, weights = unscaled.layers[0].attention(x, return_weights=True)
    torch.testing.assert_close(weights, by_hand)
    _, weights = scaled.layers[0].attention(x, return_weights=True)
    torch.testing.assert_close(weights, (q @ k.transpose(-2, -1) / math.sqrt(8)).masked_fill(~mask, float("-inf")).softmax(-1))
    fast, story = model_without("scaling", code="fast"), model_without("scaling", code="story")
    torch.testing.assert_close(logits_of(fast, IDS), logits_of(story, IDS), rtol=1e-5, atol=1e-5)
    assert not torch.allclose(logits_of(fast, IDS), logits_of(scaled, IDS), atol=1e-4)


def test_part_one_knows_no_switch():
    """Section 9's classes take no --without: the switches are Part II's, applied to a built model."""
    import inspect
    for cls in (LLM.MultiHeadSelfAttention, LLM.EncoderLayer, LLM.TransformerLM):
        assert "without" not in inspect.getsource(cls) and "without" not in str(inspect.signature(cls))
    assert "without" not in {f.name for f in LLM.fields(LLM.Config)}
    assert "without" in {f.name for f in LLM.fields(LLM.RunConfig)}


def test_without_residual_each_block_replaces_its_input():
    layer = model_without("residual").layers[0]
    x = torch.randn(1, 6, 16, generator=torch.Generator().manual_seed(2))
    attended, _ = layer.attention(layer.attention_norm(x))
    expected = layer.feed_forward(layer.feed_forward_norm(attended))  # block(block(x)): nothing added
    torch.testing.assert_close(layer(x)[0], expected)
    with_residual = model_without().layers[0]
    a, _ = with_residual.attention(with_residual.attention_norm(x))
    torch.testing.assert_close(with_residual(x)[0], x + a + with_residual.feed_forward(with_residual.feed_forward_norm(x + a)))


def test_without_layer_norm_every_norm_is_the_identity_and_the_count_says_so():
    model = model_without("layer-norm")
    assert not any(isinstance(m, torch.nn.LayerNorm) for m in model.modules())
    assert isinstance(model.final_norm, torch.nn.Identity) and isinstance(model.layers[1].feed_forward_norm, torch.nn.Identity)
    cfg = tiny_config(without=("layer-norm",))
    V, C, Fd, N = 11, cfg.d_model, cfg.d_ff, cfg.n_layers
    assert LLM.count_parameters(model) == V * C + N * (4 * C * C + 2 * C * Fd + Fd + 5 * C) + C * V + V
    assert LLM.count_parameters(model_without()) - LLM.count_parameters(model) == N * 4 * C + 2 * C
    report = LLM.parameter_report(model, cfg, 11)
    assert "MISMATCH" not in report and "N*(4*C^2 + 2*C*F + F + 5*C)" in report


def test_the_switches_are_checked_and_kept_in_one_order(capsys):
    cfg = LLM.validate(LLM.RunConfig(without=("layer-norm", "causal-mask", "layer-norm")), check_device=False)
    assert cfg.without == ("causal-mask", "layer-norm")
    one_line_error(capsys, TINY_ARGV + ["--without", "attention"], "--without knows", "attention")
    one_line_error(capsys, TINY_ARGV + ["--what-if", "--without", "scaling"], "leave out --without")


# --- a model trained without an idea is labelled so, and keeps it ----------------------------------

@pytest.fixture(scope="module")
def maskless_run(tmp_path_factory):
    return run_into(tmp_path_factory, "maskless", TINY_ARGV + ["--epochs", "2", "--without", "causal-mask", "positions",
                                                              "--pictures", "explorer", "loss", "epochs"])


def test_a_checkpoint_keeps_its_switches_and_every_file_names_them(maskless_run, capsys):
    model, _, cfg, _ = LLM.load_checkpoint(maskless_run / "model.pt", "cpu")
    assert cfg.without == ("causal-mask", "positions")
    assert model.layers[0].attention.causal_mask.all() and not model.positional_encoding.any()
    assert "trained without causal-mask, positions" in (maskless_run / "table.txt").read_text(encoding="utf-8")
    assert "**without causal-mask, positions**" in (maskless_run / "README.md").read_text(encoding="utf-8")
    assert '"without":["causal-mask","positions"]' in (maskless_run / "explorer.html").read_text(encoding="utf-8")
    assert LLM.main(["--generate", "No hay", "--checkpoint", str(maskless_run / "model.pt"), "--max-chars", "5"]) == 0
    one_line_error(capsys, ["--resume", "--out", str(maskless_run), "--without", "scaling"], "--without cannot change")


def test_the_printed_run_names_the_switch_and_explains_its_numbers(maskless_run, capsys):
    out = maskless_run.parent / "printed"
    assert LLM.main(TINY_ARGV + ["--epochs", "1", "--without", "scaling", "--pictures", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "without scaling: no division by sqrt(d_k) in attention (section 9)" in printed
    before = re.search(r"before training: validation loss ([\d.]+); a model that knows nothing and guesses all (\d+) "
                       r"characters evenly scores ln \2 = ([\d.]+)", printed)
    assert before and float(before.group(3)) == pytest.approx(math.log(int(before.group(2))), abs=1e-3)
    assert abs(float(before.group(1)) - float(before.group(3))) < 1.0  # random weights: close to even guesses


def test_the_page_of_a_model_without_every_idea_equals_pytorch(tmp_path_factory):
    """The explorer's JavaScript honours every switch: a model trained without all five."""
    from test_explorer import CHROMIUM_ARGS, Opened, chromium_or_skip  # the same browser setup
    executable = chromium_or_skip()  # or a failure where LLM_BROWSER_TESTS=required
    out = run_into(tmp_path_factory, "ideasless", TINY_ARGV + ["--epochs", "1", "--without", *LLM.IDEAS, "--pictures",
                                                             "explorer"])
    model, tokenizer, cfg, _ = LLM.load_checkpoint(out / "model.pt", "cpu")
    from playwright.sync_api import sync_playwright
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        tab = Opened(browser, out / "explorer.html")
        for text in ("No hay", "Quien mucho abarca"):
            ids = [tokenizer.eol_id] + tokenizer.encode(text)
            with torch.no_grad():
                logits, attention = model(torch.tensor([ids]), return_attention=True)
            assert (torch.tensor(tab.js("t => explorer.logits(t)", text)) - logits[0, -1]).abs().max() < 1e-4
            page = torch.tensor(tab.js("t => explorer.attention(t)", text))
            assert (page - torch.stack([w[0] for w in attention])).abs().max() < 1e-4
            assert (page.triu(1) > 0).any()  # no mask: the future gets weight
        assert "Trained without" in tab.js("document.getElementById('about').textContent") and tab.problems == []
        assert "trained without the mask" in tab.js("document.querySelector('#attention-panel .why').textContent")
        browser.close()


# --- the sentences about the numbers ----------------------------------------------------------------

def epoch(n, train, val, clipped=0.1):
    return {"epoch": n, "train_loss": train, "val_loss": val, "clipped": clipped}


def test_epoch_notes_speak_only_when_the_numbers_call_for_it():
    cfg = LLM.RunConfig()
    notes = LLM.epoch_notes
    assert "below the training loss" in " ".join(notes([epoch(1, 2.2, 2.0)], cfg))
    assert "dropout" not in " ".join(notes([epoch(1, 2.2, 2.0)], cfg))
    assert "dropout (0.1) is on while training" in " ".join(notes([epoch(1, 2.2, 2.0)], LLM.RunConfig(dropout=0.1)))
    assert notes([epoch(1, 2.2, 2.0), epoch(2, 1.9, 1.8)], cfg) == []  # still below: said once
    assert "now above the training loss" in " ".join(notes([epoch(1, 2.2, 2.0), epoch(2, 1.7, 1.75)], cfg))
    growing = [epoch(1, 1.8, 1.81), epoch(2, 1.6, 1.65), epoch(3, 1.4, 1.6)]
    said = " ".join(notes(growing, cfg))
    assert "grew for two epochs, from 0.010 to 0.200" in said and "by heart" in said
    stalled = [epoch(1, 1.8, 1.70), epoch(2, 1.6, 1.72), epoch(3, 1.5, 1.71)]
    assert "has not fallen for two epochs (the best is still 1.700)" in " ".join(notes(stalled, cfg))
    assert "clipped in 80% of the steps" in " ".join(notes([epoch(1, 1.8, 1.9, clipped=0.8)], cfg))
    assert notes([epoch(1, 1.8, 1.9, clipped=0.8)], LLM.RunConfig(clip=0)) == []  # nothing is clipped with --clip 0
    assert notes([epoch(1, 1.9, 1.95), epoch(2, 1.8, 1.85)], cfg) == []  # an ordinary epoch: nothing to say


def test_the_start_note_sets_the_untrained_loss_beside_ln_v():
    assert "ln 73 = 4.290" in LLM.start_note(4.4, 73) and "evenly" in LLM.start_note(4.4, 73)
    assert "confidently wrong" in LLM.start_note(5.5, 73)
    assert "favour common" in LLM.start_note(3.5, 73)


def one_seed(name, idea, history, test_loss, words, sample, sharpness):
    """A switch of --what-if trained with one seed."""
    return LLM.WhatIf(name, idea, [LLM.Seeded(1337, history, test_loss, words, sample, sharpness)])


# --- --what-if --------------------------------------------------------------------------------------

def test_what_if_trains_every_switch_and_writes_its_table_picture_and_sentences(tmp_path, capsys):
    assert LLM.main(TINY_ARGV + ["--epochs", "2", "--what-if", "--seeds", "2", "--out", str(tmp_path)]) == 0
    folder = tmp_path / "what-if"
    report = (folder / "README.md").read_text(encoding="utf-8")
    rows = [line for line in report.splitlines() if line.startswith("| [")]
    assert [re.match(r"\| \[([^]]+)\]", r).group(1) for r in rows] == ["as it is"] + [f"without {i}" for i in LLM.IDEAS]
    for idea in LLM.IDEAS:
        assert f"## Without {idea}" in report
        saved = LLM.load_checkpoint(folder / f"without-{idea}" / "model.pt", "cpu")[2]
        assert saved.without == (idea,)
    assert (folder / "as-it-is" / "model.pt").exists() and (folder / "what_if.png").stat().st_size > 10_000
    seeds = [folder / "without-causal-mask", folder / "seed-1338" / "without-causal-mask"]  # --seed, --seed + 1
    val = [LLM.load_checkpoint(f / "model.pt", "cpu")[3]["training"]["history"][-1]["val_loss"] for f in seeds]
    mean_and_spread = f"{statistics.mean(val):.3f} ± {statistics.stdev(val):.3f}"  # n - 1 in the denominator
    said = report.split("## Without causal-mask")[1].split("##")[0]
    assert mean_and_spread in said and mean_and_spread in rows[1] and "Over 2 seeds the change, " in said
    assert "mean over the 2 seeds ± their standard deviation" in report
    assert not (tmp_path / "model.pt").exists()  # the class's own run is left alone
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("what if: 12 trainings (6 runs x 2 seeds, 2 epochs each): about ") and "wrote" in printed[-1]


def test_a_difference_counts_only_when_it_is_larger_than_what_seeds_change():
    history = lambda val: [{"epoch": 1, "train_loss": val, "val_loss": val, "clipped": 0.0}]  # noqa: E731
    switch = lambda idea, vals: LLM.WhatIf(idea, idea, [LLM.Seeded(k, history(v), None, (1, 2), "", 0.5)  # noqa: E731
                                                       for k, v in enumerate(vals)])
    base = switch("", [1.80, 1.82, 1.84])  # mean 1.82, spread 0.02
    real, noise = switch("residual", [2.00, 2.02, 2.04]), switch("scaling", [1.81, 1.85, 1.89])
    assert (base.mean(LLM.VAL), base.spread(LLM.VAL)) == (pytest.approx(1.82), pytest.approx(0.02))
    assert base.shown(LLM.VAL) == "1.820 ± 0.020"
    assert "the change, +0.200, is more than the two spreads added (0.020 and 0.020)" in LLM.beyond_noise(real, base)
    assert "the change, +0.030, is within the two spreads added (0.040 and 0.020)" in LLM.beyond_noise(noise, base)
    assert "One seed only" in LLM.beyond_noise(switch("positions", [1.9]), switch("", [1.8]))
    steady = switch("positions", [1.83, 1.85, 1.87])  # +0.030: above either spread, not both added
    assert "the change, +0.030, is within the two spreads added (0.020 and 0.020)" in LLM.beyond_noise(steady, base)


def test_the_loss_picture_says_what_its_curves_mean(tiny_run):
    gallery = (tiny_run / "README.md").read_text(encoding="utf-8")
    text = gallery.split("## loss.png")[1].split("##")[0]
    assert re.search(r"Before training the model scored [\d.]+; even guesses over the \d+ characters score ln \d+", text)
    assert "In the last epoch the validation loss" in text


def test_the_lessons_use_only_the_numbers_there_are():
    """A run with --test-fraction 0 has no test loss: the sentences leave it out rather than fail."""
    history = lambda train, val, clipped=0.2: [{"epoch": 1, "train_loss": train, "val_loss": val, "clipped": clipped}]  # noqa: E731
    base = one_seed("as it is", "", history(1.9, 1.8), None, (40, 50), "No hay", 0.4)
    cfg = LLM.RunConfig()
    for idea, numbers in (("causal-mask", (0.01, 0.02)), ("positions", (2.0, 1.98)), ("scaling", (1.9, 1.86)),
                          ("residual", (2.3, 2.25)), ("layer-norm", (1.75, 1.72, 0.8))):
        r = one_seed(f"without {idea}", idea, history(*numbers), None, (10, 50), "No hay", 0.7)
        said = LLM.what_if_lesson(r, base, cfg)
        assert f"{numbers[1]:.3f}" in said and "None" not in said, idea
    assert "copy" in LLM.what_if_lesson(one_seed("m", "causal-mask", history(0.01, 0.02), None, (0, 6), "", 0.5),
                                        base, cfg)
    assert "lower, at this size" in LLM.what_if_lesson(one_seed("n", "layer-norm", history(1.7, 1.7, 0.8), None,
                                                                   (1, 2), "", 0.5), base, cfg)


def test_the_report_names_a_data_file_whose_name_is_not_utf8_in_utf8():
    """Linux allows any bytes in a file name: the report writes a stray one as \\xNN, and stays UTF-8."""
    history = [{"epoch": 1, "train_loss": 1.9, "val_loss": 1.8, "clipped": 0.2}]
    base = one_seed("as it is", "", history, None, (40, 50), "No hay", 0.4)
    report = LLM.what_if_report([base], LLM.RunConfig(data=os.fsdecode(b"/tmp/prov\xff.txt")), 3.0)
    assert "on `prov\\xff.txt`" in report and report.encode("utf-8")


def test_what_if_stopped_says_how_many_runs_finished_and_what_the_stopped_one_keeps(tmp_path, monkeypatch):
    """SIGTERM in the third run: its own line (what its model.pt keeps) and the what-if's (2 of 6)."""
    real_run, calls, said = LLM.run, [], []

    def stopped_in_the_third(cfg, log=print, **kwargs):
        calls.append(cfg.out)
        if len(calls) == 3:
            log("\ntraining stopped by SIGTERM in epoch 1: no checkpoint was written yet")  # as train_saying_what_is_kept
            raise LLM.Terminated(15)
        return real_run(cfg, log=log, **kwargs)

    monkeypatch.setattr(LLM, "run", stopped_in_the_third)
    with pytest.raises(LLM.Terminated):
        LLM.what_if(tiny_config(epochs=1, max_chars=5, seeds=1, data=str(LLM.Path(LLM.__file__).parent / "refranes.txt"),
                                out=str(tmp_path)), log=said.append)
    assert "      training stopped by SIGTERM in epoch 1: no checkpoint was written yet" in said
    assert said[-1].startswith(f"what if: stopped in the run without {LLM.IDEAS[1]}; 2 of {1 + len(LLM.IDEAS)} runs "
                               f"finished") and not (tmp_path / "what-if" / "README.md").exists()


def test_the_gallery_asks_each_switchs_question_before_it_answers():
    """outputs/what-if/README.md opens with a 'predict first' question per switch, in English and
    Spanish, and only then the table and the sentences with the run's numbers."""
    history = [{"epoch": 1, "train_loss": 1.9, "val_loss": 1.8, "clipped": 0.2}]
    runs = [one_seed("as it is", "", history, None, (40, 50), "No hay", 0.4)]
    runs += [one_seed(f"without {idea}", idea, history, None, (10, 50), "No hay", 0.7) for idea in LLM.WITHOUT_MEANS]
    report = LLM.what_if_report(runs, LLM.RunConfig(), 3.0)
    asked, answered = report.index("## Predict first"), report.index("## The answers")
    assert asked < answered < report.index("| run | train loss") < report.index("## Without causal-mask")
    questions = report[asked:answered]
    for idea, (english, spanish) in LLM.PREDICT_FIRST.items():
        assert f"- **Without {idea}.** {english} *{spanish}*" in questions
        assert "?" in english and "¿" in spanish
    assert set(LLM.PREDICT_FIRST) == set(LLM.WITHOUT_MEANS)
