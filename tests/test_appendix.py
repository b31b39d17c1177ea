"""Part II of LLM.py, the machinery, in the file's order: settings and bad input, long texts,
faster arithmetic, several processes, the training bookkeeping, checkpoints, the pictures and
the gallery, the chat."""
import contextlib
import dataclasses
import io
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import pytest
import torch

import LLM
from conftest import PROVERBS, ROOT, TINY_ARGV as TINY, one_line_error, tiny_config, tokenizer_of


def weights(path):
    return torch.load(path, weights_only=True)["model"]


def tiny_data(cfg):
    """The proverbs; with the tiny context of 24 most lines do not fit, so auto reads them in
    stream mode: these tests run the stream path of train() too."""
    return LLM.prepare_any_text(LLM.read_text(PROVERBS), cfg)


# --- A. Settings, devices, files --------------------------------------------------------------

def test_missing_empty_binary_and_non_utf8_data(capsys, tmp_path):
    one_line_error(capsys, ["--data", str(tmp_path / "nope.txt"), "--out", str(tmp_path)], "not found")
    (tmp_path / "empty.txt").write_text("\n  \n")
    one_line_error(capsys, ["--data", str(tmp_path / "empty.txt"), "--out", str(tmp_path)], "empty")
    (tmp_path / "latin1.txt").write_bytes("año\nniño\n".encode("latin-1"))
    one_line_error(capsys, ["--data", str(tmp_path / "latin1.txt"), "--out", str(tmp_path)], "UTF-8")
    (tmp_path / "binary.bin").write_bytes(b"\x89PNG\x00\x00\x01")
    one_line_error(capsys, ["--data", str(tmp_path / "binary.bin"), "--out", str(tmp_path)], "binary")
    (tmp_path / "one.txt").write_text("una sola línea\n")
    one_line_error(capsys, ["--data", str(tmp_path / "one.txt"), "--out", str(tmp_path)], "single line")


@pytest.mark.parametrize("argv,expected", [
    (["--d-model", "30", "--heads", "4"], "divisible"),
    (["--layers", "0"], "--layers"),
    (["--epochs", "-1"], "--epochs"),
    (["--dropout", "1.5"], "--dropout"),
    (["--dropout", "1"], "--dropout must be in [0, 1), got 1.0"),
    (["--dropout", "-0.1"], "--dropout"),
    (["--device", "tpu"], "device"),
    (["--device", "cuda:7"], "not available"),
    (["--epochs", "many"], "invalid int"),
    (["--attention", "approximate"], "--attention"),
    (["--prompts", "Çà"], "'Ç'"),
    (["--mode", "paragraph"], "--mode must be 'auto', 'line' or 'stream'"),
    (["--optimizer", "sgd"], "--optimizer"),
    (["--precision", "fp8"], "--precision"),
    (["--clip", "-1"], "--clip"),
    (["--patience", "-2"], "--patience"),
    (["--top-k", "-1"], "--top-k must be 0 or more, got -1"),
    (["--snapshot", "-1"], "--snapshot must be 0 or more"),
    (["--weight-decay", "nan"], "--weight-decay"),
    (["--val-fraction", "0.5", "--test-fraction", "0.5"], "--test-fraction"),
    (["--chat-log", "x.txt"], "--chat-log works only with --chat"),
    (["--chat", "--generate", "No"], "not allowed with"),
])
def test_bad_or_impossible_settings_and_prompts_give_one_line(capsys, tmp_path, argv, expected):
    one_line_error(capsys, argv + ["--out", str(tmp_path / "o")], expected)


def test_texts_too_short_for_their_mode(capsys, tmp_path):
    (tmp_path / "two.txt").write_text("Más vale tarde.\nQue nunca.\n", encoding="utf-8")
    one_line_error(capsys, ["--data", str(tmp_path / "two.txt"), "--mode", "line", "--out", str(tmp_path)],
                   "too few lines")
    (tmp_path / "short.txt").write_text("Érase una vez un cuento corto.\n" * 3, encoding="utf-8")
    one_line_error(capsys, ["--data", str(tmp_path / "short.txt"), "--mode", "stream", "--out", str(tmp_path)],
                   "fewer than the context + 1 (81)")


