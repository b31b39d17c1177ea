"""Speed and memory of LLM.py, measured side by side (not collected by pytest).

    python tests/benchmark.py            the full table (4 to 6 minutes on a 2-core CPU, the longer run included)
    python tests/benchmark.py --compile  also LLM.py under torch.compile on a CPU (20 to 60 s more)
    python tests/benchmark.py --quick    the same rows, shorter and smaller (under a minute)
    python tests/benchmark.py --device cuda
    python tests/benchmark.py --screenshot tests/explorer.png   also the README's picture of explorer.html
    python tests/benchmark.py --explorer     only a keystroke's cost in the committed explorer pages
    python tests/benchmark.py --tokenizers   only the comparison of characters and word pieces (15 to 20 minutes)

Every speed is printed next to two references measured in the same run, on the same machine,
with the same batch and context, in interleaved rounds, so the ratios mean something on a
noisy machine:
  - a model built from PyTorch's own blocks (nn.TransformerEncoder with norm_first=True: the
    same pre-norm layers as LLM.py) with LLM.py's embedding, positional encoding, head and
    training step around them;
  - karpathy/nanoGPT's model and training step, rewritten below in a few lines (nanoGPT is not
    installed here), run as nanoGPT runs it: AdamW, and on a GPU bf16 and torch.compile.

Rows:
  classroom run,        `python LLM.py` (the story's code on a CPU) and `--code fast`, in turns
  longer run            (three times each, twice with --quick), and the README's longer run (not with
                        --quick), each in a fresh process: wall time, peak memory, test loss,
                        the share of the sampled words that are words of the corpus, how many
                        samples were memorised, rediscovered or new; the story's code's wall
                        time as a multiple of the fast code's
  train <shape>         tokens/s of LLM.py (its fast code and the story's code; under
                        torch.compile too on a GPU, or with --compile) and of both references,
                        at nanoGPT's CPU and GPU shapes (the GPU shape only on a GPU, or with
                        --all-shapes: then in fp32)
  tokenize              reading and encoding a 100 MB text (tiny Shakespeare repeated):
                        seconds, and peak memory as a multiple of the file size
  generate              characters per second for one sample, and the time of one step with
                        1 and with `context` characters of history (what a key/value cache
                        could save)
  tokenizers            (--tokenizers) the classroom and the longer run with characters and with
                        word pieces of 256, 512 and 1024: wall time, bits per character on the
                        test split, the share of corpus words in 60 samples, two samples; and
                        the seconds to learn 500 merges on the proverbs
  explorer              explorer.html of each run: its size, the seconds the run spends writing
                        it, and in headless Chromium (when one is found) the time to the first
                        panel drawn, of one forward pass at the full context, and of a keystroke
                        (typing a proverb, and past the context) as a multiple of that pass;
                        --screenshot FILE also saves the classroom page at 1280x720;
                        --explorer measures the committed pages alone (outputs/, longer, pieces)
"""
from __future__ import annotations

import argparse
import math
import os
import re
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import LLM  # noqa: E402

SHAKESPEARE = ROOT.parent / "shared" / "corpora" / "tinyshakespeare.txt"

# nanoGPT's two char-level Shakespeare shapes (karpathy/nanoGPT, config/train_shakespeare_char.py
# and its README's CPU "baby" variant), with the figures measured on these machines.
SHAPES = {
    "cpu": dict(n_layers=4, n_heads=4, d_model=128, d_ff=512, context=64, batch_size=12, dropout=0.0,
                precision="fp32", nanogpt="13.8k tokens/s (55.5 ms/step) on the 2-core CPU"),
    "gpu": dict(n_layers=6, n_heads=6, d_model=384, d_ff=1536, context=256, batch_size=64, dropout=0.2,
                precision="bf16", nanogpt="1.18M tokens/s (13.9 ms/step) on one H100"),
}


