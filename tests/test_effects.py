"""Effects, not words: each test checks what a feature does against a reference written here,
never against the program's own message about it. Dropout on while measuring or writing,
every process of torchrun training on the same batch, a chat setting echoed but not applied,
fine-tuning that re-randomises what it loaded, a table in nats that says bits, a line cut one
token short: each of these makes a test below fail (tests/mutate.py plants them)."""
import copy
import io
import math
import random
import re
import subprocess
import sys

import pytest
import torch
import torch.nn.functional as F

import LLM
from conftest import PROVERBS, ROOT, TINY_ARGV, kept_by_definition, tiny_config, tokenizer_of

LINES = ["Más vale tarde que nunca.", "Quien calla, otorga.", "No hay mal que por bien no venga.",
         "A quien madruga, Dios le ayuda.", "Perro ladrador, poco mordedor."]


def loss_by_hand(model, split) -> float:
    """Mean -log p(target) over every real target of a split, one line at a time, in float64."""
    total, count = 0.0, 0
    with torch.no_grad():
        for inputs, targets, length in zip(split.inputs, split.targets, split.lengths):
            logits = model(inputs[None, :length])[0].double()  # (T, V)
            total -= float(logits.log_softmax(-1)[torch.arange(length), targets[:length]].sum())
            count += int(length)
    return total / count


def dropout_model(p=0.5, **changes):
    torch.manual_seed(0)
    return LLM.TransformerLM(tokenizer_of(LINES).vocab_size, tiny_config(dropout=p, **changes))


# --- Dropout: on while training, off while measuring and writing ------------------------------

def test_evaluate_turns_dropout_off_and_weighs_every_target_once():
    model = dropout_model().train()
    split = LLM.encode_lines(LINES, tokenizer_of(LINES), 24)
    measured = [LLM.evaluate(model, split, batch_size=2, device="cpu") for _ in range(3)]
    assert model.training  # put back as it was
    assert measured[0] == measured[1] == measured[2]  # no random dropout mask
    reference = loss_by_hand(model.eval(), split)  # lines of different lengths in batches of 2
    assert measured[0] == pytest.approx(reference, rel=1e-6)
    LLM.evaluate(model, split, batch_size=2, device="cpu")
    assert not model.training  # a model in eval mode stays so: its next forward pass has no dropout


def test_generate_turns_dropout_off_and_reads_the_last_context_tokens():
    model = dropout_model(context=8).train()
    tok = tokenizer_of(LINES)
    greedy = LLM.Sampling(greedy=True, max_chars=12)
    prompt = "No hay mal que"  # longer than the context: the window slides
    written = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # dropout would draw from here
        trace = []
        written.append(LLM.generate(model, tok, prompt, greedy, trace=trace))
    assert written[0] == written[1] and model.training
    ids, eol = [tok.eol_id] + tok.encode(prompt), tok.eol_id  # the greedy loop, written here
    with torch.no_grad():
        model.eval()
        while len(ids) - 1 - len(prompt) < 12:
            next_id = int(model(torch.tensor([ids[-8:]]))[0, -1].argmax())
            if next_id == eol:
                break
            ids.append(next_id)
    assert written[0] == tok.decode(ids[1:])
    assert all(len(c.window) == 8 for c in trace)
    LLM.generate(model.eval(), tok, prompt, greedy)
    assert not model.training  # a model in eval mode stays so


def test_a_checkpoint_loads_ready_to_predict_with_dropout_off(tmp_path):
    """A model saved with dropout 0.5 comes back in eval mode: the same logits under two seeds,
    the saved model's own in eval mode."""
    model, tok = dropout_model(p=0.5), tokenizer_of(LINES)
    LLM.save_checkpoint(tmp_path / "model.pt", model, tiny_config(dropout=0.5), tok, {"epoch": 1, "val_loss": 2.0})
    loaded = LLM.load_checkpoint(tmp_path / "model.pt", "cpu")[0]
    idx = torch.tensor([tok.encode(LINES[1])])
    readings = []
    for seed in (1, 2):
        torch.manual_seed(seed)
        readings.append(loaded(idx))
    assert torch.equal(readings[0], readings[1]) and torch.equal(readings[0], model.eval()(idx))


