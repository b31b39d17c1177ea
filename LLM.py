#!/usr/bin/env python3
"""LLM.py: a small Transformer language model that learns Spanish proverbs, in one file.

    python LLM.py            train on refranes.txt and write everything to outputs/
    python LLM.py --chat     talk to the trained model (--generate, --eval, --resume and
                             --init-from use it too: see the command line, section 14)
    python LLM.py --help     every setting, with what it does

Read it top to bottom, like a book. Each section opens with what it does and the formula
it implements, then the code:

    1. Config            every number of the run, in one dataclass
    2. Data              read the text, characters -> numbers, line or stream mode,
                         train/validation/test split, batches
    3. Embeddings        a learned vector per character
    4. Positions         the sinusoidal positional encoding
    5. Attention         the causal mask and multi-head self-attention, written out
    6. Encoder layer     feed-forward, residual connections, layer norm
    7. The model         embeddings -> N layers -> norm -> linear head -> logits
    8. Training          cross-entropy on the next character (teacher forcing), Adam written
                         out; the craft: schedule, clipping, bf16, AdamW, torch.compile,
                         early stopping, NaN stop
    9. Checkpoints       keep the trained model in one file, load it back safely, fine-tune
   10. Generation        sampling one character at a time (temperature, top-k, top-p)
   11. Outputs           parameters.txt and table.txt: every parameter, every choice
   12. Pictures          loss, attention maps, positional encoding, embeddings, the network
                         epoch by epoch, and outputs/README.md, the gallery that explains them
   13. Chat              talk to the model, teach it what you type
   14. Command line      main(): argparse, error messages, the whole run

Shape letters used in the comments, defined once here:
    B  batch size: sequences processed together
    T  sequence length: characters in one sequence, at most Config.context
    C  model width, d_model: numbers in the vector of one character at one position
    H  attention heads per layer;  D = C / H, the width of one head
    F  width of the feed-forward hidden layer, d_ff
    V  vocabulary size: distinct characters the model knows

The `# %%` markers split the file into cells, so it also opens as a notebook
(VS Code, Jupyter with jupytext, Spyder). Importing this file runs nothing: the run starts
in main(), at the very bottom.
"""

from __future__ import annotations

import argparse
import math
import os
import random
import re
import shutil
import sys
import time
import unicodedata
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


class UserError(Exception):
    """A problem with what the user gave us (a file, a flag, a prompt).

    main() prints it as one line, `error: ...`, and exits with code 2: no traceback."""


# %% ==========================================================================
# 1. CONFIG
# =============================================================================
# Every number that shapes the run lives in one dataclass, passed explicitly to whoever
# needs it: no hidden globals. Each field carries its own one-line explanation; the same
# text is what `python LLM.py --help` prints, and every field has a command-line flag.
#
# The defaults are the classroom run: small enough to train in seconds on a laptop CPU,
# big enough to learn to spell Spanish. The model has about 75 thousand parameters
# (section 11 explains every one of them in outputs/parameters.txt).


PICTURES = ("loss", "attention", "positions", "embeddings", "evolution")  # the pictures --pictures can name


def setting(default, help: str, flag: str | None = None):
    """A Config field with its explanation (shown by --help) and, optionally, its flag name."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass
class Config:
    # --- data and outputs ---
    data: str = setting("refranes.txt", "text file to learn from, UTF-8: one sample per line, or any running text")
    mode: str = setting("auto", "line: every line is one sample (proverbs); stream: one long text cut into "
                                "windows (a book); auto: line if the lines are short and no blank line separates them")
    out: str = setting("outputs", "folder where every output file is written")
    val_fraction: float = setting(0.1, "share of the text held out to measure the validation loss every epoch")
    test_fraction: float = setting(0.1, "share held out, never used to choose anything, for the final test report (0 = none)")
    seed: int = setting(1337, "random seed: the same seed on the same machine gives the same outputs")
    device: str = setting("auto", "where to compute: auto (GPU if there is one), cpu, cuda, cuda:N or mps")
    # --- model shape ---
    d_model: int = setting(64, "C: width of the vector that represents one character at one position")
    n_heads: int = setting(4, "H: attention heads per layer (d_model must be divisible by it)", flag="--heads")
    n_layers: int = setting(2, "N: number of stacked encoder layers", flag="--layers")
    d_ff: int = setting(128, "F: hidden width of the feed-forward block (4 x d_model in the paper; 2 x here, for speed)")
    dropout: float = setting(0.0, "probability of zeroing an activation while training (0 = off)")
    context: int = setting(80, "the most characters the model looks at at once (longer lines are cut)")
    attention: str = setting("fast", "fast: torch's scaled_dot_product_attention; exact: the hand-written formula")
    # --- training ---
    batch_size: int = setting(64, "B: sequences (lines or windows) per optimizer step")
    optimizer: str = setting("adam", "adam: the paper's optimizer; adamw: Adam with decoupled weight decay")
    lr: float = setting(1e-2, "peak learning rate of the optimizer")
    weight_decay: float = setting(0.1, "adamw only: how strongly matrices are pulled towards 0 at every step")
    warmup: int = setting(10, "optimizer steps over which the learning rate rises from 0 to --lr")
    clip: float = setting(1.0, "largest gradient norm: longer gradients are scaled down to it (0 = no clipping)")
    precision: str = setting("auto", "bf16: compute in bfloat16 where safe (autocast); fp32: never; "
                                     "auto: bf16 on a GPU that supports it, fp32 elsewhere")
    compile: bool = setting(False, "train through torch.compile: it first spends tens of seconds compiling, then may "
                                   "run faster (measured slower on a 2-core CPU; see the README)")
    epochs: int = setting(20, "passes over the training data (at most: early stopping may end sooner)")
    patience: int = setting(5, "stop after this many epochs without a better validation loss (0 = never stop early)")
    snapshot: int = setting(2, "draw outputs/epoch_<N>.png every this many epochs (0 = never)")
    pictures: tuple = setting(PICTURES, "pictures to draw after training, among: " + " ".join(PICTURES)
                              + " (the flag alone, with no name, draws none)")
    # --- sampling at the end of training ---
    prompts: tuple = setting(("", "No hay", "Más vale", "Quien"), "beginnings to complete at the end ('' = from nothing)")
    temperature: float = setting(0.6, "divides the logits before softmax: < 1 sharper, > 1 flatter")
    top_k: int = setting(5, "sample only among the k most likely characters (0 = all)")
    top_p: float = setting(1.0, "sample only among the most likely characters that add up to p (1 = all)")
    greedy: bool = setting(False, "always take the most likely character instead of sampling")
    max_chars: int = setting(120, "stop a sample after this many new characters if no end of line came")


def validate(cfg: Config) -> Config:
    """Refuse impossible settings with one clear sentence each (raised as UserError)."""
    positive = ["d_model", "n_heads", "n_layers", "d_ff", "context", "batch_size", "epochs", "max_chars"]
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise UserError(f"{flag_of(name)} must be a positive whole number, got {getattr(cfg, name)}")
    if cfg.d_model % cfg.n_heads != 0:
        raise UserError(f"--d-model ({cfg.d_model}) must be divisible by --heads ({cfg.n_heads}): "
                        f"each head gets d_model / heads numbers")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1, got {cfg.val_fraction}")
    if not (0.0 <= cfg.test_fraction < 1.0 and cfg.val_fraction + cfg.test_fraction < 1.0):
        raise UserError(f"--test-fraction must be 0 or more, and --val-fraction + --test-fraction below 1 "
                        f"(something must be left to train on), got {cfg.val_fraction} + {cfg.test_fraction}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"--lr must be a positive number, got {cfg.lr}")
    for name in ("snapshot", "top_k", "warmup", "patience"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{flag_of(name)} must be 0 or more, got {getattr(cfg, name)}")
    for name in ("clip", "weight_decay"):
        if not (getattr(cfg, name) >= 0 and math.isfinite(getattr(cfg, name))):
            raise UserError(f"{flag_of(name)} must be 0 or a positive number, got {getattr(cfg, name)}")
    unknown = [name for name in cfg.pictures if name not in PICTURES]
    if unknown:
        raise UserError(f"--pictures knows {' '.join(PICTURES)}; not: {' '.join(unknown)}")
    choices = {"mode": ("auto", "line", "stream"), "attention": ("fast", "exact"),
               "optimizer": ("adam", "adamw"), "precision": ("auto", "bf16", "fp32")}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            raise UserError(f"{flag_of(name)} must be " + ", ".join(f"'{a}'" for a in allowed[:-1])
                            + f" or '{allowed[-1]}', got '{getattr(cfg, name)}'")
    if not (cfg.temperature > 0 and math.isfinite(cfg.temperature)):
        raise UserError(f"--temperature must be a positive number, got {cfg.temperature}")
    if not 0.0 < cfg.top_p <= 1.0:
        raise UserError(f"--top-p must be in (0, 1], got {cfg.top_p}")
    device = pick_device(cfg.device)  # raises on an unknown or absent device
    if cfg.compile and device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "clang++", "c++")):
        raise UserError("--compile needs a C++ compiler (g++ or clang++) on a CPU, and none was found: "
                        "leave out --compile, or install one")
    return cfg


def pick_device(name: str) -> torch.device:
    """'auto' takes a CUDA GPU if there is one, then Apple's GPU (mps), else the CPU."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device '{name}': use auto, cpu, cuda, cuda:N or mps") from None
    if device.type == "cuda" and (not torch.cuda.is_available()
                                  or (device.index or 0) >= torch.cuda.device_count()):
        raise UserError(f"device '{name}' is not available on this machine (try --device cpu)")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise UserError(f"device '{name}' is not available on this machine (try --device cpu)")
    if device.type not in ("cpu", "cuda", "mps"):
        raise UserError(f"unsupported device '{name}': use auto, cpu, cuda, cuda:N or mps")
    return device


def flag_of(field_name: str) -> str:
    """The command-line flag of a Config field: its own flag, or --field-name."""
    for f in fields(Config):
        if f.name == field_name:
            return f.metadata["flag"] or "--" + f.name.replace("_", "-")
    raise KeyError(field_name)


# %% ==========================================================================
# 2. DATA: text -> characters -> numbers -> batches
# =============================================================================
# The model reads numbers, not letters. A character tokenizer gives every distinct
# character of the corpus an id: 'a' -> 21, 'b' -> 22, ... Its vocabulary is the sorted
# set of characters plus the end-of-line character '\n' (shown as ⏎), which plays two
# roles: written at the end of a proverb it means "this proverb is over", and put before
# the first character it means "a new proverb starts here".
#
# Two ways to cut a text into training samples (Config.mode):
#   line mode    every line is one sample, as with proverbs: ⏎ + line + ⏎.
#   stream mode  the whole text is one long sequence (a book), and the samples are
#                windows of `context` characters cut from it, a new random offset every
#                epoch. ⏎ is then simply the character that ends a line of the book.
# `auto` picks line mode when the lines are short (95% fit in the context) and no blank
# line separates them, as in a list of proverbs; stream mode otherwise.
#
# Teacher forcing. For one proverb the token sequence is  ⏎ N o   h a y ... . ⏎
#     input  = tokens[:-1]  =  ⏎ N o   h a y ... .
#     target = tokens[1:]   =  N o   h a y ... . ⏎
# At every position t the model sees input[0..t] and must predict target[t], the next
# character. All positions are trained at once, in parallel: the causal mask (section 5)
# stops position t from peeking at later inputs. A stream window works the same way:
# input = text[i : i + context], target = text[i + 1 : i + context + 1].
#
# Padding and truncation (line mode). Proverbs have different lengths, but a batch is one
# rectangular tensor (B, T). Shorter lines are padded at the end: inputs with ⏎ (any id
# would do), targets with -100, the value cross-entropy is told to ignore. Padding sits
# after the real characters, so thanks to the causal mask it never changes the
# prediction at a real position; and since its targets are ignored it adds nothing to
# the loss (tests/test_llm.py checks both). Lines longer than the context are truncated:
# cut at the context length, and the run says how many were (none in refranes.txt).
# Stream windows all have the same length, so they need no padding.
#
# Train / validation / test. The validation split is measured after every epoch to pick
# the best epoch and to stop early; the test split is used once, at the very end, so its
# score is an honest estimate on text the whole procedure never looked at. Line mode holds
# out whole lines chosen with the seed; stream mode holds out contiguous blocks (the end
# of the text), because a random window would overlap its neighbours in the training text.