def test_unwritable_output_folder(capsys, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, ["--out", str(tmp_path / "file" / "sub")], "cannot write")


def test_the_real_command_exits_2_without_traceback(tmp_path):
    result = subprocess.run([sys.executable, str(ROOT / "LLM.py"), "--data", str(tmp_path / "missing.txt")],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("error: data file not found") and "Traceback" not in result.stderr


def test_import_has_no_side_effects(tmp_path):
    code = "import matplotlib, LLM; print(matplotlib.get_backend() if 'matplotlib.pyplot' in __import__('sys').modules else 'untouched')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path,
                            env={"PYTHONPATH": str(ROOT), "PATH": ""})
    assert result.returncode == 0 and result.stdout.strip() == "untouched" and result.stderr == ""
    assert list(tmp_path.iterdir()) == []


# --- B. Long texts ----------------------------------------------------------------------------

def test_auto_mode_reads_proverbs_as_lines_and_a_book_as_a_stream():
    proverbs = LLM.read_text(ROOT / "refranes.txt")
    assert LLM.choose_mode(proverbs, 80)[0] == "line"
    book = "Capítulo uno\n\nEra una noche oscura.\nLlovía.\n\nFin del capítulo.\n"
    assert LLM.choose_mode(book, 80) == ("stream", "2 blank lines: paragraphs of a running text")
    long_lines = "\n".join("palabra " * 20 for _ in range(5))  # 160 characters a line
    assert LLM.choose_mode(long_lines, 80)[0] == "stream"
    short, long = "Más vale tarde que nunca.", "palabra " * 12  # 25 and 96 characters
    assert LLM.choose_mode("\n".join([short] * 95 + [long] * 5), 80)[0] == "line"  # 95% fit: lines
    assert LLM.choose_mode("\n".join([short] * 90 + [long] * 10), 80) == ("stream", "only 90 of 100 lines fit in the context of 80")


def test_stream_split_is_three_contiguous_blocks_of_the_text():
    text = "".join(f"línea número {i}, con algo de texto.\n" for i in range(60))
    data = LLM.prepare_any_text(text, tiny_config(mode="stream", val_fraction=0.1, test_fraction=0.2))
    assert data.mode == "stream" and data.train_split.ids.dtype == torch.uint8  # 30-odd characters fit a byte
    pieces = [data.train_split.ids, data.val_split.ids, data.test_split.ids]
    assert data.tokenizer.decode(torch.cat(pieces)) == text  # in order, nothing lost, nothing repeated
    assert [len(p) for p in pieces] == [len(text) - 2 * round(len(text) * 0.1) - round(len(text) * 0.1),
                                        round(len(text) * 0.1), round(len(text) * 0.2)]


def test_vectorized_encoding_equals_the_character_by_character_one():
    text = LLM.read_text(PROVERBS) * 50  # 1.15 M characters: two chunks of code points
    tok = LLM.CharTokenizer(text)
    assert tok.chars == sorted(set(text)) and "\n" in tok.chars
    ids = LLM.encode_long_text(tok, text)
    assert ids.dtype == torch.uint8 and ids.tolist() == tok.encode(text)
    assert LLM.smallest_int_dtype(300) == torch.int16 and LLM.smallest_int_dtype(40_000) == torch.int32
    with pytest.raises(LLM.UnknownCharacterError, match="EURO SIGN"):
        LLM.encode_long_text(tok, "No hay € que valga")


def test_stream_windows_are_teacher_forced_and_evaluation_counts_every_target_once():
    text = "abcdefghij" * 30
    tok = LLM.CharTokenizer(text)
    split = LLM.StreamSplit(LLM.encode_long_text(tok, text), context=7)
    for inputs, targets in split.batches(4, torch.Generator().manual_seed(1)):
        assert inputs.shape[1] == 7 and inputs.shape == targets.shape and inputs.dtype == torch.long
        for row_in, row_out in zip(inputs, targets):  # the target is the input one character later
            assert tok.decode(row_out)[:-1] == tok.decode(row_in)[1:]
            assert tok.decode(row_in) + tok.decode(row_out)[-1:] in text
    evaluated = torch.cat([t.flatten() for _, t in split.batches(4)])
    assert len(evaluated) == split.n_tokens == len(text) - 1
    assert tok.decode(evaluated) == text[1:]  # every target exactly once, in order