def forward_by_hand(model, idx, p):
    """The model's forward pass in training, composed here with F.dropout where the paper puts it:
    after the embeddings, after attention and after the feed-forward network, in that order."""
    x = F.dropout(model.embed(idx), p, training=True)
    for layer in model.layers:
        attended, _ = layer.attention(layer.attention_norm(x))
        x = x + F.dropout(attended, p, training=True)
        x = x + F.dropout(layer.feed_forward(layer.feed_forward_norm(x)), p, training=True)
    return model.lm_head(model.final_norm(x))


def test_epoch_pictures_are_drawn_every_snapshot_th_epoch(monkeypatch, tmp_path):
    drawn = []
    monkeypatch.setattr(LLM.EpochPictures, "draw", lambda self, model, record: drawn.append(record["epoch"]))
    argv = TINY_ARGV + ["--epochs", "5", "--snapshot", "2", "--patience", "0", "--pictures", "epochs", "--out", str(tmp_path)]
    assert LLM.main(argv) == 0
    assert drawn == [2, 4]


def test_a_training_forward_pass_drops_out_where_the_paper_does():
    model = dropout_model(p=0.3).train()
    idx = torch.tensor([LLM.CharTokenizer("".join(LINES)).encode(LINES[0][:20])])
    torch.manual_seed(7)
    ours = model(idx)
    torch.manual_seed(7)
    theirs = forward_by_hand(model, idx, 0.3)
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-6)
    assert not torch.equal(model(idx), model(idx))  # a new mask every pass


def test_the_pictures_and_eval_read_the_model_with_dropout_off():
    """attention_layer<L>.png's weights and --eval's completions come from the model as it
    predicts: with dropout 0.5 in training mode, two readings under different seeds agree with
    the model in eval mode (and the attention maps leave the model's mode as they found it)."""
    model = dropout_model(p=0.5)
    tok = tokenizer_of(LINES)
    readings = []
    for seed in (1, 2):
        model.train()
        torch.manual_seed(seed)
        readings.append(LLM.attention_maps(model, tok, LINES[2])[1])
        assert model.training
    reference = LLM.attention_maps(model.eval(), tok, LINES[2])[1]
    for first, second, ours in zip(*readings, reference):
        assert torch.equal(first, ours) and torch.equal(second, ours)
    cfg = tiny_config(dropout=0.5, mode="line", val_fraction=0.2, test_fraction=0.2)
    data = LLM.prepare_any_text("\n".join(f"{line} {n}" for n in range(4) for line in LINES), cfg)
    torch.manual_seed(0)
    model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
    reports = []
    for seed in (1, 2, 3):
        torch.manual_seed(seed)
        reports.append(LLM.completion_report(model.train() if seed < 3 else model.eval(), data, cfg, "cpu"))
    assert reports[0] == reports[1] == reports[2]


def trained_weights(dropout: float, global_seed: int, epochs=1):
    data = LLM.prepare_any_text("\n".join(LINES * 8), tiny_config(dropout=dropout, epochs=epochs, batch_size=8, mode="line"))
    model = LLM.TransformerLM(data.tokenizer.vocab_size, tiny_config(dropout=dropout))
    model.load_state_dict(dropout_model(dropout).state_dict())  # the same start whatever the seed
    torch.manual_seed(global_seed)  # what dropout draws from; the batch order has its own generator
    LLM.train(model, data, tiny_config(dropout=dropout, epochs=epochs, batch_size=8, mode="line"), "cpu", log=lambda m: None)
    return torch.cat([p.detach().flatten() for p in model.parameters()])


def test_training_draws_dropout_masks_and_nothing_else_at_random():
    assert torch.equal(trained_weights(0.0, 1), trained_weights(0.0, 2))  # no dropout: the seed of the order alone
    assert not torch.equal(trained_weights(0.3, 1), trained_weights(0.3, 2))  # dropout: the masks differ


class BatchRecorder(LLM.Hooks):
    def __init__(self):
        self.epochs = []

    def batches(self, batch_stream):
        self.epochs.append([])
        for inputs, targets in batch_stream:
            self.epochs[-1].append(inputs.clone())
            yield inputs, targets