EOL = "\n"  # end-of-line character: ends a proverb, and starts the next one
IGNORE = -100  # target value that cross-entropy skips (padding)


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file in Unicode NFC form, line ends as '\\n'; a UserError for a
    missing, unreadable, binary, non-UTF-8 or empty file.

    NFC makes 'ñ' one character even if the file spells it as 'n' + a combining tilde."""
    path = Path(path)
    if not path.exists():
        raise UserError(f"data file not found: {path}")
    if not path.is_file():
        raise UserError(f"data path is not a file: {path}")
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read data file {path}: {e.strerror}") from None
    if b"\x00" in raw:
        raise UserError(f"data file {path} looks binary (it contains zero bytes): give a UTF-8 text file")
    skip = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # a byte-order mark some editors write: dropped
    try:
        text = str(memoryview(raw)[skip:], "utf-8")  # a view, not a copy: a 100 MB file is not doubled here
    except UnicodeDecodeError as e:
        raise UserError(f"data file {path} is not UTF-8 text (byte 0x{raw[skip + e.start]:02x} at offset "
                        f"{skip + e.start}): save it as UTF-8") from None
    del raw
    text = unicodedata.normalize("NFC", text.replace("\r\n", EOL).replace("\r", EOL))
    if not text.strip():
        raise UserError(f"data file {path} is empty: it has no line with text")
    return text


def text_lines(text: str) -> list[str]:
    """The non-blank lines of a text, stripped: the samples of line mode."""
    return [line.strip() for line in text.split(EOL) if line.strip()]


def choose_mode(text: str, context: int) -> tuple[str, str]:
    """('line' or 'stream', the reason in words) for Config.mode == 'auto'."""
    rows = text[:1_000_000].strip().split(EOL)  # the first million characters tell the kind of text
    blank = sum(not row.strip() for row in rows)
    fitting = sum(len(row.strip()) + 1 < context for row in rows if row.strip())
    filled = len(rows) - blank
    if blank == 0 and fitting >= 0.95 * filled and filled >= 3:
        return "line", f"{filled} lines, none blank, {fitting / filled:.0%} fit in the context"
    if blank:
        return "stream", f"{blank} blank lines: paragraphs of a running text"
    return "stream", f"only {fitting} of {filled} lines fit in the context of {context}"


def show(text: str) -> str:
    """Make invisible characters visible: end of line as ⏎, space as ␣ (used in tables)."""
    return text.replace(EOL, "⏎").replace(" ", "␣")


class UnknownCharacterError(UserError):
    """Raised when a text contains characters outside the vocabulary."""


def code_points(text: str, chunk: int = 1 << 20):
    """The Unicode code points of text as int32 tensors, a few million at a time: a 100 MB
    text is never held as one 400 MB tensor of 32-bit numbers."""
    for start in range(0, len(text), chunk):
        yield torch.frombuffer(bytearray(text[start:start + chunk].encode("utf-32-le")), dtype=torch.int32)


class CharTokenizer:
    """Characters <-> integer ids. The vocabulary is built from the corpus itself."""

    def __init__(self, chars):
        self.chars = sorted(set(chars) | {EOL})  # id -> character; sorted, so ids are reproducible
        self.ids = {c: i for i, c in enumerate(self.chars)}  # character -> id
        self.eol_id = self.ids[EOL]

    @classmethod
    def from_lines(cls, lines: list[str]) -> "CharTokenizer":
        return cls("".join(lines))

    def encode_tensor(self, text: str) -> torch.Tensor:
        """encode(text) for long texts, vectorized: (N,) ids in the smallest integer type.
        A table maps every code point to its id (-1 when unknown); indexing it with the
        code points of a chunk encodes the chunk in one operation."""
        lookup = torch.full((max(map(ord, self.chars)) + 2,), -1, dtype=torch.int32)  # code point -> id
        lookup[torch.tensor([ord(c) for c in self.chars])] = torch.arange(len(self.chars), dtype=torch.int32)
        ids = torch.empty(len(text), dtype=smallest_int_dtype(self.vocab_size))  # (N,)
        start = 0
        for points in code_points(text):
            chunk = lookup[points.clamp(max=len(lookup) - 1)]  # beyond the table: the -1 in its last slot
            if (chunk < 0).any():
                self.encode(text[start:start + len(points)])  # names the unknown characters
            ids[start:start + len(points)] = chunk.to(ids.dtype)
            start += len(points)
        return ids

    @property
    def vocab_size(self) -> int:
        return len(self.chars)

    def unknown(self, text: str) -> list[str]:
        """The characters of text that are not in the vocabulary, sorted."""
        return sorted(set(text) - self.ids.keys())

    def encode(self, text: str) -> list[int]:
        unknown = self.unknown(text)
        if unknown:
            raise UnknownCharacterError(f"the model never saw these characters: {name_chars(unknown)}; "
                                        f"it knows only: {''.join(show(c) for c in self.chars)}")
        return [self.ids[c] for c in text]

    def decode(self, ids) -> str:
        return "".join(self.chars[int(i)] for i in ids)


def name_chars(chars) -> str:
    """'ç' (LATIN SMALL LETTER C WITH CEDILLA), ... : characters named so nobody has to guess."""
    quote = lambda c: f'"{c}"' if c == "'" else f"'{show(c)}'"
    return ", ".join(f"{quote(c)} ({unicodedata.name(c, 'U+%04X' % ord(c))})" for c in chars)


def split_lines(lines: list[str], val_fraction: float, seed: int,
                test_fraction: float = 0.0) -> tuple[list[str], list[str], list[str]]:
    """Shuffle whole lines with the seed; the first val_fraction of them are the validation
    lines, the next test_fraction the test lines, the rest the training lines."""
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(lines) * val_fraction))  # at least one line in every split
    n_test = max(1, round(len(lines) * test_fraction)) if test_fraction > 0 else 0
    if n_val + n_test >= len(lines):
        raise UserError(f"{len(lines)} lines are too few to hold out {n_val} for validation and {n_test} for "
                        f"test and still train on some: give more lines or use --mode stream")
    pick = lambda rows: [lines[i] for i in rows]
    return pick(order[n_val + n_test:]), pick(order[:n_val]), pick(order[n_val:n_val + n_test])


@dataclass
class LineSplit:
    """Every line of one split (line mode), encoded once and padded into two tensors."""
    inputs: torch.Tensor   # (N, L) token ids; N lines, L = the longest line + 1
    targets: torch.Tensor  # (N, L) next-token ids, IGNORE on the padding
    lengths: torch.Tensor  # (N,)  real (unpadded) length of each line

    def __len__(self) -> int:
        return len(self.lengths)

    @property
    def n_tokens(self) -> int:
        return int(self.lengths.sum())


def encode_lines(lines: list[str], tokenizer: CharTokenizer, context: int) -> LineSplit:
    """⏎ + line + ⏎ per line, cut to context + 1 tokens, then input = [:-1], target = [1:]."""
    sequences = [[tokenizer.eol_id] + tokenizer.encode(line) + [tokenizer.eol_id] for line in lines]
    sequences = [s[:context + 1] for s in sequences]  # truncation: lines longer than the context are cut
    lengths = torch.tensor([len(s) - 1 for s in sequences])  # (N,)
    L = int(lengths.max())
    inputs = torch.full((len(lines), L), tokenizer.eol_id, dtype=torch.long)  # (N, L), padded with ⏎
    targets = torch.full((len(lines), L), IGNORE, dtype=torch.long)  # (N, L), padded with IGNORE
    for row, s in enumerate(sequences):
        inputs[row, :len(s) - 1] = torch.tensor(s[:-1])  # tokens[:-1]
        targets[row, :len(s) - 1] = torch.tensor(s[1:])  # tokens[1:]
    return LineSplit(inputs, targets, lengths)


@dataclass
class StreamSplit:
    """One contiguous block of the text (stream mode), cut into windows when batched."""
    ids: torch.Tensor  # (N,) token ids, in the smallest integer type that holds them
    context: int  # window length T

    def __len__(self) -> int:  # windows per epoch (at offset 0)
        return (len(self.ids) - 1) // self.context

    @property
    def n_tokens(self) -> int:  # targets in the block: every id but the first
        return len(self.ids) - 1

    def windows(self, offset: int = 0, tail: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """Non-overlapping (input, target) windows starting at offset; with tail, also the
        shorter last window, so that every target of the block is counted once."""
        T = self.context
        body = self.ids[offset:]  # (N - offset,) still in its small integer type: batches() widens it
        n = (len(body) - 1) // T
        inputs = body[:n * T].view(n, T)  # (n, T)
        targets = body[1:n * T + 1].view(n, T)  # (n, T): the same text, one character later
        pieces = [(inputs, targets)]
        if tail and len(body) - 1 > n * T:
            pieces.append((body[n * T:-1].unsqueeze(0), body[n * T + 1:].unsqueeze(0)))  # (1, T')
        return pieces


def smallest_int_dtype(vocab_size: int) -> torch.dtype:
    """uint8 for up to 256 characters, int16 or int32 beyond: a 100 MB text then takes 100 MB."""
    return torch.uint8 if vocab_size <= 256 else torch.int16 if vocab_size <= 32767 else torch.int32


def batches(split: LineSplit | StreamSplit, batch_size: int, generator: torch.Generator | None = None):
    """Yield (inputs, targets), each (B, T).

    Line mode: with a generator (training), lines of similar length are batched together,
    so little time is spent on padding: shuffle, sort by length (a stable sort keeps equal
    lengths shuffled), cut into batches, then shuffle the order of the batches, and cut
    each batch to its longest line. Without one (measuring), lines come in stored order.
    Stream mode: with a generator, windows from a random offset in a random order; without
    one, every window from the start, plus the shorter last one."""
    if isinstance(split, StreamSplit):
        if generator is None:
            for inputs, targets in split.windows(0, tail=True):  # (n, T)
                for x, y in zip(inputs.split(batch_size), targets.split(batch_size)):
                    yield x.long(), y.long()  # (B, T) each, as the int64 that embeddings want
            return
        largest = min(split.context - 1, len(split.ids) - 2 - split.context)  # leave at least one window
        offset = int(torch.randint(largest + 1, (), generator=generator))
        inputs, targets = split.windows(offset)[0]  # (n, T)
        order = torch.randperm(len(inputs), generator=generator)  # (n,)
        for rows in order.split(batch_size):  # rows: (B,)
            yield inputs[rows].long(), targets[rows].long()  # (n, T) -> (B, T)
        return
    if generator is None:
        order = torch.arange(len(split))
    else:
        order = torch.randperm(len(split), generator=generator)  # (N,)
        order = order[split.lengths[order].argsort(stable=True)]  # (N,) shortest first
    chunks = list(order.split(batch_size))
    if generator is not None:
        chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator)]
    for rows in chunks:  # rows: (B,)
        T = int(split.lengths[rows].max())
        yield split.inputs[rows, :T], split.targets[rows, :T]  # (N, L) -> (B, T)


@dataclass
class Data:
    """A corpus ready to train on: its tokenizer and its three splits."""
    mode: str  # "line" or "stream"
    reason: str  # why this mode, in words
    tokenizer: CharTokenizer
    train: LineSplit | StreamSplit
    val: LineSplit | StreamSplit
    test: LineSplit | StreamSplit | None  # None when test_fraction == 0
    train_text: list[str]  # the training lines (stream mode: those of the first 200,000 characters)
    n_chars: int  # characters in the whole corpus
    truncated: int = 0  # line mode: lines longer than the context, cut


def prepare_data(text: str, cfg: Config, tokenizer: CharTokenizer | None = None, extra_train: list[str] = ()) -> Data:
    """Cut a text into train / validation / test splits as cfg says. The tokenizer is built
    from the text unless one is given (a checkpoint's); then every character must be in it.
    `extra_train` lines go to the training split only (the chat's /train): the held-out
    splits stay exactly those of the text, so their losses compare with earlier ones."""
    if cfg.mode == "auto":
        mode, reason = choose_mode(text, cfg.context)
    else:
        mode, reason = cfg.mode, "chosen with --mode"
    tokenizer = tokenizer or CharTokenizer(text)
    if mode == "line":
        lines = text_lines(text)
        if len(lines) < 2 + (cfg.test_fraction > 0):
            raise UserError(f"data file {cfg.data} has {'a single line' if len(lines) == 1 else 'too few lines'}: "
                            f"line mode needs at least {2 + (cfg.test_fraction > 0)} (train, validation"
                            f"{', test' if cfg.test_fraction > 0 else ''}); --mode stream reads it as one text")
        train_lines, val_lines, test_lines = split_lines(lines, cfg.val_fraction, cfg.seed, cfg.test_fraction)
        train_lines = train_lines + list(extra_train)
        return Data(mode, reason, tokenizer, encode_lines(train_lines, tokenizer, cfg.context),
                    encode_lines(val_lines, tokenizer, cfg.context),
                    encode_lines(test_lines, tokenizer, cfg.context) if test_lines else None,
                    train_lines, len(text), sum(len(line) + 1 > cfg.context for line in lines))
    # stream mode: contiguous blocks, train | validation | test
    n = len(text)
    n_val, n_test = round(n * cfg.val_fraction), round(n * cfg.test_fraction)
    n_train = n - n_val - n_test
    if n_train < cfg.context + 1 or n_val < 2 or (cfg.test_fraction > 0 and n_test < 2):
        stream_needs = (f"its {n:,} characters leave {n_train:,} to train on, fewer than the context + 1 "
                        f"({cfg.context + 1}): give a longer text or a smaller --context")
        if cfg.mode == "auto":  # neither mode works: say why for both
            count = len(text_lines(text))
            raise UserError(f"data file {cfg.data} is too short: it has {'a single line' if count == 1 else f'{count} lines'}"
                            f" (line mode needs at least 3: train, validation, test) and in stream mode {stream_needs}")
        raise UserError(f"data file {cfg.data} is too short for stream mode: {stream_needs}")
    # Encode the text once, then cut the blocks as views of the same ids: no copies.
    extra = "".join(line + EOL for line in extra_train)
    ids = tokenizer.encode_tensor(extra + text)  # (len(extra) + N,)
    cut = len(extra) + n_train  # where the validation block starts
    blocks = ids[:cut], ids[cut:cut + n_val], ids[cut + n_val:]
    return Data(mode, reason, tokenizer, StreamSplit(blocks[0], cfg.context), StreamSplit(blocks[1], cfg.context),
                StreamSplit(blocks[2], cfg.context) if n_test else None,
                text_lines((extra + text[:min(n_train, 200_000)])[:200_000]), n)  # a sample of lines, for the pictures


# %% ==========================================================================
# 3. EMBEDDINGS: a learned vector for every character
# =============================================================================
# An embedding is a lookup table with one row of C numbers per character: id 21 -> row 21.
# The rows start random and training moves them so that characters that behave alike
# end up with similar vectors. Following the Transformer paper (Vaswani et al., 2017,
# section 3.4) the vectors are multiplied by sqrt(C):
#
#       x_t = E[id_t] * sqrt(C)
#
# We start the table with standard deviation 1/sqrt(C), so after the scaling every
# number is about 1 in size: the same size as the positional encoding added next, so
# neither drowns the other.


class ScaledEmbedding(nn.Embedding):
    def __init__(self, vocab_size: int, d_model: int):
        super().__init__(vocab_size, d_model)
        nn.init.normal_(self.weight, std=d_model ** -0.5)
        self.scale = math.sqrt(d_model)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        return super().forward(idx) * self.scale  # (B, T) -> (B, T, C)


# %% ==========================================================================
# 4. SINUSOIDAL POSITIONAL ENCODING: where each character stands
# =============================================================================
# Attention by itself does not know the order of its inputs: "sal" and "las" would look
# the same. So we add to each character's vector a vector that depends only on its
# position in the sequence (paper, section 3.5):
#
#       PE(pos, 2i)   = sin(pos / 10000^(2i / C))
#       PE(pos, 2i+1) = cos(pos / 10000^(2i / C))
#
# Each pair of dimensions is a sine/cosine at its own frequency, from one turn every
# 2*pi positions (i = 0) down to very slow waves: together they give every position a
# distinct fingerprint, and nearby positions similar ones. Nothing here is learned.
#
# The encoding is a (T, C) matrix added to every sequence of the batch alike:
# (B, T, C) + (T, C) -> (B, T, C). Position means the index t inside one sequence, never
# the index of the sequence in the batch (tests/test_llm.py checks exactly that).


def sinusoidal_positional_encoding(seq_len: int, d_model: int) -> torch.Tensor:
    position = torch.arange(seq_len, dtype=torch.float32).unsqueeze(1)  # (T,) -> (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (ceil(C/2),) the even dims 2i
    angle = position / 10000 ** (two_i / d_model)  # (T, 1) / (ceil(C/2),) -> (T, ceil(C/2))
    pe = torch.zeros(seq_len, d_model)  # (T, C)
    pe[:, 0::2] = torch.sin(angle)  # even dimensions 2i
    pe[:, 1::2] = torch.cos(angle[:, :d_model // 2])  # odd dimensions 2i+1
    return pe


# %% ==========================================================================
# 5. CAUSAL MASK AND MULTI-HEAD SELF-ATTENTION
# =============================================================================
# Attention lets every position gather information from other positions. Each position's
# vector x is projected three ways (W_Q, W_K, W_V are learned C x C matrices):
#
#       query q = x W_Q    "what am I looking for?"
#       key   k = x W_K    "what do I contain?"
#       value v = x W_V    "what do I pass on to whoever looks at me?"
#
# Position t scores every position s by how well its query matches their key, turns the
# scores into weights that add up to 1, and takes the weighted average of the values:
#
#       Attention(Q, K, V) = softmax(Q K^T / sqrt(d_k) + M) V
#
# Dividing by sqrt(d_k) keeps the scores from growing with the head width d_k = D, which
# would make the softmax nearly one-hot. M is the causal mask: 0 where s <= t and -inf
# where s > t, so after the softmax a position gives zero weight to the future. Without
# it the model could read the character it is asked to predict.
#
# Multi-head: the C numbers are split into H heads of D = C / H numbers. Each head
# attends on its own (one may follow the previous letter, another the start of the
# word), then the heads are concatenated back to C numbers and mixed by W_O:
#
#       MultiHead(x) = concat(head_1, ..., head_H) W_O
#
# Two paths compute the same numbers. `attention()` below is the formula written out,
# and returns the weights so we can draw them. torch's F.scaled_dot_product_attention
# fuses the same steps into one fast kernel (flash attention on a GPU) and is used
# for training when Config.attention == "fast"; tests/test_llm.py proves both equal.


def causal_mask(T: int, device=None) -> torch.Tensor:
    """(T, T) booleans: True where query position t may attend to key position s (s <= t)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril()


def attention(q, k, v, mask):
    """softmax(Q K^T / sqrt(d_k), masked) V, written out. Returns (output, weights)."""
    d_k = q.size(-1)
    scores = q @ k.transpose(-2, -1) / math.sqrt(d_k)  # (B, H, T, D) @ (B, H, D, T) -> (B, H, T, T)
    scores = scores.masked_fill(~mask, float("-inf"))  # the future gets -inf, so weight 0 below
    weights = scores.softmax(dim=-1)  # (B, H, T, T): row t = how much t looks at each s; sums to 1
    return weights @ v, weights  # (B, H, T, T) @ (B, H, T, D) -> (B, H, T, D)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, context: int, fast: bool = True):
        super().__init__()
        self.n_heads = n_heads
        self.fast = fast  # True: F.scaled_dot_product_attention; False: attention() above
        self.query = nn.Linear(d_model, d_model)  # W_Q and b_Q, all heads side by side
        self.key = nn.Linear(d_model, d_model)  # W_K and b_K
        self.value = nn.Linear(d_model, d_model)  # W_V and b_V
        self.output = nn.Linear(d_model, d_model)  # W_O and b_O
        self.register_buffer("causal_mask", causal_mask(context), persistent=False)  # (context, context)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        B, T, C = x.shape
        H, D = self.n_heads, C // self.n_heads
        q = self.query(x).view(B, T, H, D).transpose(1, 2)  # (B, T, C) -> (B, T, H, D) -> (B, H, T, D)
        k = self.key(x).view(B, T, H, D).transpose(1, 2)  # (B, T, C) -> (B, H, T, D)
        v = self.value(x).view(B, T, H, D).transpose(1, 2)  # (B, T, C) -> (B, H, T, D)
        if self.fast and not return_weights:
            heads = F.scaled_dot_product_attention(q, k, v, is_causal=True)  # (B, H, T, D), one kernel
            weights = None
        else:
            heads, weights = attention(q, k, v, self.causal_mask[:T, :T])
        concat = heads.transpose(1, 2).reshape(B, T, C)  # (B, H, T, D) -> (B, T, H, D) -> (B, T, C)
        return self.output(concat), weights  # (B, T, C) @ (C, C) -> (B, T, C); weights (B, H, T, T)


# %% ==========================================================================
# 6. FEED-FORWARD, RESIDUAL CONNECTIONS, LAYER NORM: the encoder layer
# =============================================================================
# After attention has mixed information across positions, a feed-forward block works on
# each position alone: it widens the vector to F numbers, applies ReLU, and narrows it
# back (paper, equation 2):
#
#       FFN(x) = max(0, x W_1 + b_1) W_2 + b_2
#
# Residual connections add each block's output to its input, x <- x + block(x), so the
# signal and the gradient can flow straight through a deep stack. Layer norm rescales
# each vector to mean 0 and variance 1, then applies a learned gain gamma and shift beta:
#
#       LayerNorm(x) = gamma * (x - mean(x)) / sqrt(var(x) + eps) + beta
#
# Pre-norm or post-norm? The 2017 paper normalizes after the residual addition
# (post-norm: x <- LayerNorm(x + block(x))). We normalize the block's input instead
# (pre-norm, as GPT-2 and most models since):
#
#       x <- x + Dropout(Attention(LayerNorm(x)))
#       x <- x + Dropout(FFN(LayerNorm(x)))
#
# because it trains stably at a high learning rate without a warm-up phase, which is
# what lets the classroom run finish in seconds. The price is one extra LayerNorm at the
# very end of the stack (section 7). We call the layer an *encoder* layer as the paper's
# encoder does; with the causal mask, a stack of them is what is usually called a
# decoder-only (GPT-style) model: there is no second stack and no cross-attention.


class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.expand = nn.Linear(d_model, d_ff)  # W_1, b_1
        self.contract = nn.Linear(d_ff, d_model)  # W_2, b_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.expand(x))  # (B, T, C) @ (C, F) -> (B, T, F)
        return self.contract(hidden)  # (B, T, F) @ (F, C) -> (B, T, C)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, context: int, dropout: float, fast: bool = True):
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = MultiHeadSelfAttention(d_model, n_heads, context, fast)
        self.feed_forward_norm = nn.LayerNorm(d_model)
        self.feed_forward = FeedForward(d_model, d_ff)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        attended, weights = self.attention(self.attention_norm(x), return_weights)  # (B, T, C)
        x = x + self.dropout(attended)  # residual connection around attention
        x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))  # ... and around the FFN
        return x, weights  # (B, T, C), (B, H, T, T) or None