# --- C. Faster arithmetic ---------------------------------------------------------------------

def test_bf16_autocast_gives_nearly_the_fp32_loss():
    cfg = tiny_config()
    data = tiny_data(cfg)
    torch.manual_seed(0)
    model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
    cpu = torch.device("cpu")
    assert not LLM.uses_bf16(cfg, cpu) and LLM.uses_bf16(tiny_config(precision="bf16"), cpu)
    fp32 = LLM.evaluate(model, data.val_split, 64, cpu, LLM.DeviceHooks(tiny_config(precision="fp32"), cpu).autocast)
    bf16 = LLM.evaluate(model, data.val_split, 64, cpu, LLM.DeviceHooks(tiny_config(precision="bf16"), cpu).autocast)
    assert fp32 != bf16 and bf16 == pytest.approx(fp32, rel=2e-2)  # different arithmetic, same answer


@pytest.mark.slow  # about a minute of compiling on a 2-core CPU: CI runs it (pytest -m slow)
@pytest.mark.filterwarnings("ignore::DeprecationWarning")  # from inside torch.compile, not from LLM.py
@pytest.mark.skipif(not any(shutil.which(c) for c in ("g++", "clang++", "c++")),
                    reason="torch.compile needs a C++ compiler on a CPU")
def test_compiled_training_follows_the_plain_one(tmp_path):
    """--compile changes how the numbers are computed, not which: same losses, same weights."""
    from torch._dynamo.utils import counters  # what the compiler did: graphs it captured
    results = []
    for compiled in (False, True):
        counters.clear()
        argv = TINY + ["--epochs", "1", "--snapshot", "0", "--pictures", "--prompts", "No", "--out", str(tmp_path / str(compiled))]
        assert LLM.main(argv + (["--compile"] if compiled else [])) == 0
        assert (counters["stats"]["unique_graphs"] > 0) == compiled  # the compiled run really went through it
        results.append(torch.load(tmp_path / str(compiled) / "model.pt", weights_only=True))
    plain, compiled = results
    for name in ("train_loss", "val_loss"):
        assert compiled["training"]["history"][0][name] == pytest.approx(plain["training"]["history"][0][name], rel=1e-4)
    for name in plain["model"]:
        torch.testing.assert_close(compiled["model"][name], plain["model"][name], rtol=1e-3, atol=1e-3)  # a tenth of a step


def test_compile_without_a_cpp_compiler_is_refused_in_one_sentence(monkeypatch):
    monkeypatch.setattr(LLM.shutil, "which", lambda name: None)
    with pytest.raises(LLM.UserError, match="--compile needs a C\\+\\+ compiler"):
        LLM.validate(tiny_config(compile=True, device="cpu"))
    LLM.validate(tiny_config(device="cpu"))  # without --compile no compiler is needed


# --- D. Several processes ---------------------------------------------------------------------

