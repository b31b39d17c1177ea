"""LLM.py read as a book (the story first, its machinery after the APPENDIX banner), the story
run on its own, and the whole file run as a notebook in a real Jupyter kernel, as a class opens it."""
import ast
import re
import shutil
import subprocess
import sys

import pytest

from conftest import PROVERBS, ROOT

LINES = (ROOT / "LLM.py").read_text(encoding="utf-8").splitlines()
BANNER = next(i for i, line in enumerate(LINES) if "APPENDIX" in line)  # 0-based: the story is LINES[:BANNER]
STORY = "\n".join(LINES[:BANNER])
SECTIONS = ["The settings", "The proverbs, as numbers", "Word pieces", "Teacher forcing, padding, batches", "Embeddings",
            "Positional encoding", "Attention", "The encoder layer", "The model", "The loss",
            "The learning-rate schedule", "Adam", "One training step", "The training loop", "Writing",
            "The whole story, end to end"]
MACHINERY = "\n".join(LINES[BANNER:])


def story_cells():
    """The story's cells as (kind, text): kind is 'markdown' or 'code'."""
    cells = re.split(r"^# %%", STORY, flags=re.M)[1:]
    return [("markdown" if cell.startswith(" [markdown]") else "code", cell) for cell in cells]


def test_the_story_comes_first_and_stays_short():
    assert LINES[BANNER].startswith("# # APPENDIX")  # a markdown heading: the banner renders in a notebook
    assert 600 < BANNER <= 1150  # projector widths, the counting floor and the nearest proverb cost lines (the aim stays 1,000)
    assert sum("APPENDIX" in line for line in LINES) == 1


def test_the_story_fits_a_projector():
    """Part I as a class sees it: no line over 100 characters, no code cell over 50 lines (blank
    lines at a cell's end left out), and a Config of at most 35 settings, all of them read by
    the story itself (the run's own settings are Part II's RunConfig)."""
    too_long = [(i + 1, len(line)) for i, line in enumerate(LINES[:BANNER]) if len(line) > 100]
    assert not too_long, too_long
    for kind, text in story_cells():
        lines = text.rstrip("\n").splitlines()[1:]
        assert kind == "markdown" or len(lines) <= 50, (len(lines), lines[0])
    config = next(node for node in ast.parse(STORY).body if isinstance(node, ast.ClassDef) and node.name == "Config")
    settings = [node.target.id for node in config.body if isinstance(node, ast.AnnAssign)]
    assert 20 <= len(settings) <= 35
    code = "\n".join(text for kind, text in story_cells() if kind == "code")
    unread = [name for name in settings if f"cfg.{name}" not in code]
    assert not unread, unread


@pytest.mark.parametrize("machinery", ["torchrun", "DistributedDataParallel", "torch.distributed", "torch.compile",
                                       "pin_memory", "pinned", "argparse", "os.replace", "atomic", "stream mode",
                                       "StreamSplit"])
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
                    r"\min\!\left(1, \frac{\mathrm{clip}}{\lVert g \rVert}\right)", r"\mathrm{softmax}(\mathrm{logits} / \tau)",
                    r"\arg\max_{(x,\,y)} \mathrm{count}(x\,y)", r"N_{tokens} / (N_{chars} \ln 2)"]:
        assert formula in STORY, formula
    for kind, text in cells:  # every line of a markdown cell is a comment, so the file stays Python
        if kind == "markdown":
            assert all(line.startswith("#") or not line for line in text.splitlines()[1:]), text[:80]


def top_level_names(tree: ast.Module) -> set[str]:
    """The names a part of the file defines: functions, classes, assignments, imports."""
    names = set()
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            names |= {t.id for t in targets if isinstance(t, ast.Name)}
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(alias.asname or alias.name).split(".")[0] for alias in node.names}
    return names