# %% ==========================================================================
# 7. THE MODEL: from character ids to next-character scores
# =============================================================================
#       x      = Embedding(ids) * sqrt(C) + PE          (B, T) -> (B, T, C)
#       x      = EncoderLayer_N( ... EncoderLayer_1(x))  (B, T, C)
#       logits = LayerNorm(x) W_head + b_head            (B, T, C) -> (B, T, V)
#
# logits[b, t, c] is the score of "the character after position t is c"; softmax turns
# the V scores into probabilities. The linear head is its own matrix (some models reuse
# the embedding matrix here, "weight tying"; we keep them apart so each can be read on
# its own in parameters.txt).


class TransformerLM(nn.Module):
    def __init__(self, vocab_size: int, cfg: Config):
        super().__init__()
        self.context = cfg.context
        self.token_embedding = ScaledEmbedding(vocab_size, cfg.d_model)
        self.register_buffer("positional_encoding",  # (context, C), fixed, not a parameter
                             sinusoidal_positional_encoding(cfg.context, cfg.d_model), persistent=False)
        self.embedding_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.context, cfg.dropout, cfg.attention == "fast")
            for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size)  # the language-model head

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embedding plus positional encoding: what the first layer reads."""
        T = idx.shape[1]
        if T > self.context:
            raise ValueError(f"sequence of {T} tokens is longer than the context ({self.context})")
        return self.token_embedding(idx) + self.positional_encoding[:T]  # (B, T, C) + (T, C) -> (B, T, C)

    def forward(self, idx: torch.Tensor, return_attention: bool = False):
        """(B, T) token ids -> (B, T, V) logits; with return_attention also the attention
        weights of every layer, a list of N tensors (B, H, T, T)."""
        x = self.embedding_dropout(self.embed(idx))  # (B, T) -> (B, T, C)
        all_weights = []
        for layer in self.layers:
            x, weights = layer(x, return_attention)  # (B, T, C) -> (B, T, C)
            all_weights.append(weights)
        logits = self.lm_head(self.final_norm(x))  # (B, T, C) @ (C, V) -> (B, T, V)
        return (logits, all_weights) if return_attention else logits


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# %% ==========================================================================
# 8. TRAINING: teacher forcing, cross-entropy, Adam
# =============================================================================
# For every position the model outputs V logits; the loss is the cross-entropy between
# their softmax and the true next character, averaged over every real (unpadded)
# position of the batch:
#
#       loss = - mean over (b, t) of  log softmax(logits[b, t])[target[b, t]]
#
# A model that knows nothing spreads its bets evenly and scores ln(V), about 4.2 for 65
# characters; each 0.69 less halves the "number of characters it hesitates between".
# The gradient of the loss moves every parameter a little downhill; Adam (Kingma & Ba,
# 2014) scales each step by running averages of the gradient and of its square, so every
# parameter gets a step size that suits it. One epoch is one pass over the training
# data in a new random order. Dropout is on while training and off when we measure.
#
# The craft around that loop, each piece a few lines:
#
# * Learning-rate schedule. The rate rises linearly over the first `warmup` steps (at most a
#   fifth of all steps), while Adam's running averages are still rough guesses, then follows
#   half a cosine from lr down to lr / 10: big steps while the model is far from good, small
#   ones to settle:
#       lr(step) = lr * (step + 1) / warmup                                 during warm-up
#       lr(step) = lr * (0.1 + 0.9 * (1 + cos(pi * progress)) / 2)       progress: 0 -> 1
# * Gradient clipping. If the gradient, seen as one long vector g, is longer than `clip`,
#   it is scaled down to that length:  g <- g * min(1, clip / ||g||).  One unlucky batch
#   then cannot throw the weights far away. The progress line reports the mean ||g|| and
#   how often it was clipped: clipping most steps means the learning rate is too high.
# * Mixed precision. Under bf16 autocast the matrix products run in bfloat16 (8 bits of
#   mantissa instead of 23: about 3 significant digits, but float32's range), which GPUs
#   compute several times faster; sums, softmax and the loss stay in float32. Most CPUs
#   have no fast bfloat16, so `auto` uses it only on a GPU that supports it.
# * AdamW. Weight decay pulls every matrix a little towards 0 at each step,
#   W <- W - lr * weight_decay * W, separately from the gradient step ("decoupled",
#   Loshchilov & Hutter, 2019); biases and layer-norm gains are left alone. It matters
#   in long runs of big models, which otherwise overfit. Plain Adam is the default here:
#   it is the paper's optimizer, one idea less to explain, and in 20 short epochs the
#   decay barely changes the result (the README gives the figures).
# * Early stopping. The validation loss is measured after every epoch. When it has not
#   improved for `patience` epochs, more training is only learning the training lines by
#   heart: stop, and put back the weights of the best epoch (the ones in the checkpoint).
# * torch.compile (`--compile`, off by default). It traces the model once and writes fused
#   kernels for it: fewer trips through memory, less Python per step. The numbers are the
#   same up to rounding. The first steps wait tens of seconds for the compiler, so it pays off
#   only in long runs on a GPU; on a 2-core CPU it was slower (see the README).
# * A loss that becomes NaN or infinite (too high a learning rate, usually) cannot recover:
#   training stops with a message, and the checkpoint of the last good epoch stays.


def learning_rate(step: int, total_steps: int, cfg: Config) -> float:
    """Linear warm-up for cfg.warmup steps (at most a fifth of the run, for tiny texts), then a
    cosine from cfg.lr down to cfg.lr / 10."""
    warmup = min(cfg.warmup, total_steps // 5)
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)  # 0 -> 1
    return cfg.lr * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def sequence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not IGNORE (padding)."""
    V = logits.size(-1)
    return F.cross_entropy(logits.reshape(-1, V).float(), targets.reshape(-1), ignore_index=IGNORE)  # (B*T, V), (B*T,)


class Adam:
    """Adam (Kingma & Ba, 2014), written out; a group with weight_decay > 0 gets AdamW's
    decoupled decay. For every parameter tensor p with gradient g, at step t:

        m <- beta1 * m + (1 - beta1) * g          running mean of the gradient
        v <- beta2 * v + (1 - beta2) * g^2        running mean of its square
        p <- p * (1 - lr * weight_decay)          AdamW only: pull towards 0
        p <- p - lr * (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps)

    m and v start at 0, so early on they are too small; dividing by 1 - beta^t undoes that.
    Dividing m by sqrt(v) takes away the gradient's scale: a parameter whose gradients are a
    thousand times smaller moves just as far, about lr per step while its gradient keeps its
    sign, and less when the gradient keeps changing sign. The arithmetic is the same as
    torch.optim.Adam and AdamW (tests/test_use.py checks it step by step). It is written
    here because it is short, and because creating a torch.optim optimizer loads PyTorch's
    compiler: 1.8 s on a 2-core CPU, more than a tenth of the classroom run. Each
    `torch._foreach_*` call below updates every tensor of a group in one go."""

    def __init__(self, groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param_groups = [{"params": list(g["params"]), "weight_decay": g.get("weight_decay", 0.0), "lr": lr}
                             for g in groups]
        self.betas, self.eps, self.t = betas, eps, 0
        self.m = [[torch.zeros_like(p) for p in g["params"]] for g in self.param_groups]
        self.v = [[torch.zeros_like(p) for p in g["params"]] for g in self.param_groups]

    @torch.no_grad()
    def step(self):
        self.t += 1
        beta1, beta2 = self.betas
        for group, m, v in zip(self.param_groups, self.m, self.v):
            params, grads = group["params"], [p.grad for p in group["params"]]
            torch._foreach_lerp_(m, grads, 1 - beta1)  # m <- m + (1 - beta1)(g - m)
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)  # v <- beta2 v + (1 - beta2) g*g
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])
            correction2 = math.sqrt(1 - beta2 ** self.t)
            denominator = torch._foreach_sqrt(v)
            torch._foreach_div_(denominator, correction2)
            torch._foreach_add_(denominator, self.eps)  # sqrt(v / (1 - beta2^t)) + eps
            torch._foreach_addcdiv_(params, m, denominator, -group["lr"] / (1 - beta1 ** self.t))

    def zero_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                p.grad = None

    def state_dict(self) -> dict:
        return {"t": self.t, "m": self.m, "v": self.v}

    def load_state_dict(self, state: dict):
        shapes = [[p.shape for p in g["params"]] for g in self.param_groups]
        if not (isinstance(state, dict) and state.keys() == {"t", "m", "v"}
                and [[m.shape for m in group] for group in state["m"]] == shapes):
            raise UserError("the checkpoint's optimizer state does not fit this model and --optimizer "
                            "(or comes from an older LLM.py): start a new run from its weights with --init-from")
        device = self.param_groups[0]["params"][0].device
        self.t = state["t"]
        self.m = [[m.to(device) for m in group] for group in state["m"]]
        self.v = [[v.to(device) for v in group] for group in state["v"]]


def make_optimizer(model: nn.Module, cfg: Config) -> Adam:
    """Adam, or AdamW with weight decay on the matrices only."""
    if cfg.optimizer == "adamw":
        matrices = [p for p in model.parameters() if p.dim() >= 2]  # weights and the embedding table
        others = [p for p in model.parameters() if p.dim() < 2]  # biases, layer-norm gains and shifts
        return Adam([{"params": matrices, "weight_decay": cfg.weight_decay},
                     {"params": others, "weight_decay": 0.0}], lr=cfg.lr)
    return Adam([{"params": model.parameters()}], lr=cfg.lr)


def uses_bf16(cfg: Config, device: torch.device) -> bool:
    if cfg.precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return cfg.precision == "bf16"


def autocast(cfg: Config, device: torch.device):
    """The context in which forward passes run: bf16 autocast, or nothing at all."""
    return torch.autocast(device.type, dtype=torch.bfloat16, enabled=uses_bf16(cfg, device))


@torch.no_grad()
def evaluate(model: TransformerLM, split: LineSplit | StreamSplit, batch_size: int, device,
             cfg: Config | None = None) -> float:
    """Mean loss per real token over a whole split, with dropout off."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for inputs, targets in batches(split, batch_size):
        inputs, targets = inputs.to(device), targets.to(device)
        n = int((targets != IGNORE).sum())
        with autocast(cfg or Config(precision="fp32"), device):
            logits = model(inputs)
        total += sequence_loss(logits, targets).item() * n
        count += n
    model.train(was_training)
    return total / count


def epoch_generator(cfg: Config, epoch: int) -> torch.Generator:
    """The random order of one epoch depends only on the seed and the epoch number, so a
    resumed run shuffles exactly as an uninterrupted one would have."""
    return torch.Generator().manual_seed(cfg.seed * 1_000_003 + epoch)


def train_step(model: nn.Module, optimizer: Adam, inputs: torch.Tensor, targets: torch.Tensor,
               lr: float, clip: float, cfg: Config, device) -> tuple[torch.Tensor, torch.Tensor]:
    """One optimizer step on one batch: forward, loss, backward, clip, update.
    Returns (loss, gradient norm before clipping), both still on the device."""
    with autocast(cfg, device):
        logits = model(inputs)  # (B, T) -> (B, T, V)
    loss = sequence_loss(logits, targets)  # (B, T, V) vs (B, T) -> scalar
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    loss.backward()
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), clip)  # ||g||, then g scaled to at most clip
    optimizer.step()
    return loss, norm


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


# Scale-out. `torchrun --nproc_per_node=N LLM.py ...` starts N copies of this file; each
# learns who it is from the environment (RANK, WORLD_SIZE). DistributedDataParallel (DDP)
# keeps the copies in step: every copy starts from the same weights, trains on its own
# share of every N consecutive batches, and during backward() the gradients are averaged
# across the copies (an all-reduce), so every copy takes the very same optimizer step.
# One step then learns from N batches at once (N times the batch size). Only rank 0 prints
# and writes files. With one process nothing of this happens: a plain `python LLM.py`.


@dataclass
class Ranks:
    """Who this process is among the processes training together."""
    rank: int = 0  # 0 .. world - 1
    world: int = 1  # number of processes

    @property
    def main(self) -> bool:
        return self.rank == 0


def start_distributed(device: torch.device) -> tuple[Ranks, torch.device]:
    """Join the process group when started by torchrun (gloo on CPU, nccl on GPUs)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return Ranks(), device
    import torch.distributed as dist
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    return Ranks(dist.get_rank(), dist.get_world_size()), device


