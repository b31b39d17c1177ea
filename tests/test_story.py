"""Part I of LLM.py, section by section, in the file's order: each piece checked against its
formula evaluated by hand or against PyTorch's own implementation."""
import math
import re

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import LLM
from conftest import PROVERBS, TINY_RUN, tiny_config, tiny_model, tokenizer_of


def proverbs_data(cfg):
    return LLM.prepare_data(LLM.read_text(PROVERBS), cfg)


# --- 1. the settings ------------------------------------------------------------------------

def test_help_explains_every_config_field(capsys):
    with pytest.raises(SystemExit) as exit_:
        LLM.main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    for field in LLM.fields(LLM.RunConfig):
        assert LLM.flag_of(field.name) in text
        assert " ".join(field.metadata["help"].split()) in text


def test_presets_change_the_defaults_and_typed_flags_change_the_presets():
    fields = {f.name for f in LLM.fields(LLM.RunConfig)}
    for name, changes in LLM.PRESETS.items():
        assert set(changes) <= fields, name
        LLM.validate(LLM.replace(LLM.RunConfig(), **changes), check_device=False)
    assert LLM.PRESETS["classroom"] == {}  # the classroom run is the defaults
    typed = vars(LLM.build_parser(defaults=False).parse_args(["--preset", "longer", "--epochs", "14"]))
    cfg = LLM.config_of(typed, "longer")
    assert cfg.epochs == 14 and cfg.d_model == LLM.PRESETS["longer"]["d_model"] and cfg.out == "outputs/longer"


def test_an_unknown_preset_is_one_line(capsys):
    from conftest import one_line_error
    one_line_error(capsys, ["--preset", "huge"], "--preset", "huge", "classroom", "longer")


# --- 2. the proverbs, as numbers ------------------------------------------------------------

def test_a_text_becomes_its_non_blank_lines_without_surrounding_spaces():
    text = "  Más vale tarde que nunca.  \n\n \t \n\tA la tercera va la vencida.\r\nNo hay mal que por bien no venga."
    assert LLM.text_lines(text) == ["Más vale tarde que nunca.", "A la tercera va la vencida.",
                                    "No hay mal que por bien no venga."]


def test_tokenizer_round_trip_and_end_of_line():
    tok = tokenizer_of(["¿Dónde va Vicente?", "Año de nieves, año de bienes."])
    text = "¿Año de Vicente?"
    assert tok.decode(tok.encode(text)) == text
    assert "\n" in tok.chars and tok.decode([tok.eol_id]) == "\n"
    assert tok.chars == sorted(tok.chars)


def test_tokenizer_names_the_unknown_character():
    tok = tokenizer_of(["hola", "adiós"])
    with pytest.raises(LLM.UnknownCharacterError, match=r"'ç'.*CEDILLA") as error:
        tok.encode("hoça")
    assert "'h'" not in str(error.value).split(";")[0]  # only the unknown one is named


# --- 3. teacher forcing, padding, batches ----------------------------------------------------

def test_split_holds_out_whole_lines_reproducibly():
    lines = [f"línea {i}" for i in range(50)]
    train, val, test = LLM.split_lines(lines, 0.1, seed=3, test_fraction=0.2)
    assert (len(train), len(val), len(test)) == (35, 5, 10) and sorted(train + val + test) == sorted(lines)
    assert LLM.split_lines(lines, 0.1, seed=3, test_fraction=0.2) == (train, val, test)
    assert LLM.split_lines(lines, 0.1, seed=4, test_fraction=0.2) != (train, val, test)
    assert LLM.split_lines(lines, 0.1, seed=3)[2] == []  # no test split asked for


def test_teacher_forcing_targets_are_the_inputs_shifted_by_one():
    tok = tokenizer_of(["ab", "abcd"])
    split = LLM.encode_lines(["ab", "abcd"], tok, context=10)
    eol, a, b, c, d = (tok.ids[ch] for ch in "\nabcd")
    assert split.inputs.tolist() == [[eol, a, b, eol, eol], [eol, a, b, c, d]]
    assert split.targets.tolist() == [[a, b, eol, -100, -100], [a, b, c, d, eol]]
    assert split.lengths.tolist() == [3, 5]


