"""The workbook (python LLM.py --workbook DIR) and its checks (python LLM.py --check): the book
passes every check; a fresh workbook fails every one as not started; usual mistakes, planted by
editing a copy of the book, are caught and named; a student function that raises, never ends or
returns the wrong thing is reported without a traceback; a workbook filled with the book's own
bodies trains to the book's losses."""
import ast
import importlib.util
import re
import shutil
import subprocess
import sys

import pytest

import LLM
from conftest import PROVERBS, ROOT, one_line_error

BOOK = (ROOT / "LLM.py").read_text(encoding="utf-8")
NAMES = [e.name for e in LLM.EXERCISES]


def load_copy(text: str, tmp_path, name: str):
    """A copy of the book, edited, imported as a module of its own (its checks check its functions)."""
    path = tmp_path / f"{name}.py"
    path.write_text(text, encoding="utf-8")
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the file runs
    try:
        spec.loader.exec_module(module)
    finally:
        del sys.modules[name]
    return module


def planted(edits) -> str:
    """The book with each (old, new) edit made exactly once (a mistake of two edits: two tuples)."""
    text = BOOK
    edits = [pair for old, new in edits for pair in (zip(old, new) if isinstance(old, tuple) else [(old, new)])]
    for old, new in edits:
        assert text.count(old) == 1, old
        text = text.replace(old, new)
    return text


def verdicts_of(module, names=(), lang="en") -> dict:
    lines = []
    code = module.check_exercises(list(names), lang, log=lines.append)
    return {"code": code, "lines": lines, "text": "\n".join(lines)}


