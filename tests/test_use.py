"""Keeping, resuming, fine-tuning, evaluating and talking to the model; the two data modes;
the training craft (clipping, bf16, AdamW, early stopping, NaN stop); bad input."""
import io
import math
import re
import shutil
import subprocess
import sys

import pytest
import torch

import LLM
from conftest import ROOT, one_line_error, run_into

TINY = ["--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32", "--snapshot", "0",
        "--max-chars", "20", "--prompts", "No hay"]


def tiny_config(**changes) -> LLM.Config:
    values = dict(d_model=16, n_heads=2, n_layers=1, d_ff=32, context=24, seed=0, snapshot=0)
    values.update(changes)
    return LLM.Config(**values)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """The checkpoint of a tiny model trained 3 epochs on the proverbs."""
    return run_into(tmp_path_factory, "trained", TINY + ["--epochs", "3"]) / "model.pt"


def weights(path):
    return torch.load(path, weights_only=True)["model"]


# --- data: line mode and stream mode --------------------------------------------------------

def test_auto_mode_reads_proverbs_as_lines_and_a_book_as_a_stream():
    proverbs = LLM.read_text(ROOT / "refranes.txt")
    assert LLM.choose_mode(proverbs, 80)[0] == "line"
    book = "Capítulo uno\n\nEra una noche oscura.\nLlovía.\n\nFin del capítulo.\n"
    assert LLM.choose_mode(book, 80) == ("stream", "2 blank lines: paragraphs of a running text")
    long_lines = "\n".join("palabra " * 20 for _ in range(5))  # 160 characters a line
    assert LLM.choose_mode(long_lines, 80)[0] == "stream"


def test_stream_split_is_three_contiguous_blocks_of_the_text():
    text = "".join(f"línea número {i}, con algo de texto.\n" for i in range(60))
    data = LLM.prepare_data(text, tiny_config(mode="stream", val_fraction=0.1, test_fraction=0.2))
    assert data.mode == "stream" and data.train.ids.dtype == torch.uint8  # 30-odd characters fit a byte
    pieces = [data.train.ids, data.val.ids, data.test.ids]
    assert data.tokenizer.decode(torch.cat(pieces)) == text  # in order, nothing lost, nothing repeated
    assert [len(p) for p in pieces] == [len(text) - 2 * round(len(text) * 0.1) - round(len(text) * 0.1),
                                        round(len(text) * 0.1), round(len(text) * 0.2)]


def test_vectorized_encoding_equals_the_character_by_character_one():
    text = LLM.read_text(ROOT / "refranes.txt") * 50  # 1.15 M characters: two chunks of code points
    tok = LLM.CharTokenizer(text)
    assert tok.chars == sorted(set(text)) and "\n" in tok.chars
    ids = tok.encode_tensor(text)
    assert ids.dtype == torch.uint8 and ids.tolist() == tok.encode(text)
    assert LLM.smallest_int_dtype(300) == torch.int16 and LLM.smallest_int_dtype(40_000) == torch.int32
    with pytest.raises(LLM.UnknownCharacterError, match="EURO SIGN"):
        tok.encode_tensor("No hay € que valga")


def test_stream_windows_are_teacher_forced_and_evaluation_counts_every_target_once():
    text = "abcdefghij" * 30
    tok = LLM.CharTokenizer(text)
    split = LLM.StreamSplit(tok.encode_tensor(text), context=7)
    for inputs, targets in LLM.batches(split, 4, torch.Generator().manual_seed(1)):
        assert inputs.shape[1] == 7 and inputs.shape == targets.shape and inputs.dtype == torch.long
        for row_in, row_out in zip(inputs, targets):  # the target is the input one character later
            assert tok.decode(row_out)[:-1] == tok.decode(row_in)[1:]
            assert tok.decode(row_in) + tok.decode(row_out)[-1:] in text
    evaluated = torch.cat([t.flatten() for _, t in LLM.batches(split, 4)])
    assert len(evaluated) == split.n_tokens == len(text) - 1
    assert tok.decode(evaluated) == text[1:]  # every target exactly once, in order