def test_padding_is_masked_out_of_the_loss():
    tok = tokenizer_of(["sal", "la sal del mar"])
    model = tiny_model(tok.vocab_size)
    alone = LLM.encode_lines(["sal"], tok, context=24)
    padded = LLM.encode_lines(["sal", "la sal del mar"], tok, context=24)
    assert padded.inputs.shape[1] > alone.inputs.shape[1]
    loss_alone = LLM.sequence_loss(model(alone.inputs), alone.targets)
    logits = model(padded.inputs[:1])  # the short line, padded to the long one's length
    torch.testing.assert_close(loss_alone, LLM.sequence_loss(logits, padded.targets[:1]))


def test_a_padded_and_an_unpadded_batch_give_the_same_loss_for_the_same_lines():
    lines = ["Más vale tarde que nunca.", "Ojo por ojo."]
    tok = tokenizer_of(lines)
    model = tiny_model(tok.vocab_size, context=40)
    padded = LLM.encode_lines(lines, tok, 40)  # the short line padded to the long one
    together = LLM.sequence_loss(model(padded.inputs), padded.targets)
    total, count = 0.0, 0
    for line in lines:  # each line alone: no padding at all
        alone = LLM.encode_lines([line], tok, 40)
        total += LLM.sequence_loss(model(alone.inputs), alone.targets) * alone.n_tokens
        count += alone.n_tokens
    torch.testing.assert_close(together, total / count)


def test_batches_cover_every_line_once_and_cut_padding():
    tok = tokenizer_of(["a" * n for n in range(1, 30)])
    split = LLM.encode_lines(["a" * n for n in range(1, 30)], tok, context=40)
    seen = 0
    for inputs, targets in split.batches(4, torch.Generator().manual_seed(0)):
        seen += len(inputs)
        assert (targets[:, -1] != -100).any()  # the last column holds a real target
    assert seen == 29
    assert torch.equal(torch.cat([t[:, :1] for _, t in split.batches(4)]), split.targets[:, :1])  # stored order


# --- 4. embeddings, 5. positional encoding ---------------------------------------------------

def test_token_embedding_is_scaled_by_sqrt_d_model():
    model = tiny_model()
    idx = torch.tensor([[3, 1, 4]])
    torch.testing.assert_close(model.token_embedding(idx), model.token_embedding.weight[idx] * 4.0)


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
    # Adding pe[batch index] instead of pe[position] fails every assert here: B != T, and two
    # identical sequences sit at different batch indices.
    model = tiny_model()
    idx = torch.randint(0, 11, (3, 9))
    idx[2] = idx[0]
    added = model.embed(idx) - model.token_embedding(idx)  # (B, T, C)
    pe = LLM.sinusoidal_positional_encoding(9, 16)
    for b in range(3):
        torch.testing.assert_close(added[b], pe)
    assert not torch.allclose(added[:, 0], added[:, 1])  # differs across positions
    torch.testing.assert_close(model.embed(idx)[0], model.embed(idx)[2])


# --- 6. attention ----------------------------------------------------------------------------

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


def test_attention_weights_are_the_formula_evaluated_by_hand():
    q = torch.tensor([[[[1.0, 0.0], [0.0, 2.0]]]])  # (B=1, H=1, T=2, D=2)
    k = torch.tensor([[[[1.0, 1.0], [2.0, 0.0]]]])
    v = torch.tensor([[[[1.0, 2.0], [3.0, 4.0]]]])
    out, weights = LLM.attention(q, k, v, LLM.causal_mask(2))
    s10, s11 = 2.0 / math.sqrt(2), 0.0  # row 1: q1.k0 / sqrt(2), q1.k1 / sqrt(2)
    w10 = math.exp(s10) / (math.exp(s10) + math.exp(s11))
    assert weights[0, 0].tolist() == [[1.0, 0.0], [pytest.approx(w10), pytest.approx(1 - w10)]]
    assert out[0, 0, 1].tolist() == pytest.approx([w10 * 1 + (1 - w10) * 3, w10 * 2 + (1 - w10) * 4])


def test_split_heads_gives_each_head_its_own_d_columns_and_join_heads_puts_them_back():
    x = torch.randn(2, 5, 12)  # (B, T, C), 3 heads of D = 4
    heads = LLM.split_heads(x, 3)
    assert heads.shape == (2, 3, 5, 4)
    for h in range(3):  # head h is columns h*D .. (h+1)*D of every position, by hand
        torch.testing.assert_close(heads[:, h], x[:, :, 4 * h:4 * h + 4], rtol=0, atol=0)
    torch.testing.assert_close(LLM.join_heads(heads), x, rtol=0, atol=0)