def exercise_block(text: str, name: str) -> str:
    """The lines --check printed for one exercise: its status line and the indented ones after it."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if re.match(rf"  \S.*?\s{re.escape(name)}\s", line + " "))
    end = next((i for i in range(start + 1, len(lines)) if not lines[i].startswith(" " * 15)), len(lines))
    return "\n".join(lines[start:end])


def test_the_book_passes_every_check():
    result = verdicts_of(LLM)
    assert result["code"] == 0, result["text"]
    assert sum(line.startswith("  done ") for line in result["lines"]) == len(NAMES) >= 12
    assert result["lines"][-1] == f"{len(NAMES)} of {len(NAMES)} exercises done"


def test_the_exercises_cover_the_story_in_reading_order():
    """At least the pieces a class writes, each a real function or method of Part I, in the order
    the book reads, each with a level 1 to 3, minutes, and both languages."""
    story = BOOK[:BOOK.index("# # APPENDIX")]
    nodes = LLM.part_one_functions(BOOK, story.count("\n"))
    assert {"CharTokenizer.encode", "encode_lines", "ScaledEmbedding.forward", "sinusoidal_positional_encoding",
            "causal_mask", "attention", "split_heads", "join_heads", "FeedForward.forward", "EncoderLayer.forward",
            "sequence_loss", "learning_rate", "Adam.step", "choose_next", "merge_pair"} <= set(NAMES)
    lines = [nodes[name].lineno for name in NAMES]
    assert lines == sorted(lines)
    headings = [(i + 1, int(m.group(1))) for i, line in enumerate(story.splitlines())
                for m in [re.match(r"# ## (\d+)\. ", line)] if m]
    for e in LLM.EXERCISES:
        assert 1 <= e.level <= 3 and 3 <= e.minutes <= 30 and set(e.task) == {"en", "es"}
        assert max(n for line, n in headings if line < nodes[e.name].lineno) == e.section, e.name


# Each usual mistake is planted by editing the book's text: (exercise, old, new, hint). Two or
# more per exercise; MISTAKE_SETS puts at most one per exercise into each copy of the book.
MISTAKES = [
    ("CharTokenizer.encode", "        return [self.ids[c] for c in text]\n", "        return [self.ids[c] + 1 for c in text]\n", "ids_from_one"),
    ("CharTokenizer.encode", "        return [self.ids[c] for c in text]\n", "        return [ord(c) for c in text]\n", "ord"),
    ("CharTokenizer.encode", "        unknown = self.unknown(text)\n        if unknown:", "        unknown = self.unknown(text)\n        if False:", "unknown_char"),
    ("merge_pair", "        i += 2 if joined else 1\n", "        i += 1\n", "skip_both"),
    ("merge_pair", "    while i < len(ids):\n", "    while i < len(ids) - 1:\n", "last_dropped"),
    ("merge_pair", "        joined = tuple(ids[i:i + 2]) == pair\n", "        joined = tuple(ids[i:i + 2]) in (pair, pair[::-1])\n", "pair_order"),
    ("encode_lines", "        targets[row, :len(s) - 1] = torch.tensor(s[1:])  # tokens[1:]",
     "        targets[row, :len(s) - 1] = torch.tensor(s[:-1])  # tokens[1:]", "not_shifted"),
    ("encode_lines", "    targets = torch.full((len(lines), L), IGNORE, dtype=torch.long)",
     "    targets = torch.full((len(lines), L), tokenizer.eol_id, dtype=torch.long)", "pad_target"),
    ("encode_lines", "    sequences = [s[:context + 1] for s in sequences]", "    sequences = [s[:context] for s in sequences]", "cut_context"),
    ("ScaledEmbedding.forward", "        return super().forward(idx) * math.sqrt(self.embedding_dim)",
     "        return super().forward(idx)", "no_scale"),
    ("ScaledEmbedding.forward", "        return super().forward(idx) * math.sqrt(self.embedding_dim)",
     "        return super().forward(idx) * self.embedding_dim", "scale_c"),
    ("sinusoidal_positional_encoding", "    pe[:, 0::2] = torch.sin(angle)  # even dimensions 2i\n    pe[:, 1::2] = torch.cos(angle[:, :d_model // 2])",
     "    pe[:, 0::2] = torch.cos(angle)  # even dimensions 2i\n    pe[:, 1::2] = torch.sin(angle[:, :d_model // 2])", "sin_cos"),
    ("sinusoidal_positional_encoding", "    angle = position / 10000 ** (two_i / d_model)", "    angle = position / 10000 ** (two_i / 2 / d_model)", "exponent_i"),
    ("sinusoidal_positional_encoding", "    position = torch.arange(seq_len, dtype=torch.float32).unsqueeze(1)",
     "    position = torch.arange(1, seq_len + 1, dtype=torch.float32).unsqueeze(1)", "from_one"),
    ("causal_mask", "    return torch.ones(T, T, dtype=torch.bool, device=device).tril_()", "    return torch.ones(T, T, dtype=torch.bool, device=device).triu_()", "transposed"),
    ("causal_mask", "    return torch.ones(T, T, dtype=torch.bool, device=device).tril_()", "    return torch.ones(T, T, dtype=torch.bool, device=device).tril_(-1)", "no_diagonal"),
    ("causal_mask", "    return torch.ones(T, T, dtype=torch.bool, device=device).tril_()", "    return torch.ones(T, T, dtype=torch.bool, device=device).tril_(1)", "one_ahead"),
    ("attention", "/ math.sqrt(q.size(-1))  # (B,H,T,D)", "/ q.size(-1)  # (B,H,T,D)", "d_k"),
    ("attention", "    weights = scores.softmax(dim=-1)  # (B, H, T, T)", "    weights = scores.softmax(dim=-2)  # (B, H, T, T)", "axis"),
    ("attention", "        scores = scores.masked_fill(~mask, float(\"-inf\"))", "        scores = scores.masked_fill(mask, float(\"-inf\"))", "mask_inverted"),
    ("attention", "    weights = scores.softmax(dim=-1)  # (B, H, T, T)",
     "    weights = (q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))).softmax(-1) * (1 if mask is None else mask)  # (B, H, T, T)",
     "mask_after"),
    ("encode_lines", "    sequences = [[tokenizer.eol_id] + tokenizer.encode(line) + [tokenizer.eol_id] for line in lines]",
     "    sequences = [[tokenizer.eol_id] + tokenizer.encode(line) for line in lines]", "no_closing"),
    ("learning_rate", "    if step < warmup:\n        return cfg.lr * (step + 1) / warmup",
     "    if step <= warmup:\n        return cfg.lr * (step + 1) / warmup", "warmup_zero"),
    ("Adam.step", "        self.t += 1\n        beta1, beta2 = self.betas\n        for group, ms, vs",
     "        beta1, beta2 = self.betas\n        for group, ms, vs", "t_not_counted"),
    ("causal_mask", "    return torch.ones(T, T, dtype=torch.bool, device=device).tril_()",
     "    return torch.ones(T, T, dtype=torch.bool).tril_()", "device_ignored"),
    ("EncoderLayer.forward", "        x = x + self.dropout(attended)  # residual connection around attention\n"
     "        x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))",
     "        x = x + attended  # residual connection around attention\n"
     "        x = x + self.feed_forward(self.feed_forward_norm(x))", "no_dropout"),
    ("Adam.step", ("        self.betas, self.eps, self.t = betas, eps, 0  # t counts the steps taken",
                   '            lr, decay = group["lr"], group["weight_decay"]\n            for p, m, v in'),
     ("        self.betas, self.eps, self.t, self.lr = betas, eps, 0, lr  # t counts the steps taken",
      '            lr, decay = self.lr, group["weight_decay"]\n            for p, m, v in'), "group_lr"),
    ("split_heads", "    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)", "    return x.view(B, n_heads, T, C // n_heads)", "no_transpose"),
    ("split_heads", "    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)", "    return x.view(B, T, C // n_heads, n_heads).permute(0, 3, 1, 2)", "interleaved"),
    ("join_heads", "    return x.transpose(1, 2).reshape(B, T, H * D)", "    return x.reshape(B, T, H * D)", "join_no_transpose"),
    ("join_heads", "    return x.transpose(1, 2).reshape(B, T, H * D)", "    return x.permute(0, 2, 3, 1).reshape(B, T, H * D)", "join_interleaved"),
    ("FeedForward.forward", "        hidden = F.relu(self.expand(x))", "        hidden = self.expand(x)", "no_relu"),
    ("FeedForward.forward", "        hidden = F.relu(self.expand(x))", "        hidden = F.gelu(self.expand(x))", "gelu"),
    ("EncoderLayer.forward", "        x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))",
     "        x = x + self.dropout(self.feed_forward(self.attention_norm(x)))", "one_norm"),
    ("EncoderLayer.forward", "        x = x + self.dropout(attended)  # residual connection around attention",
     "        x = self.dropout(attended)  # residual connection around attention", "no_residual_attention"),
    ("EncoderLayer.forward", "        x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))",
     "        x = x + self.dropout(self.feed_forward(x))", "no_ffn_norm"),
    ("sequence_loss", "    return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE)",
     "    return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE, reduction=\"sum\")", "loss_sum"),
    ("sequence_loss", "    return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE)",
     "    return F.cross_entropy(flat_logits, flat_targets.clamp(min=0), reduction=\"none\")[flat_targets != IGNORE]"
     ".sum() / flat_targets.numel()", "padding_averaged"),
    ("sequence_loss", "    return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE)",
     "    return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE) / math.log(2)", "loss_bits"),
    ("learning_rate", "        return cfg.lr * (step + 1) / warmup", "        return cfg.lr * step / warmup", "warmup_from_zero"),
    ("learning_rate", "    warmup = min(cfg.warmup, int(total_steps * cfg.warmup_cap))", "    warmup = cfg.warmup", "no_cap"),
    ("learning_rate", "    progress, floor = (step - warmup) / max(1, total_steps - warmup), cfg.lr_floor",
     "    progress, floor = (step - warmup) / max(1, total_steps - warmup), 0.0", "no_floor"),
    ("Adam.step", "                p.addcdiv_(m, denominator, value=-lr / (1 - beta1 ** self.t))  # p - lr m^",
     "                p.addcdiv_(m, denominator, value=-lr)  # p - lr m^", "correction_v_only"),
    ("Adam.step", "                denominator = v.sqrt() / math.sqrt(1 - beta2 ** self.t) + self.eps",
     "                denominator = (v / (1 - beta2 ** self.t) + self.eps).sqrt()", "eps_inside"),
    ("Adam.step", "                if decay:\n                    p.mul_(1 - lr * decay)  # AdamW only: pull towards 0",
     "                if False:\n                    p.mul_(1 - lr * decay)  # AdamW only: pull towards 0", "no_decay"),
    ("Adam.step", "                p.addcdiv_(m, denominator, value=-lr / (1 - beta1 ** self.t))  # p - lr m^",
     "                p.addcdiv_(m, v.sqrt() + self.eps, value=-lr)  # p - lr m^", "no_bias_correction"),
    ("choose_next", "    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)",
     "    probs = torch.softmax(logits.float() * sampling.temperature, dim=-1)", "temperature_times"),
    ("choose_next", "        kept = min(kept, int((cumulative < sampling.top_p).sum()) + 1)",
     "        kept = min(kept, max(1, int((cumulative < sampling.top_p).sum())))", "top_p_too_few"),
    ("choose_next", "    target = u * cumulative[kept - 1]  # u x the kept mass", "    target = u  # u x the kept mass", "u_unscaled"),
    ("choose_next", "    return Choice(int(order[rank]), logits,", "    return Choice(rank, logits,", "rank_for_id"),
]


def mistake_sets():
    """The planted mistakes grouped so that each copy of the book holds at most one per exercise
    (each exercise is checked alone, so one copy reports each of its mistakes where it is)."""
    sets = []
    for mistake in MISTAKES:
        home = next((s for s in sets if all(m[0] != mistake[0] for m in s)), None)
        if home is None:
            sets.append(home := [])
        home.append(mistake)
    return sets


def test_every_exercise_has_at_least_two_planted_mistakes_with_a_hint():
    for name in NAMES:
        hints = [hint for exercise, _, _, hint in MISTAKES if exercise == name]
        assert len(hints) >= 2 and all(hint in LLM.HINTS for hint in hints), name


@pytest.mark.parametrize("number", range(len(mistake_sets())))
def test_planted_mistakes_are_caught_and_named(tmp_path, number):
    """A copy of the book with usual mistakes planted: --check says wrong for each, with the input,
    the expected and the actual values, and the mistake's own hint; the others stay done."""
    mistakes = mistake_sets()[number]
    module = load_copy(planted([(old, new) for _, old, new, _ in mistakes]), tmp_path, f"planted_{number}")
    result = verdicts_of(module)
    assert result["code"] == 1
    for name, _, _, hint in mistakes:
        block = exercise_block(result["text"], name)
        assert block.startswith("  wrong "), block
        assert "input: " in block and ("should" in block or "raised" in block), block
        assert f"hint: {LLM.HINTS[hint][0]}" in block, (hint, block)
    wrong = {name for name, *_ in mistakes}
    for name in set(NAMES) - wrong:
        assert exercise_block(result["text"], name).startswith("  done "), name
    assert result["lines"][-1] == f"{len(NAMES) - len(wrong)} of {len(NAMES)} exercises done"