def test_a_padded_and_an_unpadded_batch_give_the_same_loss_for_the_same_lines():
    lines = ["Más vale tarde que nunca.", "Ojo por ojo."]
    tok = LLM.CharTokenizer.from_lines(lines)
    torch.manual_seed(0)
    model = LLM.TransformerLM(tok.vocab_size, tiny_config(context=40)).eval()
    padded = LLM.encode_lines(lines, tok, 40)  # the short line padded to the long one
    together = LLM.sequence_loss(model(padded.inputs), padded.targets)
    total, count = 0.0, 0
    for line in lines:  # each line alone: no padding at all
        alone = LLM.encode_lines([line], tok, 40)
        total += LLM.sequence_loss(model(alone.inputs), alone.targets) * alone.n_tokens
        count += alone.n_tokens
    torch.testing.assert_close(together, total / count)


# --- training craft ---------------------------------------------------------------------------

def tiny_data(cfg):
    """The proverbs; with tiny_config's context of 24 most lines do not fit, so auto reads
    them in stream mode: these tests run the stream path of train() too."""
    return LLM.prepare_data(LLM.read_text(ROOT / "refranes.txt"), cfg)


def test_gradient_clipping_caps_the_step_and_reports_the_norm():
    cfg = tiny_config(epochs=1, clip=1e-3, patience=0)
    data = tiny_data(cfg)
    torch.manual_seed(0)
    model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
    history = LLM.train(model, data, cfg, torch.device("cpu"), log=lambda m: None)
    assert history[0]["clipped"] == 1.0 and history[0]["grad_norm"] > 1e-3
    # the clipped gradient has exactly norm `clip`, as the formula g * clip / ||g|| says
    p = torch.nn.Parameter(torch.tensor([3.0, 4.0]))
    p.grad = torch.tensor([3.0, 4.0])
    assert float(torch.nn.utils.clip_grad_norm_([p], 1.0)) == pytest.approx(5.0)
    torch.testing.assert_close(p.grad, torch.tensor([0.6, 0.8]))


def test_adamw_decays_the_matrices_only():
    model = LLM.TransformerLM(10, tiny_config())
    groups = LLM.make_optimizer(model, tiny_config(optimizer="adamw", weight_decay=0.3)).param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.3 and groups[1]["weight_decay"] == 0.0
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (name.endswith("weight") and p.dim() == 2), name
    assert [g["weight_decay"] for g in LLM.make_optimizer(model, tiny_config()).param_groups] == [0.0]


@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
def test_the_hand_written_adam_takes_torch_optims_steps(optimizer):
    """Adam's formula, written out in LLM.py, against torch.optim's own Adam / AdamW over 30
    steps with a changing learning rate; then its state survives a save and load."""
    cfg = tiny_config(optimizer=optimizer, weight_decay=0.3)
    torch.manual_seed(0)
    ours, theirs = LLM.TransformerLM(10, cfg), LLM.TransformerLM(10, cfg)
    theirs.load_state_dict(ours.state_dict())
    hand = LLM.make_optimizer(ours, cfg)
    matrices = [p for p in theirs.parameters() if p.dim() >= 2]
    others = [p for p in theirs.parameters() if p.dim() < 2]
    reference = (torch.optim.AdamW([{"params": matrices, "weight_decay": 0.3}, {"params": others, "weight_decay": 0.0}],
                                   lr=cfg.lr) if optimizer == "adamw" else torch.optim.Adam(theirs.parameters(), lr=cfg.lr))
    ids = torch.randint(10, (4, 13))
    start = ours.lm_head.weight.detach().clone()
    for step in range(30):
        lr = cfg.lr * (step + 1) / 30
        for model, opt in ((ours, hand), (theirs, reference)):
            for group in opt.param_groups:
                group["lr"] = lr
            opt.zero_grad()
            LLM.sequence_loss(model(ids[:, :-1]), ids[:, 1:]).backward()
            opt.step()
    for (name, a), b in zip(ours.named_parameters(), theirs.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6, msg=name)
    assert (ours.lm_head.weight - start).abs().max() > 0.05  # the weights did move
    again = LLM.make_optimizer(ours, cfg)
    again.load_state_dict(hand.state_dict())
    assert again.t == 30 and all(torch.equal(x, y) for x, y in zip(again.v[0], hand.v[0]))
    with pytest.raises(LLM.UserError, match="optimizer state does not fit"):
        LLM.make_optimizer(LLM.TransformerLM(12, cfg), cfg).load_state_dict(hand.state_dict())