def test_attention_module_equals_torch_multihead_attention_with_the_same_weights():
    torch.manual_seed(2)
    C, H, T = 16, 4, 6
    ours = LLM.MultiHeadSelfAttention(C, H, context=T).eval()
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


@pytest.mark.parametrize("code", ["auto", "fast"])
def test_a_run_on_a_cpu_trains_with_the_code_the_story_shows_unless_asked_otherwise(code, monkeypatch, tmp_path,
                                                                                 capsys):
    """What is read is what runs: by default, on a CPU, every training step goes through Part I's
    attention() (each layer, each step) and Adam.step, and the run says so; --code fast runs
    neither (PyTorch's fused kernel and FastAdam instead) and says that."""
    from conftest import TINY_ARGV
    calls = {"attention": 0, "adam": 0}
    attention, adam_step = LLM.attention, LLM.Adam.step

    def counted_attention(*args):
        calls["attention"] += 1
        return attention(*args)

    def counted_step(self):
        calls["adam"] += 1
        return adam_step(self)

    monkeypatch.setattr(LLM, "attention", counted_attention)
    monkeypatch.setattr(LLM.Adam, "step", counted_step)
    argv = TINY_ARGV + ["--epochs", "1", "--pictures", "--device", "cpu", "--code", code, "--out", str(tmp_path)]
    assert LLM.main(argv) == 0
    out = capsys.readouterr().out
    steps = LLM.load_checkpoint(tmp_path / "model.pt", "cpu")[3]["training"]["step"]  # one epoch's steps
    assert steps > 0
    if code == "auto":
        assert "code: the story's (Part I's attention() and Adam, as written)" in out
        assert calls["adam"] == steps and calls["attention"] >= 2 * steps  # two layers, every step
    else:
        assert "code: fast (fused attention" in out
        assert calls == {"attention": 0, "adam": 0}


def test_the_fast_and_the_story_code_give_the_same_logits_and_loss():
    idx = torch.randint(0, 11, (4, 20))
    fast, exact = tiny_model(code="fast"), tiny_model(code="story")
    exact.load_state_dict(fast.state_dict())
    torch.testing.assert_close(fast(idx), exact(idx), atol=1e-5, rtol=1e-5)
    logits, weights = fast(idx, return_attention=True)  # weights always come from the formula
    torch.testing.assert_close(logits, fast(idx), atol=1e-5, rtol=1e-5)
    assert len(weights) == 2 and weights[0].shape == (4, 2, 20, 20)


@pytest.mark.parametrize("code", ["fast", "story"])
def test_a_future_token_never_changes_an_earlier_logit(code):
    model = tiny_model(code=code)
    idx = torch.randint(0, 11, (2, 16))
    for t in (0, 5, 14):
        changed = idx.clone()
        changed[:, t + 1:] = torch.randint(0, 11, changed[:, t + 1:].shape)
        assert not torch.equal(changed, idx)
        before, after = model(idx), model(changed)
        torch.testing.assert_close(before[:, :t + 1], after[:, :t + 1])
        assert not torch.allclose(before[:, t + 1:], after[:, t + 1:])  # later ones do change


# --- 7. the encoder layer --------------------------------------------------------------------

@pytest.mark.parametrize("code", ["fast", "story"])
def test_encoder_layer_equals_torch_transformer_encoder_layer_with_the_same_weights(code):
    """Pre-norm attention and feed-forward blocks with their residual connections: the same
    numbers as nn.TransformerEncoderLayer(norm_first=True) with ReLU and the causal mask."""
    torch.manual_seed(3)
    C, H, d_ff, T = 16, 4, 40, 9
    ours = LLM.EncoderLayer(C, H, d_ff, context=T, dropout=0.0).eval()
    if code == "fast":  # PyTorch's fused kernel, as a GPU run (or --code fast) plugs it in
        ours.attention.__class__ = LLM.FusedSelfAttention
    theirs = nn.TransformerEncoderLayer(C, H, d_ff, dropout=0.0, activation="relu", batch_first=True,
                                        norm_first=True).eval()
    with torch.no_grad():
        for module in (ours.attention_norm, ours.feed_forward_norm):  # not the default 1 and 0
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
        attn = ours.attention
        theirs.self_attn.in_proj_weight.copy_(torch.cat([attn.query.weight, attn.key.weight, attn.value.weight]))
        theirs.self_attn.in_proj_bias.copy_(torch.cat([attn.query.bias, attn.key.bias, attn.value.bias]))
        theirs.self_attn.out_proj.load_state_dict(attn.output.state_dict())
        theirs.linear1.load_state_dict(ours.feed_forward.expand.state_dict())
        theirs.linear2.load_state_dict(ours.feed_forward.contract.state_dict())
        theirs.norm1.load_state_dict(ours.attention_norm.state_dict())
        theirs.norm2.load_state_dict(ours.feed_forward_norm.state_dict())
    x = torch.randn(3, T, C)
    expected = theirs(x, src_mask=~LLM.causal_mask(T))  # True = may not attend
    got, _ = ours(x)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-5)