def test_a_mistake_is_named_in_spanish_too(tmp_path):
    module = load_copy(planted([("/ math.sqrt(q.size(-1))  # (B,H,T,D)", "/ q.size(-1)  # (B,H,T,D)")]), tmp_path, "es_copy")
    result = verdicts_of(module, ["attention"], "es")
    assert result["lines"][0].startswith("Comprobando los ejercicios contra PyTorch")
    block = exercise_block(result["text"], "attention")
    assert block.startswith("  mal ") and "entrada: attention(q, k, v, causal_mask(5))" in block
    assert "debería ser" in block and f"pista: {LLM.HINTS['d_k'][1]}" in block
    assert result["lines"][-1] == "0 de 1 ejercicios hechos"


STUDENT_FAULTS = [  # what a student's function may do besides a wrong number, and what --check says
    ("attention", "    weights = scores.softmax(dim=-1)", "    weights = scores.softmax(dim=-1) / 0 + undefined_name",
     "raised NameError: name 'undefined_name' is not defined"),
    ("merge_pair", "        i += 2 if joined else 1\n", "        i += 0\n", "ran for more than 0.5 s and was stopped"),
    ("causal_mask", "    return torch.ones(T, T, dtype=torch.bool, device=device).tril_()",
     "    return torch.ones(T, T, device=device).tril_()", "should hold torch.bool values, holds torch.float32"),
    ("split_heads", "    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)",
     "    return x.view(B, T, n_heads, C // n_heads)", "should have the shape (2, 2, 3, 4), has (2, 3, 2, 4)"),
    ("learning_rate", "        return cfg.lr * (step + 1) / warmup\n", "        return [cfg.lr]\n", "should return a number"),
    ("join_heads", "    return x.transpose(1, 2).reshape(B, T, H * D)", "    x.transpose(1, 2).reshape(B, T, H * D)",
     "returned None"),
    ("sequence_loss", "    return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE)",
     "    return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE).item()", "should return one number in a tensor"),
    ("Adam.step", "        for group, ms, vs in zip(self.param_groups, self.m, self.v):\n",
     "        sys.exit(3)\n        for group, ms, vs in zip(self.param_groups, self.m, self.v):\n", "raised SystemExit: 3"),
    ("choose_next", "    return Choice(int(order[rank]), logits,", "    return int(order[rank]), (logits,", "should return a Choice"),
]