@pytest.mark.slow  # torchrun starts three processes: CI runs it with -m slow, beside torchrun's fault cases
def test_torchrun_with_two_cpu_processes_keeps_the_weights_identical(tmp_path):
    argv = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", str(ROOT / "LLM.py"),
            "--out", str(tmp_path), "--epochs", "2", "--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32",
            "--snapshot", "0", "--pictures", "loss", "--prompts", "No hay", "--max-chars", "20",
            "--data", str(PROVERBS), "--batch-size", "64"]
    result = subprocess.run(argv, capture_output=True, text=True, cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    out = result.stdout
    assert "2 processes (DistributedDataParallel), 2 x 64 sequences per step" in out
    assert "the 2 processes end with identical weights" in out
    assert out.count("epoch   1/2") == 1 and out.count("wrote ") == 1  # rank 0 alone prints and writes
    lines = len(LLM.prepare_any_text(LLM.read_text(PROVERBS), LLM.RunConfig()).train_split)
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    assert payload["training"]["step"] == 2 * (math.ceil(lines / 64) // 2)  # each step took 2 batches


# --- E. The training loop's bookkeeping -------------------------------------------------------

def test_a_nan_loss_stops_training_and_keeps_the_last_good_checkpoint(trained, capsys, tmp_path):
    before = trained.read_bytes()
    err = one_line_error(capsys, ["--resume", "--checkpoint", str(trained), "--out", str(trained.parent),
                                  "--epochs", "6", "--lr", "1e30", "--clip", "0"], "the loss became", "still holds epoch")
    assert re.search(r"became (nan|inf)", err)
    assert trained.read_bytes() == before


def test_resume_continues_from_the_saved_epoch_and_step_as_if_never_stopped(tmp_path, monkeypatch, capsys):
    argv = TINY + ["--epochs", "4", "--lr", "3e-3"]
    assert LLM.main(argv + ["--out", str(tmp_path / "straight")]) == 0
    straight = capsys.readouterr().out
    assert "restored" not in straight  # every epoch was better than the last: the checkpoint is epoch 4

    steps_per_epoch = math.ceil(len(LLM.prepare_any_text(LLM.read_text(PROVERBS), LLM.RunConfig()).train_split) / 64)
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


# --- F. Checkpoints and fine-tuning -----------------------------------------------------------

def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    tok = tokenizer_of(["Más vale tarde", "que nunca"])
    cfg = tiny_config(prompts=("Más",))
    torch.manual_seed(0)
    model = LLM.TransformerLM(tok.vocab_size, cfg).eval()
    LLM.save_checkpoint(tmp_path / "model.pt", model, cfg, tok, {"epoch": 3, "val_loss": 1.5})
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # the temporary file was renamed
    loaded, loaded_tok, loaded_cfg, payload = LLM.load_checkpoint(tmp_path / "model.pt", "cpu")
    resolved = dataclasses.replace(cfg, data=str(Path(cfg.data).resolve()))  # the data path is stored in full
    assert loaded_tok.chars == tok.chars and loaded_cfg == resolved and payload["epoch"] == 3
    idx = torch.tensor([tok.encode("Más vale que")])
    assert torch.equal(model(idx), loaded(idx))


def test_missing_corrupt_foreign_and_mismatched_checkpoints(capsys, tmp_path):
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "none.pt")], "not found")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "corrupt.pt")], "not a readable")
    (tmp_path / "pickle.pt").write_bytes(pickle.dumps({"weights": [1, 2]}, protocol=4))  # plain pickle: torch warns first
    with warnings.catch_warnings(record=True) as warned:  # run as a command, a warning would print before the error
        warnings.simplefilter("always")
        one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "pickle.pt")], "not a readable")
    assert warned == []
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "foreign.pt")], "not an LLM.py")
    tok = tokenizer_of(["No hay", "mal"])
    model = LLM.TransformerLM(tok.vocab_size, tiny_config())
    LLM.save_checkpoint(tmp_path / "model.pt", model, tiny_config(), tok, {"epoch": 1, "val_loss": 2.0})
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["config"]["d_model"] = 32  # the weights are for 16
    torch.save(payload, tmp_path / "mismatch.pt")  # a setting edited by hand: the checksum covers it
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "mismatch.pt")], "is damaged")
    payload["checksum"] = LLM.tensors_checksum({k: v for k, v in payload.items() if k != "checksum"})
    torch.save(payload, tmp_path / "mismatch.pt")  # ... and with its checksum made right again
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "mismatch.pt")], "does not match")


@pytest.mark.parametrize("action", [["--chat"], ["--eval"], ["--resume"], ["--generate", "No"]])
def test_every_use_of_a_checkpoint_reports_a_missing_one(capsys, tmp_path, action):
    one_line_error(capsys, action + ["--out", str(tmp_path)], "checkpoint not found", "model.pt")
    one_line_error(capsys, action + ["--checkpoint", str(tmp_path / "x.pt")], "checkpoint not found", "x.pt")


def test_fine_tuning_from_a_missing_or_corrupt_checkpoint(capsys, tmp_path):
    one_line_error(capsys, ["--init-from", str(tmp_path / "x.pt"), "--out", str(tmp_path)], "checkpoint not found")
    (tmp_path / "bad.pt").write_bytes(b"\x80\x02 half a pickle")
    one_line_error(capsys, ["--init-from", str(tmp_path / "bad.pt"), "--out", str(tmp_path)], "not a readable")