def test_feed_forward_is_relu_between_two_linear_maps():
    torch.manual_seed(4)
    ffn = LLM.FeedForward(6, 10)
    x = torch.randn(2, 3, 6)
    by_hand = torch.clamp(x @ ffn.expand.weight.T + ffn.expand.bias, min=0) @ ffn.contract.weight.T + ffn.contract.bias
    torch.testing.assert_close(ffn(x), by_hand)


# --- 8. the model ----------------------------------------------------------------------------

def test_model_maps_ids_to_logits_and_refuses_too_long_sequences():
    model = tiny_model()
    assert model(torch.zeros(3, 24, dtype=torch.long)).shape == (3, 24, 11)
    with pytest.raises(ValueError):
        model(torch.zeros(1, 25, dtype=torch.long))


def test_model_is_embedding_then_layers_then_norm_and_head():
    model = tiny_model()
    idx = torch.randint(0, 11, (2, 7))
    x = model.token_embedding.weight[idx] * 4.0 + LLM.sinusoidal_positional_encoding(7, 16)  # sqrt(16) = 4
    for layer in model.layers:
        x, _ = layer(x)
    torch.testing.assert_close(model(idx), model.lm_head(model.final_norm(x)))


# --- 9. the loss ----------------------------------------------------------------------------

def test_loss_is_the_mean_negative_log_probability_of_the_real_targets():
    torch.manual_seed(5)
    logits = torch.randn(2, 4, 7)
    targets = torch.tensor([[1, 2, 3, -100], [0, 6, -100, -100]])
    terms = [-torch.log_softmax(logits[b, t], dim=-1)[targets[b, t]]
             for b in range(2) for t in range(4) if targets[b, t] != -100]
    assert LLM.sequence_loss(logits, targets).item() == pytest.approx(float(sum(terms) / len(terms)), rel=1e-6)
    assert LLM.sequence_loss(torch.zeros(1, 3, 65), torch.tensor([[1, 2, 3]])).item() == pytest.approx(math.log(65))


def test_perplexity_and_bits_per_character():
    assert LLM.perplexity_report(math.log(8)) == "loss 2.079 nats/char | perplexity 8.00 | 3.000 bits/char"


def hand_counts(lines, tok):
    """(pairs, singles) counted one by one over ⏎ + line + ⏎, the teacher-forcing sequences."""
    pairs, singles = {}, {}
    for line in lines:
        ids = [tok.eol_id] + tok.encode(line) + [tok.eol_id]
        for b, c in zip(ids, ids[1:]):
            pairs[b, c] = pairs.get((b, c), 0) + 1
            singles[c] = singles.get(c, 0) + 1
    return pairs, singles


@pytest.mark.parametrize("tokenizer", ["char", "bpe"])
def test_counting_models_equal_add_one_counts_worked_out_by_hand(tokenizer):
    train, held = ["la casa", "las alas", "sal"], ["la sal", "casa"]
    tok = LLM.CharTokenizer.learn("\n".join(train + held), train, tiny_config(tokenizer=tokenizer, vocab_size=9))
    V = tok.vocab_size
    counts = LLM.count_pairs(LLM.encode_lines(train, tok, 24), V)
    pairs, singles = hand_counts(train, tok)
    assert counts.tolist() == [[1 + pairs.get((b, c), 0) for c in range(V)] for b in range(V)]
    unigram, bigram = LLM.counting_losses(counts, LLM.encode_lines(held, tok, 24))
    n, row = sum(singles.values()), lambda b: sum(pairs.get((b, c), 0) for c in range(V))  # noqa: E731
    measured = [p for ids in ([tok.eol_id] + tok.encode(h) + [tok.eol_id] for h in held) for p in zip(ids, ids[1:])]
    assert unigram == pytest.approx(-sum(math.log((singles.get(c, 0) + 1) / (n + V)) for _, c in measured)
                                    / len(measured), rel=1e-6)
    assert bigram == pytest.approx(-sum(math.log((pairs.get((b, c), 0) + 1) / (row(b) + V)) for b, c in measured)
                                   / len(measured), rel=1e-6)
    assert bigram < unigram < math.log(V)  # the order the run prints: counting pairs beats counting letters