class ReferenceLM(nn.Module):
    """The same model from PyTorch's own nn.TransformerEncoder: the yardstick."""

    def __init__(self, vocab_size: int, cfg: LLM.Config):
        super().__init__()
        self.token_embedding = LLM.ScaledEmbedding(vocab_size, cfg.d_model)
        self.register_buffer("positional_encoding", LLM.sinusoidal_positional_encoding(cfg.context, cfg.d_model))
        layer = nn.TransformerEncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.dropout, batch_first=True,
                                           norm_first=True)
        self.layers = nn.TransformerEncoder(layer, cfg.n_layers, enable_nested_tensor=False)
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size)

    def forward(self, idx):
        T = idx.shape[1]
        x = self.token_embedding(idx) + self.positional_encoding[:T]  # (B, T, C)
        mask = nn.Transformer.generate_square_subsequent_mask(T, device=idx.device)  # (T, T), -inf above
        x = self.layers(x, mask=mask, is_causal=True)  # (B, T, C)
        return self.lm_head(self.final_norm(x))  # (B, T, V)


class NanoGPT(nn.Module):
    """karpathy/nanoGPT's model (model.py, MIT licence) rewritten here in its own terms, so that
    "x nanoGPT" is a ratio measured in the same run: a fused query/key/value
    projection, GELU, learned positions, no biases (bias=False, as in its Shakespeare config),
    the head tied to the embedding, and the loss computed inside forward()."""

    def __init__(self, vocab_size: int, cfg: LLM.Config):
        super().__init__()
        C, self.n_heads = cfg.d_model, cfg.n_heads
        self.wte, self.wpe = nn.Embedding(vocab_size, C), nn.Embedding(cfg.context, C)
        self.drop = nn.Dropout(cfg.dropout)
        self.blocks = nn.ModuleList(nn.ModuleDict(dict(
            ln_1=nn.LayerNorm(C, bias=False), c_attn=nn.Linear(C, 3 * C, bias=False),
            c_proj=nn.Linear(C, C, bias=False), ln_2=nn.LayerNorm(C, bias=False),
            mlp=nn.Sequential(nn.Linear(C, 4 * C, bias=False), nn.GELU(), nn.Linear(4 * C, C, bias=False),
                              nn.Dropout(cfg.dropout)))) for _ in range(cfg.n_layers))
        self.ln_f = nn.LayerNorm(C, bias=False)
        self.lm_head = nn.Linear(C, vocab_size, bias=False)
        self.wte.weight = self.lm_head.weight  # weight tying
        self.dropout = cfg.dropout

    def forward(self, idx, targets):
        B, T = idx.shape
        x = self.drop(self.wte(idx) + self.wpe(torch.arange(T, device=idx.device)))  # (B, T, C)
        C, H = x.shape[-1], self.n_heads
        for block in self.blocks:
            q, k, v = block.c_attn(block.ln_1(x)).split(C, dim=2)  # (B, T, 3C) -> 3 x (B, T, C)
            q, k, v = (t.view(B, T, H, C // H).transpose(1, 2) for t in (q, k, v))  # (B, H, T, D)
            y = F.scaled_dot_product_attention(q, k, v, dropout_p=self.dropout if self.training else 0,
                                               is_causal=True)  # (B, H, T, D)
            x = x + self.drop(block.c_proj(y.transpose(1, 2).contiguous().view(B, T, C)))  # (B, T, C)
            x = x + block.mlp(block.ln_2(x))  # (B, T, C)
        logits = self.lm_head(self.ln_f(x))  # (B, T, V)
        return F.cross_entropy(logits.view(-1, logits.size(-1)), targets.view(-1), ignore_index=-1)


def nanogpt_step(model: NanoGPT, device, compiled: bool):
    """nanoGPT's train.py step: AdamW (betas 0.9/0.99, decay 0.1 on matrices, fused on CUDA only),
    bf16 autocast on CUDA, gradient clipping at 1, and torch.compile when it compiles."""
    decay = [p for p in model.parameters() if p.dim() >= 2]
    no_decay = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1}, {"params": no_decay, "weight_decay": 0.0}],
                                  lr=1e-3, betas=(0.9, 0.99), fused=device.type == "cuda")
    network = torch.compile(model) if compiled else model

    def step(inputs, targets):
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            loss = network(inputs, targets)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return loss
    return step


