"""Each piece of LLM.py checked against its formula or against PyTorch's own implementation."""
import math
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import LLM
from conftest import ROOT, one_line_error, run_into


def tiny_config(**changes) -> LLM.Config:
    values = dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, context=24, dropout=0.0, seed=0)
    values.update(changes)
    return LLM.Config(**values)


def tiny_model(vocab_size=11, **changes) -> LLM.TransformerLM:
    torch.manual_seed(0)
    return LLM.TransformerLM(vocab_size, tiny_config(**changes)).eval()


# --- positional encoding -------------------------------------------------------------

@pytest.mark.parametrize("pos,i", [(0, 0), (1, 0), (5, 3), (17, 7), (63, 15), (40, 1)])
def test_positional_encoding_matches_the_paper(pos, i):
    d = 32
    pe = LLM.sinusoidal_positional_encoding(64, d)
    angle = pos / 10000 ** (2 * i / d)
    assert pe[pos, 2 * i].item() == pytest.approx(math.sin(angle), abs=1e-5)
    assert pe[pos, 2 * i + 1].item() == pytest.approx(math.cos(angle), abs=1e-5)


def test_positional_encoding_with_odd_width_keeps_the_formula():
    pe = LLM.sinusoidal_positional_encoding(10, 7)
    assert pe.shape == (10, 7)
    assert pe[3, 6].item() == pytest.approx(math.sin(3 / 10000 ** (6 / 7)), abs=1e-6)


def test_every_position_gets_a_different_encoding():
    pe = LLM.sinusoidal_positional_encoding(80, 64)
    distances = torch.cdist(pe, pe) + torch.eye(80) * 100
    assert distances.min() > 0.1


def test_encoding_is_added_per_position_the_same_for_every_sequence_of_the_batch():
    # The original script added pe[batch index] instead of pe[position]: with B != T and
    # two identical sequences at different batch indices, that bug fails every assert here.
    model = tiny_model()
    idx = torch.randint(0, 11, (3, 9))
    idx[2] = idx[0]
    added = model.embed(idx) - model.token_embedding(idx)  # (B, T, C)
    pe = LLM.sinusoidal_positional_encoding(9, 16)
    for b in range(3):
        torch.testing.assert_close(added[b], pe)
    assert not torch.allclose(added[:, 0], added[:, 1])  # differs across positions
    torch.testing.assert_close(model.embed(idx)[0], model.embed(idx)[2])


def test_token_embedding_is_scaled_by_sqrt_d_model():
    model = tiny_model()
    idx = torch.tensor([[3, 1, 4]])
    torch.testing.assert_close(model.token_embedding(idx), model.token_embedding.weight[idx] * 4.0)


# --- attention -------------------------------------------------------------------------

def test_causal_mask_is_lower_triangular():
    mask = LLM.causal_mask(4)
    assert mask.tolist() == [[True, False, False, False], [True, True, False, False],
                             [True, True, True, False], [True, True, True, True]]


def test_hand_written_attention_equals_scaled_dot_product_attention():
    torch.manual_seed(1)
    q, k, v = (torch.randn(2, 3, 7, 5) for _ in range(3))
    out, weights = LLM.attention(q, k, v, LLM.causal_mask(7))
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, is_causal=True))
    torch.testing.assert_close(weights.sum(-1), torch.ones(2, 3, 7))
    assert weights.triu(1).abs().max() == 0  # nothing above the diagonal: no look at the future


def test_attention_module_equals_torch_multihead_attention_with_the_same_weights():
    torch.manual_seed(2)
    C, H, T = 16, 4, 6
    ours = LLM.MultiHeadSelfAttention(C, H, context=T, fast=False).eval()
    theirs = nn.MultiheadAttention(C, H, batch_first=True).eval()
    with torch.no_grad():
        theirs.in_proj_weight.copy_(torch.cat([ours.query.weight, ours.key.weight, ours.value.weight]))
        theirs.in_proj_bias.copy_(torch.cat([ours.query.bias, ours.key.bias, ours.value.bias]))
        theirs.out_proj.weight.copy_(ours.output.weight)
        theirs.out_proj.bias.copy_(ours.output.bias)
    x = torch.randn(3, T, C)
    future = ~LLM.causal_mask(T)  # torch's convention: True = may NOT attend
    expected, expected_weights = theirs(x, x, x, attn_mask=future, average_attn_weights=False)
    got, weights = ours(x, return_weights=True)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(weights, expected_weights, atol=1e-6, rtol=1e-5)