def test_a_student_function_that_raises_loops_or_returns_the_wrong_thing_is_reported(tmp_path):
    text = planted([(old, new) for _, old, new, _ in STUDENT_FAULTS])
    text = text.replace("CHECK_SECONDS = 10.0", "CHECK_SECONDS = 0.5", 1)
    result = verdicts_of(load_copy(text, tmp_path, "faults"))
    for name, _, _, said in STUDENT_FAULTS:
        block = exercise_block(result["text"], name)
        assert block.startswith("  wrong ") and said in block, (said, block)
    assert "hint: " + LLM.HINTS["endless"][0] in exercise_block(result["text"], "merge_pair")
    assert "faults.py, line" in exercise_block(result["text"], "attention")  # where it raised


def write_workbook(tmp_path, exercises="", lang="en"):
    """LLM.write_workbook, in this process (as --workbook DIR --exercises ... --lang ... would)."""
    folder, said = tmp_path / "workbook", []
    LLM.write_workbook(str(folder), [exercises], lang, log=said.append)
    return folder, "\n".join(said)


def run_in(folder, *argv, timeout=300):
    return subprocess.run([sys.executable, "LLM.py", *argv], cwd=folder, capture_output=True, text=True,
                          timeout=timeout)


def test_a_fresh_workbook_fails_every_check_as_not_started_and_refuses_to_train(tmp_path, capsys):
    """A folder with nothing but the workbook and refranes.txt: --check says '0 of 15' (exit 1,
    no traceback); python LLM.py says in one line which exercise comes first (exit 2)."""
    folder, said = write_workbook(tmp_path)
    assert sorted(p.name for p in folder.iterdir()) == ["LLM.py", "refranes.txt"]
    assert (folder / "refranes.txt").read_bytes() == (ROOT / "refranes.txt").read_bytes()
    assert f"the book with {len(NAMES)} functions for you to write" in said
    check = run_in(folder, "--check", "--lang", "en")
    assert check.returncode == 1 and "Traceback" not in check.stdout + check.stderr
    assert check.stdout.count("  not started ") == len(NAMES)
    assert check.stdout.splitlines()[-1] == f"0 of {len(NAMES)} exercises done"
    workbook = load_copy((folder / "LLM.py").read_text(encoding="utf-8"), tmp_path, "fresh_workbook")
    one_line_error(capsys, ["--lang", "en", "--data", str(folder / "refranes.txt"), "--out", str(tmp_path / "o")],
                   "error: this workbook trains once its exercises pass their checks: "
                   f"{len(NAMES)} do not yet, CharTokenizer.encode (section 2, not started) first", main=workbook.main)