def test_a_run_killed_during_training_leaves_a_loadable_checkpoint(tmp_path):
    """kill -9 while the run trains (and rewrites its checkpoint after every better epoch): the
    file left is whole. The test waits for the run's own epoch lines, not for the clock."""
    argv = [sys.executable, str(ROOT / "LLM.py"), "--out", str(tmp_path), "--epochs", "500", "--snapshot", "0",
            "--patience", "0", "--data", str(PROVERBS), "--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32"]
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, cwd=ROOT,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})  # each line as it is printed
    try:
        printed = []
        for line in process.stdout:  # ends early only if the run does
            printed.append(line)
            if line.startswith("epoch   3/500"):  # epochs 1 to 3 are over: epoch 4 is training
                break
        assert process.poll() is None, "the run ended before it could be killed:\n" + "".join(printed[-5:])
    finally:
        process.kill()  # SIGKILL on POSIX, TerminateProcess on Windows: no chance to clean up
        process.wait()
        process.stdout.close()
    model, tokenizer, cfg, payload = LLM.load_checkpoint(tmp_path / "model.pt", "cpu")
    assert cfg.d_model == 16 and payload["epoch"] >= 1


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
    data = LLM.prepare_any_text(LLM.read_text(PROVERBS), cfg, tok)
    assert LLM.evaluate(model, data.test_split, 64, torch.device("cpu")) == pytest.approx(loss, abs=6e-4)


def test_generate_from_the_checkpoint_of_a_run(tiny_run, capsys):
    argv = ["--generate", "No hay", "--samples", "2", "--out", str(tiny_run), "--max-chars", "10"]
    assert LLM.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all(line.startswith("No hay") for line in printed)
    one_line_error(capsys, ["--generate", "No hay ç", "--out", str(tiny_run)], "'ç'")


# --- G. The outputs and the pictures ----------------------------------------------------------

def test_one_attention_picture_per_layer_and_a_gallery_that_links_only_real_files(tiny_run):
    run = tiny_run
    assert (run / "attention_layer1.png").exists() and (run / "attention_layer2.png").exists()
    gallery = (run / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)]+)\)", gallery)  # every link and image of the markdown
    assert {"loss.png", "attention_layer1.png", "attention_layer2.png", "positional_encoding.png",
            "embeddings.png", "evolution.gif", "epoch_2.png", "parameters.txt", "table.txt"} <= set(targets)
    for target in targets:
        assert (run / target).is_file(), target
    assert "layer 2" in gallery and "head 1" in gallery and "`model.pt`" in gallery


def test_the_attention_drawn_is_the_attention_the_model_used(monkeypatch):
    tok = tokenizer_of(["La necesidad agudiza el ingenio."])
    torch.manual_seed(0)
    model = LLM.TransformerLM(tok.vocab_size, LLM.RunConfig(d_model=16, n_heads=4, n_layers=2, d_ff=32,
                                                         context=40, code="story")).eval()
    chars, drawn = LLM.attention_maps(model, tok, "La necesidad agudiza el ingenio.")
    assert "".join(chars) == "\nLa necesidad agudiza el ingenio." and len(drawn) == 2
    for weights in drawn:  # (H, T, T)
        assert weights.shape == (4, 33, 33)
        torch.testing.assert_close(weights.sum(-1), torch.ones(4, 33))  # each row sums to 1
        assert (weights.triu(1) == 0).all()  # nothing above the diagonal: the future is masked
    used = []  # the weights attention() hands back during an ordinary forward pass
    real = LLM.attention
    monkeypatch.setattr(LLM, "attention", lambda *args: used.append(real(*args)[1]) or real(*args))
    model(torch.tensor([[tok.eol_id] + tok.encode("La necesidad agudiza el ingenio.")]))
    assert len(used) == 2
    for a, b in zip(used, drawn):
        torch.testing.assert_close(a[0], b)


def test_head_habits_name_what_a_head_looks_at():
    T = 10
    previous = torch.zeros(T, T)
    previous[0, 0] = 1
    previous[torch.arange(1, T), torch.arange(0, T - 1)] = 1  # every row looks one character back
    uniform = torch.ones(T, T).tril()
    uniform = uniform / uniform.sum(-1, keepdim=True)
    habits = LLM.head_habits(torch.stack([previous, uniform]), list("\nab cd efg"))
    assert habits[0] == ("the previous character", 1.0)
    assert habits[1][0] == "spread out"