def end_distributed():
    """Leave the process group together: the other ranks wait here while rank 0 writes."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def my_share(batch_stream, ranks: Ranks):
    """Of every `world` consecutive batches, the one with this rank's index. An unfinished
    group at the end is dropped by every rank, so all take the same number of steps."""
    group = []
    for batch in batch_stream:
        group.append(batch)
        if len(group) == ranks.world:
            yield group[ranks.rank]
            group = []


def summed_over_ranks(values: list[torch.Tensor], ranks: Ranks) -> list[torch.Tensor]:
    """The element-wise sum of these scalars over all ranks (themselves with one process)."""
    if ranks.world == 1:
        return values
    import torch.distributed as dist
    stacked = torch.stack(values)  # (k,)
    dist.all_reduce(stacked)
    return list(stacked)


def same_weights_everywhere(model: nn.Module, ranks: Ranks) -> bool:
    """True if every rank holds exactly the same weights (checked, not assumed)."""
    import torch.distributed as dist
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])  # (P,) on the model's device
    gathered = [torch.empty_like(flat) for _ in range(ranks.world)]
    dist.all_gather(gathered, flat)
    return all(torch.equal(flat, other) for other in gathered)


def train(model: TransformerLM, data: Data, cfg: Config, device, checkpoint: Path | None = None,
          resume: dict | None = None, on_epoch_end=None, log=print, baseline: float = math.inf,
          ranks: Ranks = Ranks()) -> list[dict]:
    """Train for up to cfg.epochs, with early stopping; print a progress line per epoch and
    call on_epoch_end(epoch, record). Every new best epoch is saved to `checkpoint`; at the
    end the model holds the best weights. `resume` is the "training" part of a checkpoint:
    training goes on from its epoch and step. An epoch must beat `baseline` (the validation
    loss before training) to count as best. Returns one record per epoch."""
    optimizer = make_optimizer(model, cfg)
    network = model  # what the forward pass runs through: the model, or DDP around it
    if ranks.world > 1:
        from torch.nn.parallel import DistributedDataParallel
        network = DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    if cfg.compile:  # training's forward and backward run as generated kernels; evaluation stays plain
        network = torch.compile(network)
        log("torch.compile: the first steps of each new batch shape wait for the compiler (tens of seconds)")
    steps_per_epoch = math.ceil(len(data.train) / cfg.batch_size) // ranks.world
    total_steps = cfg.epochs * max(1, steps_per_epoch)
    step, first_epoch, history, bad_epochs = 0, 1, [], 0
    best = {"epoch": 0, "val_loss": baseline}
    if resume is not None:
        optimizer.load_state_dict(resume["optimizer"])
        step, history = resume["step"], list(resume["history"])
        first_epoch = history[-1]["epoch"] + 1
        best = dict(history[-1])
        torch.set_rng_state(resume["rng"])  # dropout continues with the same random numbers
        if device.type == "cuda" and resume.get("cuda_rng") is not None:
            torch.cuda.set_rng_state(resume["cuda_rng"], device)
    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    clip = cfg.clip if cfg.clip > 0 else math.inf  # with inf the norm is measured but nothing is scaled
    start = time.perf_counter()
    epoch = first_epoch - 1
    try:
        for epoch in range(first_epoch, cfg.epochs + 1):
            model.train()
            epoch_start = time.perf_counter()
            # running sums stay on the device: no waiting for the GPU at every step
            loss_sum, tokens, norm_sum, clipped = (torch.zeros((), device=device) for _ in range(4))
            steps = 0
            for inputs, targets in my_share(batches(data.train, cfg.batch_size, epoch_generator(cfg, epoch)), ranks):
                if device.type == "cuda":  # page-locked memory: the copy to the GPU runs while it computes
                    inputs, targets = inputs.pin_memory(), targets.pin_memory()
                inputs = inputs.to(device, non_blocking=True)  # (B, T)
                targets = targets.to(device, non_blocking=True)  # (B, T)
                lr = learning_rate(step, total_steps, cfg)
                loss, norm = train_step(network, optimizer, inputs, targets, lr, clip, cfg, device)
                step += 1
                steps += 1
                n = (targets != IGNORE).sum()
                loss_sum += loss.detach() * n
                tokens += n
                norm_sum += norm
                clipped += norm > clip
            loss_sum, tokens, norm_sum, clipped = summed_over_ranks([loss_sum, tokens, norm_sum, clipped], ranks)
            steps *= ranks.world
            train_loss = (loss_sum / tokens).item()
            epoch_seconds = time.perf_counter() - epoch_start
            val_loss = evaluate(model, data.val, cfg.batch_size * 4, device, cfg)
            if not (math.isfinite(train_loss) and math.isfinite(val_loss)):
                bad = train_loss if not math.isfinite(train_loss) else val_loss
                kept = (f"{checkpoint} still holds epoch {best['epoch']} (validation loss {best['val_loss']:.3f})"
                        if checkpoint is not None and best["epoch"] else "no checkpoint was written")
                raise TrainingDiverged(f"the loss became {bad} in epoch {epoch}: training stopped; {kept}. "
                                       f"Try a lower --lr (now {cfg.lr:g}) or --clip 1")
            record = {"epoch": epoch, "step": step, "train_loss": train_loss,
                      "val_loss": val_loss, "lr": lr,
                      "grad_norm": norm_sum.item() / steps, "clipped": clipped.item() / steps,
                      "elapsed": time.perf_counter() - start, "tokens_per_second": tokens.item() / epoch_seconds}
            history.append(record)
            improved = record["val_loss"] < best["val_loss"]
            if improved:
                best, bad_epochs = dict(record), 0
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if checkpoint is not None:
                    save_checkpoint(checkpoint, model, cfg, data.tokenizer, record,
                                    training={"step": step, "history": history, "rng": torch.get_rng_state(),
                                              "cuda_rng": torch.cuda.get_rng_state(device)
                                              if device.type == "cuda" else None,
                                              "optimizer": optimizer.state_dict()})
            else:
                bad_epochs += 1
            log(f"epoch {epoch:>3}/{cfg.epochs} | train loss {train_loss:.3f} | val loss {record['val_loss']:.3f}"
                f"{' *' if improved else '  '} | lr {lr:.1e} | grad norm {record['grad_norm']:.2f}"
                + (f" ({record['clipped']:.0%} clipped)" if cfg.clip > 0 else "")
                + f" | {record['elapsed']:5.1f} s | {record['tokens_per_second']:,.0f} tokens/s")
            if on_epoch_end is not None:
                on_epoch_end(epoch, record)
            if cfg.patience and bad_epochs >= cfg.patience:
                log(f"early stop: the validation loss has not improved for {bad_epochs} epochs")
                break
    except KeyboardInterrupt:
        where = (f"{checkpoint} keeps epoch {best['epoch']} (validation loss {best['val_loss']:.3f})"
                 if checkpoint is not None and best["epoch"] else "no checkpoint was written yet")
        log(f"\ntraining interrupted in epoch {epoch}: {where}")
        raise
    finally:
        model.load_state_dict(best_weights)  # the best epoch's weights, whatever happened
    if best["epoch"] and best["epoch"] != history[-1]["epoch"]:
        log(f"restored the weights of epoch {best['epoch']}, the best validation loss ({best['val_loss']:.3f})")
    return history


def perplexity_report(loss: float) -> str:
    """Loss in nats per character, perplexity e^loss (the number of characters the model is
    as unsure as if it chose evenly among), and bits per character loss / ln 2."""
    return f"loss {loss:.3f} nats/char | perplexity {math.exp(loss):.2f} | {loss / math.log(2):.3f} bits/char"


# %% ==========================================================================
# 9. CHECKPOINTS: keeping the model, resuming, fine-tuning
# =============================================================================
# A checkpoint is one file, outputs/model.pt, with everything needed to use the model
# again: the weights, the Config that shaped it and the vocabulary (as plain data). The
# run keeps the epoch with the best validation loss. It also holds what is needed to
# resume training exactly where that epoch ended: the optimizer's running averages, the
# step count, the history of losses and the state of the random number generator.
#
# Written atomically: torch.save writes a temporary file, and os.replace renames it over
# the old checkpoint in one step, so a run killed at any moment leaves either the old
# file or the new one, never half of one. Read with torch.load(weights_only=True), which
# only accepts tensors and plain Python data: opening a checkpoint cannot run code.
#
# Fine-tuning (--init-from) starts from a trained model and trains it on a new text.
# The new text may use characters the model never saw. Each one needs a row in the
# embedding table (its vector) and a row in the linear head (its score): those rows are
# new and random, while every known character keeps its learned rows, wherever the
# sorted vocabulary now puts it. Every other weight is kept as it is.

CHECKPOINT_FORMAT = "LLM.py checkpoint 1"
SHAPE_FIELDS = ("d_model", "n_heads", "n_layers", "d_ff", "context")  # fixed by the weights


def to_cpu(value):
    """The same nested dicts / lists of tensors, with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def save_checkpoint(path: Path, model: TransformerLM, cfg: Config, tokenizer: CharTokenizer, record: dict,
                    training: dict | None = None):
    payload = {"format": CHECKPOINT_FORMAT,
               "config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(cfg).items()},
               "vocabulary": tokenizer.chars,
               "model": to_cpu(model.state_dict()),
               "epoch": record["epoch"], "val_loss": record["val_loss"],
               "training": to_cpu(training)}  # for --resume: step, history, rng, optimizer
    temporary = path.with_name(path.name + ".tmp")
    torch.save(payload, temporary)
    os.replace(temporary, path)  # atomic: readers see the old file or the new one


def load_checkpoint(path: str | Path, device) -> tuple[TransformerLM, CharTokenizer, Config, dict]:
    """(model, tokenizer, config, payload) from a checkpoint; a UserError for anything wrong."""
    path = Path(path)
    if not path.is_file():
        raise UserError(f"checkpoint not found: {path} (train one first: python LLM.py)")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"{path} is not a readable checkpoint (corrupt, cut short or another format)") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        raise UserError(f"{path} is not an LLM.py checkpoint")
    try:
        known = {f.name for f in fields(Config)}
        cfg = Config(**{k: tuple(v) if isinstance(v, list) else v for k, v in payload["config"].items() if k in known})
        tokenizer = CharTokenizer(payload["vocabulary"])
        model = TransformerLM(tokenizer.vocab_size, cfg)
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise UserError(f"{path} does not match the model it describes: {reason}") from None
    return model.to(device).eval(), tokenizer, cfg, payload


def extend_vocabulary(model: TransformerLM, tokenizer: CharTokenizer, text: str,
                      cfg: Config) -> tuple[TransformerLM, CharTokenizer, list[str]]:
    """Make room for the characters of `text` that the model never saw: new embedding and
    head rows for them, the learned rows for the others. Returns (model, tokenizer, added)."""
    added = tokenizer.unknown(text)
    if not added:
        return model, tokenizer, []
    bigger = CharTokenizer(tokenizer.chars + added)
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    grown = TransformerLM(bigger.vocab_size, cfg).to(device)  # its new rows are freshly initialized
    state, fresh = model.state_dict(), grown.state_dict()
    old_rows = torch.tensor([bigger.ids[c] for c in tokenizer.chars], device=device)  # (V_old,) new id of each
    for name in ("token_embedding.weight", "lm_head.weight", "lm_head.bias"):
        rows = fresh[name].clone()  # (V_new, C) or (V_new,)
        rows[old_rows] = state[name]  # known characters keep their learned rows
        state[name] = rows
    grown.load_state_dict(state)
    return grown, bigger, added


# %% ==========================================================================
# 10. GENERATION: writing one character at a time
# =============================================================================
# To write, the model predicts the next character, we pick one, append it and repeat
# until it writes ⏎ (end of the proverb) or max_chars is reached. Picking:
#
#       p = softmax(logits / temperature)
#
# temperature < 1 sharpens p (safer, more repetitive), > 1 flattens it (more surprising).
# Sort the characters by p; top-k keeps the k most likely, top-p the fewest whose
# probabilities add up to p. Then draw u uniformly in [0, 1) and take the first kept
# candidate whose cumulative probability exceeds u x (the mass of the kept candidates):
# that is sampling from the kept candidates in proportion to their probability, and it
# lets table.txt show the draw so that every choice can be checked by hand. Greedy
# decoding always takes the most likely character (top-k with k = 1).
# The model never sees more than `context` characters: longer histories are cropped to
# the most recent ones. The entropy  H(p) = -sum p log2 p  (in bits) measures how
# unsure the model was: 0 bits = certain, log2(V) ~ 6 bits = no idea at all.


@dataclass
class Step:
    """One generation step, everything table.txt prints about it."""
    position: int  # index of the new character in the sequence (the opening ⏎ is 0)
    context: str  # the characters the model saw
    candidates: list  # the candidates shown, most likely first: (character, logit, p, cumulative p)
    kept: int  # how many candidates were kept (top-k / top-p)
    kept_mass: float  # their total probability
    u: float | None  # the uniform draw (None when greedy)
    chosen: str  # the character taken
    chosen_p: float  # its probability p
    entropy_bits: float  # H(p) in bits


def choose_next(logits: torch.Tensor, temperature: float, top_k: int, top_p: float, greedy: bool,
                generator: torch.Generator):
    """From (V,) logits pick one id. Returns (id, probabilities, sorted ids, cumulative p, kept, u)."""
    probs = torch.softmax(logits.float() / temperature, dim=-1)  # (V,)
    sorted_p, order = probs.sort(descending=True)  # (V,), (V,)
    cumulative = sorted_p.cumsum(0)  # (V,)
    kept = len(probs) if top_k == 0 else min(top_k, len(probs))
    if top_p < 1.0:  # the fewest candidates whose probabilities reach top_p
        kept = min(kept, int((cumulative < top_p).sum()) + 1)
    if greedy:
        return int(order[0]), probs, order, cumulative, 1, None
    u = float(torch.rand((), generator=generator))
    target = u * cumulative[kept - 1]
    rank = min(int(torch.searchsorted(cumulative[:kept], target, right=True)), kept - 1)
    return int(order[rank]), probs, order, cumulative, kept, u


@torch.no_grad()
def generate(model: TransformerLM, tokenizer: CharTokenizer, prompt: str = "", max_chars: int = 120,
             temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, greedy: bool = False,
             generator: torch.Generator | None = None, trace: list | None = None, stop_at_eol: bool = True) -> str:
    """Complete `prompt` until ⏎ or max_chars new characters; returns prompt + completion.
    If `trace` is a list, one Step per generated character is appended to it. A model of
    stream mode (a book) writes through line ends: pass stop_at_eol=False."""
    ids = [tokenizer.eol_id] + tokenizer.encode(prompt)  # raises UnknownCharacterError
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    for _ in range(max_chars):
        window = ids[-model.context:]  # crop to the context the model was trained on
        logits = model(torch.tensor([window], device=device))[0, -1].float().cpu()  # (1, T, V) -> (V,)
        next_id, probs, order, cumulative, kept, u = choose_next(logits, temperature, top_k, top_p, greedy, generator)
        if trace is not None:
            chosen_rank = int((order == next_id).nonzero()) + 1
            # the kept candidates and two rejected ones (or the top 10 when all are kept),
            # and always as far down as the chosen one
            shown = min(len(probs), max(kept + 2 if kept < len(probs) else 10, chosen_rank))
            trace.append(Step(
                position=len(ids), context=tokenizer.decode(window),
                candidates=[(tokenizer.chars[int(i)], float(logits[i]), float(probs[i]), float(c))
                            for i, c in zip(order[:shown], cumulative[:shown])],
                kept=kept, kept_mass=float(cumulative[kept - 1]), u=u, chosen=tokenizer.chars[next_id],
                chosen_p=float(probs[next_id]),
                entropy_bits=float(-(probs * torch.log2(probs.clamp_min(1e-30))).sum())))
        if next_id == tokenizer.eol_id and stop_at_eol:
            break
        ids.append(next_id)
    model.train(was_training)
    return tokenizer.decode(ids[1:])


# %% ==========================================================================
# 11. OUTPUTS: the model explains itself
# =============================================================================
# parameters.txt  every parameter tensor: name, shape, count, role in plain words, the
#                 formulas that give the counts, and each tensor's statistics after training.
# table.txt       every sampling step: what the model saw, its top candidates with their
#                 probabilities, the draw, the choice, the entropy.
# The pictures have a section of their own, next.

PARAMETER_ROLES = {
    "token_embedding.weight": "one learned vector per character (row i = character id i)",
    "attention_norm.weight": "LayerNorm gain (gamma) applied before attention",
    "attention_norm.bias": "LayerNorm shift (beta) applied before attention",
    "attention.query.weight": "W_Q: makes each position's query, 'what am I looking for?'",
    "attention.query.bias": "b_Q: bias of the queries",
    "attention.key.weight": "W_K: makes each position's key, 'what do I contain?'",
    "attention.key.bias": "b_K: bias of the keys",
    "attention.value.weight": "W_V: makes each position's value, 'what do I pass on?'",
    "attention.value.bias": "b_V: bias of the values",
    "attention.output.weight": "W_O: mixes the concatenated heads back into one vector",
    "attention.output.bias": "b_O: bias of the attention output",
    "feed_forward_norm.weight": "LayerNorm gain (gamma) applied before the feed-forward block",
    "feed_forward_norm.bias": "LayerNorm shift (beta) applied before the feed-forward block",
    "feed_forward.expand.weight": "W_1: widens each vector from C to F features",
    "feed_forward.expand.bias": "b_1: bias of the wide features (before ReLU)",
    "feed_forward.contract.weight": "W_2: brings the F features back to C",
    "feed_forward.contract.bias": "b_2: bias of the feed-forward output",
    "final_norm.weight": "LayerNorm gain (gamma) after the last layer",
    "final_norm.bias": "LayerNorm shift (beta) after the last layer",
    "lm_head.weight": "turns the final vector into one score (logit) per character",
    "lm_head.bias": "a score offset per character: how common it is, whatever the context",
}


def parameter_role(name: str) -> str:
    """The plain-words role of a parameter, from its name without the 'layers.<i>.' prefix."""
    parts = name.split(".")
    key = ".".join(parts[2:]) if parts[0] == "layers" else name
    return PARAMETER_ROLES[key]