def test_bf16_autocast_gives_nearly_the_fp32_loss():
    cfg = tiny_config()
    data = tiny_data(cfg)
    torch.manual_seed(0)
    model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
    cpu = torch.device("cpu")
    assert not LLM.uses_bf16(cfg, cpu) and LLM.uses_bf16(tiny_config(precision="bf16"), cpu)
    fp32 = LLM.evaluate(model, data.val, 64, cpu, tiny_config(precision="fp32"))
    bf16 = LLM.evaluate(model, data.val, 64, cpu, tiny_config(precision="bf16"))
    assert fp32 != bf16 and bf16 == pytest.approx(fp32, rel=2e-2)  # different arithmetic, same answer


@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from inside torch.compile, not from LLM.py
@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "clang++", "c++")),
                    reason="torch.compile needs a C++ compiler on a CPU")
def test_compiled_training_follows_the_plain_one():
    """--compile changes how the numbers are computed, not which: same losses, same weights."""
    from torch._dynamo.utils import counters  # what the compiler did: graphs it captured
    cfg = tiny_config(epochs=1, patience=0)
    data = tiny_data(cfg)
    results = []
    for compiled in (False, True):
        torch.manual_seed(0)
        model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
        counters.clear()
        history = LLM.train(model, data, LLM.replace(cfg, compile=compiled), torch.device("cpu"), log=lambda m: None)
        assert (counters["stats"]["unique_graphs"] > 0) == compiled  # the compiled run really went through it
        results.append((history[0]["train_loss"], history[0]["val_loss"], model.state_dict()))
    (plain_train, plain_val, plain), (compiled_train, compiled_val, compiled) = results
    assert compiled_train == pytest.approx(plain_train, rel=1e-4)
    assert compiled_val == pytest.approx(plain_val, rel=1e-4)
    for name in plain:
        torch.testing.assert_close(compiled[name], plain[name], rtol=1e-3, atol=1e-3)  # a tenth of one step


def test_compile_without_a_cpp_compiler_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setattr(LLM.shutil, "which", lambda name: None)
    with pytest.raises(LLM.UserError, match="--compile needs a C\\+\\+ compiler"):
        LLM.validate(tiny_config(compile=True, device="cpu"))
    LLM.validate(tiny_config(device="cpu"))  # without --compile no compiler is needed


def test_early_stopping_restores_the_weights_of_the_best_epoch(monkeypatch):
    cfg = tiny_config(epochs=10, patience=2)
    data = tiny_data(cfg)
    torch.manual_seed(0)
    model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
    losses = iter([3.0, 2.0, 2.5, 2.6, 1.0, 1.0])  # the best is epoch 2; epochs 3 and 4 are worse
    monkeypatch.setattr(LLM, "evaluate", lambda *args, **kwargs: next(losses))
    seen = {}
    history = LLM.train(model, data, cfg, torch.device("cpu"), log=lambda m: None,
                        on_epoch_end=lambda epoch, record: seen.update(
                            {epoch: {k: v.clone() for k, v in model.state_dict().items()}}))
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # patience 2: stopped after epoch 4
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, seen[2][name]), name
    assert not torch.equal(seen[4]["lm_head.weight"], seen[2]["lm_head.weight"])