def test_no_part_i_definition_names_anything_part_ii_defines():
    """The story stands on its own: not one name in Part I's code (calls, types, defaults,
    annotations written as strings included) is defined only in Part II."""
    story, machinery = ast.parse(STORY), ast.parse(MACHINERY)
    only_in_part_ii = top_level_names(machinery) - top_level_names(story)
    assert {"RunHooks", "validate", "read_text", "mixed_precision", "save_checkpoint", "PICTURES"} <= only_in_part_ii
    used = [(node.id, node.lineno) for node in ast.walk(story) if isinstance(node, ast.Name) and node.id in only_in_part_ii]
    strings = [(word, node.lineno) for node in ast.walk(story) if isinstance(node, ast.Constant) and isinstance(node.value, str)
               and node.value.isidentifier() for word in [node.value] if word in only_in_part_ii]
    assert not used and not strings, used + strings


def test_part_ii_plugs_into_the_story_through_its_hooks():
    machinery = ast.parse(MACHINERY)
    hooks = {node.name: [base.id for base in node.bases if isinstance(base, ast.Name)]
             for node in machinery.body if isinstance(node, ast.ClassDef)}
    assert hooks["DeviceHooks"] == ["Hooks"] and hooks["RunHooks"] == ["DeviceHooks"]


def test_the_training_loop_a_learner_reads_fits_on_a_screen():
    """train() and the named steps it calls (an epoch's training, its measure) each fit on a
    screen, and between them they keep the best epoch, stop early and stop on NaN."""
    loop = ""
    for name in ("train", "train_epoch", "measure_epoch"):
        start = next(i for i, line in enumerate(LINES) if line.startswith(f"def {name}("))
        end = next(i for i in range(start + 1, BANNER) if LINES[i] and not LINES[i].startswith((" ", ")")))
        assert end - start <= 40, name
        loop += "\n".join(LINES[start:end])
    for duty in ("early stop", "TrainingDiverged", "best_weights", "load_state_dict(best_weights)"):
        assert duty in loop, duty