def test_the_workbook_keeps_each_signature_and_docstring_and_says_what_to_write(tmp_path):
    folder, _ = write_workbook(tmp_path, lang="es")
    text = (folder / "LLM.py").read_text(encoding="utf-8")
    banner = text.splitlines().index(next(l for l in text.splitlines() if l.startswith("# # APPENDIX")))
    book, workbook = LLM.part_one_functions(BOOK, 10 ** 6), LLM.part_one_functions(text, banner + 1)
    for name in NAMES:
        ours, theirs = book[name], workbook[name]
        assert ast.dump(ours.args) == ast.dump(theirs.args) and ast.get_docstring(ours) == ast.get_docstring(theirs)
        body = ast.get_source_segment(text, theirs)
        assert "TE TOCA: ejercicio" in body and "Calcula: " in body and "Formas: " in body, body
        assert f"python LLM.py --check {name}" in body and "raise NotImplementedError(" in body
    story = text.splitlines()[:banner]
    assert "\n".join(story).count("raise NotImplementedError(") == len(NAMES)
    assert not [line for line in story if len(line) > 100]  # still fits a projector
    assert f"STUDENT_EXERCISES: tuple = {tuple(NAMES)!r}" in text and 'WORKBOOK_LANG = "es"' in text
    # the Markdown of every section, its prose and its formulas, is the book's own
    assert [l for l in text.splitlines() if l.startswith("# ")] == [l for l in BOOK.splitlines() if l.startswith("# ")]


