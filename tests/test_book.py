"""LLM.py read as a book (the story first, its machinery after the APPENDIX banner) and run as a
notebook in a real Jupyter kernel, as a class opens it."""
import re
import shutil

import pytest

from conftest import ROOT

LINES = (ROOT / "LLM.py").read_text(encoding="utf-8").splitlines()
BANNER = next(i for i, line in enumerate(LINES) if "APPENDIX" in line)  # 0-based: the story is LINES[:BANNER]
STORY = "\n".join(LINES[:BANNER])
SECTIONS = ["The settings", "The proverbs, as numbers", "Teacher forcing, padding, batches", "Embeddings",
            "Positional encoding", "Attention", "The encoder layer", "The model", "The loss",
            "The learning-rate schedule", "Adam", "One training step", "The training loop", "Writing", "The run"]


def story_cells():
    """The story's cells as (kind, text): kind is 'markdown' or 'code'."""
    cells = re.split(r"^# %%", STORY, flags=re.M)[1:]
    return [("markdown" if cell.startswith(" [markdown]") else "code", cell) for cell in cells]


def test_the_story_comes_first_and_fits_in_a_thousand_lines():
    assert LINES[BANNER].startswith("# # APPENDIX")  # a markdown heading: the banner renders in a notebook
    assert 600 < BANNER <= 1000
    assert sum("APPENDIX" in line for line in LINES) == 1


@pytest.mark.parametrize("machinery", ["torchrun", "DistributedDataParallel", "torch.distributed", "torch.compile",
                                       "pin_memory", "pinned", "argparse", "os.replace", "atomic", "stream mode",
                                       "StreamSplit", "chat"])
def test_the_story_leaves_the_machinery_to_the_appendix(machinery):
    assert machinery.lower() not in STORY.lower()


def test_every_section_opens_with_prose_and_its_formula_in_latex():
    cells = story_cells()
    headings = [re.search(r"^# ## (\d+)\. (.+)$", text, re.M) for kind, text in cells if kind == "markdown"]
    numbered = [(int(h.group(1)), h.group(2)) for h in headings if h]
    assert [n for n, _ in numbered] == list(range(1, len(SECTIONS) + 1))
    for (_, title), expected in zip(numbered, SECTIONS):
        assert title.startswith(expected), title
    markdown = [text for kind, text in cells if kind == "markdown"]
    assert len(markdown) >= 12 and sum("$" in text for text in markdown) >= 12
    for formula in [r"\mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right) V", r"PE_{(pos,\,2i)} = \sin",
                    r"\max(0,\, xW_1 + b_1)\,W_2 + b_2", r"\log \mathrm{softmax}", r"\beta_1 m + (1-\beta_1)\, g",
                    r"\min\!\left(1, \frac{\mathrm{clip}}{\lVert g \rVert}\right)", r"\mathrm{softmax}(\mathrm{logits} / \tau)"]:
        assert formula in STORY, formula
    for kind, text in cells:  # every line of a markdown cell is a comment, so the file stays Python
        if kind == "markdown":
            assert all(line.startswith("#") or not line for line in text.splitlines()[1:]), text[:80]


def test_the_training_loop_a_learner_reads_is_short():
    start = next(i for i, line in enumerate(LINES) if line.startswith("def train("))
    end = next(i for i in range(start + 1, BANNER) if LINES[i] and not LINES[i].startswith((" ", ")")))
    assert end - start <= 30


def test_run_all_as_a_notebook_trains_the_classroom_run_and_shows_its_pictures(tmp_path):
    """jupytext turns LLM.py into a notebook; a real kernel runs every cell, top to bottom, in a
    folder that holds only the corpus, as a student's Run All would."""
    jupytext = pytest.importorskip("jupytext", reason="the notebook tools are test-only: tests/requirements.txt")
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    shutil.copy(ROOT / "refranes.txt", tmp_path)
    notebook = jupytext.read(ROOT / "LLM.py")
    notebook.cells.append(nbformat.v4.new_code_cell("import matplotlib; print(matplotlib.get_backend())"))
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert "epoch   1/3 | train loss" in printed and "test split, never seen in training" in printed
    assert "wrote outputs/: model.pt" in printed
    images = [o for o in outputs if o.output_type == "display_data" and "image/png" in o.data]
    assert len(images) >= 5  # loss, attention per layer, positions, embeddings, the last epoch picture
    assert "inline" in printed.splitlines()[-1]  # the notebook's plotting backend was left alone
    assert (tmp_path / "outputs" / "model.pt").is_file() and (tmp_path / "outputs" / "epoch_3.png").is_file()