def test_fast_and_exact_paths_give_the_same_logits_and_loss():
    idx = torch.randint(0, 11, (4, 20))
    fast, exact = tiny_model(attention="fast"), tiny_model(attention="exact")
    exact.load_state_dict(fast.state_dict())
    torch.testing.assert_close(fast(idx), exact(idx), atol=1e-5, rtol=1e-5)
    logits, weights = fast(idx, return_attention=True)  # weights always come from the formula
    torch.testing.assert_close(logits, fast(idx), atol=1e-5, rtol=1e-5)
    assert len(weights) == 2 and weights[0].shape == (4, 2, 20, 20)


@pytest.mark.parametrize("path", ["fast", "exact"])
def test_a_future_token_never_changes_an_earlier_logit(path):
    model = tiny_model(attention=path)
    idx = torch.randint(0, 11, (2, 16))
    for t in (0, 5, 14):
        changed = idx.clone()
        changed[:, t + 1:] = torch.randint(0, 11, changed[:, t + 1:].shape)
        assert not torch.equal(changed, idx)
        before, after = model(idx), model(changed)
        torch.testing.assert_close(before[:, :t + 1], after[:, :t + 1])
        assert not torch.allclose(before[:, t + 1:], after[:, t + 1:])  # later ones do change


def test_model_maps_ids_to_logits_and_refuses_too_long_sequences():
    model = tiny_model()
    assert model(torch.zeros(3, 24, dtype=torch.long)).shape == (3, 24, 11)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 25, dtype=torch.long))


# --- data ------------------------------------------------------------------------------

def test_tokenizer_round_trip_and_end_of_line():
    tok = LLM.CharTokenizer.from_lines(["¿Dónde va Vicente?", "Año de nieves, año de bienes."])
    text = "¿Año de Vicente?"
    assert tok.decode(tok.encode(text)) == text
    assert "\n" in tok.chars and tok.decode([tok.eol_id]) == "\n"
    assert tok.chars == sorted(tok.chars)


def test_tokenizer_names_the_unknown_character():
    tok = LLM.CharTokenizer.from_lines(["hola", "adiós"])
    with pytest.raises(LLM.UnknownCharacterError, match=r"'ç'.*CEDILLA") as error:
        tok.encode("hoça")
    assert "'h'" not in str(error.value).split(";")[0]  # only the unknown one is named


def test_split_holds_out_whole_lines_reproducibly():
    lines = [f"línea {i}" for i in range(50)]
    train, val, test = LLM.split_lines(lines, 0.1, seed=3, test_fraction=0.2)
    assert (len(train), len(val), len(test)) == (35, 5, 10) and sorted(train + val + test) == sorted(lines)
    assert LLM.split_lines(lines, 0.1, seed=3, test_fraction=0.2) == (train, val, test)
    assert LLM.split_lines(lines, 0.1, seed=4, test_fraction=0.2) != (train, val, test)
    assert LLM.split_lines(lines, 0.1, seed=3)[2] == []  # no test split asked for


def test_teacher_forcing_targets_are_the_inputs_shifted_by_one():
    tok = LLM.CharTokenizer.from_lines(["ab", "abcd"])
    split = LLM.encode_lines(["ab", "abcd"], tok, context=10)
    eol, a, b, c, d = (tok.ids[ch] for ch in "\nabcd")
    assert split.inputs.tolist() == [[eol, a, b, eol, eol], [eol, a, b, c, d]]
    assert split.targets.tolist() == [[a, b, eol, -100, -100], [a, b, c, d, eol]]
    assert split.lengths.tolist() == [3, 5]


