"""Section 3 of LLM.py: word pieces learned by byte-pair encoding, beside section 2's characters.

The merges of a hand-made text are the ones computed by hand below; encoding equals applying
every merge in the order it was learned, literally; decoding gives back the whole corpus; no
piece crosses the end of a line; a checkpoint keeps the merges and refuses them damaged; bits
per character are the total loss over the characters; and a run with --tokenizer bpe writes
every output, then --generate, --chat, --eval and --init-from work from its checkpoint."""
import io
import math
import re
import shutil

import pytest
import torch

import LLM
from conftest import PROVERBS, ROOT, TINY_ARGV, one_line_error, tiny_config

CORPUS = LLM.read_text(ROOT / "refranes.txt")


def learned(lines: list[str], vocab_size: int, text: str | None = None) -> LLM.BPETokenizer:
    return LLM.BPETokenizer.learn(text if text is not None else "\n".join(lines), lines,
                                  LLM.RunConfig(tokenizer="bpe", vocab_size=vocab_size))


def texts(tokenizer, ids) -> list[str]:
    return [tokenizer.token_text(i) for i in ids]


# --- learning, by hand ----------------------------------------------------------------------------

def test_merges_learned_on_a_hand_made_text_are_the_ones_computed_by_hand():
    """Words: 'la' x2, '␣casa', '␣cosa', 'casa'. Ids: ⏎ 0, ␣ 1, a 2, c 3, l 4, o 5, s 6.
    Pair counts: (s,a) 3; (l,a) (␣,c) (c,a) (a,s) 2; (c,o) (o,s) 1 -> merge s+a = 'sa' (7).
    Then (l,a) (␣,c) (c,a) (a,sa) 2 -> ties go to the smaller ids: ␣+c = '␣c' (8).
    Then (l,a) (a,sa) 2 -> a+sa = 'asa' (9), the smaller ids. Then l+a = 'la' (10).
    Every pair left occurs once: learning stops at 11 tokens, whatever was asked for."""
    tokenizer = learned(["la casa", "la cosa", "casa"], vocab_size=100)
    assert tokenizer.alphabet() == ["\n", " ", "a", "c", "l", "o", "s"]
    assert tokenizer.merge_texts() == [["s", "a"], [" ", "c"], ["a", "sa"], ["l", "a"]]
    assert tokenizer.counts == [3, 2, 2, 2]
    assert texts(tokenizer, range(tokenizer.vocab_size))[7:] == ["sa", " c", "asa", "la"]
    # la -> [la]; ␣casa -> ␣ c a sa -> ␣c a sa -> ␣c asa; ␣cosa -> ␣ c o sa -> ␣c o sa
    assert tokenizer.encode("la casa cosa") == [10, 8, 9, 8, 5, 7]
    assert learned(["la casa", "la cosa", "casa"], vocab_size=9).merge_texts() == [["s", "a"], [" ", "c"]]


def test_section_3s_merges_step_by_step_are_the_fast_learners_on_the_proverbs():
    """Part I's learn_merges (the formula, counting every pair again after each merge) and Part II's
    BPETokenizer.learn (counting again only the words a merge changes) learn the same merges."""
    lines = LLM.text_lines(PROVERBS.read_text(encoding="utf-8"))
    fast = learned(lines, 160)
    slow = LLM.learn_merges(lines, fast.alphabet(), 160)
    assert [[a, b] for a, b, _ in slow] == fast.merge_texts() and [n for _, _, n in slow] == fast.counts
    hand = LLM.learn_merges(["la casa", "la cosa", "casa"], ["\n", " ", "a", "c", "l", "o", "s"], 100)
    assert hand == [("s", "a", 3), (" ", "c", 2), ("a", "sa", 2), ("l", "a", 2)]  # the docstring's derivation below


