"""Mutation testing: plant a small, plausible bug in a copy of LLM.py, one at a time, and check
that the tests catch it.

    python tests/mutate.py               every mutation, then a summary (about 10 minutes on 2 cores)
    python tests/mutate.py --list        the mutations, one line each
    python tests/mutate.py NAME [NAME]   only these (a name, or the start of one)

Each mutation is one exact piece of LLM.py replaced by another: an operator flipped, a `.eval()`
made `.train()`, an assignment dropped, an off-by-one, a branch inverted. The copy is the whole
project in a temporary folder (LLM.py, refranes.txt, outputs/, tests/), so the tests that start
`python LLM.py` as a process run the mutated file too. For each mutation the tests most likely
to notice run first (`pytest -x`); if they all pass, the whole default suite runs (and, for a
mutation of torchrun's code, the tests marked slow). A mutation is *caught* when a test fails,
*escaped* when every test passes; the script exits 1 if any escaped. A mutation whose text is
no longer in LLM.py is reported as *stale*: LLM.py changed and the list must follow it.

No mutation here is equivalent (harmless): each one changes what the program computes, prints or
writes. Run it before calling a change done; it is not part of CI (it takes about 10 minutes,
more when a mutation escapes the first tests and the whole suite runs).
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


@dataclass
class Mutation:
    name: str
    where: str  # the section of LLM.py (1-16 for Part I, A-L for Part II)
    old: str  # an exact piece of LLM.py, found once
    new: str  # what it becomes
    first: str  # the tests run first, space-separated (files or node ids)
    slow: bool = False  # caught only by a test marked slow (torchrun)


M = Mutation
MUTATIONS = [
    # --- Part I, the story ---
    M("settings-default-lr", "1", "lr: float = setting(4e-3,", "lr: float = setting(4e-2,", "tests/test_story.py tests/test_readme.py"),
    M("strip-lines", "2", "return [line.strip() for line in text.split(EOL) if line.strip()]",
      "return [line for line in text.split(EOL) if line.strip()]", "tests/test_story.py tests/test_refranes.py"),
    M("tokenizer-unsorted", "2", "self.chars = sorted(set(chars) | {EOL})", "self.chars = list(dict.fromkeys(list(chars) + [EOL]))",
      "tests/test_story.py"),
    M("bpe-ties-largest", "3", "a, b = min(pair for pair, n in pairs.items() if n == top)",
      "a, b = max(pair for pair, n in pairs.items() if n == top)", "tests/test_tokenizer.py"),
    M("bpe-merge-overlap", "3", "i += 2 if joined else 1", "i += 1", "tests/test_tokenizer.py"),
    M("split-val-test-overlap", "4", "pick(order[n_val:n_val + n_test])", "pick(order[n_val - 1:n_val - 1 + n_test])",
      "tests/test_story.py"),
    M("line-cut-one-short", "4", "sequences = [s[:context + 1] for s in sequences]", "sequences = [s[:context] for s in sequences]",
      "tests/test_effects.py tests/test_story.py"),
    M("padding-target-not-ignored", "4", "targets = torch.full((len(lines), L), IGNORE, dtype=torch.long)",
      "targets = torch.full((len(lines), L), 0, dtype=torch.long)", "tests/test_story.py"),
    M("embedding-unscaled", "5", "return super().forward(idx) * math.sqrt(self.embedding_dim)",
      "return super().forward(idx)", "tests/test_story.py"),
    M("positional-sin-cos-swapped", "6", "pe[:, 0::2] = torch.sin(angle)", "pe[:, 0::2] = torch.cos(angle)",
      "tests/test_story.py"),
    M("mask-sees-the-future", "7", "torch.ones(T, T, dtype=torch.bool, device=device).tril_()",
      "torch.ones(T, T, dtype=torch.bool, device=device).tril_(1)", "tests/test_story.py"),
    M("attention-scale-by-d", "7", "scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))",
      "scores = q @ k.transpose(-2, -1) / q.size(-1)", "tests/test_story.py"),
    M("softmax-wrong-axis", "7", "weights = scores.softmax(dim=-1)", "weights = scores.softmax(dim=-2)", "tests/test_story.py"),
    M("one-norm-for-both", "8", "x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))",
      "x = x + self.dropout(self.feed_forward(self.attention_norm(x)))", "tests/test_story.py"),
    M("no-final-norm", "9", "logits = self.lm_head(self.final_norm(x))", "logits = self.lm_head(x)", "tests/test_story.py"),
    M("embedding-dropout-off-by-one-layer", "9", "x = self.embedding_dropout(self.embed(idx))",
      "x = self.embed(idx)", "tests/test_effects.py"),
    M("loss-counts-padding", "10", "return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE)",
      "return F.cross_entropy(flat_logits, flat_targets.clamp(min=0))", "tests/test_story.py"),
    M("bits-per-char-in-nats", "10", "return loss * split.n_tokens / split.n_chars / math.log(2)",
      "return loss * split.n_tokens / split.n_chars", "tests/test_story.py tests/test_normal.py"),
    M("counting-no-smoothing", "10", "counts = torch.ones(V, V)  # add-one smoothing", "counts = torch.full((V, V), 0.5)",
      "tests/test_story.py tests/test_normal.py"),
    M("counting-after-sign", "10", "if loss < bigram:",
      "if loss > bigram:", "tests/test_normal.py"),
    M("warmup-off-by-one", "11", "return cfg.lr * (step + 1) / warmup", "return cfg.lr * step / warmup", "tests/test_story.py"),
    M("cosine-no-floor", "11", "max(1, total_steps - warmup), cfg.lr_floor  # 0 -> 1", "max(1, total_steps - warmup), 0.0  # 0 -> 1",
      "tests/test_story.py"),
    M("adam-no-bias-correction", "12", "p.addcdiv_(m, denominator, value=-lr / (1 - beta1 ** self.t))",
      "p.addcdiv_(m, denominator, value=-lr)", "tests/test_story.py"),
    M("adamw-decay-after", "12", "p.mul_(1 - lr * decay)  # AdamW only", "p.mul_(1 - decay)  # AdamW only", "tests/test_story.py"),
    M("gradients-accumulate", "13", "    optimizer.zero_grad()\n    loss.backward()", "    loss.backward()",
      "tests/test_story.py"),
    M("clip-ignored", "13", "longest = clip if clip > 0 else math.inf", "longest = math.inf", "tests/test_story.py"),
    M("evaluate-dropout-on", "13", "    was_training = model.training\n    model.eval()\n    total, count = 0.0, 0",
      "    was_training = model.training\n    model.train()\n    total, count = 0.0, 0", "tests/test_effects.py"),
    M("evaluate-leaves-training-on", "13", "    model.train(was_training)\n    return total / count",
      "    model.train(True)\n    return total / count", "tests/test_effects.py"),
    M("evaluate-mean-of-batches", "13", "total += sequence_loss(logits, targets).item() * n",
      "total += sequence_loss(logits, targets).item() * len(inputs)", "tests/test_effects.py tests/test_story.py"),
    M("train-without-dropout", "14", "network.train()  # dropout on", "network.eval()  # dropout on", "tests/test_effects.py"),
    M("same-order-every-epoch", "14", "order = torch.Generator().manual_seed(cfg.seed * 1_000_003 + state.epoch)",
      "order = torch.Generator().manual_seed(cfg.seed * 1_000_003)", "tests/test_effects.py tests/test_story.py"),
    M("last-epoch-not-best", "14", "improved = record[\"val_loss\"] < state.best[\"val_loss\"]",
      "improved = record[\"val_loss\"] <= state.best[\"val_loss\"] or True", "tests/test_story.py"),
    M("patience-one-late", "14", "if cfg.patience and state.epochs_without_progress >= cfg.patience:",
      "if cfg.patience and state.epochs_without_progress > cfg.patience:", "tests/test_story.py tests/test_appendix.py"),
    M("resume-repeats-epoch", "14", 'first = state.history[-1]["epoch"] + 1 if state.history else 1',
      'first = state.history[-1]["epoch"] if state.history else 1', "tests/test_effects.py tests/test_faults.py"),
    M("train-loss-unweighted", "14", "self.sums += torch.stack([loss.detach() * n, n, norm, clipped])",
      "self.sums += torch.stack([loss.detach(), n, norm, clipped])", "tests/test_story.py tests/test_effects.py"),
    M("grad-norm-one-process", "14", "steps = max(1, self.epoch_steps * processes)",
      "steps = max(1, self.epoch_steps)", "tests/test_effects.py", slow=True),
    M("steps-per-epoch-ignores-processes", "14", "state.steps_per_epoch = max(1, batches // hooks.processes)",
      "state.steps_per_epoch = max(1, batches)", "tests/test_effects.py", slow=True),
    M("temperature-multiplies", "15", "probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)",
      "probs = torch.softmax(logits.float() * sampling.temperature, dim=-1)", "tests/test_story.py tests/test_effects.py"),
    M("top-p-one-too-few", "15", "kept = min(kept, int((cumulative < sampling.top_p).sum()) + 1)",
      "kept = min(kept, max(1, int((cumulative < sampling.top_p).sum())))", "tests/test_effects.py"),
    M("draw-ignores-kept-mass", "15", "target = u * cumulative[kept - 1]  # u x the kept mass", "target = u  # u x the kept mass",
      "tests/test_effects.py tests/test_story.py"),
    M("generate-dropout-on", "15", "    was_training = model.training\n    model.eval()\n    written = 0",
      "    was_training = model.training\n    model.train()\n    written = 0", "tests/test_effects.py"),
    M("generate-window-too-long", "15", "window = ids[-model.context:]", "window = ids[-model.context - 1:][:model.context]",
      "tests/test_effects.py tests/test_story.py"),
    M("generate-leaves-training-on", "15", "    model.train(was_training)\n    return tokenizer.decode(ids[1:])",
      "    model.train(True)\n    return tokenizer.decode(ids[1:])", "tests/test_effects.py"),
    M("edit-distance-substitution-free", "16", "kept = torch.minimum(row[:, :-1] + (chars != ord(char)), row[:, 1:] + 1)",
      "kept = torch.minimum(row[:, :-1], row[:, 1:] + 1)", "tests/test_story.py tests/test_normal.py"),
    # --- Part II, the machinery ---
    M("dropout-one-allowed", "A", "if not 0.0 <= cfg.dropout < 1.0:", "if not 0.0 <= cfg.dropout <= 1.0:",
      "tests/test_appendix.py"),
    M("write-not-atomic", "A", "os.replace(temporary, path)  # atomic", "shutil.copyfile(temporary, path)  # atomic",
      "tests/test_faults.py"),
    M("mode-choice-half-fits", "B", "if blank == 0 and fitting >= 0.95 * filled and filled >= 3:",
      "if blank == 0 and fitting >= 0.5 * filled and filled >= 3:", "tests/test_appendix.py tests/test_faults.py"),
    M("stream-tail-one-short", "B", "pieces.append((body[n * T:-1].unsqueeze(0), body[n * T + 1:].unsqueeze(0)))",
      "pieces.append((body[n * T:-2].unsqueeze(0), body[n * T + 1:-1].unsqueeze(0)))", "tests/test_appendix.py"),
    M("stream-windows-shifted-twice", "B", "targets = body[1:n * T + 1].view(n, T)", "targets = body[2:n * T + 2].view(n, T)",
      "tests/test_appendix.py"),
    M("stream-tail-dropped", "B", "if tail and len(body) - 1 > n * T:", "if False and tail and len(body) - 1 > n * T:",
      "tests/test_appendix.py tests/test_faults.py"),
    M("stream-val-from-train", "B", "parts = (extra + text[:n_train], text[n_train:n_train + n_val], text[n_train + n_val:])",
      "parts = (extra + text[:n_train], text[:n_val], text[n_train + n_val:])", "tests/test_appendix.py tests/test_effects.py"),
    M("fast-adam-no-bias-correction", "C", "torch._foreach_addcdiv_(params, m, denominator, -group[\"lr\"] / (1 - beta1 ** self.t))",
      "torch._foreach_addcdiv_(params, m, denominator, -group[\"lr\"])", "tests/test_story.py tests/test_effects.py"),
    M("bf16-never", "C", "    return torch.autocast(device.type, dtype=torch.bfloat16)", "    return contextlib.nullcontext()",
      "tests/test_appendix.py tests/test_effects.py"),
    M("autocast-float16", "C", "return torch.autocast(device.type, dtype=torch.bfloat16)",
      "return torch.autocast(device.type, dtype=torch.float16)", "tests/test_effects.py tests/test_appendix.py"),
    M("fast-adam-decay-ignored", "C", 'torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])  # AdamW only',
      "torch._foreach_mul_(params, 1.0)  # AdamW only", "tests/test_story.py"),
    M("fast-adam-no-eps", "C", "torch._foreach_add_(denominator, self.eps)  # sqrt(v / (1 - beta2^t)) + eps",
      "torch._foreach_add_(denominator, 0.0)  # sqrt(v / (1 - beta2^t)) + eps", "tests/test_story.py"),
    M("bf16-on-cpu-auto", "C", 'return device.type == "cuda" and torch.cuda.is_bf16_supported()',
      'return torch.cuda.is_bf16_supported() or device.type == "cpu"', "tests/test_appendix.py tests/test_effects.py"),
    M("every-rank-same-batch", "D", "yield group[ranks.rank]", "yield group[0]", "tests/test_effects.py", slow=True),
    M("ranks-keep-unfinished-group", "D", "        if len(group) == ranks.world:\n            yield group[ranks.rank]",
      "        if len(group) == ranks.world or True:\n            yield group[min(ranks.rank, len(group) - 1)]",
      "tests/test_effects.py", slow=True),
    M("too-few-batches-allowed", "D", "if batches < ranks.world:", "if batches < ranks.world - 1:",
      "tests/test_effects.py"),
    M("totals-not-summed", "D", "        return summed_over_ranks(sums, self.ranks)",
      "        return sums", "tests/test_effects.py", slow=True),
    M("resume-rng-not-restored", "E", "torch.set_rng_state(self.resume[\"rng\"])", "torch.get_rng_state()",
      "tests/test_appendix.py tests/test_effects.py"),
    M("resume-adam-moments-lost", "E", '            load_optimizer_state(optimizer, self.resume["optimizer"])\n',
      "            pass\n", "tests/test_effects.py"),
    M("resume-best-forgotten", "E", "            state.best = dict(state.history[-1])\n",
      "            pass\n", "tests/test_effects.py tests/test_faults.py"),
    M("checksum-not-checked", "F", "if payload.get(\"checksum\") != tensors_checksum(", "if False and payload.get(\"checksum\") != tensors_checksum(",
      "tests/test_faults.py tests/test_appendix.py"),
    M("init-from-rerandomised", "F", "    if model is None:\n        torch.manual_seed(cfg.seed)",
      "    if model is None or init_from is not None:\n        torch.manual_seed(cfg.seed)", "tests/test_effects.py"),
    M("fine-tune-old-rows-lost", "F", "rows[old_rows] = state[name]  # known tokens keep their learned rows",
      "rows[old_rows[:-1]] = state[name][:-1]  # known tokens keep their learned rows", "tests/test_appendix.py tests/test_effects.py"),
    M("new-rows-unseeded", "F", "    torch.manual_seed(cfg.seed)\n    grown = build_model(", "    grown = build_model(",
      "tests/test_effects.py tests/test_appendix.py"),
    M("checkpoint-nan-accepted", "F", "if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):",
      "if False and not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):", "tests/test_faults.py"),
    M("checkpoint-loaded-in-training-mode", "F", "return model.to(device).eval(), tokenizer, cfg, payload",
      "return model.to(device).train(), tokenizer, cfg, payload", "tests/test_effects.py"),
    M("attention-maps-dropout-on", "G", "    model.eval()\n    _, weights = model(", "    model.train()\n    _, weights = model(",
      "tests/test_effects.py tests/test_appendix.py"),
    M("table-entropy-in-nats", "G", "entropy = float(c.cumulative[c.kept - 1]), float(-(c.probs * torch.log2(c.probs.clamp_min(1e-30))).sum())",
      "entropy = float(c.cumulative[c.kept - 1]), float(-(c.probs * torch.log(c.probs.clamp_min(1e-30))).sum())",
      "tests/test_effects.py"),
    M("table-probabilities-untempered", "G", "f\"{float(c.probs[i]):>8.4f} {float(cum):>8.4f}\"",
      "f\"{float(torch.softmax(c.logits, -1)[i]):>8.4f} {float(cum):>8.4f}\"", "tests/test_effects.py"),
    M("pca-not-centred", "G", "xy = (matrix - matrix.mean(dim=0)) @ V[:, :2]", "xy = matrix @ V[:, :2]", "tests/test_appendix.py"),
    M("snapshot-epochs-off-by-one", "G", "return {cfg.snapshot * (k + 1) for k in range(count)}",
      "return {cfg.snapshot * k for k in range(count)}", "tests/test_explorer.py tests/test_effects.py"),
    M("snapshot-every-other-epoch", "G", 'if self.pictures is not None and record["epoch"] % self.cfg.snapshot == 0:',
      'if self.pictures is not None and (record["epoch"] - 1) % self.cfg.snapshot == 0:', "tests/test_effects.py"),
    M("page-temperature-multiplies", "H", "const probs = softmax(logits.map(a => a / sampling.temperature));",
      "const probs = softmax(logits.map(a => a * sampling.temperature));", "tests/test_explorer.py"),
    M("page-top-p-one-too-few", "H", "cumulative.filter(c => c < sampling.top_p).length + 1);",
      "cumulative.filter(c => c < sampling.top_p).length);", "tests/test_explorer.py"),
    M("page-attention-unscaled", "H", 'scale = WITHOUT.has("scaling") ? 1 : Math.sqrt(D);',
      'scale = WITHOUT.has("scaling") ? 1 : D;', "tests/test_explorer.py"),
    M("page-greedy-second", "H", "if (sampling.greedy) return {id: order[0],", "if (sampling.greedy) return {id: order[1],",
      "tests/test_explorer.py"),
    M("page-layer-norm-no-eps", "H", "const scale = 1 / Math.sqrt(variance + eps);", "const scale = 1 / Math.sqrt(variance + 1e-3);",
      "tests/test_explorer.py"),
    M("what-if-spread-n", "I", "math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))",
      "math.sqrt(sum((v - mean) ** 2 for v in values) / len(values))", "tests/test_normal.py tests/test_what_if.py"),
    M("class-verdict-inverted", "I", "real = mean2 - mean > sd + sd2", "real = mean2 - mean < sd + sd2", "tests/test_normal.py"),
    M("what-if-one-seed-repeated", "I", "results, seeds = [], [cfg.seed + k for k in range(cfg.seeds)]",
      "results, seeds = [], [cfg.seed for k in range(cfg.seeds)]", "tests/test_what_if.py"),
    M("what-if-switch-not-applied", "I", "variant = replace(cfg, without=(idea,) if idea else (), out=str(out)",
      "variant = replace(cfg, without=(), out=str(out)", "tests/test_what_if.py"),
    M("noise-verdict-one-spread", "I", "dv, noise = r.mean(VAL) - base.mean(VAL), r.spread(VAL) + base.spread(VAL)",
      "dv, noise = r.mean(VAL) - base.mean(VAL), r.spread(VAL)", "tests/test_what_if.py"),
    M("chat-temp-not-applied", "J", "            s.temperature = value\n", "            value = value\n", "tests/test_effects.py"),
    M("chat-topk-not-applied", "J", "            s.top_k = value\n", "            value = value\n", "tests/test_effects.py"),
    M("chat-greedy-not-toggled", "J", "            s.greedy = not s.greedy\n", "            s.greedy = s.greedy\n", "tests/test_effects.py"),
    M("chat-train-one-epoch", "J", "cfg = replace(cfg, epochs=epochs, lr=cfg.lr / self.typed_cfg.chat_lr_divisor",
      "cfg = replace(cfg, epochs=1, lr=cfg.lr / self.typed_cfg.chat_lr_divisor", "tests/test_effects.py tests/test_appendix.py"),
    M("chat-typed-lines-weigh-once", "J", "extra_train=typed * self.typed_cfg.chat_weight)", "extra_train=typed)",
      "tests/test_effects.py tests/test_appendix.py"),
    M("chat-train-full-lr", "J", "lr=cfg.lr / self.typed_cfg.chat_lr_divisor, warmup=0", "lr=cfg.lr, warmup=0",
      "tests/test_effects.py"),
    M("chat-topp-not-applied", "J", "            s.top_p = value\n",
      "            value = value\n", "tests/test_effects.py"),
    M("chat-log-not-written", "J", "                append_line(self.chat_log, line.strip())",
      "                pass", "tests/test_faults.py tests/test_appendix.py"),
    M("eval-completions-dropout-on", "K", "    model.eval()\n    greedy = lambda ids:", "    model.train()\n    greedy = lambda ids:",
      "tests/test_effects.py tests/test_normal.py"),
    M("count-minus-one-allowed", "K", "        if getattr(cfg, name) < 0:\n            raise UserError(f\"{flag_of(name)} must be 0 or more",
      "        if getattr(cfg, name) < -1:\n            raise UserError(f\"{flag_of(name)} must be 0 or more", "tests/test_appendix.py"),
    M("workbook-wrong-passes", "L", "            first_wrong = first_wrong or (problem and (case, problem))",
      "            first_wrong = first_wrong", "tests/test_workbook.py"),
]


def find_once(source: str, mutation: Mutation) -> str | None:
    """The problem with a mutation's text, or None if it is found exactly once."""
    count = source.count(mutation.old)
    return None if count == 1 else f"found {count} times in LLM.py"