def test_padding_is_masked_out_of_the_loss():
    tok = LLM.CharTokenizer.from_lines(["sal", "la sal del mar"])
    model = tiny_model(tok.vocab_size)
    alone = LLM.encode_lines(["sal"], tok, context=24)
    padded = LLM.encode_lines(["sal", "la sal del mar"], tok, context=24)
    assert padded.inputs.shape[1] > alone.inputs.shape[1]
    loss_alone = LLM.sequence_loss(model(alone.inputs), alone.targets)
    logits = model(padded.inputs[:1])  # the short line, padded to the long one's length
    loss_padded = LLM.sequence_loss(logits, padded.targets[:1])
    torch.testing.assert_close(loss_alone, loss_padded)


def test_batches_cover_every_line_once_and_cut_padding():
    tok = LLM.CharTokenizer.from_lines(["a" * n for n in range(1, 30)])
    split = LLM.encode_lines(["a" * n for n in range(1, 30)], tok, context=40)
    seen = 0
    for inputs, targets in LLM.batches(split, 4, torch.Generator().manual_seed(0)):
        seen += len(inputs)
        assert (targets[:, -1] != -100).any()  # the last column holds a real target
    assert seen == 29


# --- training, sampling ----------------------------------------------------------------

def test_a_tiny_model_overfits_one_batch():
    torch.manual_seed(0)
    tok = LLM.CharTokenizer.from_lines(["A quien madruga, Dios le ayuda.", "Más vale tarde que nunca."])
    split = LLM.encode_lines(["A quien madruga, Dios le ayuda.", "Más vale tarde que nunca."], tok, 40)
    model = LLM.TransformerLM(tok.vocab_size, tiny_config(context=40, d_model=32, n_heads=4, d_ff=64)).train()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    first = None
    for _ in range(150):
        loss = LLM.sequence_loss(model(split.inputs), split.targets)
        first = first if first is not None else loss.item()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    assert first > 2.5 and loss.item() < 0.05


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    cfg = LLM.Config(lr=1e-2, warmup=10)
    assert LLM.learning_rate(0, 100, cfg) == pytest.approx(1e-3)
    assert LLM.learning_rate(9, 100, cfg) == pytest.approx(1e-2)
    assert LLM.learning_rate(10, 100, cfg) == pytest.approx(1e-2)
    assert LLM.learning_rate(55, 100, cfg) == pytest.approx(0.55e-2)
    assert LLM.learning_rate(100, 100, cfg) == pytest.approx(1e-3)
    assert LLM.learning_rate(0, 20, cfg) == pytest.approx(0.25e-2)  # 20 steps: warm-up cut to a fifth, 4 steps
    assert LLM.learning_rate(3, 20, cfg) == pytest.approx(1e-2)


def test_sampling_picks_by_inverse_cumulative_probability():
    logits = torch.log(torch.tensor([0.1, 0.5, 0.3, 0.1]))
    gen = torch.Generator().manual_seed(5)
    u = float(torch.rand((), generator=torch.Generator().manual_seed(5)))
    choice, probs, order, cumulative, kept, drawn = LLM.choose_next(logits, 1.0, 2, 1.0, False, gen)
    assert drawn == pytest.approx(u) and kept == 2 and order[:2].tolist() == [1, 2]
    assert choice == (1 if u * 0.8 < 0.5 else 2)  # kept mass 0.8: first with cum p above u * 0.8
    assert LLM.choose_next(logits, 1.0, 0, 1.0, True, gen)[0] == 1  # greedy = most likely
    assert LLM.choose_next(logits, 1.0, 0, 0.55, False, gen)[4] == 2  # top-p 0.55 keeps 0.5 + 0.3


def test_generation_stops_at_end_of_line_and_records_every_step():
    tok = LLM.CharTokenizer.from_lines(["ab", "ba"])
    model = LLM.TransformerLM(tok.vocab_size, tiny_config(context=4))
    steps = []
    text = LLM.generate(model, tok, "abab", max_chars=10, generator=torch.Generator().manual_seed(0),
                        trace=steps)
    assert text.startswith("abab") and "\n" not in text
    assert len(steps) == len(text) - 4 + (1 if len(text) - 4 < 10 else 0)
    assert all(len(s.context) <= 4 for s in steps)  # cropped to the context
    with pytest.raises(LLM.UnknownCharacterError, match="'z'"):
        LLM.generate(model, tok, "az")


