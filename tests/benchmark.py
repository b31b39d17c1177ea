"""Speed and memory of LLM.py, measured side by side (not collected by pytest).

    python tests/benchmark.py            the full table (a few minutes on a 2-core CPU)
    python tests/benchmark.py --quick    the same rows, shorter and smaller (under a minute)
    python tests/benchmark.py --device cuda

Every speed is printed next to a reference measured in the same run, on the same machine,
with the same batch, context and optimizer, so the ratio means something on a noisy
machine. The reference model is built from PyTorch's own blocks (nn.TransformerEncoder with
norm_first=True: the same pre-norm layers as LLM.py) with LLM.py's embedding, positional
encoding and head around them.

Rows:
  default run           wall time and peak memory of `python LLM.py`, in a fresh process
  train <shape>         tokens/s of LLM.py (fast attention and the hand-written one) and of
                        the nn.TransformerEncoder reference, at nanoGPT's CPU and GPU shapes
                        (the GPU shape only on a GPU, or with --all-shapes: then in fp32)
  tokenize              reading and encoding a 100 MB text (tiny Shakespeare repeated):
                        seconds, and peak memory as a multiple of the file size
  generate              characters per second for one sample, and the time of one step with
                        1 and with `context` characters of history (what a key/value cache
                        could save)
"""
from __future__ import annotations

import argparse
import math
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

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


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def tokens_per_second(model, cfg: LLM.Config, ids: torch.Tensor, device, steps: int) -> float:
    """Train `steps` steps of LLM.train_step on random windows of ids; tokens per second."""
    model.to(device).train()
    optimizer = LLM.make_optimizer(model, cfg, device)
    generator = torch.Generator().manual_seed(0)
    B, T = cfg.batch_size, cfg.context

    def batch():
        starts = torch.randint(len(ids) - T - 1, (B,), generator=generator)
        rows = torch.stack([ids[s:s + T + 1] for s in starts.tolist()]).long()  # (B, T + 1)
        return rows[:, :-1].to(device, non_blocking=True), rows[:, 1:].to(device, non_blocking=True)

    warmup = 3 if steps >= 10 else 1
    for i in range(warmup + steps):
        if i == warmup:
            sync(device)
            start = time.perf_counter()
        LLM.train_step(model, optimizer, *batch(), cfg.lr, 1.0, cfg, device)
    sync(device)
    return steps * B * T / (time.perf_counter() - start)


def train_rows(shape: str, device, steps: int, ids: torch.Tensor, vocab_size: int) -> list[tuple[str, str]]:
    spec = dict(SHAPES[shape])
    nanogpt = spec.pop("nanogpt")
    if device.type != "cuda":
        spec["precision"] = "fp32"  # bf16 autocast is ten times slower on a CPU without bf16 arithmetic
    cfg = LLM.Config(**spec, lr=1e-3)
    rows = []
    speeds = {}
    for name, build in (("LLM.py, fast attention", lambda: LLM.TransformerLM(vocab_size, cfg)),
                        ("LLM.py, hand-written attention",
                         lambda: LLM.TransformerLM(vocab_size, LLM.Config(**{**spec, "attention": "exact"}))),
                        ("nn.TransformerEncoder reference", lambda: ReferenceLM(vocab_size, cfg))):
        torch.manual_seed(0)
        speeds[name] = tokens_per_second(build(), cfg, ids, device, steps)
    reference = speeds["nn.TransformerEncoder reference"]
    label = (f"train, nanoGPT {shape.upper()} shape ({cfg.n_layers} layers, {cfg.n_heads} heads, d {cfg.d_model}, "
             f"context {cfg.context}, batch {cfg.batch_size}, {cfg.precision})")
    rows.append((label, ""))
    for name, speed in speeds.items():
        rows.append((f"  {name}", f"{speed:,.0f} tokens/s ({speed / reference:.2f}x the reference)"))
    rows.append(("  nanoGPT on these machines (from issue 5, not measured here)", nanogpt))
    return rows


def measure_in_child(code: str) -> tuple[str, int]:
    """Run code in a fresh Python, return (its stdout, its peak resident memory in bytes)."""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT)
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    return result.stdout.strip(), resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * 1024


