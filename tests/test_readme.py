"""Every command of the README runs as written on a fresh copy of the project, and none of them
changes a file git tracks but the five that rebuild the committed runs: `python LLM.py`
(outputs/), `--preset longer`, `--preset pieces`, `--what-if` and `--class examples/class.txt`
(their own folders).

The copy holds the project's tracked files as they are in this checkout (the 600 test proverbs
stand in for refranes.txt, so that each run takes a second); each command runs in the README's
order, with a tiny model and one epoch added where it trains, and `git status` is read after it.
The two commands that need what the copy cannot have (tiny Shakespeare, which is downloaded, and
torchrun, which starts processes) are checked against the parser and their error instead."""
import io
import re
import shlex
import shutil
import subprocess
import sys

import pytest

import LLM
from conftest import PROVERBS, ROOT
from test_prose import README

TINY = ["--d-model", "16", "--heads", "2", "--layers", "1", "--d-ff", "32", "--epochs", "1", "--snapshot", "0",
        "--pictures", "loss"]
REBUILDS = {(): "outputs/", ("--preset", "longer"): "outputs/longer/", ("--preset", "pieces"): "outputs/pieces/",
            ("--what-if",): "outputs/what-if/", ("--class", "examples/class.txt"): "outputs/class/"}  # the commands that rebuild a committed run, and its folder


def readme_commands() -> list[list[str]]:
    """Every command of the README's bash blocks that runs LLM.py, as its arguments after the
    program (`python LLM.py ...`, or the last command of an install line), in the README's order."""
    commands = []
    reference = (ROOT / "tests" / "README.md").read_text(encoding="utf-8")  # README's reference: torchrun's line
    for block in re.findall(r"```bash\n(.*?)```", README + reference, re.S):
        for line in block.splitlines():
            words = shlex.split(line, comments=True)
            if "LLM.py" in words and words[0] != "jupytext" and "jupytext" not in words:
                at = len(words) - 1 - words[::-1].index("LLM.py")
                commands.append(words[:at] + ["LLM.py"] + words[at + 1:] if words[0] == "torchrun" else words[at + 1:])
    return commands


def tracked_changes(clone) -> list[str]:
    status = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=clone,
                            capture_output=True, text=True, check=True).stdout
    return [line[3:] for line in status.splitlines()]


@pytest.fixture(scope="module")
def clone(tmp_path_factory):
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs git and a git checkout")
    clone = tmp_path_factory.mktemp("fresh-clone")
    names = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode().split("\0")
    for name in filter(None, names):
        if (ROOT / name).is_file():
            (clone / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(ROOT / name, clone / name)
    shutil.copy(PROVERBS, clone / "refranes.txt")  # a second a run
    git = lambda *a: subprocess.run(["git", *a], cwd=clone, capture_output=True, check=True)  # noqa: E731
    git("init", "-q")
    git("add", "-A")
    git("-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "the project as checked out")
    return clone


def test_the_readme_names_its_commands():
    commands = readme_commands()
    assert [] in commands and ["--what-if"] in commands and ["--preset", "longer"] in commands
    assert len(commands) >= 25


def test_every_readme_command_runs_and_touches_no_tracked_file_but_its_own(clone, monkeypatch, capsys):
    monkeypatch.chdir(clone)
    ran = 0
    for command in readme_commands():
        if command[:1] == ["torchrun"]:
            LLM.build_parser().parse_args(command[command.index("LLM.py") + 1:])  # the flags are LLM.py's
            continue
        argv = list(command)
        actions = {"--resume", "--init-from", "--eval", "--generate", "--chat", "--explorer", "--workbook",
                   "--check", "--class"} & set(argv)
        if not actions:
            argv += TINY  # a new model: tiny, one epoch
        elif "--resume" in argv:
            argv += ["--epochs", "2"]  # one epoch more than the tiny run it goes on from
        elif "--workbook" in argv:
            shutil.rmtree(clone / argv[argv.index("--workbook") + 1], ignore_errors=True)  # a new folder each time
        elif "--init-from" in argv:
            argv += ["--epochs", "1", "--pictures", "loss"]
        if "--chat" in argv:
            monkeypatch.setattr(sys, "stdin", io.StringIO("No hay\nexit\n"))
        data = argv[argv.index("--data") + 1] if "--data" in argv else None
        if data == "tinyshakespeare.txt":  # downloaded by the README's curl line, which a test cannot run
            assert LLM.main(argv) == 2
            err = capsys.readouterr().err
            assert "data file not found: tinyshakespeare.txt" in err and "curl -L -o tinyshakespeare.txt" in err
            paragraphs = [" ".join(LLM.text_lines(PROVERBS.read_text(encoding="utf-8"))[i:i + 6]) for i in range(0, 300, 6)]
            (clone / "tinyshakespeare.txt").write_text("ROMEO:\nTo be, or not to be.\n\n" + "\n\n".join(paragraphs) + "\n",
                                                      encoding="utf-8")  # a stand-in book, with the prompts' characters
        code = LLM.main(argv)
        out = capsys.readouterr()
        assert code == 0, (command, out.err)
        if "--explorer" in argv and "--out" not in argv:  # the page beside its checkpoint (a later run there replaces it)
            assert (clone / argv[argv.index("--checkpoint") + 1]).with_name("explorer.html").is_file(), command
        own = REBUILDS.get(tuple(command))
        changed = tracked_changes(clone)
        assert all(own is not None and path.startswith(own) and "/" not in path[len(own):] or
                   own == "outputs/what-if/" and path.startswith(own) for path in changed), (command, changed)
        subprocess.run(["git", "checkout", "-q", "--", "."], cwd=clone, check=True)  # the next command starts clean
        ran += 1
    assert ran >= 24
    assert (clone / "outputs" / "proverbes" / "model.pt").is_file()  # --data without --out: a folder of its own