def test_every_epoch_takes_the_lines_in_a_new_order_set_by_the_seed():
    cfg = tiny_config(epochs=3, batch_size=4, patience=0, mode="line")
    data = LLM.prepare_any_text("\n".join(f"{line} {n}" for n in range(6) for line in LINES), cfg)
    runs = []
    for _ in range(2):
        hooks = BatchRecorder()
        torch.manual_seed(0)
        LLM.train(LLM.TransformerLM(data.tokenizer.vocab_size, cfg), data, cfg, "cpu", hooks, log=lambda m: None)
        runs.append(hooks.epochs)
    first, again = runs
    assert all(torch.equal(a, b) for one, two in zip(first, again) for a, b in zip(one, two))  # same seed, same order
    orders = [torch.cat([b.flatten() for b in epoch]) for epoch in first]
    assert not torch.equal(orders[0], orders[1]) and not torch.equal(orders[1], orders[2])
    every = sorted(map(tuple, data.train_split.inputs.tolist()))  # each epoch: every line once
    for epoch in first:
        width = data.train_split.inputs.shape[1]
        rows = [tuple(F.pad(row, (0, width - len(row)), value=data.tokenizer.eol_id).tolist())
                for batch in epoch for row in batch]
        assert sorted(rows) == every


def test_an_epochs_record_weighs_each_target_once_and_each_step_once(monkeypatch):
    """train_loss is the mean over the epoch's real targets (a batch of long lines weighs more
    than one of short lines), grad_norm the mean of the steps' norms before clipping, clipped
    the share of steps clipped, lr the last step's: each recomputed here from the steps."""
    steps = []  # (mean loss of the batch, its real targets, norm before clipping, lr) per step
    real = LLM.train_step

    def recording(model, optimizer, inputs, targets, lr, clip, autocast):
        loss, norm = real(model, optimizer, inputs, targets, lr, clip, autocast)
        steps.append((loss.item(), int((targets != LLM.IGNORE).sum()), norm.item(), lr))
        return loss, norm

    monkeypatch.setattr(LLM, "train_step", recording)
    lines = [line[:n] for line in LINES for n in (4, 9, 30)]  # lengths that differ from batch to batch
    cfg = tiny_config(epochs=2, batch_size=3, patience=0, mode="line", clip=0.5, val_fraction=0.2, test_fraction=0.0)
    data = LLM.prepare_any_text("\n".join(lines * 2), cfg)
    torch.manual_seed(0)
    history = LLM.train(LLM.TransformerLM(data.tokenizer.vocab_size, cfg), data, cfg, "cpu", log=lambda m: None)
    per_epoch = len(steps) // 2
    assert per_epoch == math.ceil(len(data.train_split) / 3) and len(history) == 2
    for k, (record, epoch) in enumerate(zip(history, (steps[:per_epoch], steps[per_epoch:]))):
        losses, counts, norms, rates = zip(*epoch)
        assert len(set(counts)) > 1  # the weighting matters here
        assert record["train_loss"] == pytest.approx(sum(l * n for l, n in zip(losses, counts)) / sum(counts), rel=1e-5)
        assert record["grad_norm"] == pytest.approx(sum(norms) / len(norms), rel=1e-5)
        assert record["clipped"] == pytest.approx(sum(g > 0.5 for g in norms) / len(norms))
        assert record["lr"] == rates[-1] and record["step"] == per_epoch * (k + 1)


# --- Teacher forcing: a line longer than the context -------------------------------------------

def test_a_line_longer_than_the_context_is_cut_to_context_plus_one_tokens():
    tok = tokenizer_of(["abcdefghij"])
    split = LLM.encode_lines(["abcdefghij", "ab"], tok, context=5)
    E = tok.eol_id
    a, b, c, d, e = (tok.ids[ch] for ch in "abcde")
    assert split.inputs.shape == (2, 5)  # the context, exactly
    assert split.inputs[0].tolist() == [E, a, b, c, d] and split.targets[0].tolist() == [a, b, c, d, e]
    assert split.lengths.tolist() == [5, 3] and split.targets[1].tolist() == [a, b, E, LLM.IGNORE, LLM.IGNORE]
    full = LLM.encode_lines(["abcd"], tok, context=5)  # ⏎ abcd ⏎: 6 tokens, context + 1, not cut
    assert full.targets[0].tolist() == [a, b, c, d, E]


# --- Sampling: top-k and top-p together, the draw, the entropy ---------------------------------