def llm_step(model: nn.Module, cfg: LLM.Config, device, compiled: bool):
    """LLM.py's own training step (LLM.train_step), optionally through torch.compile."""
    adam = LLM.FastAdam if LLM.fast_code(cfg, device) else LLM.Adam  # what a run with this --code trains with
    optimizer = LLM.make_optimizer(model, cfg, adam)
    network = torch.compile(model) if compiled else model
    autocast = LLM.DeviceHooks(cfg, device).autocast  # bf16 where the run would use it
    return lambda inputs, targets: LLM.train_step(network, optimizer, inputs, targets, cfg.lr, 1.0, autocast)


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def tokens_per_second(contenders, cfg: LLM.Config, ids: torch.Tensor, device, steps: int) -> dict:
    """Train every contender on the same random windows of ids, in turns: a warm-up (which
    holds any compiling), then rounds of a few steps each, one contender after the other, so
    a machine that slows down for a while slows all of them alike. Returns, per name,
    (median tokens per second over the rounds, seconds of warm-up)."""
    generator = torch.Generator().manual_seed(0)
    B, T = cfg.batch_size, cfg.context

    def batch():
        starts = torch.randint(len(ids) - T - 1, (B,), generator=generator)
        rows = torch.stack([ids[s:s + T + 1] for s in starts.tolist()]).long()  # (B, T + 1)
        inputs, targets = rows[:, :-1].contiguous(), rows[:, 1:].contiguous()  # (B, T) each
        return inputs.to(device, non_blocking=True), targets.to(device, non_blocking=True)

    trainers, warmups = {}, {}
    for name, build, make_step in contenders:
        torch.manual_seed(0)
        model = build().to(device).train()
        trainers[name] = make_step(model)
        start = time.perf_counter()
        for _ in range(3 if steps >= 10 else 1):
            trainers[name](*batch())
        sync(device)
        warmups[name] = time.perf_counter() - start
    rounds = 5 if steps >= 10 else 1
    per_round = max(1, steps // rounds)
    speeds = {name: [] for name in trainers}
    for _ in range(rounds):
        for name, step in trainers.items():
            start = time.perf_counter()
            for _ in range(per_round):
                step(*batch())
            sync(device)
            speeds[name].append(per_round * B * T / (time.perf_counter() - start))
    return {name: (statistics.median(speeds[name]), warmups[name]) for name in trainers}


def train_rows(shape: str, device, steps: int, ids: torch.Tensor, vocab_size: int,
               compile_too: bool) -> list[tuple[str, str]]:
    spec = dict(SHAPES[shape])
    nanogpt = spec.pop("nanogpt")
    if device.type != "cuda":
        spec["precision"] = "fp32"  # bf16 autocast is several times slower on a CPU without bf16 arithmetic
    cfg = LLM.RunConfig(**spec, lr=1e-3, code="fast")
    story = LLM.RunConfig(**spec, lr=1e-3, code="story")
    # nanoGPT compiles on a GPU (its H100 figure) and not on a CPU (its CPU recipe says --compile=False)
    nanogpt_compiles = device.type == "cuda"
    contenders = [("LLM.py, fast code (fused attention, FastAdam)", lambda: LLM.build_model(vocab_size, cfg, device),
                   lambda m: llm_step(m, cfg, device, False)),
                  ("LLM.py, the story's code (Part I's attention() and Adam)",
                   lambda: LLM.build_model(vocab_size, story, device), lambda m: llm_step(m, story, device, False))]
    if compile_too:
        contenders.append(("LLM.py, fast code, --compile", lambda: LLM.build_model(vocab_size, cfg, device),
                           lambda m: llm_step(m, cfg, device, True)))
    contenders += [("nn.TransformerEncoder reference", lambda: ReferenceLM(vocab_size, cfg),
                    lambda m: llm_step(m, cfg, device, False)),
                   ("nanoGPT's model and step, rewritten above" + (", compiled" if nanogpt_compiles else ""),
                    lambda: NanoGPT(vocab_size, cfg), lambda m: nanogpt_step(m, device, nanogpt_compiles))]
    measured = tokens_per_second(contenders, cfg, ids, device, steps)
    speeds = {name: speed for name, (speed, _) in measured.items()}
    reference = speeds["nn.TransformerEncoder reference"]
    nano = speeds[contenders[-1][0]]
    label = (f"train, nanoGPT {shape.upper()} shape ({cfg.n_layers} layers, {cfg.n_heads} heads, d {cfg.d_model}, "
             f"context {cfg.context}, batch {cfg.batch_size}, {cfg.precision})")
    rows = [(label, "")]
    for name, speed in speeds.items():
        compiling = (f"; {measured[name][1]:.0f} s of warm-up, compiling (less when torch's compile cache has it)"
                     if "compile" in name else "")
        rows.append((f"  {name}", f"{speed:,.0f} tokens/s = {speed / reference:.2f}x the reference, "
                                  f"{speed / nano:.2f}x nanoGPT{compiling}"))
    rows.append(("  nanoGPT itself, with its own train.py (quoted, not measured in this run)", nanogpt))
    return rows


PEAK_MEMORY = """
import atexit, sys
def peak_bytes():  # this process's peak resident memory, on Linux, macOS and Windows
    if sys.platform == "win32":
        import ctypes
        from ctypes import wintypes
        class Counters(ctypes.Structure):
            _fields_ = [("cb", wintypes.DWORD), ("PageFaultCount", wintypes.DWORD)] + [
                (name, ctypes.c_size_t) for name in ("PeakWorkingSetSize", "WorkingSetSize", "QuotaPeakPagedPoolUsage",
                                                     "QuotaPagedPoolUsage", "QuotaPeakNonPagedPoolUsage",
                                                     "QuotaNonPagedPoolUsage", "PagefileUsage", "PeakPagefileUsage")]
        counters = Counters(cb=ctypes.sizeof(Counters))
        ctypes.windll.psapi.GetProcessMemoryInfo(ctypes.windll.kernel32.GetCurrentProcess(), ctypes.byref(counters),
                                                 counters.cb)
        return counters.PeakWorkingSetSize
    import resource
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024  # macOS counts bytes, Linux kilobytes
atexit.register(lambda: sys.stderr.write(f"\\nPEAK {peak_bytes()}\\n"))
"""


def measure_in_child(code: str) -> tuple[str, int]:
    """Run code in a fresh Python, return (its stdout, its own peak resident memory in bytes)."""
    result = subprocess.run([sys.executable, "-c", PEAK_MEMORY + code], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return result.stdout.strip(), int(result.stderr.rsplit("PEAK ", 1)[1])


def run_llm_measured(argv: list[str]) -> tuple[float, int, str]:
    """python LLM.py ARGV in a fresh Python: (wall seconds, its peak memory in bytes, its stdout)."""
    code = (f"import runpy; sys.argv = [{str(ROOT / 'LLM.py')!r}] + {argv!r}\n"
            f"runpy.run_path(sys.argv[0], run_name='__main__')")
    start = time.perf_counter()
    out, peak = measure_in_child(code)
    return time.perf_counter() - start, peak, out


def tokenize_row(megabytes: int, folder: Path) -> tuple[str, str]:
    if not Path("/proc/self/clear_refs").exists():
        return f"tokenize {megabytes} MB", "skipped: it reads the kernel's memory counters of Linux"
    text = SHAKESPEARE.read_text(encoding="utf-8")
    big = folder / f"shakespeare_{megabytes}mb.txt"
    with big.open("w", encoding="utf-8") as f:
        for _ in range(math.ceil(megabytes * 1_000_000 / len(text))):
            f.write(text)
    size = big.stat().st_size
    code = f"""
import time, torch, LLM
def status(key):  # kB, from the kernel's own account of this process
    return int(next(line.split()[1] for line in open("/proc/self/status") if line.startswith(key)))
open("/proc/self/clear_refs", "w").write("5")  # reset the peak to the current size: importing torch is not counted
base = status("VmRSS:")
start = time.perf_counter()
data = LLM.prepare_any_text(LLM.read_text({str(big)!r}), LLM.RunConfig(data={str(big)!r}))
seconds = time.perf_counter() - start
print(seconds, (status("VmHWM:") - base) * 1024, data.mode, data.train_split.ids.dtype, data.tokenizer.vocab_size)
"""
    out, _ = measure_in_child(code)
    seconds, extra, mode, dtype, vocab = out.split()
    big.unlink()
    return (f"tokenize {size / 1e6:,.0f} MB (Shakespeare repeated; read, NFC, vocabulary, encode, split)",
            f"{float(seconds):.1f} s, peak {int(extra) / 1e6:,.0f} MB above the interpreter with torch = "
            f"{int(extra) / size:.2f}x the file; {mode} mode, ids {dtype}, {vocab} characters")


# The README's longer run, for a teacher to run before class (LLM.PRESETS["longer"] holds its settings).
LONGER_RUN = ["--preset", "longer"]


def corpus_run_rows(folder: Path, longer: bool) -> list[tuple[str, str]]:
    """The classroom run, with the story's code (the default on a CPU) and with the fast code, in
    turns, and the longer one, each in a fresh process: wall time, peak memory, test loss and the
    share of the words in its samples that are words of the corpus."""
    rows, seconds_of = [], {"story": [], "fast": []}
    runs = [("classroom run: python LLM.py", [], "story"),
            ("classroom run: python LLM.py --code fast", ["--code", "fast"], "fast")] * (3 if longer else 2)
    runs += [("longer run: python LLM.py " + " ".join(LONGER_RUN), LONGER_RUN, "")] if longer else []
    for number, (name, argv, code) in enumerate(runs):
        seconds, peak, out = run_llm_measured(argv + ["--out", str(folder / f"outputs{number}")])
        if code:
            seconds_of[code].append(seconds)
        test_loss = re.search(r"test split, never seen in training: loss ([\d.]+)", out).group(1)
        known, written = re.search(r"(\d+) of the (\d+) words written", out).groups()
        kinds = {kind: out.count(f"[{kind}]") for kind in ("memorised", "rediscovered", "new")}
        rows.append((name, f"{seconds:.1f} s wall, peak {peak / 2 ** 20:,.0f} MB, test loss {test_loss}, "
                           f"{known} of {written} sampled words in the corpus ({int(known) / int(written):.0%}); "
                           f"samples: " + ", ".join(f"{n} {kind}" for kind, n in kinds.items())))
    story, fast = statistics.median(seconds_of["story"]), statistics.median(seconds_of["fast"])
    rows.append(("  the story's code against the fast code, classroom run",
                 f"{story / fast:.2f}x the wall time (medians of {len(seconds_of['story'])} runs each, in turns)"))
    if not longer:
        rows.append(("longer run", "skipped with --quick"))
    return rows


TOKENIZER_RUNS = [("characters", []), ("pieces, 256", ["--tokenizer", "bpe", "--vocab-size", "256"]),
                  ("pieces, 512", ["--tokenizer", "bpe", "--vocab-size", "512"]),
                  ("pieces, 1024", ["--tokenizer", "bpe", "--vocab-size", "1024"])]


def sixty_samples(checkpoint: Path) -> tuple[int, int, list[str]]:
    """(corpus words, words, samples): 10 samples from each of the 6 default beginnings, with the
    run's sampling settings and seed, and the share of their words that are words of the corpus."""
    model, tokenizer, cfg, _ = LLM.load_checkpoint(checkpoint, "cpu")
    generator, samples = torch.Generator().manual_seed(cfg.seed), []
    for prompt in cfg.prompts:
        for _ in range(10):
            samples.append(LLM.Sample(prompt, LLM.generate(model, tokenizer, prompt, LLM.Sampling.of(cfg), generator),
                                      "", []))
    known, written = LLM.corpus_word_share(samples, LLM.text_lines(LLM.read_text(ROOT / "refranes.txt")))
    return known, written, [s.text for s in samples]


def merges_seconds(n: int = 500) -> float:
    """Seconds to learn n merges on the training lines of refranes.txt (median of 3)."""
    text = LLM.read_text(ROOT / "refranes.txt")
    train_lines = LLM.split_lines(LLM.text_lines(text), 0.1, 1337, 0.1)[0]
    cfg = LLM.RunConfig(tokenizer="bpe", vocab_size=LLM.CharTokenizer(text).vocab_size + n)
    times = []
    for _ in range(3):
        start = time.perf_counter()
        learned = LLM.BPETokenizer.learn(text, train_lines, cfg)
        times.append(time.perf_counter() - start)
    assert len(learned.merges) == n
    return statistics.median(times)


def tokenizer_rows(folder: Path, longer: bool) -> list[tuple[str, str]]:
    """The classroom (and longer) run with characters and with word pieces, side by side."""
    rows = [(f"tokenizers: learn 500 merges on the training proverbs", f"{merges_seconds():.2f} s (median of 3)")]
    presets = [("classroom", [])] + ([("longer", LONGER_RUN)] if longer else [])
    for preset, preset_argv in presets:
        for name, argv in TOKENIZER_RUNS:
            out_dir = folder / f"tokens-{preset}-{name.replace(', ', '')}"
            seconds, peak, out = run_llm_measured(preset_argv + argv + ["--out", str(out_dir), "--pictures"])
            test = re.search(r"test split, never seen in training: (.+)", out).group(1)
            bits = re.search(r"([\d.]+) bits/char", test).group(1)
            per = re.search(r"\(([\d.]+) characters per", test)
            known, written, samples = sixty_samples(out_dir / "model.pt")
            rows.append((f"tokenizers: {preset}, {name}",
                         f"{seconds:.1f} s wall, test {bits} bits/char" + (f" ({per.group(1)} characters per piece)" if per else "")
                         + f", {known} of {written} words in the corpus ({known / written:.0%}) in 60 samples; "
                         f"'{samples[10]}' / '{samples[20]}'"))
    return rows


def normal_rows(folder: Path, seeds: int = 5) -> list[tuple[str, str]]:
    """Is it normal? The classroom run over `seeds` seeds, each in a fresh process, read from its
    result line: the test loss and its distance below the bigram, mean ± standard deviation; the
    first seed's --eval completion; and what naming a sample's nearest proverb costs."""
    results = []
    for seed in range(1337, 1337 + seeds):
        _, _, out = run_llm_measured(["--seed", str(seed), "--pictures", "--out", str(folder / f"seed{seed}")])
        results.append(LLM.read_result(out.strip().splitlines()[-1]))
    spread = lambda values: f"{statistics.mean(values):.3f} ± {statistics.stdev(values):.3f} "  # noqa: E731
    tests, gaps = [r["test_loss"] for r in results], [r["bigram"] - r["test_loss"] for r in results]
    rows = [(f"classroom run, {seeds} seeds: test loss", spread(tests) + f"(lowest {min(tests):.3f}, highest {max(tests):.3f})"),
            (f"classroom run, {seeds} seeds: below the bigram", spread(gaps) + "nats/char on the test split")]
    _, _, out = run_llm_measured(["--eval", "--checkpoint", str(folder / "seed1337" / "model.pt")])
    for line in [line for line in out.splitlines() if "% of the characters right" in line]:
        name, figures = re.match(r"\s*(.*?)\s{2,}(\S.*)", line).groups()  # "the 489 test proverbs   21.4% ..."
        rows.append((f"--eval, completion: {name}", figures))
    lines = LLM.text_lines(LLM.read_text(ROOT / "refranes.txt"))
    seconds = []
    for _ in range(5):
        started = time.perf_counter()
        LLM.edit_distances("Más vale come con en cuas la casa de mal dinte.", lines)
        seconds.append(time.perf_counter() - started)
    rows.append(("nearest proverb of a 47-character sample", f"{statistics.median(seconds):.2f} s over all "
                                                              f"{len(lines):,} proverbs (median of 5)"))
    return rows


def explorer_write_seconds(folder: Path) -> float:
    """The seconds write_explorer takes for this run's page: the same model, snapshots and history,
    read back from the page and the checkpoint (median of 3)."""
    import base64
    import json
    model, tokenizer, cfg, payload = LLM.load_checkpoint(folder / "model.pt", "cpu")
    html = (folder / "explorer.html").read_text(encoding="utf-8")
    data = json.loads(re.search(r'id="explorer-data">(.*?)</script>', html, re.S).group(1))
    flat_names = [(name, shape) for name, shape in data["tensors"]]
    snapshots = []
    for epoch in data["epochs"]:
        if epoch["best"]:
            continue
        flat = torch.frombuffer(bytearray(base64.b64decode(epoch["weights"])), dtype=torch.float16)
        weights, offset = {}, 0
        for name, shape in flat_names:
            size = math.prod(shape)
            weights[name] = flat[offset:offset + size].reshape(shape)
            offset += size
        snapshots.append(LLM.Snapshot(epoch["epoch"], epoch["val_loss"], weights))
    best = {"epoch": payload["epoch"], "val_loss": payload["val_loss"]}
    times = []
    for n in range(3):
        start = time.perf_counter()
        LLM.write_explorer(folder / f"explorer-{n}.html", model, tokenizer, cfg, best, data["history"],
                           data["test_loss"], snapshots, data["source"], data.get("source_kind", "data"),
                           data["tokenizer"].get("counts"))
        times.append(time.perf_counter() - start)
    return statistics.median(times)


BROWSER_TIMING = """(proverb) => {
  const box = document.getElementById("text"), median = (a) => a.slice().sort((x, y) => x - y)[Math.floor(a.length / 2)];
  const key = (value) => {  // one keystroke: the new text, its input event, every panel drawn again
    box.value = value;
    const start = performance.now(), before = explorer.work.positions;
    box.dispatchEvent(new InputEvent("input"));
    return [performance.now() - start, explorer.work.positions - before];
  };
  const chars = [...proverb];
  key("");
  const typing = chars.map((_, n) => key(chars.slice(0, n + 1).join("")));  // typed as a student types it
  let long = proverb;  // past the context: every key slides the window, a whole pass
  while (explorer.encode(long).length < CONTEXT + 20) long += " " + proverb;
  const sliding = chars.slice(0, 15).map((_, n) => key(long + chars.slice(0, n + 1).join("")));
  const forward = [];
  for (let n = 0; n < 7; n++) {  // one forward pass at the full context, nothing cached
    explorer.forget();
    const start = performance.now();
    explorer.logits(long);
    forward.push(performance.now() - start);
  }
  return {typing: median(typing.map(k => k[0])), worst: Math.max(...typing.slice(1).map(k => k[0])),
          typingPositions: median(typing.slice(1).map(k => k[1])), sliding: median(sliding.map(k => k[0])),
          slidingPositions: median(sliding.map(k => k[1])), forward: median(forward), ready: explorer.timings.ready};
}"""

PROVERB = "Quien mucho abarca poco aprieta"  # typed into each page, one character at a time


def explorer_rows(folders: list[tuple[str, Path]], screenshot: Path | None, written: bool = True) -> list[tuple[str, str]]:
    rows = []
    for name, folder in folders:
        size = (folder / "explorer.html").stat().st_size
        made = f", written in {explorer_write_seconds(folder):.2f} s" if written else ""
        rows.append((f"explorer.html, {name}", f"{size / 1e6:.2f} MB (limit {3 if name == 'classroom' else 6} MB){made}"))
    try:
        sys.path.insert(0, str(ROOT / "tests"))
        from playwright.sync_api import sync_playwright
        from test_explorer import CHROMIUM_ARGS, chromium_executable
        executable = chromium_executable()
    except ImportError:
        executable = None
    if executable is None:
        return rows + [("explorer in Chromium", "skipped: no playwright or no Chromium (tests/test_explorer.py)")]
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        for name, folder in folders:
            rows += keystroke_rows(browser, name, folder, screenshot if name == "classroom" else None)
        browser.close()
    return rows


def keystroke_rows(browser, name: str, folder: Path, screenshot: Path | None) -> list[tuple[str, str]]:
    """What one keystroke costs in the page, as a multiple of one forward pass at the full context."""
    page = browser.new_page(viewport={"width": 1280, "height": 720})
    start = time.perf_counter()
    page.goto((folder / "explorer.html").as_uri())
    page.wait_for_selector("body[data-ready=yes]")
    opened = time.perf_counter() - start
    if screenshot is not None:
        page.screenshot(path=str(screenshot))
    timing = page.evaluate(BROWSER_TIMING, PROVERB)
    page.close()
    forward = timing["forward"]
    return [(f"  in Chromium, {name}", f"first panels drawn {opened * 1000:,.0f} ms after opening; one forward pass "
                                       f"at the full context {forward:.1f} ms"),
            ("    a keystroke, typing a proverb",
             f"median {timing['typing']:.1f} ms ({timing['typing'] / forward:.2f} forward passes), worst "
             f"{timing['worst']:.1f} ms; {timing['typingPositions']} position computed"),
            ("    a keystroke past the context",
             f"median {timing['sliding']:.1f} ms ({timing['sliding'] / forward:.2f} forward passes); "
             f"{timing['slidingPositions']} positions computed: the window slides")]


def generate_rows(device) -> list[tuple[str, str]]:
    cfg = LLM.RunConfig()
    tokenizer = LLM.CharTokenizer(LLM.read_text(ROOT / "refranes.txt"))
    torch.manual_seed(0)
    model = LLM.TransformerLM(tokenizer.vocab_size, cfg).to(device).eval()
    LLM.generate(model, tokenizer, "No hay", LLM.Sampling(max_chars=20), stop_at_eol=False)  # warm-up
    n = 300
    start = time.perf_counter()
    sampling = replace(LLM.Sampling.of(cfg), max_chars=n)  # the run's own sampling settings
    LLM.generate(model, tokenizer, "No hay", sampling, stop_at_eol=False)
    seconds = time.perf_counter() - start
    step = {}
    with torch.no_grad():
        for T in (1, cfg.context):
            idx = torch.zeros(1, T, dtype=torch.long, device=device)
            times = []
            for _ in range(30):
                sync(device)
                t = time.perf_counter()
                model(idx)
                sync(device)
                times.append(time.perf_counter() - t)
            step[T] = statistics.median(times)
    return [(f"generate {n} characters, untrained default model (temperature {sampling.temperature}, top-k {sampling.top_k})",
             f"{n / seconds:,.0f} characters/s ({seconds / n * 1000:.2f} ms each)"),
            ("  one forward pass with 1 / with 80 characters of history",
             f"{step[1] * 1000:.2f} ms / {step[cfg.context] * 1000:.2f} ms: a key/value cache could save at most "
             f"{(step[cfg.context] - step[1]) / step[cfg.context]:.0%} of a step")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, a 10 MB text: under a minute on 2 cores")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--all-shapes", action="store_true", help="also the GPU shape on a CPU (slow)")
    parser.add_argument("--screenshot", type=Path, metavar="FILE",
                        help="save the classroom run's explorer.html at 1280x720 as FILE (a PNG)")
    parser.add_argument("--tokenizers", action="store_true",
                        help="only the comparison of characters and word pieces (with --quick: the classroom run only)")
    parser.add_argument("--normal", action="store_true",
                        help="only what tells a class its numbers are normal: 5 seeds, --eval, the nearest proverb")
    parser.add_argument("--explorer", action="store_true",
                        help="only the committed explorer pages (outputs/, longer, pieces): a keystroke's cost in Chromium")
    parser.add_argument("--compile", action="store_true",
                        help="also LLM.py under torch.compile (always on a GPU; on a CPU it compiles for about 40 s)")
    args = parser.parse_args()
    try:
        device = LLM.pick_device(args.device)
    except LLM.UserError as error:
        parser.exit(2, f"error: {error}\n")
    if args.normal:
        with tempfile.TemporaryDirectory() as folder:
            print_rows([("machine", f"{device}, torch {torch.__version__}, {os.cpu_count()} CPUs"),
                        ("date", time.strftime("%Y-%m-%d"))] + normal_rows(Path(folder)))
        return
    if args.explorer:
        committed = [("classroom", ROOT / "outputs"), ("longer", ROOT / "outputs" / "longer"), ("pieces", ROOT / "outputs" / "pieces")]
        print_rows([("machine", f"{os.cpu_count()} CPUs"), ("date", time.strftime("%Y-%m-%d"))]
                   + explorer_rows(committed, args.screenshot, written=False))
        return
    torch.manual_seed(0)
    text = LLM.read_text(SHAKESPEARE)
    tokenizer = LLM.CharTokenizer(text)
    ids = LLM.encode_long_text(tokenizer, text)
    rows = [("machine", f"{device}, torch {torch.__version__}, {os.cpu_count()} CPUs"
                        + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else "")),
            ("date", time.strftime("%Y-%m-%d"))]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        if args.tokenizers:
            rows += tokenizer_rows(folder, longer=not args.quick)
            print_rows(rows)
            return
        rows += corpus_run_rows(folder, longer=not args.quick)
        rows += explorer_rows([("classroom", folder / "outputs0")] + ([] if args.quick else [("longer", folder / "outputs6")]),
                              args.screenshot)
        shapes = ["cpu", "gpu"] if (device.type == "cuda" or args.all_shapes) else ["cpu"]
        for shape in shapes:
            steps = (10 if args.quick else 50) if shape == "cpu" or device.type == "cuda" else 3
            rows += train_rows(shape, device, steps * (10 if device.type == "cuda" else 1), ids, tokenizer.vocab_size,
                               args.compile or device.type == "cuda")
        if "gpu" not in shapes:
            rows.append(("train, nanoGPT GPU shape", "skipped on a CPU (--all-shapes to run it anyway)"))
        rows.append(tokenize_row(10 if args.quick else 100, folder))
        rows += generate_rows(device)
    print_rows(rows)


def print_rows(rows: list[tuple[str, str]]):
    width = max(len(label) for label, _ in rows)
    print(f"{'measure':<{width}}  result")
    print("-" * (width + 60))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