def parameter_report(model: TransformerLM, cfg: Config, vocab_size: int) -> str:
    """The text of parameters.txt: every tensor, the formulas behind the counts, statistics."""
    V, C, F_, N, H = vocab_size, cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.n_heads
    named = list(model.named_parameters())
    total = sum(p.numel() for _, p in named)
    lines = ["PARAMETERS OF THE MODEL",
             "=======================",
             f"V = {V} characters, C = d_model = {C}, H = {H} heads of D = C/H = {C // H}, "
             f"N = {N} layers, F = d_ff = {F_}, context = {cfg.context}",
             "A Linear layer from a inputs to b outputs has a*b weights plus b biases; "
             "a LayerNorm over C numbers has C gains plus C shifts.",
             "The positional encoding is a fixed formula, not a parameter: it adds 0.", ""]
    width = max(len(n) for n, _ in named)
    lines.append(f"{'name':<{width}}  {'shape':<10} {'count':>9}  role")
    lines.append("-" * (width + 80))
    for name, p in named:
        lines.append(f"{name:<{width}}  {str(tuple(p.shape)):<10} {p.numel():>9,}  {parameter_role(name)}")

    def actual(prefix: str) -> int:
        return sum(p.numel() for n, p in named if n.startswith(prefix))

    attention_count = 4 * C * C + 4 * C
    ffn_count = 2 * C * F_ + F_ + C
    layer_count = attention_count + ffn_count + 4 * C
    rows = [  # (component, formula, value by formula, value counted from the tensors)
        ("token embedding", "V*C", V * C, actual("token_embedding.")),
        ("positional encoding", "0 (fixed sinusoids)", 0, 0),
    ]
    for i in range(N):
        rows += [
            (f"layer {i}: attention", "4*C^2 + 4*C", attention_count, actual(f"layers.{i}.attention.")),
            (f"layer {i}: feed-forward", "2*C*F + F + C", ffn_count, actual(f"layers.{i}.feed_forward.")),
            (f"layer {i}: two layer norms", "2 * 2*C", 4 * C,
             actual(f"layers.{i}.attention_norm.") + actual(f"layers.{i}.feed_forward_norm.")),
            (f"layer {i}: total", "4*C^2 + 2*C*F + F + 9*C", layer_count, actual(f"layers.{i}.")),
        ]
    rows += [("final layer norm", "2*C", 2 * C, actual("final_norm.")),
             ("linear head", "C*V + V", C * V + V, actual("lm_head.")),
             ("TOTAL", "V*C + N*(4*C^2 + 2*C*F + F + 9*C) + 2*C + C*V + V",
              V * C + N * layer_count + 2 * C + C * V + V, total)]
    lines += ["", "SUBTOTALS, WITH THE FORMULA THAT GIVES EACH",
              "-------------------------------------------",
              f"{'component':<26} {'formula':<52} {'by formula':>11} {'counted':>9}"]
    for component, formula, by_formula, counted in rows:
        mark = "" if by_formula == counted else "   <- MISMATCH"
        lines.append(f"{component:<26} {formula:<52} {by_formula:>11,} {counted:>9,}{mark}")
    lines += ["", f"Total parameters: {total:,} (= sum of p.numel() over all {len(named)} tensors)",
              f"Per layer: attention {attention_count:,} = 4*{C}^2 + 4*{C}; "
              f"feed-forward {ffn_count:,} = 2*{C}*{F_} + {F_} + {C}; norms {4 * C} = 4*{C}",
              f"Attention heads split C; they add no parameters: {H} heads x D = {C // H} "
              f"uses the same 4*C^2 + 4*C.",
              "", "STATISTICS OF EVERY TENSOR AT THE END OF TRAINING",
              "-------------------------------------------------",
              f"{'name':<{width}}  {'mean':>9} {'std':>9} {'min':>9} {'max':>9}"]
    for name, p in named:
        p = p.detach().float()
        std = p.std().item() if p.numel() > 1 else 0.0
        lines.append(f"{name:<{width}}  {p.mean().item():>9.4f} {std:>9.4f} "
                     f"{p.min().item():>9.4f} {p.max().item():>9.4f}")
    return "\n".join(lines) + "\n"


def corpus_word_share(samples: list[tuple[str, str, list]], lines: list[str]) -> tuple[int, int]:
    """(words the model wrote that are words of the corpus, words it wrote), prompts excluded.
    A rough measure of "does it write Spanish?": invented words are not in the corpus."""
    known = {w.lower() for line in lines for w in re.findall(r"\w+", line)}
    written = [w.lower() for prompt, text, _ in samples for w in re.findall(r"\w+", text[len(prompt):])]
    return sum(w in known for w in written), len(written)


def sampling_table(samples: list[tuple[str, str, list[Step]]], cfg: Config) -> str:
    """The text of table.txt from (prompt, generated text, steps) triples."""
    if cfg.greedy:
        how = "greedy: always the most likely character"
    else:
        how = (f"temperature {cfg.temperature}, top-k {cfg.top_k or 'off'}, top-p "
               f"{cfg.top_p if cfg.top_p < 1 else 'off'}, seed {cfg.seed}")
    out = ["HOW THE MODEL CHOSE EVERY CHARACTER",
           "===================================",
           f"Sampling: {how}.",
           "Each block is one step. 'context' is what the model saw (⏎ = start or end of a proverb,",
           "␣ = space). The candidates are sorted by p = softmax(logit / temperature); 'cum p' adds",
           "them up. Kept candidates are marked with *. To sample, draw u in [0, 1), multiply it by",
           "the kept mass, and take the first kept candidate whose cum p is above that number.",
           "Entropy H = -sum p log2 p over all characters, in bits: 0 = certain.", ""]
    for n, (prompt, text, steps) in enumerate(samples, 1):
        out += [f"SAMPLE {n}: prompt \"{prompt}\"", f"result: {text}", "=" * 72]
        for s in steps:
            out.append(f"step {s.position - len(prompt):>3} | position {s.position:>3} | context: {show(s.context)}")
            out.append("      rank  char        logit        p    cum p")
            kept = round(s.kept_mass, 6)
            for rank, (char, logit, p, cum) in enumerate(s.candidates, 1):
                mark = "*" if rank <= s.kept else " "
                out.append(f"    {mark} {rank:>4}  {show(char):<4} {logit:>11.3f} {p:>8.4f} {cum:>8.4f}")
            if s.u is None:
                draw = "greedy: the most likely"
            else:
                draw = f"u = {s.u:.4f}, u x kept mass {kept:.4f} = {s.u * s.kept_mass:.4f}"
            out.append(f"      {draw} -> chose '{show(s.chosen)}' (p = {s.chosen_p:.4f}), "
                       f"entropy {s.entropy_bits:.2f} bits")
            out.append("")
        out.append("")
    return "\n".join(out)


# %% ==========================================================================
# 12. PICTURES: seeing inside the model
# =============================================================================
# Every picture is a file in outputs/, drawn with matplotlib (networkx for the graphs),
# and outputs/README.md is a gallery that says how to read each one. --pictures chooses
# which are drawn (all by default; `--pictures` with no name draws none); --snapshot 0
# turns off the epoch pictures and their animation.
#
# epoch_<N>.png         every `snapshot` epochs: the architecture as a graph (node area =
#                       parameters, colour = how much they changed since the last picture)
#                       beside the strongest character -> next-character links.
# evolution.gif         the epoch pictures as an animation: same layout, same colour scale.
# loss.png              train and validation loss per epoch, the learning rate beside them.
# attention_layer<L>.png  for one real proverb, the attention weights of every head of
#                       layer L: row t = how much the character at t looks at each s <= t.
#                       They come from attention() (section 5) through the model's own
#                       forward pass, not from a re-implementation.
# positional_encoding.png  the matrix PE(pos, i) of section 4 and a few of its columns.
# embeddings.png        every character's embedding vector, projected to 2-D by PCA, at the
#                       start and at the end of training.
#
# PCA (principal component analysis) finds the directions along which a cloud of points
# spreads the most. Centre the rows of E (V x C), take its singular value decomposition
# E - mean = U S V^T; the first two columns of V are those directions, and
#
#       xy = (E - mean) @ V[:, :2]        (V, C) @ (C, 2) -> (V, 2)
#
# places every character on the plane where its vector casts the longest shadow. The share
# of the variance each direction explains is S_i^2 / sum_j S_j^2.