def test_top_k_and_top_p_together_keep_what_the_definition_keeps():
    generator = torch.Generator().manual_seed(3)
    for trial in range(300):
        logits = torch.randn(12, generator=generator) * 3
        sampling = LLM.Sampling(temperature=[0.5, 1.0, 1.7][trial % 3], top_k=trial % 6, top_p=[1.0, 0.9, 0.6, 0.3][trial % 4])
        draws = torch.Generator().manual_seed(trial)
        choice = LLM.choose_next(logits, sampling, draws)
        expected = kept_by_definition(logits, sampling.temperature, sampling.top_k, sampling.top_p)
        assert choice.kept == int((expected > 0).sum()), (trial, sampling)
        u = float(torch.rand((), generator=torch.Generator().manual_seed(trial)))  # the u generate() drew
        order = sorted(range(12), key=lambda i: -float(expected[i]))[:choice.kept]
        total, pick = 0.0, order[-1]
        for i in order:  # the first kept candidate whose cumulative share exceeds u
            total += float(expected[i])
            if total > u:
                pick = i
                break
        assert choice.id == pick, (trial, sampling)


def test_the_entropy_of_table_txt_is_in_bits_as_worked_out_by_hand():
    tok = tokenizer_of(["ab"])
    logits = torch.tensor([0.5, 0.25, 0.25]).log()  # p = 1/2, 1/4, 1/4: H = 1/2 + 2 x 1/4 x 2 = 1.5 bits
    choice = LLM.choose_next(logits, LLM.Sampling(greedy=True), torch.Generator())
    sample = LLM.Sample("", "a", "", [LLM.replace(choice, position=1, window=[tok.eol_id])])
    table = LLM.sampling_table([sample], tiny_config(greedy=True), tok)
    assert "entropy 1.50 bits" in table  # in nats it would read 1.04


def rows_of(block: str):
    return re.findall(r"^    ([* ])\s+(\d+)\s+(\S+)\s+(-?[\d.]+)\s+([\d.]+)\s+([\d.]+)$", block, re.M)


def test_table_txt_shows_the_models_own_softmax_for_each_context(tiny_run):
    model, tok, cfg, _ = LLM.load_checkpoint(tiny_run / "model.pt", "cpu")
    text = (tiny_run / "table.txt").read_text(encoding="utf-8")
    unshow = lambda s: s.replace("⏎", "\n").replace("␣", " ")  # noqa: E731
    blocks = text.split("\nstep ")[1:]
    assert len(blocks) >= 10
    for block in blocks:
        context = unshow(re.search(r"context: (.*)", block).group(1))
        with torch.no_grad():
            logits = model(torch.tensor([tok.encode(context)]))[0, -1].double()
        p = torch.softmax(logits / cfg.temperature, -1)
        for mark, rank, shown, logit, prob, cumulative in rows_of(block):
            i = tok.ids[unshow(shown)]
            assert float(logit) == pytest.approx(float(logits[i]), abs=6e-4)
            assert float(prob) == pytest.approx(float(p[i]), abs=6e-5)
        entropy = float(-(p * p.log2()).sum())
        assert float(re.search(r"entropy ([\d.]+) bits", block).group(1)) == pytest.approx(entropy, abs=6e-3)


# --- The chat's sampling commands change the sampling they name --------------------------------

def test_the_chats_sampling_commands_change_how_it_samples(trained, monkeypatch):
    drawn = []  # (the sampling used, the choice made) for every token the chat writes
    real = LLM.choose_next

    def recording(logits, sampling, generator):
        choice = real(logits, sampling, generator)
        drawn.append((LLM.replace(sampling), logits.clone(), choice))
        return choice

    monkeypatch.setattr(LLM, "choose_next", recording)
    answers = {}
    for command in ["", "/temp 0.5", "/topk 5", "/topk 0\n/topp 0.6", "/greedy"]:
        drawn.clear()
        typed = (command + "\n" if command else "") + "No hay\nquit\n"
        LLM.chat(tiny_config(max_chars=15), trained, None, io.StringIO(typed), lambda m: None)
        answers[command] = list(drawn)
        assert drawn
    for sampling, logits, choice in answers["/temp 0.5"]:  # softmax(logits / 0.5)
        torch.testing.assert_close(choice.probs.double(), torch.softmax(logits.double() / 0.5, -1), rtol=0, atol=1e-6)
    cfg = tiny_config()
    typed = dict(temperature=cfg.temperature, top_k=cfg.top_k, top_p=cfg.top_p)  # --chat's own settings
    for command, options in [("", {}), ("/temp 0.5", dict(temperature=0.5)), ("/topk 5", dict(top_k=5)),
                             ("/topk 0\n/topp 0.6", dict(top_k=0, top_p=0.6))]:
        for sampling, logits, choice in answers[command]:
            expected = kept_by_definition(logits, **{**typed, **options})
            assert choice.kept == int((expected > 0).sum()) and expected[choice.id] > 0, command
    assert all(choice.kept == 5 for _, _, choice in answers["/topk 5"])  # --chat's own top-k is 3
    assert all(choice.kept < len(logits) for _, logits, choice in answers["/topk 0\n/topp 0.6"])  # top-p alone cuts
    for sampling, logits, choice in answers["/greedy"]:
        assert choice.u is None and choice.id == int(logits.argmax())


