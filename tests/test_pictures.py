"""The pictures of section 12 and the gallery: what they draw is what the model computed."""
import re

import pytest
import torch

import LLM
from conftest import one_line_error, run_into

TINY = ["--epochs", "2", "--snapshot", "1", "--d-model", "16", "--heads", "2", "--layers", "2", "--d-ff", "32",
        "--max-chars", "20", "--prompts", "No hay"]


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    return run_into(tmp_path_factory, "pictures", TINY)


def test_one_attention_picture_per_layer_and_a_gallery_that_links_only_real_files(run):
    assert (run / "attention_layer1.png").exists() and (run / "attention_layer2.png").exists()
    gallery = (run / "README.md").read_text(encoding="utf-8")
    targets = re.findall(r"\]\(([^)]+)\)", gallery)  # every link and image of the markdown
    assert {"loss.png", "attention_layer1.png", "attention_layer2.png", "positional_encoding.png",
            "embeddings.png", "evolution.gif", "epoch_2.png", "parameters.txt", "table.txt"} <= set(targets)
    for target in targets:
        assert (run / target).is_file(), target
    assert "layer 2" in gallery and "head 1" in gallery and "`model.pt`" in gallery


def test_the_attention_drawn_is_the_attention_the_model_used(monkeypatch):
    tok = LLM.CharTokenizer.from_lines(["La necesidad agudiza el ingenio."])
    torch.manual_seed(0)
    model = LLM.TransformerLM(tok.vocab_size, LLM.Config(d_model=16, n_heads=4, n_layers=2, d_ff=32,
                                                         context=40, attention="exact")).eval()
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


def test_character_kinds_for_the_embedding_colours():
    assert [LLM.character_kind(c) for c in "aÁbñ.¿ \n7"] == [
        "vowel", "vowel", "consonant", "consonant", "punctuation", "punctuation", "space or ⏎", "space or ⏎", "other"]