def test_a_merge_that_spells_an_existing_piece_keeps_its_id():
    """'ab' then 'abc' from ab+c in one word, and a+bc in another once 'bc' exists: one piece 'abc'."""
    tokenizer = LLM.BPETokenizer("abc", [["a", "b"], ["ab", "c"], ["b", "c"], ["a", "bc"]], [5, 4, 3, 2])
    assert tokenizer.vocab_size == 4 + 3  # ⏎ a b c, then ab, abc, bc: 'abc' once
    assert tokenizer.merges[(tokenizer.token_id("a"), tokenizer.token_id("bc"))][1] == tokenizer.token_id("abc")
    assert texts(tokenizer, tokenizer.encode("abcabc")) == ["abc", "abc"]


def test_learning_is_the_same_twice_and_follows_the_training_lines():
    train = LLM.split_lines(LLM.text_lines(CORPUS), 0.1, 1337, 0.1)[0]
    other = LLM.split_lines(LLM.text_lines(CORPUS), 0.1, 7, 0.1)[0]
    first, again = learned(train, 300, CORPUS), learned(train, 300, CORPUS)
    assert LLM.tokenizer_record(first) == LLM.tokenizer_record(again) and first.vocab_size == 300
    assert learned(other, 300, CORPUS).merge_texts() != first.merge_texts()  # another seed, other lines


def literally(tokenizer: LLM.BPETokenizer, word: str) -> list[int]:
    """The definition: the word's characters, then every merge in the order it was learned."""
    ids = [tokenizer.token_id(c) for c in word]
    for (a, b), (_, new) in tokenizer.merges.items():
        if a in ids:
            ids = LLM.merge_pair(ids, (a, b), new)
    return ids


def test_encoding_applies_the_merges_in_the_order_they_were_learned_on_the_whole_corpus():
    data = LLM.prepare_any_text(CORPUS, LLM.RunConfig(tokenizer="bpe", vocab_size=512))
    tokenizer = data.tokenizer
    assert tokenizer.vocab_size == 512
    for word in {w for line in LLM.text_lines(CORPUS) for w in LLM.WORD.findall(line)}:
        assert tokenizer.encode(word) == literally(tokenizer, word), word


def test_encode_then_decode_gives_back_the_whole_corpus_held_out_lines_included():
    data = LLM.prepare_any_text(CORPUS, LLM.RunConfig(tokenizer="bpe", vocab_size=512))
    ids = data.tokenizer.encode(CORPUS)
    assert data.tokenizer.decode(ids) == CORPUS
    assert 2.0 < len(CORPUS) / len(ids) < 3.0  # section 3: "a piece is about 2.3 characters"
    for line in data.held_out_text:  # words the merges never saw are still cut into known pieces
        assert data.tokenizer.decode(data.tokenizer.encode(line)) == line


def test_no_piece_crosses_the_end_of_a_line():
    tokenizer = learned(LLM.text_lines(CORPUS), 1024, CORPUS)
    pieces = texts(tokenizer, range(tokenizer.vocab_size))
    assert [p for p in pieces if "\n" in p] == ["\n"]
    ids = tokenizer.encode("venga.\nA buen entendedor")
    assert ids.count(tokenizer.eol_id) == 1 and texts(tokenizer, ids).count("\n") == 1
    assert tokenizer.decode(ids[:ids.index(tokenizer.eol_id)]) == "venga."  # ⏎ is a token of its own
    with pytest.raises(ValueError, match="end of line"):
        LLM.tokenizer_from_record({**LLM.tokenizer_record(tokenizer), "merges": [[".", "\n"]], "counts": [1]})


def test_an_unknown_character_is_named_as_for_characters():
    tokenizer = learned(["la casa"], 20)
    with pytest.raises(LLM.UnknownCharacterError, match="LATIN SMALL LETTER N WITH TILDE"):
        tokenizer.encode("la caña")
    assert tokenizer.unknown("la caña") == ["ñ"]


def test_new_characters_extend_the_base_and_the_merges_stay():
    tokenizer = learned(LLM.text_lines(CORPUS)[:500], 150, CORPUS)
    bigger, added = LLM.with_characters(tokenizer, "Qui ne risque rien ne gagne rien ç")
    assert added == ["ç"] and bigger.merge_texts() == tokenizer.merge_texts()
    assert bigger.vocab_size == tokenizer.vocab_size + 1
    assert [bigger.token_id(tokenizer.token_text(i)) is not None for i in range(tokenizer.vocab_size)] == [True] * 150
    assert bigger.decode(bigger.encode("ça que")) == "ça que"