class EpochPictures:
    """Draws outputs/epoch_<N>.png. The figure is built once: layout, character set and
    colour scale stay fixed, so the images can be flipped through like a film, and each
    snapshot only recolours the nodes, redraws the links and retitles (fast)."""

    CHANGE_RANGE = (1e-3, 1.0)  # colour scale of the relative change ||dW|| / ||W||, log scale
    EDGE_SCALE = 10.0  # a link of this strength (in logits) gets the widest line
    N_CHARS = 14  # characters on each side of the character graph
    N_EDGES = 36  # links drawn in the character graph

    def __init__(self, model: TransformerLM, tokenizer: CharTokenizer, train_lines: list[str], cfg: Config):
        import matplotlib
        import networkx as nx
        from matplotlib import cm, colors
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D

        self.cfg = cfg
        self.tokenizer = tokenizer
        self.groups = self._parameter_groups(cfg)
        self.graph, self.pos = self._architecture(cfg)
        self.previous = self._weights(model)
        self.norm = colors.LogNorm(*self.CHANGE_RANGE)
        self.cmap = matplotlib.colormaps["viridis"]

        # Left: the architecture. Node area grows with the parameter count.
        self.nodes = list(self.graph.nodes)
        counts = {n: sum(t.numel() for t in self._group_tensors(self.previous, n)) for n in self.groups}
        largest = max(counts.values())
        radius = {n: math.sqrt(counts.get(n, 0) / largest) for n in self.nodes}
        sizes = [60 + 1000 * radius[n] if n in self.groups else 90 for n in self.nodes]
        self.fig = Figure(figsize=(13, 6.6), dpi=90)
        FigureCanvasAgg(self.fig)  # draws in memory: render() reuses the unchanging part of the picture
        ax, ax2 = self.fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
        kind = nx.get_edge_attributes(self.graph, "kind")
        nx.draw_networkx_edges(self.graph, self.pos, ax=ax, edgelist=[e for e in kind if kind[e] == "flow"],
                               edge_color="0.6", arrows=False)  # data flows downwards
        nx.draw_networkx_edges(self.graph, self.pos, ax=ax, edgelist=[e for e in kind if kind[e] == "residual"],
                               edge_color="tab:orange", style="dashed", connectionstyle="arc3,rad=-0.3",
                               arrowsize=9, node_size=sizes, nodelist=self.nodes)
        self.node_artist = nx.draw_networkx_nodes(self.graph, self.pos, ax=ax, nodelist=self.nodes,
                                                  node_size=sizes, node_color="0.85", edgecolors="0.3",
                                                  linewidths=0.6)
        for n in self.nodes:
            x, y = self.pos[n]
            label = self.graph.nodes[n]["label"]
            if n in self.groups and ".head" in n:
                ax.text(x, y - 0.42, label, ha="center", va="center", fontsize=9)
            else:
                ax.text(x + 0.1 + 0.22 * radius[n], y, label, ha="left", va="center", fontsize=9)
        for i in range(cfg.n_layers):
            ax.text(1.3 * (i + 1), 0.6, f"layer {i + 1}", ha="center", fontsize=10, fontweight="bold")
        ax.set_xlim(-0.3, 1.3 * (cfg.n_layers + 1) + 0.8)
        ax.set_ylim(-7.0, 0.9)
        ax.axis("off")
        ax.set_title("Architecture: node area = parameters, colour = change since the last picture",
                     fontsize=10)
        bar = self.fig.colorbar(cm.ScalarMappable(norm=self.norm, cmap=self.cmap), ax=ax, orientation="horizontal",
                                fraction=0.04, pad=0.02, aspect=40, shrink=0.7)
        bar.set_label("relative change of the weights since the last picture, ||ΔW|| / ||W||", fontsize=9)
        bar.minorticks_off()
        bar.set_ticks([0.001, 0.01, 0.1, 1.0], labels=["0.001", "0.01", "0.1", "1"])  # plain text: fast
        bar.ax.tick_params(labelsize=9)
        ax.legend(handles=[Line2D([], [], color="0.6", label="data flow (downwards)"),
                           Line2D([], [], color="tab:orange", ls="--", label="residual: x + block(x)"),
                           Line2D([], [], ls="", marker="o", color="0.85", markeredgecolor="0.3",
                                  label="no parameters")],
                  loc="lower left", fontsize=9, frameon=False)

        # Right: characters on both sides, links drawn per snapshot.
        char_counts = {}
        for line in train_lines:
            for c in line + EOL:
                char_counts[c] = char_counts.get(c, 0) + 1
        top = sorted(char_counts, key=lambda c: (-char_counts[c], c))[:self.N_CHARS]
        self.chars = sorted(top, key=lambda c: tokenizer.ids[c])
        self.char_graph = nx.DiGraph()
        self.char_pos = {}
        for i, c in enumerate(self.chars):
            for side, x in (("now", 0.0), ("next", 1.0)):
                self.char_graph.add_node((side, c))
                self.char_pos[(side, c)] = (x, -i)
        char_nodes = nx.draw_networkx_nodes(self.char_graph, self.char_pos, node_size=260, node_color="white",
                                            edgecolors="0.3", ax=ax2)
        char_labels = nx.draw_networkx_labels(self.char_graph, self.char_pos, font_size=10, ax=ax2,
                                              labels={node: show(node[1]) for node in self.char_graph.nodes})
        self.over_links = [char_nodes, *char_labels.values()]  # redrawn over the links of each picture
        ax2.text(0, 0.9, "character", ha="center", fontsize=10)
        ax2.text(1, 0.9, "next character", ha="center", fontsize=10)
        ax2.set_xlim(-0.3, 1.3)
        ax2.set_ylim(-len(self.chars) - 0.6, 1.4)
        ax2.axis("off")
        ax2.set_title(f"Direct path, skipping the layers: head(norm(embedding)),\n"
                      f"the {self.N_EDGES} strongest links between frequent characters", fontsize=10)
        ax2.legend(handles=[Line2D([], [], color="tab:blue", lw=2, label="next more likely"),
                            Line2D([], [], color="tab:red", lw=2, label="next less likely")],
                   loc="lower center", ncol=2, fontsize=9, frameon=False)
        self.ax2 = ax2
        self.link_artist = None
        self.frames = []  # one small image per picture, for evolution.gif
        self.background = None  # the unchanging part of the figure, drawn once (see render)
        self.title = self.fig.suptitle("", fontsize=12)
        self.fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.1, wspace=0.04)

    @staticmethod
    def _parameter_groups(cfg):
        """node -> list of (parameter name, rows or None): the parameters that node stands for."""
        D = cfg.d_model // cfg.n_heads
        groups = {"embedding": [("token_embedding.weight", None)]}
        for i in range(cfg.n_layers):
            p = f"layers.{i}."
            groups[f"L{i}.norm1"] = [(p + "attention_norm.weight", None), (p + "attention_norm.bias", None)]
            for h in range(cfg.n_heads):
                rows = slice(h * D, (h + 1) * D)  # the rows of W_Q, W_K, W_V that make head h
                groups[f"L{i}.head{h}"] = [(p + f"attention.{m}.{t}", rows)
                                           for m in ("query", "key", "value") for t in ("weight", "bias")]
            for node, module in (("out", "attention.output"), ("norm2", "feed_forward_norm"),
                                 ("expand", "feed_forward.expand"), ("contract", "feed_forward.contract")):
                groups[f"L{i}.{node}"] = [(p + module + ".weight", None), (p + module + ".bias", None)]
        groups["final norm"] = [("final_norm.weight", None), ("final_norm.bias", None)]
        groups["head"] = [("lm_head.weight", None), ("lm_head.bias", None)]
        return groups

    @staticmethod
    def _architecture(cfg):
        """The network as a directed graph with fixed positions: one column per layer."""
        import networkx as nx
        G = nx.DiGraph()
        pos = {}

        def add(node, x, y, label):
            G.add_node(node, label=label)
            pos[node] = (x, y)

        add("ids", 0, 0, "character ids")
        add("embedding", 0, -1.2, "embedding")
        add("+PE", 0, -2.4, "+ positional\n   encoding")
        G.add_edges_from([("ids", "embedding"), ("embedding", "+PE")], kind="flow")
        previous, H = "+PE", cfg.n_heads
        for i in range(cfg.n_layers):
            x = 1.3 * (i + 1)
            add(f"L{i}.norm1", x, 0, "norm")
            for h in range(H):
                add(f"L{i}.head{h}", x + (h - (H - 1) / 2) * min(0.28, 1.0 / H), -1.0, f"h{h + 1}")
            add(f"L{i}.out", x, -2.0, "W_O")
            add(f"L{i}.add1", x, -2.8, "+")
            add(f"L{i}.norm2", x, -3.6, "norm")
            add(f"L{i}.expand", x, -4.6, "W_1")
            add(f"L{i}.contract", x, -5.6, "W_2")
            add(f"L{i}.add2", x, -6.5, "+")
            G.add_edge(previous, f"L{i}.norm1", kind="flow")
            for h in range(H):
                G.add_edge(f"L{i}.norm1", f"L{i}.head{h}", kind="flow")
                G.add_edge(f"L{i}.head{h}", f"L{i}.out", kind="flow")
            G.add_edges_from([(f"L{i}.out", f"L{i}.add1"), (f"L{i}.add1", f"L{i}.norm2"),
                              (f"L{i}.norm2", f"L{i}.expand"), (f"L{i}.expand", f"L{i}.contract"),
                              (f"L{i}.contract", f"L{i}.add2")], kind="flow")
            G.add_edge(previous, f"L{i}.add1", kind="residual")
            G.add_edge(f"L{i}.add1", f"L{i}.add2", kind="residual")
            previous = f"L{i}.add2"
        x = 1.3 * (cfg.n_layers + 1)
        add("final norm", x, -4.6, "norm")
        add("head", x, -5.6, "linear head")
        add("logits", x, -6.5, "logits")
        G.add_edges_from([(previous, "final norm"), ("final norm", "head"), ("head", "logits")], kind="flow")
        return G, pos

    @staticmethod
    def _weights(model):
        return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}

    def _group_tensors(self, weights, node):
        return [weights[n] if rows is None else weights[n][rows] for n, rows in self.groups[node]]

    def direct_path(self, model: TransformerLM) -> torch.Tensor:
        """(V, V): logits = head(final_norm(E[a] * sqrt(C))) for every character a, each row
        minus its mean. What the model would predict if every layer added nothing."""
        with torch.no_grad():
            emb = model.token_embedding.weight * model.token_embedding.scale  # (V, C)
            direct = model.lm_head(model.final_norm(emb)).float().cpu()  # (V, C) @ (C, V) -> (V, V)
        return direct - direct.mean(dim=1, keepdim=True)

    def measure(self, model: TransformerLM) -> tuple[list, list, list]:
        """What one picture shows, read from the model now: the node colours (change since
        the previous picture) and the strongest links of the direct path."""
        current = self._weights(model)
        node_colors = []
        for node in self.nodes:
            if node not in self.groups:
                node_colors.append((0.85, 0.85, 0.85, 1.0))
                continue
            now, before = self._group_tensors(current, node), self._group_tensors(self.previous, node)
            change = math.sqrt(sum(float((a - b).pow(2).sum()) for a, b in zip(now, before)))
            scale = math.sqrt(sum(float(b.pow(2).sum()) for b in before)) + 1e-12
            node_colors.append(self.cmap(self.norm(min(max(change / scale, self.CHANGE_RANGE[0]),
                                                       self.CHANGE_RANGE[1]))))
        self.previous = current
        ids = [self.tokenizer.ids[c] for c in self.chars]
        links = self.direct_path(model)[ids][:, ids]  # (n, n)
        n = len(ids)
        strongest = links.abs().flatten().argsort(descending=True)[:self.N_EDGES]
        edges = [(("now", self.chars[int(f) // n]), ("next", self.chars[int(f) % n])) for f in strongest]
        values = [float(links.flatten()[f]) for f in strongest]
        return node_colors, edges, values

    def render(self, measured: tuple[list, list, list], epoch: int, record: dict, path: Path):
        """Update the figure with what measure() returned and save it as a PNG.

        Only the node colours, the links and the title change from one picture to the next.
        So the rest (axes, labels, legends, colour bar) is drawn once and kept as an image;
        each picture pastes that image back and draws just the changing parts on top of it
        ("blitting"): 0.16 s a picture here, against 0.34 s to draw the whole figure again."""
        import networkx as nx
        from PIL import Image
        node_colors, edges, values = measured
        canvas = self.fig.canvas
        if self.background is None:
            for artist in (self.node_artist, self.title):
                artist.set_visible(False)
            canvas.draw()
            self.background = canvas.copy_from_bbox(self.fig.bbox)
            for artist in (self.node_artist, self.title):
                artist.set_visible(True)
        self.node_artist.set_facecolor(node_colors)
        if self.link_artist is not None:
            self.link_artist.remove()
        self.link_artist = nx.draw_networkx_edges(
            self.char_graph, self.char_pos, edgelist=edges, ax=self.ax2, arrows=False, alpha=0.75,
            width=[0.3 + 4.2 * min(abs(v) / self.EDGE_SCALE, 1.0) for v in values],
            edge_color=["tab:blue" if v > 0 else "tab:red" for v in values])
        self.title.set_text(f"Epoch {epoch}/{self.cfg.epochs}     train loss {record['train_loss']:.3f}     "
                            f"validation loss {record['val_loss']:.3f}")
        canvas.restore_region(self.background)
        for artist in (self.node_artist, self.link_artist, *self.over_links, self.title):
            self.fig.draw_artist(artist)
        width, height = canvas.get_width_height()
        image = Image.frombuffer("RGBA", (width, height), bytes(canvas.buffer_rgba()), "raw", "RGBA", 0, 1)
        image.convert("RGB").save(path)
        self.frames.append(image.convert("RGB").resize((round(width * 0.6), round(height * 0.6)), Image.LANCZOS)
                           .quantize(colors=128))  # a smaller frame for evolution.gif

    def draw(self, model: TransformerLM, epoch: int, record: dict, path: Path):
        self.render(self.measure(model), epoch, record, path)


def new_figure(width: float, height: float, dpi: int = 90):
    """A matplotlib figure attached to no window and no pyplot state: it only draws into files."""
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=dpi)


def draw_loss(history: list[dict], snapshots: list[int], path: Path, test_loss: float | None = None):
    """loss.png: train and validation loss per epoch, the learning rate on a second axis."""
    from matplotlib.lines import Line2D
    epochs = [r["epoch"] for r in history]
    best = min(history, key=lambda r: r["val_loss"])
    fig = new_figure(9, 4.8)
    ax = fig.subplots()
    for epoch in snapshots:
        ax.axvline(epoch, color="0.88", lw=1, zorder=0)
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, color="tab:blue", label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in history], "o-", ms=3, color="tab:orange", label="validation loss")
    ax.plot([best["epoch"]], [best["val_loss"]], "*", ms=14, color="tab:orange", mec="black",
            label=f"best epoch {best['epoch']}: {best['val_loss']:.3f} (kept in model.pt)")
    if test_loss is not None:
        ax.plot([best["epoch"]], [test_loss], "D", ms=7, color="tab:red", mec="black",
                label=f"test loss of that model: {test_loss:.3f}")
    ax.set_xlabel("epoch", fontsize=11)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("cross-entropy loss (nats per character)", fontsize=11)
    ax.tick_params(labelsize=10)
    ax.grid(axis="y", color="0.92")
    lr_axis = ax.twinx()
    lr_axis.plot(epochs, [r["lr"] for r in history], "--", color="0.45", lw=1.2)
    lr_axis.set_ylabel("learning rate at the end of the epoch", fontsize=11, color="0.35")
    lr_axis.tick_params(labelsize=10, colors="0.35")
    lr_axis.set_ylim(0, max(r["lr"] for r in history) * 1.1)
    handles, _ = ax.get_legend_handles_labels()
    handles += [Line2D([], [], ls="--", color="0.45", label="learning rate (right axis)")]
    if snapshots:
        handles += [Line2D([], [], color="0.88", lw=2, label="epochs with an epoch_<N>.png")]
    ax.legend(handles=handles, fontsize=10, loc="upper right", framealpha=0.95)
    ax.set_title("Loss per epoch: the gap between the curves is what the model learned by heart", fontsize=12)
    fig.subplots_adjust(left=0.09, right=0.9, top=0.92, bottom=0.11)
    fig.savefig(path)


def pick_example(lines: list[str], length: int = 32) -> str:
    """A real line of about `length` characters to draw attention for (the first such)."""
    return min(lines, key=lambda line: abs(len(line) - length))[:length + 16]  # min keeps the first of ties


@torch.no_grad()
def attention_maps(model: TransformerLM, tokenizer: CharTokenizer, text: str) -> tuple[list[str], list[torch.Tensor]]:
    """The characters the model reads for `text` (⏎ first) and, per layer, the (H, T, T)
    attention weights it computes for them: what attention_layer<L>.png draws."""
    ids = [tokenizer.eol_id] + tokenizer.encode(text)
    ids = ids[:model.context]
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    _, weights = model(torch.tensor([ids], device=device), return_attention=True)  # N x (1, H, T, T)
    model.train(was_training)
    return [tokenizer.chars[i] for i in ids], [w[0].float().cpu() for w in weights]  # N x (H, T, T)


def head_habits(weights: torch.Tensor, chars: list[str]) -> list[tuple[str, float]]:
    """For each head of one layer, (its main habit, the mean weight it gives to it): the
    character itself, the one 1, 2 or 3 places back, the last space (where the current word
    began) or the ⏎ that starts the line, averaged over the rows t >= 4; 'spread out' when no
    habit takes a quarter of the weight."""
    H, T, _ = weights.shape
    rows = torch.arange(4, T)
    last_space = torch.tensor([max((s for s in range(t) if chars[s] == " "), default=-1) for t in range(T)])
    spaced = rows[last_space[rows] >= 0]  # rows with a space somewhere before them
    habits = []
    for h in range(H):
        w = weights[h]
        shares = {"itself": float(w[rows, rows].mean()),
                  "the previous character": float(w[rows, rows - 1].mean()),
                  "the character 2 back": float(w[rows, rows - 2].mean()),
                  "the character 3 back": float(w[rows, rows - 3].mean()),
                  "the last space (where the word began)":
                      float(w[spaced, last_space[spaced]].mean()) if len(spaced) else 0.0,
                  "the ⏎ that starts the line": float(w[rows, 0].mean())}
        name = max(shares, key=shares.get)
        habits.append((name, shares[name]) if shares[name] >= 0.25 else ("spread out", shares[name]))
    return habits


def draw_attention(chars: list[str], weights: torch.Tensor, layer: int, path: Path):
    """attention_layer<L>.png: one heatmap per head, the causal triangle visible."""
    import matplotlib
    H, T, _ = weights.shape
    labels = [show(c) for c in chars]
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.93")  # grey above the diagonal: the future
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    fig = new_figure(4.4 * H + 1.0, 5.4)
    axes = fig.subplots(1, H, squeeze=False)[0]
    fig.subplots_adjust(left=0.035, right=0.935, top=0.86, bottom=0.1, wspace=0.1)
    habits = head_habits(weights, chars)
    for h, ax in enumerate(axes):
        shown = weights[h].masked_fill(future, float("nan")).numpy()
        image = ax.imshow(shown, cmap=cmap, vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        # The characters as plain text beside the cells (matplotlib's tick objects would
        # cost four times as long to draw): below every map, left of the first one only.
        below = ax.get_xaxis_transform()  # x in data units, y in axes units
        for i, label in enumerate(labels):
            ax.text(i, -0.01, label, transform=below, ha="center", va="top", fontsize=9)
        if h == 0:
            beside = ax.get_yaxis_transform()  # x in axes units, y in data units
            for i, label in enumerate(labels):
                ax.text(-0.01, i, label, transform=beside, ha="right", va="center", fontsize=9)
            ax.set_ylabel("the character that looks (query position t)", fontsize=10, labelpad=14)
        ax.set_xlabel("looks at (key position s)", fontsize=10, labelpad=14)
        name, share = habits[h]
        ax.set_title(f"head {h + 1}: {name}" + (f" ({share:.0%})" if name != "spread out" else ""), fontsize=11)
    bar = fig.colorbar(image, cax=fig.add_axes([0.95, 0.18, 0.01, 0.6]))
    bar.set_label("attention weight (each row sums to 1)", fontsize=10)
    bar.ax.tick_params(labelsize=9)
    fig.suptitle(f"Layer {layer}: where each character of \u201c{''.join(chars[1:])}\u201d looks; "
                 f"grey = the future, masked", fontsize=12)
    fig.savefig(path)


def draw_positional_encoding(pe: torch.Tensor, path: Path, dims=(0, 10, 20, 40)):
    """positional_encoding.png: the (T, C) matrix as a heatmap and a few columns as curves."""
    T, C = pe.shape
    dims = [d for d in dims if d < C]
    fig = new_figure(12, 4.8)
    heat, curves = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.3]})
    image = heat.imshow(pe.numpy(), aspect="auto", cmap="RdBu_r", vmin=-1, vmax=1, interpolation="nearest")
    heat.set_xlabel("dimension i of the vector", fontsize=11)
    heat.set_ylabel("position in the sequence", fontsize=11)
    heat.tick_params(labelsize=10)
    heat.set_title("PE(pos, i): fast waves on the left, slow on the right", fontsize=11)
    bar = fig.colorbar(image, ax=heat, fraction=0.05, pad=0.02)
    bar.ax.tick_params(labelsize=9)
    for d in dims:  # even dimensions: the sines
        period = 2 * math.pi * 10000 ** (d / C)
        curves.plot(range(T), pe[:, d].numpy(), lw=1.8,
                    label=f"dimension {d}: sin(pos / 10000^({d}/{C})), one turn every {period:,.0f} positions")
    curves.set_xlabel("position in the sequence", fontsize=11)
    curves.set_ylabel("value added to that dimension", fontsize=11)
    curves.tick_params(labelsize=10)
    curves.set_ylim(-1.15, 1.9)
    curves.legend(fontsize=9, loc="upper right", framealpha=0.95)
    curves.set_title("A few columns: each pair of dimensions is a wave of its own frequency", fontsize=11)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.92, bottom=0.11, wspace=0.32)
    fig.savefig(path)


def pca_2d(matrix: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(V, C) rows -> ((V, 2) coordinates on the two main directions, (2,) share of the
    variance each explains). torch.pca_lowrank with q = min(V, C) is an exact PCA; its signs
    are fixed so that the largest coordinate on each axis is positive (same picture every run)."""
    matrix = matrix.detach().float().cpu()
    with torch.random.fork_rng(devices=[]):  # pca_lowrank draws random numbers: keep training's untouched
        torch.manual_seed(0)
        U, S, V = torch.pca_lowrank(matrix, q=min(matrix.shape), center=True)  # V: (C, q)
    xy = (matrix - matrix.mean(dim=0)) @ V[:, :2]  # (V, C) @ (C, 2) -> (V, 2)
    flip = torch.sign(xy.gather(0, xy.abs().argmax(dim=0, keepdim=True)))  # (1, 2)
    explained = S[:2] ** 2 / (S ** 2).sum()  # (2,)
    return xy * flip, explained


VOWELS = set("aeiouáéíóúüAEIOUÁÉÍÓÚÜ")


def character_kind(c: str) -> str:
    if c in VOWELS:
        return "vowel"
    if c.isalpha():
        return "consonant"
    if c in (" ", EOL):
        return "space or ⏎"
    if unicodedata.category(c).startswith("P"):
        return "punctuation"
    return "other"


KIND_COLORS = {"vowel": "tab:red", "consonant": "tab:blue", "punctuation": "tab:green",
               "space or ⏎": "black", "other": "tab:purple"}


def draw_embeddings(tokenizer: CharTokenizer, before: torch.Tensor, after: torch.Tensor, path: Path):
    """embeddings.png: the embedding table in 2-D by PCA, at the start and end of training."""
    from matplotlib.lines import Line2D
    fig = new_figure(13, 6.2)
    axes = fig.subplots(1, 2)
    kinds = [character_kind(c) for c in tokenizer.chars]
    for ax, table, when in zip(axes, (before, after), ("at the start of training", "at the end of training")):
        xy, explained = pca_2d(table)
        for (x, y), c, kind in zip(xy.tolist(), tokenizer.chars, kinds):
            ax.text(x, y, show(c), color=KIND_COLORS[kind], fontsize=11, ha="center", va="center",
                    fontweight="bold" if kind == "vowel" else "normal")
        pad = 0.08 * float((xy.max(0).values - xy.min(0).values).max())
        ax.set_xlim(float(xy[:, 0].min()) - pad, float(xy[:, 0].max()) + pad)
        ax.set_ylim(float(xy[:, 1].min()) - pad, float(xy[:, 1].max()) + pad)
        ax.set_xlabel(f"first principal direction ({explained[0]:.0%} of the variance)", fontsize=10)
        ax.set_ylabel(f"second principal direction ({explained[1]:.0%})", fontsize=10)
        ax.tick_params(labelsize=9)
        ax.set_title(f"Character embeddings {when}", fontsize=12)
    axes[1].legend(handles=[Line2D([], [], ls="", marker="s", color=color, label=kind)
                            for kind, color in KIND_COLORS.items() if kind in kinds],
                   fontsize=10, loc="upper right", framealpha=0.9)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.94, bottom=0.09, wspace=0.15)
    fig.savefig(path)


def nearest_characters(tokenizer: CharTokenizer, table: torch.Tensor, char: str, k: int = 3) -> list[str]:
    """The k characters whose embedding vectors point most nearly the same way as char's."""
    unit = F.normalize(table.detach().float().cpu(), dim=1)  # (V, C), rows of length 1
    similarity = unit @ unit[tokenizer.ids[char]]  # (V, C) @ (C,) -> (V,) cosine similarities
    order = similarity.argsort(descending=True).tolist()
    return [tokenizer.chars[i] for i in order if tokenizer.chars[i] != char][:k]


def write_evolution_gif(frames: list, path: Path, ms_per_frame: int = 800):
    """evolution.gif: the epoch pictures as an animation, written by Pillow (the image library
    matplotlib itself uses) from the frames EpochPictures kept. The last frame stays on
    screen three times as long."""
    durations = [ms_per_frame] * (len(frames) - 1) + [3 * ms_per_frame]
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=durations, loop=0)