def copy_project(into: Path):
    """LLM.py, refranes.txt, outputs/, tests/ and the rest, without the environment and git."""
    shutil.copytree(ROOT, into, ignore=shutil.ignore_patterns(".git", ".venv", "__pycache__", ".pytest_cache", "*.pyc"))


def pytest(folder: Path, targets: list[str], slow: bool) -> tuple[int, str, float]:
    """(exit code, the first failing test, seconds) of `pytest -x` on targets in the copy."""
    marks = ["-m", "slow or not slow"] if slow else []
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "-p", "no:cacheprovider", *marks, *targets],
                            cwd=folder, capture_output=True, text=True, timeout=1800,
                            env={**os.environ, "LLM_BROWSER_TESTS": os.environ.get("LLM_BROWSER_TESTS", "required")})
    failed = next((line.split(" ", 1)[1].split(" - ")[0] for line in result.stdout.splitlines()
                   if line.startswith(("FAILED ", "ERROR "))), "")
    return result.returncode, failed, time.perf_counter() - started


def try_mutation(folder: Path, source: str, mutation: Mutation) -> tuple[str, str, float]:
    """('caught', by which test, seconds) or ('escaped', '', seconds) for one mutation."""
    (folder / "LLM.py").write_text(source.replace(mutation.old, mutation.new), encoding="utf-8")
    seconds = 0.0
    for targets in (mutation.first.split(), ["tests"]):
        code, failed, took = pytest(folder, targets, mutation.slow and targets != ["tests"])
        seconds += took
        if code != 0:
            return "caught", failed or f"pytest exit code {code}", seconds
    return "escaped", "", seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="only the mutations whose name starts with one of these")
    parser.add_argument("--list", action="store_true", help="list the mutations and stop")
    args = parser.parse_args(argv)
    source = (ROOT / "LLM.py").read_text(encoding="utf-8")
    chosen = [m for m in MUTATIONS if not args.names or any(m.name.startswith(n) for n in args.names)]
    if args.list:
        for m in chosen:
            print(f"{m.where:>2}  {m.name:<38} {find_once(source, m) or ''}")
        return 0
    results = []
    with tempfile.TemporaryDirectory(prefix="llm-mutate-") as temporary:
        folder = Path(temporary) / "project"
        copy_project(folder)
        for n, m in enumerate(chosen, 1):
            problem = find_once(source, m)
            if problem:
                outcome, by, seconds = "stale", problem, 0.0
            else:
                outcome, by, seconds = try_mutation(folder, source, m)
            results.append(outcome)
            print(f"[{n:>2}/{len(chosen)}] {m.where:>2} {m.name:<38} {outcome:<8} {seconds:6.0f} s  {by}", flush=True)
    caught = results.count("caught")
    print(f"\n{caught} of {len(chosen)} mutations caught" + ("" if caught == len(chosen) else
          f"; {results.count('escaped')} escaped, {results.count('stale')} stale"))
    return 0 if caught == len(chosen) else 1


if __name__ == "__main__":
    sys.exit(main())