def test_a_damaged_vocabulary_is_refused_when_it_is_read():
    good = LLM.tokenizer_record(learned(["la casa", "la cosa", "casa"], 100))
    assert LLM.tokenizer_record(LLM.tokenizer_from_record(good)) == good
    for broken in ({"merges": [["s", "x"]], "counts": [1]},  # x: not a piece
                   {"merges": [["sa", "s"]], "counts": [1]},  # sa before it was merged
                   {"merges": "s+a"}, {"counts": [1, 2]}, {"counts": [-1, 0, 0, 0]}, {"merges": None}):
        with pytest.raises(ValueError):
            LLM.tokenizer_from_record({**good, **broken})
    characters = LLM.tokenizer_record(LLM.CharTokenizer("sal"))
    assert characters == {"kind": "char", "chars": ["\n", "a", "l", "s"]}
    assert LLM.tokenizer_from_record(characters).chars == ["\n", "a", "l", "s"]
    for broken in (["a", "\n"], ["\n", "a", "a"], ["\n", "al"], ["a"], "\nal", None):  # unsorted, repeated, ...
        with pytest.raises(ValueError, match="single characters"):
            LLM.tokenizer_from_record({"kind": "char", "chars": broken})


# --- bits per character ---------------------------------------------------------------------------

def test_bits_per_character_are_the_total_loss_over_the_characters_by_hand():
    lines = LLM.text_lines(PROVERBS.read_text(encoding="utf-8"))[:40]
    for cfg in (tiny_config(), tiny_config(tokenizer="bpe", vocab_size=90)):
        tokenizer = LLM.TOKENIZERS[cfg.tokenizer].learn("\n".join(lines), lines, cfg)
        split = LLM.encode_lines(lines, tokenizer, cfg.context)
        torch.manual_seed(0)
        model = LLM.TransformerLM(tokenizer.vocab_size, cfg).eval()
        nats, chars = 0.0, 0
        with torch.no_grad():
            for row in range(len(split)):  # one line at a time, one target at a time
                n = int(split.lengths[row])
                logits = model(split.inputs[row:row + 1, :n])[0]
                for t in range(n):
                    target = int(split.targets[row, t])
                    nats -= float(torch.log_softmax(logits[t], -1)[target])
                    chars += len(tokenizer.token_text(target))
        loss = LLM.evaluate(model, split, 8, "cpu")
        assert split.n_chars == chars and split.n_tokens == int(split.lengths.sum())
        assert LLM.bits_per_character(loss, split) == pytest.approx(nats / chars / math.log(2), rel=1e-5)
        if cfg.tokenizer == "char":
            assert chars == split.n_tokens
            assert LLM.bits_per_character(loss, split) == pytest.approx(loss / math.log(2))
        else:
            assert chars > 1.3 * split.n_tokens


def test_generate_stops_after_max_chars_characters_however_long_the_pieces(bpe_run):
    model, tokenizer, cfg, _ = LLM.load_checkpoint(bpe_run / "model.pt", "cpu")
    sampling = LLM.Sampling(temperature=5.0, max_chars=15)  # flat: it rarely writes ⏎ early
    for seed in range(5):
        trace = []
        text = LLM.generate(model, tokenizer, "", sampling, torch.Generator().manual_seed(seed), trace)
        written = [len(tokenizer.token_text(p.id)) for p in trace if p.id != tokenizer.eol_id]
        assert len(text) == sum(written)  # the pieces, joined
        assert sum(written[:-1]) < 15  # it went on only while fewer than max_chars were written
        assert len(text) >= 15 or trace[-1].id == tokenizer.eol_id


# --- the whole program with word pieces -----------------------------------------------------------