def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(trained, capsys, tmp_path):
    before = trained.read_bytes()
    err = one_line_error(capsys, ["--resume", "--checkpoint", str(trained), "--out", str(trained.parent),
                                  "--epochs", "6", "--lr", "1e30", "--clip", "0"], "the loss became", "still holds epoch")
    assert re.search(r"became (nan|inf)", err)
    assert trained.read_bytes() == before


# --- checkpoints: resume, fine-tune, eval ----------------------------------------------------

def test_resume_continues_from_the_saved_epoch_and_step_as_if_never_stopped(tmp_path, monkeypatch, capsys):
    argv = TINY + ["--epochs", "4", "--lr", "3e-3"]
    assert LLM.main(argv + ["--out", str(tmp_path / "straight")]) == 0
    straight = capsys.readouterr().out
    assert "restored" not in straight  # every epoch was better than the last: the checkpoint is epoch 4

    steps_per_epoch = math.ceil(len(LLM.prepare_data(LLM.read_text(ROOT / "refranes.txt"), LLM.Config()).train) / 64)
    real = LLM.learning_rate

    def ctrl_c_in_epoch_3(step, total, cfg):
        if step == 2 * steps_per_epoch + 1:  # the second step of epoch 3
            raise KeyboardInterrupt
        return real(step, total, cfg)

    monkeypatch.setattr(LLM, "learning_rate", ctrl_c_in_epoch_3)
    assert LLM.main(argv + ["--out", str(tmp_path / "stopped")]) == 130
    assert "training interrupted in epoch 3" in capsys.readouterr().out
    payload = torch.load(tmp_path / "stopped" / "model.pt", weights_only=True)
    assert payload["epoch"] == 2 and payload["training"]["step"] == 2 * steps_per_epoch

    monkeypatch.setattr(LLM, "learning_rate", real)
    assert LLM.main(["--resume", "--out", str(tmp_path / "stopped")]) == 0
    resumed = capsys.readouterr().out
    assert f"from the end of epoch 2 (step {2 * steps_per_epoch}" in resumed
    assert re.search(r"^epoch   3/4", resumed, re.M) and not re.search(r"^epoch   1/4", resumed, re.M)
    a, b = weights(tmp_path / "straight" / "model.pt"), weights(tmp_path / "stopped" / "model.pt")
    for name in a:
        torch.testing.assert_close(a[name], b[name], rtol=0, atol=1e-6)
    assert torch.load(tmp_path / "stopped" / "model.pt", weights_only=True)["training"]["step"] == 4 * steps_per_epoch


def test_resume_refuses_what_it_cannot_do(trained, capsys, tmp_path):
    out = ["--out", str(trained.parent)]
    one_line_error(capsys, ["--resume"] + out, "already holds epoch 3 of 3", "--epochs 13")
    one_line_error(capsys, ["--resume", "--epochs", "5", "--d-model", "32"] + out, "--d-model cannot change")
    (tmp_path / "fr.txt").write_text("Ça va.\nQui vivra verra.\nTel père, tel fils.\n", encoding="utf-8")
    one_line_error(capsys, ["--resume", "--epochs", "5", "--data", str(tmp_path / "fr.txt")] + out,
                   "--data cannot change", "--init-from")