def test_the_chats_train_goes_on_at_a_fraction_of_the_learning_rate(trained, tmp_path, monkeypatch):
    """/train 2: two epochs, at the first run's rate divided by --chat-lr-divisor from the first
    step, and each epoch holds the typed line --chat-weight times among the corpus's lines."""
    rates, targets_seen = [], []
    real = LLM.train_step

    def recording(model, optimizer, inputs, targets, lr, clip, autocast):
        rates.append(lr)
        targets_seen.append(targets.clone())
        return real(model, optimizer, inputs, targets, lr, clip, autocast)

    monkeypatch.setattr(LLM, "train_step", recording)
    copy = tmp_path / "model.pt"
    copy.write_bytes(trained.read_bytes())
    typed = "Zorro viejo no cae en la trampa."
    LLM.chat(tiny_config(), copy, None, io.StringIO(f"{typed}\n/train 2\nquit\n"), lambda m: None)
    _, tok, first, _ = LLM.load_checkpoint(trained, "cpu")
    assert rates and max(rates) == pytest.approx(first.lr / tiny_config().chat_lr_divisor)  # no warm-up: the peak at once
    line = torch.tensor(tok.encode(typed) + [tok.eol_id])  # its targets: the line, then ⏎
    seen = sum(int((t[:, :len(line)] == line).all(-1).sum()) for t in targets_seen if t.shape[1] >= len(line))
    rows = sum(len(t) for t in targets_seen)  # each batch (B, T) cut to its longest line
    lines = len(LLM.prepare_any_text(PROVERBS.read_text(encoding="utf-8"), first).train_split)
    assert seen == 2 * tiny_config().chat_weight and rows == 2 * (lines + tiny_config().chat_weight)


# --- Fine-tuning and resuming start from the checkpoint's weights -------------------------------

def weights_at_the_first_step(monkeypatch, argv):
    """The model's state_dict as the first optimizer step of a run starts, and its optimizer
    (under "adam")."""
    seen = []
    real = LLM.train_step

    def recording(model, optimizer, *args):
        if not seen:
            seen.append({k: v.detach().clone() for k, v in model.state_dict().items()})
            seen[0]["adam"] = copy.deepcopy(optimizer)
        return real(model, optimizer, *args)

    monkeypatch.setattr(LLM, "train_step", recording)
    assert LLM.main(argv) == 0
    return seen[0]


def test_new_characters_get_the_rows_of_a_fresh_model_with_the_seed(trained):
    """extend_vocabulary's new rows are those a fresh model of the bigger vocabulary gets from
    --seed, whatever was drawn before: fine-tuning is reproducible."""
    old, tok, cfg, _ = LLM.load_checkpoint(trained, "cpu")
    grown = []
    for before in (1, 2):
        torch.manual_seed(before)
        torch.rand(before)  # whatever the program drew earlier
        grown.append(LLM.extend_vocabulary(old, tok, "Ça va, ça vient.", cfg))
    (first, bigger, added), (second, _, _) = grown
    torch.manual_seed(cfg.seed)
    fresh = LLM.build_model(bigger.vocab_size, cfg).state_dict()
    new = torch.tensor([bigger.ids[c] for c in added])
    for name in ("token_embedding.weight", "lm_head.weight", "lm_head.bias"):
        assert torch.equal(first.state_dict()[name][new], fresh[name][new]), name
        assert torch.equal(second.state_dict()[name], first.state_dict()[name]), name