def test_a_bpe_run_writes_every_output_and_says_what_the_pieces_are(bpe_run, capsys):
    names = {p.name for p in bpe_run.iterdir()}
    assert {"model.pt", "parameters.txt", "table.txt", "tokens.txt", "README.md", "explorer.html", "loss.png",
            "embeddings.png", "attention_layer1.png", "epoch_3.png", "evolution.gif"} <= names
    model, tokenizer, cfg, payload = LLM.load_checkpoint(bpe_run / "model.pt", "cpu")
    assert tokenizer.kind == "bpe" and tokenizer.vocab_size == 120 and cfg.tokenizer == "bpe"
    parameters = (bpe_run / "parameters.txt").read_text(encoding="utf-8")
    assert "V = 120 pieces" in parameters and "MISMATCH" not in parameters
    assert f"{120 * 16:,}" in parameters  # the embedding table: V x C
    tokens = (bpe_run / "tokens.txt").read_text(encoding="utf-8")
    assert "THE FIRST 30 MERGES" in tokens
    first = tokenizer.merge_texts()[0]
    assert re.search(rf"^ +1  '{LLM.show(first[0])}' \+ '{LLM.show(first[1])}' +'{LLM.show(''.join(first))}' +"
                     rf"{tokenizer.counts[0]:,}$", tokens, re.M)
    table = (bpe_run / "table.txt").read_text(encoding="utf-8")
    assert "HOW THE MODEL CHOSE EVERY PIECE" in table
    gallery = (bpe_run / "README.md").read_text(encoding="utf-8")
    assert "## tokens.txt: how the text was cut into pieces" in gallery and "merged the most frequent pair" in gallery


def test_the_run_prints_bits_per_character_characters_per_piece_and_sequence_lengths(tmp_path, capsys):
    assert LLM.main(TINY_ARGV + ["--tokenizer", "bpe", "--vocab-size", "100", "--epochs", "1", "--pictures",
                                 "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"vocabulary of 100 pieces \(\d+ characters and \d+ merges\)", out)
    assert re.search(r"[\d.]+ characters per piece in the training text: a context of 80 pieces holds about \d+ characters", out)
    assert re.search(r"a training sequence is [\d.]+ pieces long on average, at most \d+", out)
    assert re.search(r"val loss [\d.]+ \* \| [\d.]+ bits/char", out)
    assert re.search(r"test split, never seen in training: loss [\d.]+ nats/piece \| perplexity [\d.]+ per piece \| "
                     r"[\d.]+ bits/char \([\d.]+ characters per piece\)", out)


def test_generate_chat_eval_and_init_from_work_from_a_bpe_checkpoint(bpe_run, tmp_path, capsys):
    checkpoint = bpe_run / "model.pt"
    assert LLM.main(["--generate", "No hay", "--checkpoint", str(checkpoint), "--samples", "2"]) == 0
    written = capsys.readouterr().out.splitlines()
    assert len(written) == 2 and all(line.startswith("No hay") for line in written)
    assert LLM.main(["--eval", "--checkpoint", str(checkpoint)]) == 0
    assert re.search(r"test \([\d,]+ pieces = [\d,]+ characters\): loss [\d.]+ nats/piece .* bits/char", capsys.readouterr().out)
    copy = tmp_path / "model.pt"
    shutil.copy(checkpoint, copy)  # /train saves model-chat.pt beside it
    transcript = []
    LLM.chat(tiny_config(), copy, None, io.StringIO("No hay mal que por bien no venga.\n/train 1\nNo hay\nexit\n"),
             transcript.append)
    assert sum(line.strip().startswith("No hay") for line in transcript if not line.startswith(">")) == 2, transcript
    assert any("loss on your lines" in line for line in transcript)
    _, chatted, _, _ = LLM.load_checkpoint(tmp_path / "model-chat.pt", "cpu")
    assert chatted.merge_texts() == LLM.load_checkpoint(checkpoint, "cpu")[1].merge_texts()
    french = tmp_path / "proverbes.txt"
    french.write_text("Qui vivra verra.\nPetit à petit, l'oiseau fait son nid.\nÇa ne mange pas de pain.\n"
                      "Mieux vaut tard que jamais.\nTout vient à point à qui sait attendre.\n", encoding="utf-8")
    assert LLM.main(["--init-from", str(checkpoint), "--data", str(french), "--epochs", "1", "--prompts", "Qui",
                     "--pictures", "--out", str(tmp_path / "fr")]) == 0
    said = capsys.readouterr().out
    assert "merges stay those learned on the first text" in said and "'Ç'" in said
    _, tokenizer, _, _ = LLM.load_checkpoint(tmp_path / "fr" / "model.pt", "cpu")
    _, original, _, _ = LLM.load_checkpoint(checkpoint, "cpu")
    assert tokenizer.merge_texts() == original.merge_texts() and "Ç" in tokenizer.alphabet()


def test_a_bpe_checkpoint_with_a_changed_merge_is_refused(bpe_run, tmp_path, capsys):
    payload = torch.load(bpe_run / "model.pt", weights_only=True)
    payload["tokenizer"]["merges"][0], payload["tokenizer"]["merges"][1] = (payload["tokenizer"]["merges"][1],
                                                                            payload["tokenizer"]["merges"][0])
    torch.save(payload, tmp_path / "swapped.pt")  # valid merges, another order: only the checksum knows
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "swapped.pt")], "is damaged")
    payload["tokenizer"]["merges"][0] = ["no such", "piece"]
    payload["checksum"] = LLM.tensors_checksum({k: v for k, v in payload.items() if k != "checksum"})
    torch.save(payload, tmp_path / "nonsense.pt")
    one_line_error(capsys, ["--generate", "No", "--checkpoint", str(tmp_path / "nonsense.pt")], "no valid vocabulary")