def test_counting_models_read_the_windows_of_a_long_text_once_each():
    text = "abracadabra " * 40
    cfg = tiny_config(mode="stream", context=8, val_fraction=0.1, test_fraction=0.1)
    data = LLM.prepare_any_text(text, cfg)
    counts = LLM.count_pairs(data.train_split, data.tokenizer.vocab_size)
    assert int(counts.sum()) - data.tokenizer.vocab_size ** 2 == data.train_split.n_tokens


# --- 10. the learning-rate schedule ------------------------------------------------------------

def test_learning_rate_warms_up_then_decays_to_a_tenth():
    cfg = LLM.RunConfig(lr=1e-2, warmup=10)
    assert LLM.learning_rate(0, 100, cfg) == pytest.approx(1e-3)
    assert LLM.learning_rate(9, 100, cfg) == pytest.approx(1e-2)
    assert LLM.learning_rate(10, 100, cfg) == pytest.approx(1e-2)
    assert LLM.learning_rate(55, 100, cfg) == pytest.approx(0.55e-2)
    assert LLM.learning_rate(100, 100, cfg) == pytest.approx(1e-3)
    assert LLM.learning_rate(0, 20, cfg) == pytest.approx(0.25e-2)  # 20 steps: warm-up cut to a fifth, 4 steps
    assert LLM.learning_rate(3, 20, cfg) == pytest.approx(1e-2)
    other = LLM.RunConfig(lr=1e-2, warmup=10, lr_floor=0.5, warmup_cap=0.1)
    assert LLM.learning_rate(100, 100, other) == pytest.approx(0.5e-2)  # the floor is lr_floor x lr
    assert LLM.learning_rate(0, 20, other) == pytest.approx(0.5e-2)  # warm-up cut to a tenth of 20: 2 steps


# --- 11. Adam ---------------------------------------------------------------------------------

@pytest.mark.parametrize("optimizer", ["adam", "adamw"])
@pytest.mark.parametrize("kind", ["Adam", "FastAdam"])
def test_the_hand_written_adam_takes_torch_optims_steps(optimizer, kind):
    """Adam's formula as section 12 writes it (one tensor at a time), and FastAdam (all tensors
    at once, what training runs), against torch.optim's Adam / AdamW over 30 steps with a
    changing learning rate. An eps of 1e-3, large enough that an update without it differs beyond
    the tolerance (tests/mutate.py's fast-adam-no-eps)."""
    cfg = tiny_config(optimizer=optimizer, weight_decay=0.3, eps=1e-3)
    torch.manual_seed(0)
    ours, theirs = LLM.TransformerLM(10, cfg), LLM.TransformerLM(10, cfg)
    theirs.load_state_dict(ours.state_dict())
    groups = LLM.make_optimizer(ours, cfg).param_groups
    hand = getattr(LLM, kind)(groups, lr=cfg.lr, eps=cfg.eps)
    matrices = [p for p in theirs.parameters() if p.dim() >= 2]
    others = [p for p in theirs.parameters() if p.dim() < 2]
    reference = (torch.optim.AdamW([{"params": matrices, "weight_decay": 0.3}, {"params": others, "weight_decay": 0.0}],
                                   lr=cfg.lr, eps=cfg.eps) if optimizer == "adamw" else
                 torch.optim.Adam(theirs.parameters(), lr=cfg.lr, eps=cfg.eps))
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


def test_adamw_decays_the_matrices_only():
    model = LLM.TransformerLM(10, tiny_config())
    groups = LLM.make_optimizer(model, tiny_config(optimizer="adamw", weight_decay=0.3)).param_groups
    decayed = {id(p) for p in groups[0]["params"]}
    assert groups[0]["weight_decay"] == 0.3 and groups[1]["weight_decay"] == 0.0
    for name, p in model.named_parameters():
        assert (id(p) in decayed) == (name.endswith("weight") and p.dim() == 2), name
    assert [g["weight_decay"] for g in LLM.make_optimizer(model, tiny_config()).param_groups] == [0.0]


# --- 12. one training step ----------------------------------------------------------------------