# --- the outputs and the command line ---------------------------------------------------

TINY_RUN = ["--epochs", "2", "--snapshot", "1", "--d-model", "16", "--heads", "2", "--layers", "1",
            "--d-ff", "32", "--max-chars", "30", "--prompts", "", "No hay"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    return run_into(tmp_path_factory, "run", TINY_RUN)


def test_tiny_run_writes_every_output(tiny_run):
    names = sorted(p.name for p in tiny_run.iterdir())
    assert names == ["README.md", "attention_layer1.png", "embeddings.png", "epoch_1.png", "epoch_2.png",
                     "evolution.gif", "loss.png", "model.pt", "parameters.txt", "positional_encoding.png",
                     "table.txt"]
    from PIL import Image
    for name in names:
        if name.endswith(".png"):
            with Image.open(tiny_run / name) as image:
                image.load()  # decodes the whole file
                assert image.format == "PNG" and 600 < image.width < 2000 and 300 < image.height < 1000, name
            assert (tiny_run / name).stat().st_size < 1_000_000, name
    with Image.open(tiny_run / "evolution.gif") as gif:
        frames = 0
        for frames in range(1, 100):
            gif.load()
            try:
                gif.seek(gif.tell() + 1)
            except EOFError:
                break
        assert gif.format == "GIF" and frames == 2  # one frame per epoch picture


def test_parameters_txt_lists_every_tensor_and_the_right_total(tiny_run):
    text = (tiny_run / "parameters.txt").read_text(encoding="utf-8")
    lines = LLM.text_lines(LLM.read_text(ROOT / "refranes.txt"))
    model = LLM.TransformerLM(LLM.CharTokenizer.from_lines(lines).vocab_size,
                              LLM.Config(d_model=16, n_heads=2, n_layers=1, d_ff=32))
    total = sum(p.numel() for p in model.parameters())
    assert f"Total parameters: {total:,}" in text
    for name, p in model.named_parameters():
        assert re.search(rf"^{re.escape(name)}\s+\({', '.join(map(str, p.shape))},?\)\s+{p.numel():,}\s",
                         text, re.M), name
    assert "MISMATCH" not in text
    assert "STATISTICS" in text and "tensor([" not in text


def test_table_probabilities_are_consistent(tiny_run):
    text = (tiny_run / "table.txt").read_text(encoding="utf-8")
    blocks = text.split("\nstep ")[1:]
    assert len(blocks) >= 2
    for block in blocks:
        rows = re.findall(r"^    ([* ])\s+(\d+)\s+(\S+)\s+(-?[\d.]+)\s+([\d.]+)\s+([\d.]+)$", block, re.M)
        assert rows, block
        p = [float(r[4]) for r in rows]
        cum = [float(r[5]) for r in rows]
        assert all(x >= 0 for x in p) and p == sorted(p, reverse=True)
        assert all(c <= 1.0001 for c in cum) and cum == sorted(cum)
        assert cum[0] == pytest.approx(p[0], abs=2e-4)
        chosen = re.search(r"chose '(.+?)' \(p = ([\d.]+)\), entropy ([\d.]+) bits", block)
        kept = [r[2] for r in rows if r[0] == "*"]
        assert chosen.group(1) in kept
        assert 0 <= float(chosen.group(3)) <= math.log2(80)
        draw = re.search(r"u = ([\d.]+), u x kept mass ([\d.]+) = ([\d.]+)", block)
        target = float(draw.group(3))
        first_above = next(r[2] for r, c in zip(rows, cum) if c > target - 1e-4)
        assert first_above == chosen.group(1)  # the draw picks the first cum p above u x mass


def test_same_seed_same_outputs(tiny_run, tmp_path):
    assert LLM.main(TINY_RUN + ["--out", str(tmp_path)]) == 0
    for name in sorted(p.name for p in tiny_run.iterdir()):
        if name != "model.pt":  # the checkpoint holds timings (seconds, tokens/s) in its history
            assert (tmp_path / name).read_bytes() == (tiny_run / name).read_bytes(), name


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
    (["--device", "tpu"], "device"),
    (["--device", "cuda:7"], "not available"),
    (["--epochs", "many"], "invalid int"),
    (["--attention", "approximate"], "--attention"),
    (["--prompts", "Çà"], "'Ç'"),
])
def test_bad_settings_and_prompts_give_one_line(capsys, tmp_path, argv, expected):
    one_line_error(capsys, argv + ["--out", str(tmp_path / "o")], expected)


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


