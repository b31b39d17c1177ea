"""No folder ever holds the files of two runs, and no run writes where the user did not ask it to.

A run on another text without --out writes into outputs/<name of the text>/; every run lists
the files it writes in the folder's manifest (.written), and the next run into that folder
removes exactly those files (at its own first write, so a run that fails before writing leaves
the earlier folder whole), never a file it did not write; a gallery without a manifest is refused."""
import subprocess

import pytest

import LLM
from conftest import PROVERBS, ROOT, TINY_ARGV, one_line_error

FAST = TINY_ARGV + ["--epochs", "2", "--snapshot", "1", "--pictures", "loss", "epochs"]


def files(folder):
    return sorted(p.name for p in folder.iterdir() if p.is_file() and p.name != ".lock")


def test_a_run_on_another_text_writes_into_a_folder_named_after_it(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [a for a in FAST]
    assert LLM.main(argv) == 0  # --data proverbs_600.txt, no --out
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == [PROVERBS.stem]
    assert "model.pt" in files(tmp_path / "outputs" / PROVERBS.stem)
    assert f"wrote outputs/{PROVERBS.stem}/" in capsys.readouterr().out
    cfg = LLM.find_default_data(LLM.RunConfig(), False)
    assert LLM.folder_of_its_own(cfg, True).out == "outputs"  # the proverbs themselves: the classroom folder
    assert LLM.folder_of_its_own(LLM.RunConfig(data=str(ROOT / "refranes.txt")), True).out == "outputs"


def test_the_next_run_replaces_every_file_of_the_earlier_one_and_nothing_else(tmp_path, capsys):
    out = tmp_path / "run"
    assert LLM.main(FAST + ["--epochs", "3", "--out", str(out)]) == 0
    first = files(out)
    assert {"epoch_3.png", "model.pt", "README.md"} <= set(first)
    assert LLM.manifest_names(out) == [name for name in LLM.manifest_names(out) if name in first]
    assert sorted(LLM.manifest_names(out) + [".written"]) == first  # it lists every file it wrote, and only those
    (out / "mis_notas.txt").write_text("mine\n", encoding="utf-8")  # the student's own file
    capsys.readouterr()
    assert LLM.main(TINY_ARGV + ["--epochs", "1", "--pictures", "loss", "--snapshot", "0", "--out", str(out)]) == 0
    said = capsys.readouterr().out
    assert f"note: {out}/ held the files of an earlier run" in said
    second = files(out)
    assert "epoch_3.png" not in second and "epoch_1.png" not in second and "evolution.gif" not in second
    assert sorted(LLM.manifest_names(out) + [".written", "mis_notas.txt"]) == second
    assert (out / "mis_notas.txt").read_text(encoding="utf-8") == "mine\n"


def test_a_run_that_fails_before_writing_leaves_the_earlier_folder_whole(tmp_path, capsys):
    out = tmp_path / "run"
    assert LLM.main(FAST + ["--out", str(out)]) == 0
    before = {name: (out / name).read_bytes() for name in files(out)}
    one_line_error(capsys, TINY_ARGV + ["--lr", "1e30", "--clip", "0", "--out", str(out)], "the loss became")
    assert {name: (out / name).read_bytes() for name in files(out)} == before


def test_a_manifest_never_removes_a_file_outside_its_folder(tmp_path):
    out, outside = tmp_path / "run", tmp_path / "precious.txt"
    out.mkdir()
    outside.write_text("keep me\n", encoding="utf-8")
    (out / ".written").write_text("# list\n../precious.txt\n" + str(outside) + "\nmodel.pt\n", encoding="utf-8")
    assert LLM.manifest_names(out) == ["model.pt"]
    assert LLM.main(TINY_ARGV + ["--epochs", "1", "--pictures", "--out", str(out)]) == 0
    assert outside.read_text(encoding="utf-8") == "keep me\n"


def test_a_folder_holding_files_no_run_listed_is_refused(tmp_path, capsys):
    out = tmp_path / "old"
    out.mkdir()
    for name in ("parameters.txt", "table.txt", "README.md"):
        (out / name).write_text("an older run\n", encoding="utf-8")
    one_line_error(capsys, TINY_ARGV + ["--epochs", "1", "--out", str(out)], "which no run listed", "another --out")
    assert sorted(files(out)) == ["README.md", "parameters.txt", "table.txt"]
    project = tmp_path / "project"  # --out . from a project's folder: its README.md would be the gallery
    project.mkdir()
    (project / "README.md").write_text("# my project\n", encoding="utf-8")
    one_line_error(capsys, TINY_ARGV + ["--epochs", "1", "--out", str(project)], "README.md", "never replaces")
    assert (project / "README.md").read_text(encoding="utf-8") == "# my project\n"


def test_fine_tuning_twice_into_the_same_folder_says_what_it_replaces(trained_copy, tmp_path, capsys):
    text = tmp_path / "otro.txt"
    text.write_text("Dime con quién andas.\nA mal tiempo, buena cara.\n" * 20, encoding="utf-8")
    argv = ["--init-from", str(trained_copy), "--data", str(text), "--epochs", "1", "--max-chars", "10", "--pictures"]
    assert LLM.main(argv + ["--out", str(tmp_path / "fine")]) == 0
    capsys.readouterr()
    assert LLM.main(argv + ["--out", str(tmp_path / "fine")]) == 0
    assert f"note: {tmp_path / 'fine'}/ held the files of an earlier run" in capsys.readouterr().out


@pytest.mark.parametrize("folder", ["outputs", "outputs/longer", "outputs/pieces", "outputs/what-if",
                                    "outputs/what-if/as-it-is", "outputs/what-if/without-scaling"])
def test_every_committed_run_lists_its_files(folder):
    tracked = subprocess.run(["git", "ls-files", folder], capture_output=True, text=True, cwd=ROOT).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    names = {t.rsplit("/", 1)[-1] for t in tracked if t.rsplit("/", 1)[0] == folder} - {".written"}
    listed = set(LLM.manifest_names(ROOT / folder)) - {"model.pt"}  # the checkpoint is not kept in git
    assert listed == names


def test_wrote_names_only_what_this_run_wrote(tmp_path, capsys):
    """--resume into a new folder where no epoch does better: no model.pt there, and the run's
    last line and gallery say so instead of naming one."""
    first, second = tmp_path / "first", tmp_path / "second"
    assert LLM.main(TINY_ARGV + ["--epochs", "2", "--pictures", "loss", "--out", str(first)]) == 0
    capsys.readouterr()
    assert LLM.main(["--resume", "--checkpoint", str(first / "model.pt"), "--epochs", "3", "--lr", "1e-30",
                     "--out", str(second)]) == 0  # a step too small to change the loss: no better epoch
    said = capsys.readouterr().out
    assert not (second / "model.pt").exists()
    assert f"wrote {second}/: no model.pt (no epoch did better than the checkpoint it went on from" in said
    assert "model.pt" not in (second / "README.md").read_text(encoding="utf-8").split("## Text files")[1]
    assert "model.pt" not in LLM.manifest_names(second)