def test_fine_tuning_on_new_characters_adds_rows_and_keeps_the_old_ones(trained, tmp_path, capsys):
    old_model, old_tok, cfg, _ = LLM.load_checkpoint(trained, "cpu")
    model, tok, added = LLM.extend_vocabulary(old_model, old_tok, "Ça va, ça vient: el œil.", cfg)
    assert added == sorted("Çœç")  # the three new characters, in vocabulary order
    assert tok.vocab_size == old_tok.vocab_size + 3
    new_ids = torch.tensor([tok.ids[c] for c in old_tok.chars])
    for name in ("token_embedding.weight", "lm_head.weight", "lm_head.bias"):
        assert torch.equal(model.state_dict()[name][new_ids], old_model.state_dict()[name])
    text = "No hay mal que por bien no venga."  # old characters only: the same logits, re-indexed
    torch.testing.assert_close(model(torch.tensor([tok.encode(text)]))[..., new_ids],
                               old_model(torch.tensor([old_tok.encode(text)])))

    (tmp_path / "fr.txt").write_text("Ça va, ça vient.\nQui vivra verra.\nPetit à petit.\nTel père, tel fils.\n"
                                     "Les bons comptes font les bons amis.\n", encoding="utf-8")
    argv = ["--init-from", str(trained), "--data", str(tmp_path / "fr.txt"), "--out", str(tmp_path / "ft"),
            "--epochs", "2", "--snapshot", "0", "--prompts", "Ça"]
    assert LLM.main(argv) == 0
    printed = capsys.readouterr().out
    assert "'Ç' (LATIN CAPITAL LETTER C WITH CEDILLA)" in printed and "keep their weights" in printed
    _, tuned_tok, tuned_cfg, _ = LLM.load_checkpoint(tmp_path / "ft" / "model.pt", "cpu")
    assert "ç" in tuned_tok.chars and tuned_cfg.d_model == 16 and set(old_tok.chars) < set(tuned_tok.chars)
    one_line_error(capsys, argv + ["--layers", "3"], "--layers cannot change when fine-tuning")


def test_eval_reports_loss_perplexity_and_bits_per_character(trained, capsys):
    assert LLM.main(["--eval", "--checkpoint", str(trained)]) == 0
    printed = capsys.readouterr().out
    found = re.search(r"test \([\d,]+ characters\): loss ([\d.]+) nats/char \| perplexity ([\d.]+) \| "
                      r"([\d.]+) bits/char", printed)
    loss, perplexity, bits = map(float, found.groups())
    assert perplexity == pytest.approx(math.exp(loss), abs=6e-3) and bits == pytest.approx(loss / math.log(2), abs=2e-3)
    model, tok, cfg, _ = LLM.load_checkpoint(trained, "cpu")  # and it is the loss of the test split
    data = LLM.prepare_data(LLM.read_text(ROOT / "refranes.txt"), cfg, tok)
    assert LLM.evaluate(model, data.test, 64, torch.device("cpu"), cfg) == pytest.approx(loss, abs=6e-4)


# --- chat ----------------------------------------------------------------------------------------