def test_exercises_chosen_by_name_blank_only_those(tmp_path):
    folder, said = write_workbook(tmp_path, "attention,causal_mask")
    text = (folder / "LLM.py").read_text(encoding="utf-8")
    story = text[:text.index("# # APPENDIX")]
    assert story.count("raise NotImplementedError(") == 2 and "the book with 2 functions" in said
    check = verdicts_of(load_copy(text, tmp_path, "two_exercises"))
    assert check["code"] == 1 and check["lines"][-1] == "0 of 2 exercises done"
    assert [line.split()[2] for line in check["lines"][1:3]] == ["causal_mask", "attention"]


def test_a_workbook_filled_with_the_books_bodies_trains_to_the_books_losses(tmp_path, capsys):
    """Every stub replaced by the book's own body: --check passes, and the tiny run prints the
    book's losses to the last digit, naming the student's functions."""
    folder, _ = write_workbook(tmp_path)
    text = (folder / "LLM.py").read_text(encoding="utf-8")
    for name in NAMES:
        stub = re.search(rf"\n( +)# YOUR TURN: exercise \d+ of \d+.*?\n\1raise NotImplementedError\(\n?[^\n]*?"
                         rf"\"{re.escape(name)}: your turn[^\n]*\n", text, re.S)
        node = LLM.part_one_functions(BOOK, 10 ** 6)[name]
        first = node.body[1] if ast.get_docstring(node) else node.body[0]
        body = "\n".join(BOOK.splitlines()[first.lineno - 1:node.end_lineno])
        text = text[:stub.start()] + "\n" + body + "\n" + text[stub.end():]
    workbook = load_copy(text, tmp_path, "filled_workbook")
    checked = verdicts_of(workbook)
    assert checked["lines"][-1] == f"{len(NAMES)} of {len(NAMES)} exercises done", checked["text"]
    tiny = ["--d-model", "16", "--heads", "2", "--layers", "2", "--d-ff", "32", "--epochs", "2", "--snapshot", "0",
            "--pictures", "--data", str(PROVERBS), "--prompts", "No hay", "--max-chars", "20", "--lang", "en"]
    printed = {}
    for name, main in (("theirs", workbook.main), ("ours", LLM.main)):
        assert main(tiny + ["--out", str(tmp_path / name)]) == 0
        printed[name] = capsys.readouterr().out
    losses = lambda out: re.findall(r"^epoch .*? clipped\)|^test split.*$|^      No hay.*$", out, re.M)  # noqa: E731
    assert losses(printed["theirs"]) == losses(printed["ours"]) and len(losses(printed["ours"])) >= 4
    assert f"your code: the {len(NAMES)} functions you wrote run in this training" in printed["theirs"]
    assert "code: the story's" in printed["theirs"]