def gallery(files: list[str], facts: dict) -> str:
    """outputs/README.md: every file of the run, with how to read it. Only files in `files`
    (those the run wrote) are shown or linked."""
    lines = ["# What the model wrote: a gallery", "",
             f"Written by `python LLM.py` on {facts['data']}: {facts['summary']}. Every file below "
             f"is rebuilt by each run; the same seed on the same machine gives the same files.", ""]

    def section(title, body, image=None):
        lines.extend([f"## {title}", ""])
        if image:
            lines.extend([f"![{title}]({image})", ""])
        lines.extend([body, ""])

    if "loss.png" in files:
        section("loss.png: learning, epoch by epoch", (
            "Train loss (blue) and validation loss (orange) per epoch, in nats per character; the grey "
            "dashed line is the learning rate (right axis): the short warm-up, then the cosine down to a "
            "tenth. The star is the best epoch, the one kept in model.pt"
            + (", and the red diamond the test loss of that model, measured once at the end" if facts.get("test_loss")
               else "") + f". Here the best validation loss is {facts['best_val']:.3f} at epoch "
            f"{facts['best_epoch']}. What to look for: both curves fall fast in the first epochs (spelling "
            f"is easy), then slowly; when the validation curve stops falling while the training curve goes on, "
            f"the model is learning the training lines by heart, and early stopping ends the run."),
            "loss.png")
    for name in sorted((f for f in files if f.startswith("attention_layer")), key=lambda f: int(f[15:-4])):
        layer = int(name[15:-4])
        habits = facts["habits"][layer - 1]
        told = "; ".join(f"head {h + 1} spreads its weight, no habit above 25%" if what == "spread out" else
                         f"head {h + 1} looks mostly at {what} ({share:.0%} of its weight)"
                         for h, (what, share) in enumerate(habits))
        section(f"{name}: where layer {layer} looks", (
            f"The attention weights of the {len(habits)} heads of layer {layer} while the model reads "
            f"\u201c{facts['example']}\u201d. Row t is the character that looks, column s where it looks; each "
            f"row adds up to 1, and the grey triangle above the diagonal is the future, which the causal mask "
            f"hides. A bright diagonal just below the main one means 'look at the previous character', a "
            f"bright first column 'look at the start of the line'. In this run: {told}."), name)
    if "positional_encoding.png" in files:
        section("positional_encoding.png: how the model knows where a character stands", (
            "Left, the matrix PE(pos, i) that section 4 adds to every character's vector: one row per "
            "position, one column per dimension. Right, a few columns as curves: dimension 0 is "
            "sin(pos), a turn every 6.3 positions; higher dimensions are slower waves. No two rows are "
            "alike, so every position has a fingerprint, and nearby positions have similar ones. "
            "Nothing here is learned: it is the same picture for every run with the same width."),
            "positional_encoding.png")
    if "embeddings.png" in files:
        section("embeddings.png: what the model learned about each character", (
            "Every character's embedding vector, projected to 2-D along the two directions in which the "
            "vectors differ most (PCA). At the start the vectors are random and the characters are "
            "mixed; at the end characters that play the same role sit together (colours: vowels, "
            "consonants, punctuation, space). In this run the characters whose vectors point most nearly "
            f"the same way as 'a' are {facts['near_a']}, and as '.' are {facts['near_dot']}. Two "
            "directions show only part of the picture: the axis labels say how much of the spread they hold."),
            "embeddings.png")
    epochs = sorted((f for f in files if f.startswith("epoch_")), key=lambda f: int(f[6:-4]))
    if epochs:
        section("epoch_N.png: the network, epoch by epoch", (
            "Left, the architecture as a graph, read from top to bottom; node area = number of "
            "parameters, colour = how much those weights changed since the previous picture "
            "(||ΔW|| / ||W||, log scale): bright early, darker as learning settles. Right, the direct "
            "path head(norm(embedding)): which next character each frequent character makes more (blue) "
            "or less (red) likely, before any layer helps. Files: "
            + ", ".join(f"[{f}]({f})" for f in epochs) + "."), epochs[-1])
    if "evolution.gif" in files:
        section("evolution.gif: the epoch pictures as a film",
                "The same pictures one after the other, same layout and colour scale, the last held "
                "longer: watch the colours cool down and the character links grow.", "evolution.gif")
    texts = [("parameters.txt", "every parameter tensor: its shape, count and role, the formulas that "
                                "give the counts, and statistics of each tensor after training"),
             ("table.txt", "every character the model wrote for the samples: what it saw, its top "
                           "candidates with their probabilities, the random draw and the choice"),
             ("model.pt", "the checkpoint (best epoch): weights, settings and vocabulary; not kept in "
                          "git, use it with `python LLM.py --chat`, `--generate`, `--eval` or `--resume`")]
    # model.pt is not kept in git, so it is named but not linked: every link must lead somewhere
    listed = [(f"- `{name}`" if name == "model.pt" else f"- [{name}]({name})") + f": {what}."
              for name, what in texts if name in files]
    if listed:
        section("Text files", "\n".join(listed))
    return "\n".join(lines).rstrip() + "\n"


# %% ==========================================================================
# 13. CHAT: talking to the model
# =============================================================================
# `python LLM.py --chat` loads the checkpoint and waits: type the start of a proverb,
# the model completes it. Slash commands change the sampling on the fly, and /train
# teaches the model what you typed: it trains a few more epochs on the corpus plus the
# lines of this session (and of the --chat-log file), growing the vocabulary if you used
# new characters (as fine-tuning does, section 9), saves the result beside the checkpoint
# (model-chat.pt: the classroom model is never overwritten) and chats on.
# Type whole proverbs if you want it to learn proverbs: a half line teaches a half line.
#
# The chat log keeps only what you typed, one line each, so it is itself a corpus for a
# later --data or /train. The model's answers are left out on purpose: a model trained on
# its own writing learns its own mistakes back.

CHAT_HELP = """Type the start of a proverb and press Enter; the model completes it (an empty line: from nothing).
  /temp 0.8     sampling temperature: lower is safer, higher is wilder (now {temperature})
  /topk 5       sample among the k most likely characters, 0 = all (now {top_k})
  /topp 0.9     sample among the most likely characters that add up to p, 1 = all (now {top_p})
  /greedy       always take the most likely character: on / off (now {greedy})
  /train [N]    train N more epochs (default 3) on the corpus plus what you typed, then chat on
  /help         this text
  exit, quit    leave (Ctrl-D and Ctrl-C too)"""


def chat_lines(stream, log=print):
    """The lines the user types. At a terminal, input() shows a '> ' prompt and lets the
    user edit the line; piped input is echoed after '> ' so the transcript reads the same."""
    interactive = stream is sys.stdin and stream.isatty()
    while True:
        if interactive:
            try:
                yield input("> ")
            except EOFError:  # Ctrl-D
                log("")
                return
        else:
            line = stream.readline()
            if not line:  # end of the piped input
                return
            line = line.rstrip("\r\n")
            log(f"> {line}")
            yield line


class Chat:
    """The state of one chat session: the model, the sampling settings, what was typed."""

    TYPED_WEIGHT = 10  # /train: each typed line is trained on this many times per epoch

    def __init__(self, cfg: Config, checkpoint: Path, chat_log: str | None, log=print):
        self.device = pick_device(cfg.device)
        self.checkpoint, self.log = checkpoint, log
        self.model, self.tokenizer, self.trained_cfg, payload = load_checkpoint(checkpoint, self.device)
        self.sampling = {"temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p,
                         "greedy": cfg.greedy}
        self.max_chars = cfg.max_chars
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.typed: list[str] = []
        self.chat_log = Path(chat_log) if chat_log else None
        if self.chat_log is not None:
            try:
                with self.chat_log.open("a", encoding="utf-8"):
                    pass
            except OSError as e:
                raise UserError(f"cannot write the chat log {self.chat_log}: {e.strerror}") from None
        self.epoch = payload["epoch"]
        log(f"chatting with {checkpoint} (epoch {payload['epoch']}, validation loss {payload['val_loss']:.3f}, "
            f"{count_parameters(self.model):,} parameters). /help lists the commands; exit leaves.")

    def answer(self, line: str):
        """A line that is not a command: remember it, then complete it."""
        self.typed.append(line)
        if self.chat_log is not None and line.strip():
            with self.chat_log.open("a", encoding="utf-8") as f:
                f.write(line.strip() + EOL)
        unknown = self.tokenizer.unknown(line)
        if unknown:
            self.log(f"  the model never saw {name_chars(unknown)}: it cannot read this line yet; "
                     f"/train teaches it the line")
            return
        s = self.sampling
        self.log("  " + generate(self.model, self.tokenizer, line, self.max_chars, s["temperature"], s["top_k"],
                                 s["top_p"], s["greedy"], self.generator,
                                 stop_at_eol=self.trained_cfg.mode != "stream"))

    def command(self, line: str) -> bool:
        """Run a /command; False when the chat should end."""
        name, *rest = line.split()
        argument = rest[0] if rest else None
        s = self.sampling
        try:
            if name in ("exit", "quit", "/exit", "/quit"):
                return False
            if name == "/help":
                self.log(CHAT_HELP.format(**{**s, "greedy": "on" if s["greedy"] else "off"}))
            elif name == "/temp":
                value = float(argument)
                if not (value > 0 and math.isfinite(value)):
                    raise ValueError
                s["temperature"] = value
                self.log(f"  temperature = {value}")
            elif name == "/topk":
                value = int(argument)
                if value < 0:
                    raise ValueError
                s["top_k"] = value
                self.log(f"  top-k = {value or 'off (all characters)'}")
            elif name == "/topp":
                value = float(argument)
                if not 0 < value <= 1:
                    raise ValueError
                s["top_p"] = value
                self.log(f"  top-p = {value}")
            elif name == "/greedy":
                s["greedy"] = not s["greedy"]
                self.log(f"  greedy = {'on' if s['greedy'] else 'off'}")
            elif name == "/train":
                epochs = int(argument) if argument is not None else 3
                if epochs <= 0:
                    raise ValueError
                self.train(epochs)
            else:
                self.log(f"  unknown command {name}: /help lists the commands")
        except (TypeError, ValueError):  # a missing or impossible value
            self.log(f"  {name} needs a valid value, for example: "
                     + {"/temp": "/temp 0.8", "/topk": "/topk 5", "/topp": "/topp 0.9", "/train": "/train 3"}[name])
        return True

    def train(self, epochs: int):
        """/train: more epochs on the corpus plus the typed lines, then save the model."""
        cfg = self.trained_cfg
        try:
            logged = read_text(self.chat_log).split(EOL) if self.chat_log and self.chat_log.stat().st_size else []
        except UserError as e:  # the log was edited into something unreadable: say so, keep chatting
            self.log(f"  cannot read the chat log: {e}")
            return
        typed = list(dict.fromkeys(line.strip() for line in logged + self.typed if line.strip()))
        if not typed:
            self.log("  nothing typed yet: type some lines (whole proverbs teach best), then /train")
            return
        try:
            corpus = read_text(cfg.data)
        except UserError as e:
            self.log(f"  cannot train: {e}")
            return
        self.model, self.tokenizer, added = extend_vocabulary(self.model, self.tokenizer,
                                                              corpus + "".join(typed), cfg)
        if added:
            self.log(f"  new characters, with new embedding and output rows: {name_chars(added)}")
        # Go on at a third of the first run's peak learning rate: a trained model only needs
        # nudging. Every typed line counts TYPED_WEIGHT times, so that a few lines weigh
        # something next to hundreds of proverbs.
        cfg = replace(cfg, epochs=epochs, lr=cfg.lr / 3, warmup=0, patience=0, snapshot=0, device=str(self.device))
        try:
            data = prepare_data(corpus, cfg, self.tokenizer, extra_train=typed * self.TYPED_WEIGHT)
        except UserError as e:
            self.log(f"  cannot train: {e}")
            return
        yours = encode_lines(typed, self.tokenizer, cfg.context)
        before = [evaluate(self.model, split, cfg.batch_size * 4, self.device, cfg) for split in (yours, data.val)]
        self.log(f"  training {epochs} epoch{'s' * (epochs > 1)} on {cfg.data} plus {len(typed)} typed "
                 f"line{'s' * (len(typed) != 1)}")
        try:
            train(self.model, data, cfg, self.device, log=lambda m: self.log("  " + m.strip()))
        except KeyboardInterrupt:
            self.log("  (training stopped; the chat goes on with the best weights so far)")
        except TrainingDiverged as e:
            self.log(f"  {e}")
        self.model.eval()
        after = [evaluate(self.model, split, cfg.batch_size * 4, self.device, cfg) for split in (yours, data.val)]
        self.log(f"  loss on your lines {before[0]:.3f} -> {after[0]:.3f}; "
                 f"on the validation proverbs {before[1]:.3f} -> {after[1]:.3f}")
        # Save beside the checkpoint, never over it: the model of the classroom run stays.
        target = self.checkpoint if self.checkpoint.stem.endswith("-chat") else \
            self.checkpoint.with_name(self.checkpoint.stem + "-chat" + self.checkpoint.suffix)
        try:
            save_checkpoint(target, self.model, cfg, self.tokenizer,
                            {"epoch": self.epoch + epochs, "val_loss": after[1]})
        except OSError as e:
            self.log(f"  could not save {target}: {e.strerror}")
            return
        self.epoch += epochs
        self.log(f"  saved {target} (python LLM.py --chat --checkpoint {target}); chat on")


def chat(cfg: Config, checkpoint: Path, chat_log: str | None = None, stream=None, log=print) -> None:
    session = Chat(cfg, checkpoint, chat_log, log)
    try:
        for line in chat_lines(stream or sys.stdin, log):
            text = line.strip()
            if text.startswith("/") or text in ("exit", "quit"):
                if not session.command(text):
                    break
            else:
                session.answer(line)
    except KeyboardInterrupt:  # Ctrl-C while waiting for a line
        log("")
    log("bye")