def test_train_step_clips_the_gradient_to_clip_and_reports_its_norm_before():
    cfg = tiny_config()
    model = tiny_model(11).train()
    copy = tiny_model(11).train()
    ids = torch.randint(11, (4, 12))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    LLM.sequence_loss(copy(inputs), targets).backward()  # the same gradient, unclipped
    unclipped = torch.cat([p.grad.flatten() for p in copy.parameters()])
    optimizer = LLM.make_optimizer(model, cfg)
    loss, norm = LLM.train_step(model, optimizer, inputs, targets, 1e-3, 0.05)
    assert float(norm) == pytest.approx(float(unclipped.norm()), rel=1e-5) and float(norm) > 0.05
    clipped = torch.cat([p.grad.flatten() for p in model.parameters()])  # the gradient Adam used
    assert float(clipped.norm()) == pytest.approx(0.05, rel=1e-4)  # g * clip / ||g||
    torch.testing.assert_close(clipped, unclipped * 0.05 / unclipped.norm(), rtol=1e-4, atol=1e-7)
    assert all(group["lr"] == 1e-3 for group in optimizer.param_groups) and optimizer.t == 1


def test_train_step_with_clip_0_leaves_the_gradient_as_it_is():
    """The settings say clip 0 = no clipping: train_step itself keeps that promise."""
    model, copy = tiny_model(11).train(), tiny_model(11).train()
    ids = torch.randint(11, (4, 12))
    inputs, targets = ids[:, :-1], ids[:, 1:]
    LLM.sequence_loss(copy(inputs), targets).backward()
    unclipped = torch.cat([p.grad.flatten() for p in copy.parameters()])
    before = [p.detach().clone() for p in model.parameters()]
    loss, norm = LLM.train_step(model, LLM.make_optimizer(model, tiny_config()), inputs, targets, 1e-3, 0)
    used = torch.cat([p.grad.flatten() for p in model.parameters()])
    torch.testing.assert_close(used, unclipped, rtol=1e-5, atol=1e-8)  # not scaled at all
    assert float(norm) == pytest.approx(float(unclipped.norm()), rel=1e-5) and float(norm) > 0
    assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters()))  # and every weight moved


def test_a_tiny_model_overfits_one_batch_with_the_files_own_training_step():
    lines = ["A quien madruga, Dios le ayuda.", "Más vale tarde que nunca."]
    tok = tokenizer_of(lines)
    split = LLM.encode_lines(lines, tok, 40)
    cfg = tiny_config(context=40, d_model=32, n_heads=4, d_ff=64, lr=1e-2)
    model = tiny_model(tok.vocab_size, context=40, d_model=32, n_heads=4, d_ff=64).train()
    optimizer = LLM.make_optimizer(model, cfg)
    losses = [LLM.train_step(model, optimizer, split.inputs, split.targets, cfg.lr, 1.0)[0].item()
              for _ in range(150)]
    assert losses[0] > 2.5 and losses[-1] < 0.05


def test_evaluate_is_the_loss_per_real_token_over_the_whole_split():
    lines = ["Ojo por ojo.", "Más vale tarde que nunca.", "Quien calla, otorga."]
    tok = tokenizer_of(lines)
    model = tiny_model(tok.vocab_size, context=40)
    split = LLM.encode_lines(lines, tok, 40)
    by_hand = LLM.sequence_loss(model(split.inputs), split.targets).item()  # one batch holding every line
    assert LLM.evaluate(model, split, 2, torch.device("cpu")) == pytest.approx(by_hand, rel=1e-5)  # batches of 2


# --- 13. the training loop ----------------------------------------------------------------------

def test_training_reports_clipping_for_every_step():
    cfg = tiny_config(epochs=1, clip=1e-3, patience=0)
    data = proverbs_data(cfg)
    torch.manual_seed(0)
    model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
    history = LLM.train(model, data, cfg, torch.device("cpu"), log=lambda m: None)
    assert history[0]["clipped"] == 1.0 and history[0]["grad_norm"] > 1e-3