def test_part_i_alone_trains_the_classroom_model_for_an_epoch_and_writes(tmp_path):
    """Only the cells before the APPENDIX banner, in a fresh interpreter, on refranes.txt: the
    story's last cell trains for an epoch and samples, with nothing from Part II."""
    shutil.copy(ROOT / "refranes.txt", tmp_path)
    (tmp_path / "story.py").write_text(STORY + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-c", "exec(open('story.py', encoding='utf-8').read())"],
                            cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    out = result.stdout
    assert "3,909 proverbs to train on, a vocabulary of 73 characters, a model of 109,513 parameters" in out
    assert re.search(r"^epoch   1/1 \| train loss \d\.\d{3} \| val loss \d\.\d{3} \*", out, re.M)
    assert "test split, never seen in training" in out
    samples = re.findall(r"^      (.+)   \[(memorised|rediscovered|new)\]$", out, re.M)
    assert len(samples) == 6 and "words written are words of the corpus" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["refranes.txt", "story.py"]  # it wrote no file


def test_run_all_as_a_notebook_trains_the_classroom_run_and_shows_its_pictures(tmp_path):
    """jupytext turns LLM.py into a notebook; a real kernel runs every cell, top to bottom, in a
    folder that holds only the corpus, as a student's Run All would."""
    jupytext = pytest.importorskip("jupytext", reason="the notebook tools are test-only: tests/requirements.txt")
    nbclient = pytest.importorskip("nbclient")
    nbformat = pytest.importorskip("nbformat")
    shutil.copy(PROVERBS, tmp_path / "refranes.txt")  # 600 proverbs: the classroom run in a few seconds
    notebook = jupytext.read(ROOT / "LLM.py")
    notebook.cells.append(nbformat.v4.new_code_cell("import matplotlib; print(matplotlib.get_backend())"))
    nbclient.NotebookClient(notebook, timeout=600, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.text for o in outputs if o.output_type == "stream" and o.name == "stdout")
    assert "epoch   1/1 | train loss" in printed  # the story's own cell, one epoch with Part I alone
    assert "epoch   1/3 | train loss" in printed and "test split, never seen in training" in printed
    assert "wrote outputs/: model.pt" in printed
    images = [o.data["text/html"] for o in outputs if o.output_type == "display_data" and "<img" in o.data.get("text/html", "")]
    assert len(images) >= 5  # loss, attention per layer, positions, embeddings, the last epoch picture
    for image in images:  # every picture has its alternative text; the attention maps the whole width
        assert re.search(r'<img src="data:image/png;base64,[A-Za-z0-9+/=]{1000,}" alt="[^"]{20,}"', image), image[:300]
        assert ('style="width: 100%' in image) == ("attention_layer" in image)
    run = [o for cell in notebook.cells[-3:] if cell.cell_type == "code" for o in cell.outputs]  # the run's own cell
    lines = "".join(o.text for o in run if o.output_type == "stream" and o.name == "stdout").splitlines()
    too_long = [line for line in lines if len(line) > 100 and " " in line.strip()]
    assert lines and not too_long, too_long  # wrapped between words: the notebook never breaks one
    assert "inline" in printed.splitlines()[-1]  # the notebook's plotting backend was left alone
    assert (tmp_path / "outputs" / "model.pt").is_file() and (tmp_path / "outputs" / "epoch_3.png").is_file()


def test_the_appendix_lists_its_parts_as_their_banners_name_them():
    """The appendix opens with a list of its parts; each is a banner further down, in that order."""
    listed = re.findall(r"^# - \*\*([A-Z])\. ([^*:]+)", MACHINERY, re.M)
    banners = re.findall(r"^# ## ([A-Z])\. (.+)$", MACHINERY, re.M)
    assert [letter for letter, _ in listed] == [letter for letter, _ in banners]
    for (_, title), (_, banner) in zip(listed, banners):
        assert banner.lower().startswith(title.lower().split(" and ")[0].strip()), (title, banner)


def test_every_function_of_the_file_reads_at_once():
    """No function or method of either part is over 40 lines: a longer one is split where a name
    explains a step."""
    long = [(node.name, node.lineno, node.end_lineno - node.lineno + 1)
            for node in ast.walk(ast.parse("\n".join(LINES)))
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.end_lineno - node.lineno >= 40]
    assert not long, long


@pytest.mark.slow
def test_a_workbook_opens_as_a_notebook_and_one_of_its_cells_checks_the_exercises(tmp_path):
    """A fresh workbook run as a notebook, as a student's Run All would: Part I's cell names the
    first exercise to write, a cell of the appendix checks them all ('0 of 15'), the run's cell
    says in one line that the workbook trains once they pass; no cell raises."""
    jupytext = pytest.importorskip("jupytext", reason="the notebook tools are test-only: tests/requirements.txt")
    nbclient = pytest.importorskip("nbclient")
    subprocess.run([sys.executable, str(ROOT / "LLM.py"), "--workbook", str(tmp_path), "--lang", "en"], check=True,
                   capture_output=True, timeout=120)
    notebook = jupytext.read(tmp_path / "LLM.py")
    nbclient.NotebookClient(notebook, timeout=300, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [output for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    printed = "".join(o.text for o in outputs if o.output_type == "stream")
    assert "CharTokenizer.encode: your turn (exercise 1, section 2)" in printed  # Part I's own cell
    checks = [cell for cell in notebook.cells if cell.cell_type == "code" and "check_exercises()" in cell.source]
    assert len(checks) == 1 and "0 of 15 exercises done" in "".join(o.text for o in checks[0].outputs)
    assert "error: this workbook trains once its exercises pass their checks" in printed
    assert sorted(p.name for p in tmp_path.iterdir()) == ["LLM.py", "refranes.txt"]  # it wrote nothing