def test_what_a_workbook_and_a_check_refuse(tmp_path, capsys):
    one_line_error(capsys, ["--check", "attentoin"], "no exercise is called 'attentoin'", "causal_mask")
    one_line_error(capsys, ["--check", "--epochs", "3"], "take no settings (--epochs)")
    one_line_error(capsys, ["--exercises", "attention"], "--exercises chooses the exercises of --workbook DIR")
    one_line_error(capsys, ["--workbook", str(ROOT)], "is this book itself")
    (tmp_path / "LLM.py").write_text("# a student's work\n", encoding="utf-8")
    one_line_error(capsys, ["--workbook", str(tmp_path)], "exists: a workbook is never written over")
    assert (tmp_path / "LLM.py").read_text(encoding="utf-8") == "# a student's work\n"


def test_the_readme_lists_every_exercise_with_its_section_level_and_time():
    from test_prose import README
    rows = re.findall(r"^\| (\d+) \| `([\w.]+)` \| (\d+) \| (\d) \| (\d+) \|$", README, re.M)
    assert rows == [(str(i), e.name, str(e.section), str(e.level), str(e.minutes))
                    for i, e in enumerate(LLM.EXERCISES, 1)]
    assert "## Teaching with LLM.py" in README and "### Una clase de 50 minutos" in README


def test_the_readmes_loop_checks_a_whole_class(tmp_path):
    """The README's loop over class/*/LLM.py, run as written: one line per student, its tally."""
    from test_prose import README
    loop = next(line for line in README.splitlines() if line.startswith("for copy in class/*/LLM.py"))
    for student, exercises in (("ana", "causal_mask"), ("ben", "attention,split_heads")):
        LLM.write_workbook(str(tmp_path / "class" / student), [exercises], "en", log=lambda line: None)
    bash = shutil.which("bash")
    if bash is None:
        pytest.skip("needs bash")
    said = subprocess.run([bash, "-c", loop.replace("python ", f"{sys.executable} ")], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert said.stdout.splitlines() == ["class/ana/LLM.py: 0 of 1 exercises done",
                                        "class/ben/LLM.py: 0 of 2 exercises done"], said.stderr


def test_the_language_follows_the_locale(monkeypatch):
    """No --lang: LANG=es_ES.UTF-8 speaks Spanish, LANG=C English; --lang wins."""
    for name in ("LC_ALL", "LC_MESSAGES", "LANGUAGE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("LANG", "es_ES.UTF-8")
    assert LLM.language(None) == "es" and LLM.language("en") == "en"
    assert verdicts_of(LLM, ["causal_mask"], None)["lines"][-1] == "1 de 1 ejercicios hechos"
    monkeypatch.setenv("LANG", "en_GB.UTF-8")
    assert LLM.language(None) == "en"