def test_chat_through_piped_stdin_answers_and_exits_0(trained):
    result = subprocess.run([sys.executable, str(ROOT / "LLM.py"), "--chat", "--checkpoint", str(trained),
                             "--max-chars", "15"], input="No hay\n/temp 0.8\n/topk x\nexit\nNo llega\n",
                            capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert result.returncode == 0 and result.stderr == ""
    lines = result.stdout.splitlines()
    assert "> No hay" in lines and "  temperature = 0.8" in lines and lines[-1] == "bye"
    assert lines[lines.index("> No hay") + 1].startswith("  No hay")
    assert "/topk needs a valid value" in result.stdout and "No llega" not in result.stdout  # exit ended it


def test_chat_train_learns_the_typed_lines_and_saves_beside_the_checkpoint(trained, tmp_path):
    log = tmp_path / "chat.txt"
    transcript = []
    typed = "Perro que ladra no muerde.\nÇa marche.\n/greedy\n/train 2\nÇa\n/help\nquit\n"
    LLM.chat(tiny_config(max_chars=10), trained, str(log), io.StringIO(typed), transcript.append)
    said = "\n".join(transcript)
    assert "never saw 'Ç'" in said and "new characters" in said and "greedy = on" in said
    losses = re.search(r"loss on your lines ([\d.]+) -> ([\d.]+)", said)
    assert float(losses.group(2)) < float(losses.group(1))
    assert (tmp_path / "chat.txt").read_text(encoding="utf-8") == "Perro que ladra no muerde.\nÇa marche.\nÇa\n"
    chat_model = trained.with_name("model-chat.pt")
    assert chat_model.exists() and "Ç" in LLM.load_checkpoint(chat_model, "cpu")[1].chars
    assert "  Ça" in transcript[transcript.index("> Ça") + 1]  # now it can read Ç and completes the line
    assert transcript[-1] == "bye"
    chat_model.unlink()


# --- bad input ----------------------------------------------------------------------------------

def test_texts_too_short_for_their_mode(capsys, tmp_path):
    (tmp_path / "two.txt").write_text("Más vale tarde.\nQue nunca.\n", encoding="utf-8")
    one_line_error(capsys, ["--data", str(tmp_path / "two.txt"), "--mode", "line", "--out", str(tmp_path)],
                   "too few lines")
    (tmp_path / "short.txt").write_text("Érase una vez un cuento corto.\n" * 3, encoding="utf-8")
    one_line_error(capsys, ["--data", str(tmp_path / "short.txt"), "--mode", "stream", "--out", str(tmp_path)],
                   "fewer than the context + 1 (81)")


@pytest.mark.parametrize("argv,expected", [
    (["--mode", "paragraph"], "--mode must be 'auto', 'line' or 'stream'"),
    (["--optimizer", "sgd"], "--optimizer"),
    (["--precision", "fp8"], "--precision"),
    (["--clip", "-1"], "--clip"),
    (["--patience", "-2"], "--patience"),
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--val-fraction", "0.5", "--test-fraction", "0.5"], "--test-fraction"),
    (["--chat-log", "x.txt"], "--chat-log works only with --chat"),
    (["--chat", "--generate", "No"], "not allowed with"),
    (["--device", "cuda:3"], "not available"),
])
def test_impossible_settings_give_one_line(capsys, tmp_path, argv, expected):
    one_line_error(capsys, argv + ["--out", str(tmp_path / "o")], expected)


@pytest.mark.parametrize("action", [["--chat"], ["--eval"], ["--resume"], ["--generate", "No"]])
def test_every_use_of_a_checkpoint_reports_a_missing_one(capsys, tmp_path, action):
    one_line_error(capsys, action + ["--out", str(tmp_path)], "checkpoint not found", "model.pt")
    one_line_error(capsys, action + ["--checkpoint", str(tmp_path / "x.pt")], "checkpoint not found", "x.pt")


def test_fine_tuning_from_a_missing_or_corrupt_checkpoint(capsys, tmp_path):
    one_line_error(capsys, ["--init-from", str(tmp_path / "x.pt"), "--out", str(tmp_path)], "checkpoint not found")
    (tmp_path / "bad.pt").write_bytes(b"\x80\x02 half a pickle")
    one_line_error(capsys, ["--init-from", str(tmp_path / "bad.pt"), "--out", str(tmp_path)], "not a readable")


def test_an_unwritable_chat_log(capsys, trained, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, ["--chat", "--checkpoint", str(trained), "--chat-log", str(tmp_path / "file" / "log.txt")],
                   "cannot write the chat log")


# --- scale-out ------------------------------------------------------------------------------------

def test_torchrun_with_two_cpu_processes_keeps_the_weights_identical(tmp_path):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "LLM.py"),
            "--out", str(tmp_path), "--epochs", "2", "--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32",
            "--snapshot", "0", "--pictures", "loss", "--prompts", "No hay", "--max-chars", "20"]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "2 processes (DistributedDataParallel), 2 x 64 sequences per step" in out
    assert "the 2 processes end with identical weights" in out
    assert out.count("epoch   1/2") == 1 and out.count("wrote ") == 1  # rank 0 alone prints and writes
    lines = len(LLM.prepare_data(LLM.read_text(ROOT / "refranes.txt"), LLM.Config()).train)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["training"]["step"] == 2 * (math.ceil(lines / 64) // 2)  # each step took 2 batches