def test_vocab_size_is_checked(capsys):
    one_line_error(capsys, TINY_ARGV + ["--vocab-size", "300"], "--vocab-size", "--tokenizer bpe")
    one_line_error(capsys, TINY_ARGV + ["--tokenizer", "bpe", "--vocab-size", "0"], "--vocab-size must be a positive")
    one_line_error(capsys, TINY_ARGV + ["--tokenizer", "bpe", "--vocab-size", "1000000"], "at most 100,000")
    one_line_error(capsys, TINY_ARGV + ["--tokenizer", "pieces"], "--tokenizer must be 'char' or 'bpe'")


def test_a_book_in_stream_mode_learns_its_merges_from_the_training_block(tmp_path, capsys):
    book = tmp_path / "book.txt"
    paragraphs = LLM.text_lines(CORPUS)[:400]
    book.write_text("\n\n".join(" ".join(paragraphs[i:i + 8]) for i in range(0, 400, 8)) + "\n", encoding="utf-8")
    cfg = tiny_config(tokenizer="bpe", vocab_size=150, data=str(book))
    data = LLM.prepare_any_text(LLM.read_text(book), cfg)
    assert data.mode == "stream" and data.tokenizer.vocab_size == 150
    text = LLM.read_text(book)
    for split in (data.train_split, data.val_split, data.test_split):
        assert split.n_chars == len(data.tokenizer.decode(split.ids[1:].tolist()))
    assert data.tokenizer.decode(torch.cat([data.train_split.ids, data.val_split.ids, data.test_split.ids]).tolist()) == text


def test_resume_goes_on_with_the_checkpoints_own_pieces(bpe_run, tmp_path, capsys):
    shutil.copytree(bpe_run, tmp_path / "run", ignore=shutil.ignore_patterns(".lock"))
    before = LLM.tokenizer_record(LLM.load_checkpoint(tmp_path / "run" / "model.pt", "cpu")[1])
    assert LLM.main(["--resume", "--epochs", "4", "--checkpoint", str(tmp_path / "run" / "model.pt"),
                     "--out", str(tmp_path / "run"), "--pictures"]) == 0
    assert re.search(r"^epoch   4/4 \| .* bits/char", capsys.readouterr().out, re.M)
    _, tokenizer, _, payload = LLM.load_checkpoint(tmp_path / "run" / "model.pt", "cpu")
    assert LLM.tokenizer_record(tokenizer) == before