def test_help_explains_every_config_field(capsys):
    with pytest.raises(SystemExit) as exit_:
        LLM.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for field in LLM.fields(LLM.Config):
        assert LLM.flag_of(field.name) in text
        assert " ".join(field.metadata["help"].split()) in text


def test_corpus_word_share_counts_only_what_the_model_wrote():
    samples = [("No hay", "No hay mal que pirulo", []), ("", "Quien calla xq", [])]
    assert LLM.corpus_word_share(samples, ["No hay mal que por bien no venga.", "Quien calla, otorga."]) == (4, 6)


# --- checkpoints -------------------------------------------------------------------------

def test_checkpoint_round_trip_gives_identical_logits(tmp_path):
    tok = LLM.CharTokenizer.from_lines(["Más vale tarde", "que nunca"])
    cfg = tiny_config(prompts=("Más",))
    torch.manual_seed(0)
    model = LLM.TransformerLM(tok.vocab_size, cfg).eval()
    LLM.save_checkpoint(tmp_path / "model.pt", model, cfg, tok, {"epoch": 3, "val_loss": 1.5})
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # the temporary file was renamed
    loaded, loaded_tok, loaded_cfg, payload = LLM.load_checkpoint(tmp_path / "model.pt", "cpu")
    assert loaded_tok.chars == tok.chars and loaded_cfg == cfg and payload["epoch"] == 3
    idx = torch.tensor([tok.encode("Más vale que")])
    assert torch.equal(model(idx), loaded(idx))


def test_generate_from_the_checkpoint_of_a_run(tiny_run, capsys):
    argv = ["--generate", "No hay", "--samples", "2", "--out", str(tiny_run), "--max-chars", "10"]
    assert LLM.main(argv) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and all(line.startswith("No hay") for line in printed)
    one_line_error(capsys, ["--generate", "No hay ç", "--out", str(tiny_run)], "'ç'")


def test_missing_corrupt_foreign_and_mismatched_checkpoints(capsys, tmp_path):
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "none.pt")], "not found")
    (tmp_path / "corrupt.pt").write_bytes(b"PK\x03\x04 not really a zip")
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "corrupt.pt")], "not a readable")
    torch.save({"weights": torch.zeros(2)}, tmp_path / "foreign.pt")
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "foreign.pt")], "not an LLM.py")
    tok = LLM.CharTokenizer.from_lines(["No hay", "mal"])
    model = LLM.TransformerLM(tok.vocab_size, tiny_config())
    LLM.save_checkpoint(tmp_path / "model.pt", model, tiny_config(), tok, {"epoch": 1, "val_loss": 2.0})
    payload = torch.load(tmp_path / "model.pt", weights_only=True)
    payload["config"]["d_model"] = 32  # the weights are for 16
    torch.save(payload, tmp_path / "mismatch.pt")
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "mismatch.pt")], "does not match")


def test_a_run_killed_during_training_leaves_a_loadable_checkpoint(tmp_path):
    import signal
    import time
    argv = [sys.executable, str(ROOT / "LLM.py"), "--out", str(tmp_path), "--epochs", "500", "--snapshot", "0",
            "--patience", "0",
            "--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32"]
    process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT)
    try:
        deadline = time.time() + 60
        while not (tmp_path / "model.pt").exists() and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(1.0)  # let it overwrite the checkpoint a few more times
        assert process.poll() is None, "training ended before it could be killed"
    finally:
        process.send_signal(signal.SIGKILL)
        process.wait()
    model, tokenizer, cfg, payload = LLM.load_checkpoint(tmp_path / "model.pt", "cpu")
    assert cfg.d_model == 16 and payload["epoch"] >= 1