def test_fine_tuning_starts_from_the_checkpoints_weights(trained, tmp_path, monkeypatch):
    source, source_tok, _, _ = LLM.load_checkpoint(trained, "cpu")
    text = tmp_path / "new.txt"
    text.write_text("Ça va, ça vient.\nNo hay mal que dure cien años.\n" * 10, encoding="utf-8")
    start = weights_at_the_first_step(monkeypatch, ["--init-from", str(trained), "--data", str(text), "--epochs", "1",
                                                    "--snapshot", "0", "--pictures", "--out", str(tmp_path / "ft")])
    _, tok, _, _ = LLM.load_checkpoint(tmp_path / "ft" / "model.pt", "cpu")
    known = torch.tensor([tok.ids[c] for c in source_tok.chars])  # the old characters' new ids
    for name, value in source.state_dict().items():
        mine = start[name][known] if name in ("token_embedding.weight", "lm_head.weight", "lm_head.bias") else start[name]
        assert torch.equal(mine, value), name


def test_resuming_starts_from_the_checkpoints_weights_and_adam_state(tmp_path, monkeypatch):
    out = tmp_path / "run"
    assert LLM.main(TINY_ARGV + ["--epochs", "1", "--dropout", "0.2", "--pictures", "--out", str(out)]) == 0
    payload = torch.load(out / "model.pt", weights_only=True)
    start = weights_at_the_first_step(monkeypatch, ["--resume", "--epochs", "2", "--out", str(out)])
    for name, value in payload["model"].items():
        assert torch.equal(start[name], value), name
    saved, adam = payload["training"]["optimizer"], start["adam"]
    assert adam.t == saved["t"] > 0
    for mine, theirs in zip(adam.m + adam.v, saved["m"] + saved["v"]):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs))


def test_a_run_resumed_with_dropout_ends_as_one_never_stopped(tmp_path, monkeypatch):
    """Dropout draws from the random state: --resume must put back the checkpoint's."""
    argv = TINY_ARGV + ["--dropout", "0.3", "--pictures", "--lr", "3e-3", "--epochs", "3"]
    assert LLM.main(argv + ["--out", str(tmp_path / "straight")]) == 0
    steps_per_epoch = math.ceil(len(LLM.prepare_any_text(LLM.read_text(PROVERBS), LLM.RunConfig()).train_split) / 64)
    real = LLM.learning_rate

    def ctrl_c_in_epoch_3(step, total, cfg):
        if step == 2 * steps_per_epoch:  # the first step of epoch 3
            raise KeyboardInterrupt
        return real(step, total, cfg)

    monkeypatch.setattr(LLM, "learning_rate", ctrl_c_in_epoch_3)
    assert LLM.main(argv + ["--out", str(tmp_path / "stopped")]) == 130
    monkeypatch.setattr(LLM, "learning_rate", real)
    assert LLM.main(["--resume", "--out", str(tmp_path / "stopped")]) == 0
    a = torch.load(tmp_path / "straight" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "stopped" / "model.pt", weights_only=True)
    assert a["epoch"] == b["epoch"] == 3
    for name in a["model"]:
        torch.testing.assert_close(a["model"][name], b["model"][name], rtol=0, atol=1e-6)


def test_a_resumed_run_keeps_the_checkpoints_epoch_until_one_is_better(tmp_path, monkeypatch):
    """The checkpoint's validation loss is the one to beat: a resumed epoch that measures worse
    leaves model.pt as it was, and the run ends with the checkpoint's weights."""
    out = tmp_path / "run"
    assert LLM.main(TINY_ARGV + ["--epochs", "1", "--pictures", "--out", str(out)]) == 0
    before = torch.load(out / "model.pt", weights_only=True)
    real = LLM.evaluate
    worse = lambda model, split, *args, **kwargs: before["val_loss"] + 1.0  # noqa: E731
    monkeypatch.setattr(LLM, "evaluate", worse)
    assert LLM.main(["--resume", "--epochs", "2", "--out", str(out)]) == 0
    monkeypatch.setattr(LLM, "evaluate", real)
    after = torch.load(out / "model.pt", weights_only=True)
    assert after["epoch"] == 1 and after["val_loss"] == before["val_loss"]
    for name, value in before["model"].items():
        assert torch.equal(after["model"][name], value), name


# --- Mixed precision and explorer snapshots ----------------------------------------------------

def test_bf16_runs_the_forward_pass_in_bfloat16_and_fp32_does_not():
    model = dropout_model(p=0.0).eval()
    idx = torch.tensor([[1, 2, 3, 4]])
    with LLM.mixed_precision(tiny_config(precision="bf16"), torch.device("cpu")):
        assert model(idx).dtype == torch.bfloat16
    with LLM.mixed_precision(tiny_config(precision="fp32"), torch.device("cpu")):
        assert model(idx).dtype == torch.float32