def test_early_stopping_restores_the_weights_of_the_best_epoch(monkeypatch):
    cfg = tiny_config(epochs=10, patience=2)
    data = proverbs_data(cfg)
    torch.manual_seed(0)
    model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
    losses = iter([3.0, 2.0, 2.5, 2.6, 1.0, 1.0])  # the best is epoch 2; epochs 3 and 4 are worse
    monkeypatch.setattr(LLM, "evaluate", lambda *args, **kwargs: next(losses))
    seen, printed = {}, []

    class Watch(LLM.Hooks):  # the weights at the end of every epoch, through the story's own hook
        def on_epoch_end(self, state, record):
            seen[record["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    history = LLM.train(model, data, cfg, torch.device("cpu"), Watch(), log=printed.append)
    assert [r["epoch"] for r in history] == [1, 2, 3, 4]  # patience 2: stopped after epoch 4
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, seen[2][name]), name
    assert not torch.equal(seen[4]["lm_head.weight"], seen[2]["lm_head.weight"])
    assert "early stop" in printed[-2] and "restored the weights of epoch 2" in printed[-1]


def test_a_non_finite_loss_stops_training_and_the_model_keeps_the_last_good_epoch(monkeypatch):
    cfg = tiny_config(epochs=5, patience=0)
    data = proverbs_data(cfg)
    torch.manual_seed(0)
    model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
    losses = iter([3.0, 2.0, float("nan")])
    monkeypatch.setattr(LLM, "evaluate", lambda *args, **kwargs: next(losses))
    seen = {}

    class Watch(LLM.Hooks):
        def on_new_best(self, state, record):
            seen[record["epoch"]] = {k: v.clone() for k, v in model.state_dict().items()}

    state = LLM.TrainingState()
    with pytest.raises(LLM.TrainingDiverged, match="became nan in epoch 3.*keeps epoch 2"):
        LLM.train(model, data, cfg, torch.device("cpu"), Watch(), state, log=lambda m: None)
    assert [r["epoch"] for r in state.history] == [1, 2] and state.best["epoch"] == 2
    for name, tensor in model.state_dict().items():
        assert torch.equal(tensor, seen[2][name]), name


def test_hooks_see_every_step_and_every_epoch():
    cfg = tiny_config(epochs=2, patience=0)
    data = proverbs_data(cfg)
    torch.manual_seed(0)
    model = LLM.TransformerLM(data.tokenizer.vocab_size, cfg)
    calls = []

    class Count(LLM.Hooks):
        def on_step(self, state):
            calls.append(("step", state.epoch, state.step))

        def on_epoch_end(self, state, record):
            calls.append(("epoch", record["epoch"], record["step"]))

    history = LLM.train(model, data, cfg, torch.device("cpu"), Count(), log=lambda m: None)
    per_epoch = math.ceil(len(data.train_split) / cfg.batch_size)
    assert [c for c in calls if c[0] == "epoch"] == [("epoch", 1, per_epoch), ("epoch", 2, 2 * per_epoch)]
    assert [c[2] for c in calls if c[0] == "step"] == list(range(1, 2 * per_epoch + 1))
    assert [r["step"] for r in history] == [per_epoch, 2 * per_epoch]


# --- 14. writing ----------------------------------------------------------------------------------

def test_sampling_picks_by_inverse_cumulative_probability():
    logits = torch.log(torch.tensor([0.1, 0.5, 0.3, 0.1]))
    u = float(torch.rand((), generator=torch.Generator().manual_seed(5)))
    choice = LLM.choose_next(logits, LLM.Sampling(top_k=2), torch.Generator().manual_seed(5))
    assert choice.u == pytest.approx(u) and choice.kept == 2 and choice.order[:2].tolist() == [1, 2]
    assert choice.id == (1 if u * 0.8 < 0.5 else 2)  # kept mass 0.8: first with cum p above u * 0.8
    assert choice.probs.tolist() == pytest.approx([0.1, 0.5, 0.3, 0.1])
    gen = torch.Generator().manual_seed(0)
    assert LLM.choose_next(logits, LLM.Sampling(greedy=True), gen).id == 1  # greedy = most likely
    assert LLM.choose_next(logits, LLM.Sampling(top_p=0.55), gen).kept == 2  # top-p 0.55 keeps 0.5 + 0.3
    hot = LLM.choose_next(logits, LLM.Sampling(temperature=2.0), gen).probs  # softmax(logits / 2)
    torch.testing.assert_close(hot, torch.softmax(logits / 2, dim=-1))


def test_generation_stops_at_end_of_line_and_records_every_step():
    tok = tokenizer_of(["ab", "ba"])
    model = LLM.TransformerLM(tok.vocab_size, tiny_config(context=4))
    steps = []
    text = LLM.generate(model, tok, "abab", LLM.Sampling(max_chars=10), torch.Generator().manual_seed(0), steps)
    assert text.startswith("abab") and "\n" not in text
    assert len(steps) == len(text) - 4 + (1 if len(text) - 4 < 10 else 0)
    assert all(len(s.window) <= 4 for s in steps)  # cropped to the context
    assert [s.position for s in steps] == list(range(5, 5 + len(steps)))  # ⏎ + "abab", then one per step
    with pytest.raises(LLM.UnknownCharacterError, match="'z'"):
        LLM.generate(model, tok, "az", LLM.Sampling())


# --- 15. the run: the three outputs ------------------------------------------------------------------

def test_tiny_run_writes_every_output(tiny_run):
    names = sorted(p.name for p in tiny_run.iterdir() if p.name != ".lock")  # the folder's lock: appendix A
    assert names == [".written", "README.md", "attention_layer1.png", "attention_layer2.png", "embeddings.png", "epoch_1.png",
                     "epoch_2.png", "epoch_3.png", "evolution.gif", "explorer.html", "loss.png", "model.pt", "parameters.txt",
                     "positional_encoding.png", "table.txt", "tokens.txt"]
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
        assert gif.format == "GIF" and frames == 3  # one frame per epoch picture


def test_parameters_txt_lists_every_tensor_and_the_right_total(tiny_run):
    text = (tiny_run / "parameters.txt").read_text(encoding="utf-8")
    lines = LLM.text_lines(LLM.read_text(PROVERBS))
    model = LLM.TransformerLM(tokenizer_of(lines).vocab_size, tiny_config(context=80))
    total = sum(p.numel() for p in model.parameters())
    V, C, N, d_ff = len(set("".join(lines)) | {"\n"}), 16, 2, 32
    assert total == V * C + N * (4 * C * C + 2 * C * d_ff + d_ff + 9 * C) + 2 * C + C * V + V  # the formula
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
    for name in sorted(p.name for p in tmp_path.iterdir()):
        if name != "model.pt":  # the checkpoint holds timings (seconds, tokens/s) in its history
            assert (tmp_path / name).read_bytes() == (tiny_run / name).read_bytes(), name


def test_corpus_word_share_counts_only_what_the_model_wrote():
    samples = [LLM.Sample("No hay", "No hay mal que pirulo", "new", []), LLM.Sample("", "Quien calla xq", "new", [])]
    assert LLM.corpus_word_share(samples, ["No hay mal que por bien no venga.", "Quien calla, otorga."]) == (4, 6)


def test_samples_are_marked_memorised_rediscovered_or_new_with_their_nearest_proverb():
    tok = tokenizer_of(["abc"])
    train = ["Más vale tarde que nunca.", "Quien calla, otorga.", "No hay mal que dure cien años."]
    data = LLM.Data("line", "", tok, None, None, None, train, 0,
                    held_out_text=["No hay mal que por bien no venga."])
    sample = lambda text: LLM.label(LLM.Sample("", text, "", []), data)  # noqa: E731
    assert sample("Más vale tarde que nunca.").kind == "memorised"
    found = sample("No hay mal que por bien no venga.")  # held out: its nearest is a training line
    assert (found.kind, found.nearest, found.follows) == ("rediscovered", train[2], 15)
    near = sample("Más vale tarde que nunka")  # not the same line: new, two edits from it
    assert (near.kind, near.nearest, near.edits, near.follows) == ("new", train[0], 2, 22)
    assert "2 edits away: «Más vale tarde que nunca.» (its first 22" in LLM.nearest_in_words(near)
    far = sample("Zzz")
    assert far.follows == 0 and "none of its characters" in LLM.nearest_in_words(far)


def levenshtein(a: str, b: str) -> int:
    """The edit distance by its recurrence, one cell at a time."""
    row = list(range(len(b) + 1))
    for i, x in enumerate(a, 1):
        before, row[0] = row[:], i
        for j, y in enumerate(b, 1):
            row[j] = min(before[j] + 1, row[j - 1] + 1, before[j - 1] + (x != y))
    return row[-1]


def test_edit_distances_equal_the_recurrence_cell_by_cell():
    rng = __import__("random").Random(0)
    for _ in range(150):
        lines = ["".join(rng.choice("ab ñ") for _ in range(rng.randint(0, 12))) for _ in range(6)]
        text = "".join(rng.choice("abcñ") for _ in range(rng.randint(0, 10)))
        assert LLM.edit_distances(text, lines).tolist() == [levenshtein(text, line) for line in lines]
    assert LLM.edit_distances("kitten", ["sitting", "kitten", ""]).tolist() == [3, 0, 6]