def tokenize_row(megabytes: int, folder: Path) -> tuple[str, str]:
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
data = LLM.prepare_data(LLM.read_text({str(big)!r}), LLM.Config(data={str(big)!r}))
seconds = time.perf_counter() - start
print(seconds, (status("VmHWM:") - base) * 1024, data.mode, data.train.ids.dtype, data.tokenizer.vocab_size)
"""
    out, _ = measure_in_child(code)
    seconds, extra, mode, dtype, vocab = out.split()
    big.unlink()
    return (f"tokenize {size / 1e6:,.0f} MB (Shakespeare repeated; read, NFC, vocabulary, encode, split)",
            f"{float(seconds):.1f} s, peak {int(extra) / 1e6:,.0f} MB above the interpreter with torch = "
            f"{int(extra) / size:.2f}x the file; {mode} mode, ids {dtype}, {vocab} characters")


def default_run_row(folder: Path) -> tuple[str, str]:
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    start = time.perf_counter()
    result = subprocess.run([sys.executable, str(ROOT / "LLM.py"), "--out", str(folder / "outputs")],
                            capture_output=True, text=True, cwd=ROOT)
    seconds = time.perf_counter() - start
    if result.returncode != 0:
        raise RuntimeError(result.stderr)
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    note = "" if peak > before else " (or less: an earlier child used more)"
    return "default run: python LLM.py, every output", f"{seconds:.1f} s wall, peak {peak / 1024:,.0f} MB{note}"


def generate_rows(device) -> list[tuple[str, str]]:
    cfg = LLM.Config()
    tokenizer = LLM.CharTokenizer(LLM.read_text(ROOT / "refranes.txt"))
    torch.manual_seed(0)
    model = LLM.TransformerLM(tokenizer.vocab_size, cfg).to(device).eval()
    LLM.generate(model, tokenizer, "No hay", max_chars=20, stop_at_eol=False)  # warm-up
    n = 300
    start = time.perf_counter()
    LLM.generate(model, tokenizer, "No hay", max_chars=n, temperature=0.6, top_k=5, stop_at_eol=False)
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
    return [(f"generate {n} characters, default model (temperature 0.6, top-k 5)",
             f"{n / seconds:,.0f} characters/s ({seconds / n * 1000:.2f} ms each)"),
            ("  one forward pass with 1 / with 80 characters of history",
             f"{step[1] * 1000:.2f} ms / {step[cfg.context] * 1000:.2f} ms: a key/value cache could save at most "
             f"{(step[cfg.context] - step[1]) / step[cfg.context]:.0%} of a step")]


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps, a 10 MB text: under a minute on 2 cores")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, ...")
    parser.add_argument("--all-shapes", action="store_true", help="also the GPU shape on a CPU (slow)")
    args = parser.parse_args()
    device = LLM.pick_device(args.device)
    torch.manual_seed(0)
    text = LLM.read_text(SHAKESPEARE)
    tokenizer = LLM.CharTokenizer(text)
    ids = tokenizer.encode_tensor(text)
    rows = [("machine", f"{device}, torch {torch.__version__}, {os.cpu_count()} CPUs"
                        + (f", {torch.cuda.get_device_name()}" if device.type == "cuda" else "")),
            ("date", time.strftime("%Y-%m-%d"))]
    with tempfile.TemporaryDirectory() as folder:
        folder = Path(folder)
        rows.append(default_run_row(folder))
        shapes = ["cpu", "gpu"] if (device.type == "cuda" or args.all_shapes) else ["cpu"]
        for shape in shapes:
            steps = (10 if args.quick else 50) if shape == "cpu" or device.type == "cuda" else 3
            rows += train_rows(shape, device, steps * (10 if device.type == "cuda" else 1), ids, tokenizer.vocab_size)
        if "gpu" not in shapes:
            rows.append(("train, nanoGPT GPU shape", "skipped on a CPU (--all-shapes to run it anyway)"))
        rows.append(tokenize_row(10 if args.quick else 100, folder))
        rows += generate_rows(device)
    width = max(len(label) for label, _ in rows)
    print(f"{'measure':<{width}}  result")
    print("-" * (width + 60))
    for label, value in rows:
        print(f"{label:<{width}}  {value}")


if __name__ == "__main__":
    main()