def test_pca_of_a_known_cloud_matches_the_singular_value_decomposition():
    torch.manual_seed(0)
    basis, _ = torch.linalg.qr(torch.randn(6, 6))  # a random rotation
    points = torch.randn(200, 6) * torch.tensor([5.0, 2.0, 0.5, 0.1, 0.1, 0.1]) @ basis.T + 3.0
    xy, explained = LLM.pca_2d(points)
    centred = points - points.mean(0)
    _, S, Vt = torch.linalg.svd(centred, full_matrices=False)
    reference = centred @ Vt[:2].T  # the formula: project on the first two right singular vectors
    torch.testing.assert_close(xy.abs(), reference.abs(), atol=1e-3, rtol=1e-3)  # equal up to sign
    torch.testing.assert_close(explained, S[:2] ** 2 / (S ** 2).sum())
    line = torch.tensor([[t, 2 * t] for t in range(5)], dtype=torch.float32)  # points on y = 2x
    xy, explained = LLM.pca_2d(line)
    assert explained[0] == pytest.approx(1.0) and xy[:, 1].abs().max() < 1e-4
    torch.testing.assert_close(xy[:, 0].abs(), (line - line.mean(0)).norm(dim=1))


def test_pictures_can_be_chosen_or_turned_off(tmp_path, capsys):
    assert LLM.main(TINY + ["--epochs", "1", "--snapshot", "0", "--pictures", "loss", "--out", str(tmp_path)]) == 0
    names = {p.name for p in tmp_path.iterdir()}
    assert "loss.png" in names and not names & {"embeddings.png", "evolution.gif", "attention_layer1.png"}
    assert "(epoch" not in (tmp_path / "README.md").read_text(encoding="utf-8")
    assert LLM.main(TINY + ["--epochs", "1", "--snapshot", "0", "--pictures", "--out", str(tmp_path / "none")]) == 0
    assert not any(p.suffix in (".png", ".gif") for p in (tmp_path / "none").iterdir())
    one_line_error(capsys, TINY + ["--pictures", "loss", "mona_lisa", "--out", str(tmp_path)], "mona_lisa")


def test_a_new_picture_needs_only_its_function_and_its_registry_entry(tmp_path, monkeypatch):
    """A picture added the way part G says (one function, registered with @picture): --pictures
    draws it, the gallery shows it with its text, the run's last line names it."""
    monkeypatch.setattr(LLM, "PICTURES", dict(LLM.PICTURES))  # the registry is restored after the test

    @LLM.picture("lengths")
    def lengths(run):
        lengths = run.setup.data.train_split.lengths.tolist()
        fig = LLM.new_figure(6, 3)
        fig.subplots().hist(lengths, bins=20)
        LLM.save_figure(fig, run.setup.out / "lengths.png")
        return [LLM.Drawing("lengths.png", "lengths.png: how long the proverbs are",
                            f"The longest of the {len(lengths)} training lines has {max(lengths)} tokens.")]

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        assert LLM.main(TINY + ["--epochs", "1", "--pictures", "lengths", "loss", "--out", str(tmp_path)]) == 0
    assert (tmp_path / "lengths.png").read_bytes().startswith(b"\x89PNG")
    gallery = (tmp_path / "README.md").read_text(encoding="utf-8")
    assert "## lengths.png: how long the proverbs are" in gallery and "![lengths.png" in gallery
    assert "The longest of the" in gallery and "attention_layer1.png" not in gallery
    assert "table.txt, tokens.txt, loss.png, lengths.png and README.md" in printed.getvalue()


def test_character_kinds_for_the_embedding_colours():
    assert [LLM.character_kind(c) for c in "aÁbñ.¿ \n7"] == [
        "vowel", "vowel", "consonant", "consonant", "punctuation", "punctuation", "space or ⏎", "space or ⏎", "other"]


# --- H. Talking to the model ------------------------------------------------------------------

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


def test_an_unwritable_chat_log(capsys, trained, tmp_path):
    (tmp_path / "file").write_text("x")
    one_line_error(capsys, ["--chat", "--checkpoint", str(trained), "--chat-log", str(tmp_path / "file" / "log.txt")],
                   "cannot write the chat log")
