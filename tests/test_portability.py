"""Runs where the class is: a console that is not UTF-8 (Windows), any working folder, a
checkpoint whose text has moved, and progress you can watch inside a long epoch."""
import os
import re
import subprocess
import sys

import pytest
import torch

import LLM
from conftest import ROOT, TINY_ARGV, one_line_error


def run_llm(*argv, cwd, env=None):
    return subprocess.run([sys.executable, str(ROOT / "LLM.py"), *argv], capture_output=True, cwd=cwd,
                          timeout=300, env={**os.environ, **(env or {})})


# --- a console that cannot show every character --------------------------------------------------

def test_stand_ins_for_what_a_console_cannot_encode():
    LLM.console_stand_ins()  # registers the error handler
    assert "⏎No␣hay → más €".encode("ascii", "stand-ins") == b"<eol>No_hay -> mas ?"
    assert "⏎Más".encode("cp1252", "stand-ins") == "<eol>Más".encode("cp1252")  # cp1252 has á: kept


def test_a_cp1252_console_runs_to_the_end_and_files_stay_utf8(tmp_path):
    result = run_llm(*TINY_ARGV, "--epochs", "1", "--out", str(tmp_path), cwd=ROOT,
                     env={"PYTHONIOENCODING": "cp1252"})
    assert result.returncode == 0, result.stderr.decode("cp1252")
    printed = result.stdout.decode("cp1252")
    assert "input  = tokens[:-1] = <eol>" in printed and "UnicodeEncodeError" not in printed
    assert "⏎" in (tmp_path / "table.txt").read_text(encoding="utf-8")


# --- any working folder ----------------------------------------------------------------------------

def test_runs_from_another_folder_and_its_checkpoint_works_from_a_third(tmp_path):
    elsewhere, third = tmp_path / "elsewhere", tmp_path / "third"
    elsewhere.mkdir(), third.mkdir()
    argv = TINY_ARGV[:TINY_ARGV.index("--data")] + TINY_ARGV[TINY_ARGV.index("--data") + 2:]  # the default data
    result = run_llm(*argv, "--epochs", "1", "--pictures", cwd=elsewhere)  # no refranes.txt here
    assert result.returncode == 0, result.stderr.decode()
    assert f"data: {ROOT / 'refranes.txt'}:" in result.stdout.decode()  # found next to LLM.py
    checkpoint = elsewhere / "outputs" / "model.pt"
    assert LLM.load_checkpoint(checkpoint, "cpu")[2].data == str(ROOT / "refranes.txt")  # stored resolved
    result = run_llm("--eval", "--checkpoint", str(checkpoint), cwd=third)
    assert result.returncode == 0 and b"test (" in result.stdout, result.stderr.decode()


def test_a_checkpoint_whose_text_moved_says_so(tmp_path, capsys):
    text = tmp_path / "mis_refranes.txt"
    text.write_text((ROOT / "refranes.txt").read_text(encoding="utf-8"), encoding="utf-8")
    assert LLM.main(TINY_ARGV + ["--epochs", "1", "--pictures", "--data", str(text), "--out", str(tmp_path)]) == 0
    moved = text.rename(tmp_path / "movido.txt")
    capsys.readouterr()
    assert LLM.main(["--eval", "--checkpoint", str(tmp_path / "model.pt")]) == 2
    assert "mis_refranes.txt, which is not there any more" in capsys.readouterr().err
    assert LLM.main(["--eval", "--checkpoint", str(tmp_path / "model.pt"), "--data", str(moved)]) == 0
    assert LLM.main(["--resume", "--epochs", "2", "--checkpoint", str(tmp_path / "model.pt"), "--data", str(moved),
                     "--out", str(tmp_path)]) == 0  # resuming on the text at its new place


# --- progress inside a long epoch ------------------------------------------------------------------

class TickingClock:
    """A clock for the progress line that moves one second every time it is read: the test
    then depends on the count of steps, never on how fast this machine is."""

    def __init__(self, real):
        self.now, self.real = 0.0, real

    def perf_counter(self):
        self.now += 1.0
        return self.now

    def __getattr__(self, name):  # everything else from the real time module
        return getattr(self.real, name)


def test_a_long_stream_epoch_says_how_far_it_is(tmp_path, capsys, monkeypatch):
    """A clock that ticks a second at every reading makes every step of a stream-mode epoch last
    longer than a progress interval of 1.5 s, so every other step prints a line; with the default
    10 s the tiny run prints none (on the real clock too)."""
    argv = TINY_ARGV + ["--mode", "stream", "--context", "24", "--epochs", "1", "--pictures", "--out", str(tmp_path)]
    monkeypatch.setattr(LLM, "time", TickingClock(LLM.time))
    assert LLM.main(argv + ["--progress", "1.5"]) == 0
    lines = [line for line in capsys.readouterr().out.splitlines() if line.startswith("  epoch 1/1:")]
    steps = [int(re.search(r"\((\d+)/(\d+) steps\)", line).group(1)) for line in lines]
    total = int(re.search(r"/(\d+) steps", lines[0]).group(1))
    assert len(steps) >= total // 3 and steps == sorted(steps) and steps[-1] >= total - 2
    assert all(re.search(r"\d+% .* running loss \d+\.\d{3} \| [\d,]+ tokens/s \| about [\d,]+ s left", line)
               for line in lines)
    monkeypatch.undo()
    assert LLM.main(argv) == 0
    assert "  epoch 1/1:" not in capsys.readouterr().out


def test_on_a_terminal_the_progress_line_is_redrawn_in_place(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sys.stdout, "isatty", lambda: True)
    monkeypatch.setattr(LLM, "time", TickingClock(LLM.time))
    argv = TINY_ARGV + ["--mode", "stream", "--context", "24", "--epochs", "1", "--pictures", "--progress", "1.5"]
    assert LLM.main(argv + ["--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "\r  epoch 1/1:" in out and "\n  epoch 1/1:" not in out  # redrawn, never a line of its own
    assert re.search(r"\r +\repoch   1/1 \| train loss", out)  # wiped before the epoch's line


@pytest.mark.parametrize("value", ["-1", "nan"])
def test_a_negative_progress_interval_is_refused(capsys, tmp_path, value):
    one_line_error(capsys, ["--progress", value, "--out", str(tmp_path)], "--progress")


def test_autocast_is_not_entered_when_mixed_precision_is_off(monkeypatch):
    """Older torch on a Mac raises for torch.autocast('mps', enabled=False): fp32 never calls it."""
    monkeypatch.setattr(torch, "autocast", lambda *a, **k: (_ for _ in ()).throw(AssertionError("autocast")))
    cfg = LLM.RunConfig(precision="fp32")
    with LLM.mixed_precision(cfg, torch.device("cpu")):
        pass


def test_the_spanish_default_prompts_give_way_on_another_language(tmp_path, capsys):
    text = tmp_path / "english.txt"
    text.write_text("An apple a day keeps the doctor away.\nNo pain, no gain.\nQuiet waters run deep.\n" * 10,
                    encoding="utf-8")
    argv = TINY_ARGV[:TINY_ARGV.index("--prompts")] + ["--epochs", "1", "--pictures", "--data", str(text),
                                                        "--out", str(tmp_path)]
    assert LLM.main(argv) == 0
    assert "note: the default prompts 'Más vale', " in capsys.readouterr().out  # á: not in this text
    one_line_error(capsys, argv + ["--prompts", "Más"], "'á' (LATIN SMALL LETTER A WITH ACUTE)")  # typed: refused