# %% ==========================================================================
# 14. COMMAND LINE AND THE WHOLE RUN
# =============================================================================
# Every Config field becomes a flag (d_model -> --d-model), with the field's explanation
# as its --help text. Errors the user can fix are printed as one line, `error: ...`, and
# the program exits with code 2, never with a traceback.
#
#   python LLM.py                       train from scratch, write outputs/
#   python LLM.py --resume              go on training outputs/model.pt from its epoch
#   python LLM.py --init-from M --data F  fine-tune the model M on the text F
#   python LLM.py --eval                test-split loss, perplexity, bits per character
#   python LLM.py --generate "No hay"   complete a prompt with the trained model
#   python LLM.py --chat                talk to it


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the whole usage; we say one line
        raise UserError(f"{message} (see python LLM.py --help)")


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The flags. With defaults=False, flags that were not typed stay out of the result:
    that is how --resume tells what the user asked to change."""
    parser = OneLineErrorParser(
        prog="python LLM.py", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        argument_default=None if defaults else argparse.SUPPRESS,
        description="Train a small character-level Transformer on a text file (Spanish proverbs by "
                    "default) and write what it learned to an output folder.")
    use = parser.add_argument_group("what to do (default: train a new model)")
    action = use.add_mutually_exclusive_group()
    action.add_argument("--resume", action="store_true",
                        help="go on training the checkpoint from the epoch it holds (raise --epochs to train longer)")
    action.add_argument("--init-from", metavar="FILE",
                        help="fine-tune: start from this checkpoint's weights and train on --data")
    action.add_argument("--eval", action="store_true",
                        help="report loss, perplexity and bits per character of the checkpoint on the test split")
    action.add_argument("--generate", metavar="PROMPT",
                        help="load the checkpoint and complete PROMPT, with the sampling settings below")
    action.add_argument("--chat", action="store_true",
                        help="talk to the checkpoint: type the start of a proverb, it completes it")
    use.add_argument("--samples", type=int, default=1 if defaults else argparse.SUPPRESS, metavar="N",
                     help="how many completions --generate prints")
    use.add_argument("--checkpoint", metavar="FILE",
                     help="checkpoint to load (default: model.pt in the --out folder)")
    use.add_argument("--chat-log", metavar="FILE", help="--chat appends every line you type to this file")
    for f in fields(Config):
        flag = f.metadata["flag"] or "--" + f.name.replace("_", "-")
        default = f.default if defaults else argparse.SUPPRESS
        if f.type == "bool":
            parser.add_argument(flag, dest=f.name, action="store_true", help=f.metadata["help"],
                                **({} if defaults else {"default": argparse.SUPPRESS}))
        elif f.type == "tuple":
            parser.add_argument(flag, dest=f.name, nargs="*", default=default, metavar="TEXT",
                                help=f.metadata["help"])
        else:
            kind = {"int": int, "float": float, "str": str}[f.type]
            parser.add_argument(flag, dest=f.name, type=kind, default=default,
                                metavar=f.name.upper(), help=f.metadata["help"])
    return parser


def prepare_output_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the output folder {out}: {e.strerror or e}") from None
    return out


def describe_data(data: Data, cfg: Config, log=print):
    """The data lines of the run: mode, sizes, splits, one teacher-forcing example."""
    test_size = len(data.test) if data.test is not None else 0
    log(f"data: {cfg.data}: {data.n_chars:,} characters, vocabulary of {data.tokenizer.vocab_size} characters")
    if data.mode == "line":
        log(f"      line mode ({data.reason}): {len(data.train)} lines to train on, {len(data.val)} for "
            f"validation, {test_size} for the final test")
        if data.truncated:
            log(f"      note: {data.truncated} lines are longer than the context ({cfg.context}) and were cut")
        inputs = data.train.inputs[0, :data.train.lengths[0]]
        targets = data.train.targets[0, :data.train.lengths[0]]
    else:
        test_tokens = data.test.n_tokens + 1 if data.test is not None else 0
        log(f"      stream mode ({data.reason}): blocks of {data.train.n_tokens + 1:,} characters to train on, "
            f"{data.val.n_tokens + 1:,} for validation, {test_tokens:,} for the final test; "
            f"windows of {cfg.context}")
        inputs, targets = (t[0, :min(cfg.context, 60)] for t in data.train.windows(0)[0])
    log("teacher forcing, one real example (the model reads the input and must write the target):")
    log(f"      input  = tokens[:-1] = {show(data.tokenizer.decode(inputs))}")
    log(f"      target = tokens[1:]  = {show(data.tokenizer.decode(targets))}")


def run(cfg: Config, log=print, resume: Path | None = None, init_from: Path | None = None) -> list[dict]:
    """The whole classroom run: data, model, training, pictures, reports, samples.
    With `resume` training goes on from that checkpoint; with `init_from` it fine-tunes it.
    Started by torchrun, every process trains and only rank 0 prints and writes.
    Returns the history: one record per epoch."""
    ranks, device = start_distributed(pick_device(cfg.device))
    if not ranks.main:
        log = lambda *args: None  # noqa: E731  (the other ranks stay silent)
    out = prepare_output_dir(cfg.out) if ranks.main else Path(cfg.out)
    text = read_text(cfg.data)
    tokenizer, training_state = None, None
    if resume is not None or init_from is not None:
        model, tokenizer, _, payload = load_checkpoint(resume or init_from, device)
    if resume is not None:
        unknown = tokenizer.unknown(text)
        if unknown:
            raise UserError(f"{cfg.data} has characters the checkpoint never saw ({name_chars(unknown)}): "
                            f"to train on a new text use --init-from {resume} --data {cfg.data}")
        training_state = payload.get("training")
        if not training_state:
            raise UserError(f"{resume} holds no training state to resume from")
        if payload["epoch"] >= cfg.epochs:
            raise UserError(f"{resume} already holds epoch {payload['epoch']} of {cfg.epochs}: to train longer "
                            f"ask for more, for example --resume --epochs {payload['epoch'] + 10}")
        log(f"resuming {resume} from the end of epoch {payload['epoch']} (step {training_state['step']}, "
            f"validation loss {payload['val_loss']:.3f})")
    elif init_from is not None:
        old_size = tokenizer.vocab_size
        model, tokenizer, added = extend_vocabulary(model, tokenizer, text, cfg)
        log(f"fine-tuning {init_from} (epoch {payload['epoch']}, validation loss {payload['val_loss']:.3f}) on "
            f"{cfg.data}: the {old_size} known characters keep their weights; "
            + (f"{len(added)} new ones get new embedding and output rows: {name_chars(added)}" if added
               else "no new characters"))
    data = prepare_data(text, cfg, tokenizer)
    cfg = replace(cfg, mode=data.mode)  # the checkpoint records the mode auto chose
    for prompt in cfg.prompts:
        data.tokenizer.encode(prompt)  # fail now, not after training, on a prompt with unknown characters
    describe_data(data, cfg, log)
    if resume is None and init_from is None:
        torch.manual_seed(cfg.seed)
        model = TransformerLM(data.tokenizer.vocab_size, cfg).to(device)
    V, C, F_, N = data.tokenizer.vocab_size, cfg.d_model, cfg.d_ff, cfg.n_layers
    log(f"model: {count_parameters(model):,} parameters = V*C + N*(4*C^2 + 2*C*F + F + 9*C) + 2*C + C*V + V "
        f"with V={V}, C={C}, F={F_}, N={N} (details: {out / 'parameters.txt'})")
    log(f"device: {device}, attention path: {cfg.attention}, precision: "
        f"{'bf16 autocast' if uses_bf16(cfg, device) else 'fp32'}, optimizer: {cfg.optimizer}"
        + (f"; {ranks.world} processes (DistributedDataParallel), {ranks.world} x {cfg.batch_size} "
           f"sequences per step" if ranks.world > 1 else ""))

    pictures = EpochPictures(model, data.tokenizer, data.train_text, cfg) if cfg.snapshot and ranks.main else None
    initial_embedding = model.token_embedding.weight.detach().float().cpu().clone()  # (V, C), for embeddings.png
    drawn = []

    def on_epoch_end(epoch, record):
        if pictures is not None and epoch % cfg.snapshot == 0:
            drawn.append(out / f"epoch_{epoch}.png")
            pictures.draw(model, epoch, record, drawn[-1])

    checkpoint = out / "model.pt" if ranks.main else None
    history = train(model, data, cfg, device, checkpoint, training_state, on_epoch_end, log, ranks=ranks)
    best = min(history, key=lambda r: r["val_loss"])
    if ranks.world > 1:
        if not same_weights_everywhere(model, ranks):
            raise UserError(f"the {ranks.world} processes ended with different weights")
        log(f"the {ranks.world} processes end with identical weights (compared element by element)")
        if not ranks.main:
            return history
    test_loss = None
    if data.test is not None:
        test_loss = evaluate(model, data.test, cfg.batch_size * 4, device, cfg)
        log(f"test split, never seen in training: {perplexity_report(test_loss)}")

    (out / "parameters.txt").write_text(parameter_report(model, cfg, data.tokenizer.vocab_size), encoding="utf-8")
    generator = torch.Generator().manual_seed(cfg.seed)
    samples = []
    log("samples:")
    for prompt in cfg.prompts:
        steps: list[Step] = []
        completion = generate(model, data.tokenizer, prompt, cfg.max_chars, cfg.temperature, cfg.top_k,
                              cfg.top_p, cfg.greedy, generator, steps, stop_at_eol=data.mode == "line")
        samples.append((prompt, completion, steps))
        log("      " + completion.replace(EOL, EOL + "      "))  # stream mode writes several lines
    known, written = corpus_word_share(samples, text_lines(text[:5_000_000]))  # a long text: its first 5 MB
    log(f"      {known} of the {written} words written are words of the corpus ({known / max(written, 1):.0%})")
    (out / "table.txt").write_text(sampling_table(samples, cfg), encoding="utf-8")

    started = time.perf_counter()
    example = pick_example(data.train_text)
    chars, weights = attention_maps(model, data.tokenizer, example)  # for the pictures and the gallery
    files = draw_pictures(model, data, cfg, history, drawn, pictures, initial_embedding, test_loss, out,
                          chars, weights)
    files += [p.name for p in drawn] + ["parameters.txt", "table.txt", "model.pt"]
    facts = gallery_facts(model, data, cfg, history, test_loss, example, chars, weights)
    (out / "README.md").write_text(gallery(files, facts), encoding="utf-8")
    pictures_seconds = time.perf_counter() - started
    log(f"wrote {out}/: model.pt (epoch {best['epoch']}, best validation loss {best['val_loss']:.3f}), "
        f"parameters.txt, table.txt" + (f", {len(drawn)} epoch_<N>.png" if drawn else "")
        + "".join(f", {name}" for name in files if not name.startswith("epoch_") and name.endswith((".png", ".gif")))
        + f" and README.md, the gallery ({pictures_seconds:.1f} s for the pictures after training)")
    return history


def draw_pictures(model, data: Data, cfg: Config, history: list[dict], drawn: list[Path], pictures,
                  initial_embedding: torch.Tensor, test_loss: float | None, out: Path,
                  chars: list[str], weights: list[torch.Tensor]) -> list[str]:
    """The pictures of section 12 that cfg.pictures asks for; returns the file names."""
    files = []
    if "loss" in cfg.pictures:
        draw_loss(history, [int(p.stem[6:]) for p in drawn], out / "loss.png", test_loss)
        files.append("loss.png")
    if "attention" in cfg.pictures:
        for layer, layer_weights in enumerate(weights, 1):
            draw_attention(chars, layer_weights, layer, out / f"attention_layer{layer}.png")
            files.append(f"attention_layer{layer}.png")
    if "positions" in cfg.pictures:
        draw_positional_encoding(model.positional_encoding.cpu(), out / "positional_encoding.png")
        files.append("positional_encoding.png")
    if "embeddings" in cfg.pictures:
        draw_embeddings(data.tokenizer, initial_embedding, model.token_embedding.weight, out / "embeddings.png")
        files.append("embeddings.png")
    if "evolution" in cfg.pictures and pictures is not None and pictures.frames:
        write_evolution_gif(pictures.frames, out / "evolution.gif")
        files.append("evolution.gif")
    return files


def gallery_facts(model, data: Data, cfg: Config, history: list[dict], test_loss: float | None,
                  example: str, chars: list[str], weights: list[torch.Tensor]) -> dict:
    """The numbers outputs/README.md quotes, read from this run."""
    best = min(history, key=lambda r: r["val_loss"])
    table = model.token_embedding.weight
    near = lambda c: (", ".join(f"'{show(n)}'" for n in nearest_characters(data.tokenizer, table, c))
                      if c in data.tokenizer.ids else "(not in this text)")
    return {"data": f"`{Path(cfg.data).name}`",
            "summary": (f"{data.n_chars:,} characters read in {data.mode} mode, a model of "
                        f"{count_parameters(model):,} parameters, {len(history)} epochs"),
            "best_val": best["val_loss"], "best_epoch": best["epoch"], "test_loss": test_loss,
            "example": example, "habits": [head_habits(w, chars) for w in weights],
            "near_a": near("a"), "near_dot": near(".")}


def evaluate_checkpoint(cfg: Config, checkpoint: Path, data_file: str | None, log=print):
    """--eval: the checkpoint's loss on the test split of its data (or of --data)."""
    device = pick_device(cfg.device)
    model, tokenizer, trained_cfg, payload = load_checkpoint(checkpoint, device)
    trained_cfg = replace(trained_cfg, data=data_file or trained_cfg.data)
    if trained_cfg.test_fraction == 0:
        raise UserError(f"{checkpoint} was trained with --test-fraction 0: it has no test split")
    text = read_text(trained_cfg.data)
    unknown = tokenizer.unknown(text)
    if unknown:
        raise UserError(f"{trained_cfg.data} has characters the model never saw: {name_chars(unknown)}")
    data = prepare_data(text, trained_cfg, tokenizer)
    log(f"{checkpoint}: epoch {payload['epoch']}, {count_parameters(model):,} parameters; data {trained_cfg.data} "
        f"in {data.mode} mode, split with seed {trained_cfg.seed}")
    for name, split in (("validation", data.val), ("test", data.test)):
        loss = evaluate(model, split, cfg.batch_size * 4, device, trained_cfg)
        log(f"{name:>10} ({split.n_tokens:,} characters): {perplexity_report(loss)}")


def generate_from_checkpoint(cfg: Config, prompt: str, samples: int, checkpoint: Path, log=print):
    """--generate: load the checkpoint and print completions of prompt; no training."""
    if samples <= 0:
        raise UserError(f"--samples must be a positive whole number, got {samples}")
    model, tokenizer, trained_cfg, _ = load_checkpoint(checkpoint, pick_device(cfg.device))
    tokenizer.encode(prompt)  # a clear error before anything else
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(samples):
        log(generate(model, tokenizer, prompt, cfg.max_chars, cfg.temperature, cfg.top_k, cfg.top_p,
                     cfg.greedy, generator, stop_at_eol=trained_cfg.mode != "stream"))


RESUME_FIXED = ("data", "mode", "val_fraction", "test_fraction", "seed", "optimizer")  # the split and the optimizer


def config_from_args(args: argparse.Namespace) -> Config:
    values = vars(args)
    return Config(**{f.name: (tuple(values[f.name]) if f.type == "tuple" else values[f.name]) for f in fields(Config)})


def config_for_checkpoint(typed: Config, explicit: set, saved: Config, resume: bool) -> Config:
    """--resume: the checkpoint's settings, changed where the user typed a flag.
    --init-from: the typed settings, with the model's shape taken from the checkpoint.
    Either way, settings the checkpoint fixes cannot be changed."""
    fixed = SHAPE_FIELDS + (RESUME_FIXED if resume else ())
    for name in fixed:
        if name in explicit and getattr(typed, name) != getattr(saved, name):
            raise UserError(f"{flag_of(name)} cannot change when {'resuming' if resume else 'fine-tuning'}: the "
                            f"checkpoint has {getattr(saved, name)}"
                            + ("; to train on another text use --init-from" if name == "data" else ""))
    if resume:
        return replace(saved, **{name: getattr(typed, name) for name in explicit if name not in fixed})
    return replace(typed, **{name: getattr(saved, name) for name in SHAPE_FIELDS})


def main(argv=None) -> int:
    import matplotlib
    matplotlib.use("Agg")  # draw into files only: never open a window, never block
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
        explicit = set(vars(build_parser(defaults=False).parse_args(argv))) & {f.name for f in fields(Config)}
        cfg = validate(config_from_args(args))
        checkpoint = Path(args.checkpoint or Path(cfg.out) / "model.pt")
        if args.chat_log and not args.chat:
            raise UserError("--chat-log works only with --chat")
        if args.resume or args.init_from:
            source = checkpoint if args.resume else Path(args.init_from)
            _, _, saved, _ = load_checkpoint(source, "cpu")
            cfg = validate(config_for_checkpoint(cfg, explicit, saved, args.resume))
            run(cfg, resume=source if args.resume else None, init_from=None if args.resume else source)
            end_distributed()
        elif args.eval:
            evaluate_checkpoint(cfg, checkpoint, cfg.data if "data" in explicit else None)
        elif args.generate is not None:
            generate_from_checkpoint(cfg, args.generate, args.samples, checkpoint)
        elif args.chat:
            chat(cfg, checkpoint, args.chat_log)
        else:
            run(cfg)
            end_distributed()
    except UserError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