def test_snapshot_epochs_are_every_snapshot_th_epoch_or_spread_to_fit():
    assert LLM.snapshot_epochs(tiny_config(epochs=7, snapshot=2), 1000) == {2, 4, 6}
    assert LLM.snapshot_epochs(tiny_config(epochs=7, snapshot=0), 1000) == set()
    room = LLM.EXPLORER_SNAPSHOT_BYTES // (2 * 3)  # parameters so many that `room` snapshots fit
    spread = LLM.snapshot_epochs(tiny_config(epochs=10 * room, snapshot=1), LLM.EXPLORER_SNAPSHOT_BYTES // (2 * room))
    assert len(spread) == room and min(spread) == 1 and max(spread) == 10 * room


# --- Several processes: each takes its own batches ---------------------------------------------

def test_more_processes_than_an_epochs_batches_are_refused_and_as_many_allowed():
    cfg = tiny_config(mode="line", val_fraction=0.2, test_fraction=0.0)
    data = LLM.prepare_any_text("\n".join(f"{line} {n}" for n in range(4) for line in LINES), cfg)
    lines = len(data.train_split)
    LLM.check_a_batch_for_every_process(data, LLM.replace(cfg, batch_size=lines // 2), LLM.Ranks(0, 2))  # 2 batches
    with pytest.raises(LLM.UserError, match="2 processes take 2 batches a step"):
        LLM.check_a_batch_for_every_process(data, LLM.replace(cfg, batch_size=lines), LLM.Ranks(0, 2))  # 1 batch


def test_each_process_takes_its_own_batches_and_together_every_batch_once():
    batches = list(range(7))  # stand-ins for (inputs, targets)
    shares = [list(LLM.my_share(iter(batches), LLM.Ranks(rank, 3))) for rank in range(3)]
    assert shares == [[0, 3], [1, 4], [2, 5]]  # the unfinished group (6) dropped by all, so all take 2 steps
    assert list(LLM.my_share(iter(batches), LLM.Ranks(0, 1))) == batches


@pytest.mark.slow  # torchrun starts three processes: CI runs it with -m slow
def test_two_processes_train_as_one_process_on_their_two_batches_together(tmp_path):
    """Lines of one length, so that the mean of the two processes' mean losses is the mean over
    both batches; a training split of exactly two batches of B, so that one process with 2B
    takes the same lines in its one step an epoch. With --eps 1 Adam's step is nearly lr x g,
    smooth in the gradient: with the default 1e-8 its first step is lr x sign(g), and a gradient
    near 0 flips with the order of a sum (2 lr apart for a rounding)."""
    rng = random.Random(0)
    lines = ["".join(rng.choice("abcdefgh") for _ in range(11)) + "." for _ in range(44)]
    text = tmp_path / "even.txt"
    text.write_text("\n".join(lines) + "\n", encoding="utf-8")
    n_train = len(LLM.prepare_any_text(text.read_text(), LLM.RunConfig()).train_split)
    assert n_train % 2 == 0
    common = ["--data", str(text), "--epochs", "2", "--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32",
              "--dropout", "0", "--snapshot", "0", "--pictures", "--prompts", "ab", "--max-chars", "5",
              "--eps", "1", "--lr", "0.5"]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                          str(ROOT / "LLM.py"), *common, "--batch-size", str(n_train // 2), "--out", str(tmp_path / "two")],
                         capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert two.returncode == 0, two.stderr[-2000:]
    assert LLM.main(common + ["--batch-size", str(n_train), "--out", str(tmp_path / "one")]) == 0
    a = torch.load(tmp_path / "two" / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "one" / "model.pt", weights_only=True)
    for name in a["model"]:
        torch.testing.assert_close(a["model"][name], b["model"][name], rtol=0, atol=1e-6)  # one batch twice: 1e-2 apart
    two_epochs, one_epochs = a["training"]["history"], b["training"]["history"]
    assert [r["epoch"] for r in two_epochs] == [r["epoch"] for r in one_epochs] == [1, 2]
    for mine, theirs in zip(two_epochs, one_epochs):  # the sums over both processes: the one process's numbers
        assert mine["step"] == theirs["step"] and mine["lr"] == pytest.approx(theirs["lr"], rel=1e-12)
        for key in ("train_loss", "val_loss", "grad_norm", "clipped"):
            assert mine[key] == pytest.approx(theirs[key], rel=1e-5, abs=1e-6), key
