#!/usr/bin/env python3
# %% [markdown]
# # LLM.py: a small Transformer that learns Spanish proverbs
#
# This file is a book in two parts. **Part I, the story**, is what a class reads, in the order
# the data flows, from the settings to sampling; each section opens with a few sentences and its
# formula, and its cells alone train the classroom model for an epoch and let it write. **Part
# II**, after the appendix banner, holds the machinery a real program needs and a first reading
# does not (checks, devices, long texts, several processes, checkpoints, pictures, chat, the
# command line); the story never calls it, it plugs into the story's hooks (section 14).
#
# `python LLM.py` trains the classroom model on `refranes.txt` in well under a minute on a laptop
# CPU and writes everything to `outputs/`; `--help` lists every setting. As a notebook (Jupyter with
# jupytext, or VS Code), *Run All* does the same. Importing it runs nothing. To write the pieces
# yourself: `python LLM.py --workbook DIR` copies this book with fifteen of its functions left for
# you, and `python LLM.py --check` there says, against PyTorch, which are right. Shape letters:
#
# | letter | meaning |
# |---|---|
# | B | batch size: sequences processed together |
# | T | sequence length: the tokens (characters, or section 3's pieces) in one sequence |
# | C | model width $d_{model}$: the numbers that represent one token at one position |
# | H | attention heads per layer; $D = C / H$ is the width of one head |
# | F | hidden width of the feed-forward block, $d_{ff}$ |
# | V | vocabulary size: the distinct tokens the model knows (characters, or pieces) |
# %%
"""LLM.py: a small Transformer that learns Spanish proverbs, character by character (or in word
pieces), in one file (python LLM.py --help)."""
from __future__ import annotations

import contextlib
import math
import random
import re
import sys
import time
import unicodedata
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from pathlib import Path

try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
except (ImportError, ValueError, OSError) as error:  # no PyTorch, or a TORCH_LOGS it refuses
    fix = ("README.md says how to install it" if isinstance(error, ImportError)
           else "check the environment's TORCH_ settings")
    reason = str(error).strip().splitlines()[0]
    print(f"error: PyTorch cannot be loaded ({reason}): {fix}", file=sys.stderr)
    raise SystemExit(2) from None


class UserError(Exception):
    """A problem with what the user gave (a file, a setting, a prompt): one line `error: ...`,
    exit code 2."""


# %% [markdown]
# ## 1. The settings
#
# Every number the story reads lives in one dataclass, passed explicitly to whoever needs it: no
# hidden globals. Each field carries its explanation, which `python LLM.py --help` prints, and a
# flag (`d_model`: `--d-model`). The defaults are the classroom run: three passes over the 4,887
# proverbs of `refranes.txt`, seconds on a laptop CPU, enough to learn to spell most Spanish
# words. The model has about 110 thousand parameters (`outputs/parameters.txt` counts them).
# The run's own settings (the output folder, the device, pictures, the chat) and the presets
# (`--preset longer`, a bigger model to train before class) live in Part II.

# %%
def setting(default, help: str, flag: str | None = None):
    """A Config field with its explanation (shown by --help) and, optionally, its flag name."""
    return field(default=default, metadata={"help": help, "flag": flag})


@dataclass
class Config:
    # --- the data ---
    data: str = setting("refranes.txt", "text to learn from, UTF-8: one sample a line, or any text")
    val_fraction: float = setting(0.1, "share held out to measure the validation loss every epoch")
    test_fraction: float = setting(0.1, "share held out for the final test report only (0 = none)")
    seed: int = setting(1337, "random seed: the same seed on the same machine, the same outputs")
    # --- the model's shape ---
    d_model: int = setting(64, "C: width of the vector for one character at one position")
    n_heads: int = setting(4, "H: attention heads per layer (they divide d_model)", "--heads")
    n_layers: int = setting(2, "N: number of stacked encoder layers", "--layers")
    d_ff: int = setting(256, "F: hidden width of the feed-forward block (4 x d_model)")
    dropout: float = setting(0.0, "probability of zeroing an activation while training (0 = off)")
    context: int = setting(80, "the most tokens the model looks at at once (longer lines are cut)")
    # --- training ---
    batch_size: int = setting(16, "B: sequences (lines or windows) per optimizer step")
    eval_batch: int = setting(64, "sequences per batch when a split is measured (no gradients)")
    optimizer: str = setting("adam", "adam: the paper's; adamw: Adam with decoupled weight decay")
    lr: float = setting(4e-3, "peak learning rate of the optimizer")
    lr_floor: float = setting(0.1, "the learning rate ends at this fraction of --lr")
    warmup: int = setting(10, "optimizer steps over which the learning rate rises from 0 to --lr")
    warmup_cap: float = setting(0.2, "the warm-up takes at most this share of all the steps")
    beta1: float = setting(0.9, "Adam: how slowly the running average of the gradient forgets")
    beta2: float = setting(0.999, "Adam: the same for the average of the squared gradient")
    eps: float = setting(1e-8, "Adam: added to the denominator, so that 0 never divides")
    weight_decay: float = setting(0.1, "adamw only: how strongly matrices are pulled towards 0")
    clip: float = setting(1.0, "longest gradient: longer ones are scaled down to it (0 = never)")
    epochs: int = setting(3, "passes over the training data (early stopping may end sooner)")
    patience: int = setting(5, "stop after this many epochs with no better val loss (0 = never)")
    # --- sampling at the end of training ---
    prompts: tuple = setting(("", "No hay", "Más vale", "Quien", "El que", "Cada"),
                             "beginnings to complete at the end ('' = from nothing)")
    temperature: float = setting(0.4, "divides the logits before softmax: < 1 sharper, > 1 flatter")
    top_k: int = setting(3, "sample only among the k most likely characters (0 = all)")
    top_p: float = setting(1.0, "sample among the likeliest characters adding up to p (1 = all)")
    greedy: bool = setting(False, "always take the most likely character instead of sampling")
    max_chars: int = setting(120, "stop a sample after this many new characters if no ⏎ came")


# %% [markdown]
# ## 2. The proverbs, as numbers
#
# The model reads numbers, not letters. A **tokenizer** cuts a text into tokens and gives every
# distinct token an id; here one token is one character. Its vocabulary is the corpus's
# characters, sorted, plus the end-of-line character ⏎ (`'\n'`), which sorts first and means
# "this proverb is over" after a proverb and "a new proverb starts here" before one. For
# `refranes.txt` that gives ⏎ → 0, `' '` → 1, `','` → 6, ..., `'a'` → 38. The text is
# read in Unicode NFC form, so that `ñ` is one character even when a file spells it `n` +
# combining tilde.
# The rest of the file asks a tokenizer only what `CharTokenizer` answers, so section 3's word
# pieces plug in beside it.
#
# $$\text{encode}(\texttt{"sal"}) = [\,\mathrm{id}(s), \mathrm{id}(a), \mathrm{id}(l)\,], \qquad
#   \text{decode}(\text{encode}(x)) = x$$
# %%
EOL = "\n"  # end-of-line character: ends a proverb, and starts the next one
IGNORE = -100  # target value that cross-entropy skips (padding)


def text_lines(text: str) -> list[str]:
    """The non-blank lines of a text, stripped: one proverb each."""
    return [line.strip() for line in text.split(EOL) if line.strip()]


def show(text: str) -> str:
    """Make invisible characters visible: end of line ⏎, space ␣, tab ⇥ (in tables)."""
    return text.replace(EOL, "⏎").replace(" ", "␣").replace("\t", "⇥")


def name_chars(chars) -> str:
    """'ç' (LATIN SMALL LETTER C WITH CEDILLA), ... : characters named so nobody has to guess."""
    return ", ".join(f"{show(c)!r} ({unicodedata.name(c, 'U+%04X' % ord(c))})" for c in chars)


class UnknownCharacterError(UserError):
    """Raised when a text contains characters outside the vocabulary."""


# %%
class CharTokenizer:
    """Characters <-> integer ids, the vocabulary built from the corpus."""
    kind, unit = "char", "character"  # its name in a checkpoint; what one token is, in words
    merges, counts = {}, ()  # section 3's (a, b) -> (rank, id of ab), and each pair's count: none

    def __init__(self, chars):
        self.chars = sorted(set(chars) | {EOL})  # id -> character; sorted, so ids are reproducible
        self.ids = {c: i for i, c in enumerate(self.chars)}  # character -> id

    @classmethod
    def learn(cls, text: str, train_lines: list[str], cfg: Config) -> "CharTokenizer":
        return cls(text)  # the text's characters
    @property
    def eol_id(self) -> int: return self.ids[EOL]
    @property
    def vocab_size(self) -> int: return len(self.chars)
    def token_text(self, i: int) -> str: return self.chars[int(i)]  # token i's text, for tables
    def token_id(self, text: str) -> int | None: return self.ids.get(text)  # the token `text`
    def alphabet(self) -> list[str]: return list(self.chars)  # the characters it knows
    def unknown(self, text: str) -> list[str]: return sorted(set(text) - self.ids.keys())
    def decode(self, ids) -> str: return "".join(self.chars[int(i)] for i in ids)

    def encode(self, text: str) -> list[int]:
        unknown = self.unknown(text)
        if unknown:
            known = "".join(show(c) for c in self.chars)
            raise UnknownCharacterError(f"the model never saw these characters: "
                                        f"{name_chars(unknown)}; it knows only: {known}")
        return [self.ids[c] for c in text]

# %% [markdown]
# ## 3. Word pieces: byte-pair encoding
#
# One token per character makes long sequences and leaves the model to spell every word letter
# by letter. **Byte-pair encoding** (Sennrich et al., 2016) learns bigger tokens from the corpus:
# count every pair of adjacent tokens in the training lines (never the held-out ones), merge the
# most frequent pair $(a, b)$ into one new token $ab$, repeat until there are `vocab_size` tokens:
#
# $$(a, b) = \arg\max_{(x,\,y)} \mathrm{count}(x\,y), \qquad x\,y \rightarrow ab \text{ everywhere},
#   \qquad V \leftarrow V + 1$$
#
# Pairs are counted inside **words** only (a word takes the space before it: `No`, `␣hay`,
# `,`), as GPT-2 does, so a piece never spans two words nor the ⏎ between proverbs. Ties go to
# the smaller ids; a pair seen once is never merged. To **encode**, a word starts as characters
# and takes the merges in the order they were learned; to **decode**, the pieces are joined. The
# base symbols are characters, so `ñ` is always whole (GPT-2 starts from the 256 bytes of UTF-8:
# any text can be encoded, but `ñ` is two bytes to merge back into one).
#
# What it costs and buys: at 512 pieces a piece of the proverbs is about 2.4 characters, so a
# context of 80 tokens holds about 190 characters and an epoch has fewer steps; but V grows from
# 73 to 512, and with it the embedding table and the head, and each piece is seen less often. In
# bits per character (section 10) the loss compares with the character model's.
#
# `learn_merges` below is the formula, step by step: it counts every pair again after every
# merge. `--tokenizer bpe` runs Part II's `BPETokenizer`, which learns the very same merges
# faster (it counts again only the words a merge changed); a test proves the two equal.

# %%
WORD = re.compile(r" ?\w+| ?[^\w\s]+|\s")  # a word with the space before it, signs, one blank


def merge_pair(ids: list[int], pair: tuple[int, int], new: int) -> list[int]:
    """ids with every (a, b), left to right, replaced by the one id `new`."""
    out, i = [], 0
    while i < len(ids):
        joined = tuple(ids[i:i + 2]) == pair
        out.append(new if joined else ids[i])
        i += 2 if joined else 1
    return out


def learn_merges(train_lines: list[str], chars: list[str], vocab_size: int) -> list[tuple]:
    """The merges (left piece, right piece, how often the pair was seen), step by step."""
    pieces = list(chars)  # id -> text: the characters, then each merged piece
    words = Counter(word for line in train_lines for word in WORD.findall(line))  # word -> count
    spelled = {word: [pieces.index(c) for c in word] for word in words}  # word -> its ids now
    merges = []
    while len(pieces) < vocab_size:
        pairs = Counter()
        for word, n in words.items():
            for pair in zip(spelled[word], spelled[word][1:]):
                pairs[pair] += n
        if not pairs or max(pairs.values()) < 2:  # a pair seen once: it would learn a word by heart
            break
        top = max(pairs.values())
        a, b = min(pair for pair, n in pairs.items() if n == top)  # ties: the smaller ids
        if pieces[a] + pieces[b] not in pieces:  # two merges may spell one piece: it keeps one id
            pieces.append(pieces[a] + pieces[b])
        merges.append((pieces[a], pieces[b], top))
        new = pieces.index(pieces[a] + pieces[b])
        spelled = {word: merge_pair(ids, (a, b), new) for word, ids in spelled.items()}
    return merges

# %% [markdown]
# ## 4. Teacher forcing, padding, batches
#
# **Teacher forcing.** For one proverb the token sequence is `⏎ N o ␣ h a y … . ⏎`, and
#
# $$\text{input} = \text{tokens}[0 : L-1], \qquad \text{target} = \text{tokens}[1 : L]$$
#
# so at every position $t$ the model sees $\text{input}_0 \dots \text{input}_t$ and must predict
# $\text{target}_t$, the next character; all positions at once, the causal mask of section 7
# stopping position $t$ from peeking at later inputs.
#
# **Padding and truncation.** A batch is one rectangular tensor (B, T), so shorter lines are
# padded at the end: inputs with ⏎ (any id would do), targets with −100, the value the loss is
# told to ignore. Behind the causal mask the padding never changes a real position's prediction,
# and it adds nothing to the loss (the tests check both). Lines longer than the context are cut
# (58 of the 4,887 in `refranes.txt`, 1%); batches group lines of similar length. **Train,
# validation, test**: whole proverbs are held out with the seed. The validation lines are
# measured after every epoch, to pick the best epoch and stop early; the test lines once, at the
# end: an honest score on text the whole procedure never looked at.

# %%
def split_lines(lines: list[str], val_fraction: float, seed: int,
                test_fraction: float = 0.0) -> tuple[list[str], list[str], list[str]]:
    """Shuffle whole lines with the seed: val_fraction of them validate, test_fraction test,
    the rest train."""
    order = list(range(len(lines)))
    random.Random(seed).shuffle(order)
    n_val = max(1, round(len(lines) * val_fraction))  # at least one line in every split
    n_test = max(1, round(len(lines) * test_fraction)) if test_fraction > 0 else 0
    if n_val + n_test >= len(lines):
        raise UserError(f"{len(lines)} lines are too few to hold out {n_val} for validation and "
                        f"{n_test} for test and still train on some: give more lines")
    pick = lambda rows: [lines[i] for i in rows]  # noqa: E731
    return pick(order[n_val + n_test:]), pick(order[:n_val]), pick(order[n_val:n_val + n_test])


@dataclass
class LineSplit:
    """Every line of one split, encoded once and padded into two tensors."""
    inputs: torch.Tensor   # (N, L) token ids; N lines, L = the longest line + 1
    targets: torch.Tensor  # (N, L) next-token ids, IGNORE on the padding
    lengths: torch.Tensor  # (N,)  real (unpadded) length of each line
    n_chars: int = 0  # the characters the real targets stand for (n_tokens, for characters)

    def __len__(self) -> int: return len(self.lengths)  # lines
    @property
    def n_tokens(self) -> int: return int(self.lengths.sum())  # real (unpadded) targets

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """Yield (inputs, targets), each (B, T), cut to the batch's longest line. With a
        generator (training): shuffled, sorted by length (stably), cut into batches, the batches
        shuffled. Without: the stored order."""
        if generator is None:
            chunks = list(torch.arange(len(self)).split(batch_size))
        else:
            order = torch.randperm(len(self), generator=generator)  # (N,)
            order = order[self.lengths[order].argsort(stable=True)]  # (N,) shortest first
            chunks = list(order.split(batch_size))
            chunks = [chunks[i] for i in torch.randperm(len(chunks), generator=generator)]
        for rows in chunks:  # rows: (B,)
            T = int(self.lengths[rows].max())
            yield self.inputs[rows, :T], self.targets[rows, :T]  # (N, L) -> (B, T)


# %%
def encode_lines(lines: list[str], tokenizer: CharTokenizer, context: int) -> LineSplit:
    """⏎ + line + ⏎ per line, cut to context + 1 tokens, then input = [:-1], target = [1:]."""
    sequences = [[tokenizer.eol_id] + tokenizer.encode(line) + [tokenizer.eol_id] for line in lines]
    sequences = [s[:context + 1] for s in sequences]  # lines longer than the context are cut
    lengths = torch.tensor([len(s) - 1 for s in sequences])  # (N,)
    L = int(lengths.max())
    inputs = torch.full((len(lines), L), tokenizer.eol_id, dtype=torch.long)  # (N, L), ⏎ padding
    targets = torch.full((len(lines), L), IGNORE, dtype=torch.long)  # (N, L), padded with IGNORE
    for row, s in enumerate(sequences):
        inputs[row, :len(s) - 1] = torch.tensor(s[:-1])  # tokens[:-1]
        targets[row, :len(s) - 1] = torch.tensor(s[1:])  # tokens[1:]
    n_chars = sum(len(tokenizer.decode(s[1:])) for s in sequences)
    return LineSplit(inputs, targets, lengths, n_chars)


@dataclass
class Data:
    """A corpus ready to train on: its tokenizer and its three splits."""
    mode: str  # "line": one proverb per sample (Part II adds "stream": windows of a long text)
    reason: str  # why this mode, in words
    tokenizer: CharTokenizer
    train_split: LineSplit  # each split yields batches through .batches(batch_size, generator)
    val_split: LineSplit
    test_split: LineSplit | None  # None when test_fraction == 0
    train_text: list[str]  # the training lines
    n_chars: int  # characters in the whole corpus
    truncated: int = 0  # lines longer than the context, cut
    item: str = "proverb"  # what one line is: a proverb here (Part II says "line" for other texts)
    held_out_text: list[str] = field(default_factory=list)  # the validation and test lines


def prepare_data(text: str, cfg: Config, tokenizer: CharTokenizer | None = None,
                 extra_train=()) -> Data:
    """One proverb per line -> train / validation / test splits; `extra_train` lines join the
    training split only."""
    lines = text_lines(text)
    train_lines, val_lines, test_lines = split_lines(lines, cfg.val_fraction, cfg.seed,
                                                     cfg.test_fraction)
    train_lines = train_lines + list(extra_train)
    tokenizer = tokenizer or CharTokenizer.learn(text, train_lines, cfg)
    encode = lambda rows: encode_lines(rows, tokenizer, cfg.context)  # noqa: E731
    truncated = sum(len(tokenizer.encode(line)) + 1 > cfg.context for line in lines)
    return Data("line", "one proverb per line", tokenizer, encode(train_lines), encode(val_lines),
                encode(test_lines) if test_lines else None, train_lines, len(text),
                truncated=truncated, held_out_text=val_lines + test_lines)


# %% [markdown]
# ## 5. Embeddings: a learned vector for every character
#
# An embedding is a lookup table $E$ with one row of C numbers per character: id 38 (`a`) → row
# 38. The rows start random, and training moves characters that behave alike to similar vectors.
# As in the Transformer paper (Vaswani et al., 2017, §3.4) the vectors are scaled by $\sqrt{C}$:
#
# $$x_t = E[\mathrm{id}_t]\,\sqrt{C}$$
#
# The table starts with standard deviation $1/\sqrt{C}$, so after the scaling every number is
# about 1 in size, as are the positional encoding's added next: neither drowns the other.

# %%
class ScaledEmbedding(nn.Embedding):
    def __init__(self, vocab_size: int, d_model: int):
        super().__init__(vocab_size, d_model)
        nn.init.normal_(self.weight, std=d_model ** -0.5)

    def forward(self, idx: torch.Tensor) -> torch.Tensor:
        """(B, T) ids -> (B, T, C): each id's row of the table, times sqrt(C)."""
        return super().forward(idx) * math.sqrt(self.embedding_dim)  # (B, T) -> (B, T, C)


# %% [markdown]
# ## 6. Positional encoding: where each character stands
#
# Attention by itself does not know the order of its inputs: "sal" and "las" would look the
# same. So each character's vector gets a vector added that depends only on its position (§3.5):
#
# $$PE_{(pos,\,2i)} = \sin\!\left(\frac{pos}{10000^{2i/C}}\right), \qquad
#   PE_{(pos,\,2i+1)} = \cos\!\left(\frac{pos}{10000^{2i/C}}\right)$$
#
# Each pair of dimensions is a wave of its own frequency, from one turn every $2\pi$ positions
# down to very slow waves: a distinct fingerprint for every position, similar ones for nearby
# positions, nothing learned. The (T, C) matrix is added to every sequence of the batch alike:
# position is the index $t$ inside a sequence (a test checks exactly that).
# %%
def sinusoidal_positional_encoding(seq_len: int, d_model: int) -> torch.Tensor:
    position = torch.arange(seq_len, dtype=torch.float32).unsqueeze(1)  # (T,) -> (T, 1)
    two_i = torch.arange(0, d_model, 2, dtype=torch.float32)  # (ceil(C/2),) the even dims 2i
    angle = position / 10000 ** (two_i / d_model)  # (T, 1) / (ceil(C/2),) -> (T, ceil(C/2))
    pe = torch.zeros(seq_len, d_model)  # (T, C)
    pe[:, 0::2] = torch.sin(angle)  # even dimensions 2i
    pe[:, 1::2] = torch.cos(angle[:, :d_model // 2])  # odd dimensions 2i+1
    return pe


# %% [markdown]
# ## 7. Attention, with the causal mask
#
# Attention lets every position gather information from the others. Each position's vector $x$
# is projected three ways by learned C × C matrices (and biases, left out of the formulas): a
# **query** $q = xW_Q$ ("what am I looking for?"), a **key** $k = xW_K$ ("what do I contain?")
# and a **value** $v = xW_V$ ("what do I pass on?"). Position $t$ scores every position $s$ by
# how well its query matches their key, turns the scores into weights that add up to 1, and
# takes the weighted average of the values:
#
# $$\mathrm{Attention}(Q, K, V) = \mathrm{softmax}\!\left(\frac{QK^\top}{\sqrt{d_k}} + M\right) V,
#   \qquad M_{ts} = \begin{cases} 0 & s \le t \\ -\infty & s > t \end{cases}$$
#
# Dividing by $\sqrt{d_k}$ keeps the scores from growing with the head width $d_k = D$, which
# would make the softmax nearly one-hot. $M$ is the **causal mask**: a position gives zero weight
# to the future, so the model cannot read the character it must predict. **Multi-head**: the C
# numbers are split into H heads of D; each attends on its own (one may follow the previous
# letter, another the start of the word), and they are concatenated and mixed by $W_O$:
# $\mathrm{MultiHead}(x) = \mathrm{concat}(\mathrm{head}_1, \dots, \mathrm{head}_H)\, W_O$.
#
# `attention()` is that formula, and `python LLM.py` on a CPU trains with it: change it and the
# run changes. (On a GPU the run swaps in PyTorch's `F.scaled_dot_product_attention`, the same
# numbers in one fused kernel; a test proves them equal.) One C × C matrix computes all heads
# side by side; `split_heads` only reads its C columns as H groups of D.
# %%
def causal_mask(T: int, device=None) -> torch.Tensor:
    """(T, T) booleans: True where query position t may attend to key position s (s <= t)."""
    return torch.ones(T, T, dtype=torch.bool, device=device).tril_()


def attention(q, k, v, mask):
    """softmax(Q K^T / sqrt(d_k) + M) V, with M from the boolean mask (None: no mask).
    Returns (output, weights)."""
    scores = q @ k.transpose(-2, -1) / math.sqrt(q.size(-1))  # (B,H,T,D) @ (B,H,D,T) -> (B,H,T,T)
    if mask is not None:
        scores = scores.masked_fill(~mask, float("-inf"))  # the future gets -inf: weight 0 below
    weights = scores.softmax(dim=-1)  # (B, H, T, T): row t = how much t looks at each s; sums to 1
    return weights @ v, weights  # (B, H, T, T) @ (B, H, T, D) -> (B, H, T, D)


def split_heads(x: torch.Tensor, n_heads: int) -> torch.Tensor:
    """(B, T, C) -> (B, H, T, D): the C numbers of each position cut into H heads of D."""
    B, T, C = x.shape
    return x.view(B, T, n_heads, C // n_heads).transpose(1, 2)  # (B, T, H, D) -> (B, H, T, D)


def join_heads(x: torch.Tensor) -> torch.Tensor:
    """(B, H, T, D) -> (B, T, C): the heads side by side again (concat)."""
    B, H, T, D = x.shape
    return x.transpose(1, 2).reshape(B, T, H * D)  # (B, T, H, D) -> (B, T, C)


class MultiHeadSelfAttention(nn.Module):
    def __init__(self, d_model: int, n_heads: int, context: int):
        super().__init__()
        self.n_heads = n_heads
        self.query = nn.Linear(d_model, d_model)  # W_Q and b_Q, all heads side by side
        self.key = nn.Linear(d_model, d_model)  # W_K and b_K
        self.value = nn.Linear(d_model, d_model)  # W_V and b_V
        self.output = nn.Linear(d_model, d_model)  # W_O and b_O
        self.register_buffer("causal_mask", causal_mask(context), persistent=False)  # (ctx, ctx)

    def queries_keys_values(self, x: torch.Tensor):
        """(B, T, C) -> q, k, v, each (B, H, T, D)."""
        projections = (self.query, self.key, self.value)
        return [split_heads(project(x), self.n_heads) for project in projections]

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        """(B, T, C) -> (B, T, C), and the weights (B, H, T, T) if asked for, else None."""
        T = x.size(1)
        q, k, v = self.queries_keys_values(x)  # 3 x (B, H, T, D)
        heads, weights = attention(q, k, v, self.causal_mask[:T, :T])  # (B, H, T, D), (B, H, T, T)
        out = self.output(join_heads(heads))  # (B, H, T, D) -> (B, T, C) @ (C, C) -> (B, T, C)
        return out, weights if return_weights else None


# %% [markdown]
# ## 8. The encoder layer: feed-forward, residual connections, layer norm
#
# After attention has mixed information across positions, a **feed-forward** block works on
# each position alone: it widens the vector to F numbers, applies ReLU, and narrows it back
# (paper, equation 2). **Layer norm** rescales each vector to mean 0 and variance 1, then applies
# a learned gain $\gamma$ and shift $\beta$:
#
# $$\mathrm{FFN}(x) = \max(0,\, xW_1 + b_1)\,W_2 + b_2, \qquad
#   \mathrm{LayerNorm}(x) = \gamma \odot \frac{x - \mu(x)}{\sqrt{\sigma^2(x) + \epsilon}} + \beta$$
#
# **Residual connections** add each block's output to its input, so the signal and the gradient
# flow straight through a deep stack. The 2017 paper normalizes after the addition (post-norm);
# we normalize the block's input (pre-norm, as GPT-2): it trains stably at a high learning rate
# without a long warm-up, at the price of one more LayerNorm at the end of the stack:
#
# $$x \leftarrow x + \mathrm{Dropout}(\mathrm{MultiHead}(\mathrm{LayerNorm}(x))), \qquad
#   x \leftarrow x + \mathrm{Dropout}(\mathrm{FFN}(\mathrm{LayerNorm}(x)))$$
#
# With the causal mask, a stack of these *encoder* layers is what is usually called a
# decoder-only (GPT-style) model. A test proves it equal to PyTorch's
# `nn.TransformerEncoderLayer(norm_first=True)`.
# %%
class FeedForward(nn.Module):
    def __init__(self, d_model: int, d_ff: int):
        super().__init__()
        self.expand = nn.Linear(d_model, d_ff)  # W_1, b_1
        self.contract = nn.Linear(d_ff, d_model)  # W_2, b_2

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        hidden = F.relu(self.expand(x))  # (B, T, C) @ (C, F) -> (B, T, F)
        return self.contract(hidden)  # (B, T, F) @ (F, C) -> (B, T, C)


class EncoderLayer(nn.Module):
    def __init__(self, d_model: int, n_heads: int, d_ff: int, context: int, dropout: float):
        super().__init__()
        self.attention_norm = nn.LayerNorm(d_model)
        self.attention = MultiHeadSelfAttention(d_model, n_heads, context)
        self.feed_forward_norm = nn.LayerNorm(d_model)
        self.feed_forward = FeedForward(d_model, d_ff)
        self.dropout = nn.Dropout(dropout)

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        """(B, T, C) -> (B, T, C), and the attention weights (B, H, T, T) or None."""
        attended, weights = self.attention(self.attention_norm(x), return_weights)
        x = x + self.dropout(attended)  # residual connection around attention
        x = x + self.dropout(self.feed_forward(self.feed_forward_norm(x)))  # ... and around the FFN
        return x, weights


# %% [markdown]
# ## 9. The model: from character ids to next-character scores
#
# $$x = E[\mathrm{ids}]\sqrt{C} + PE, \qquad x \leftarrow \mathrm{EncoderLayer}_N(\cdots
#   \mathrm{EncoderLayer}_1(x)), \qquad
#   \mathrm{logits} = \mathrm{LayerNorm}(x)\,W_{head} + b_{head}$$
#
# The shapes go (B, T) → (B, T, C) → (B, T, C) → (B, T, V). `logits[b, t, c]` is the score of
# "the character after position t is c"; softmax turns the V scores into probabilities. The head
# is its own matrix, not the embedding table reused ("weight tying"), so each can be read alone.
# **What if?** `--without` takes one idea out of the built model: `causal-mask` (no $M$),
# `positions` (no $PE$), `scaling` (no $\sqrt{d_k}$), `residual` ($x \leftarrow
# \mathrm{block}(x)$) or `layer-norm` (the identity). The code above stays as it is: the run
# swaps or wraps modules after building them. `python LLM.py --what-if` trains the classroom
# run once with each idea taken out, to see what each one is worth.

# %%
class TransformerLM(nn.Module):
    def __init__(self, vocab_size: int, cfg: Config):
        super().__init__()
        self.context = cfg.context
        self.token_embedding = ScaledEmbedding(vocab_size, cfg.d_model)
        pe = sinusoidal_positional_encoding(cfg.context, cfg.d_model)  # (context, C)
        self.register_buffer("positional_encoding", pe, persistent=False)  # fixed, not learned
        self.embedding_dropout = nn.Dropout(cfg.dropout)
        self.layers = nn.ModuleList(
            EncoderLayer(cfg.d_model, cfg.n_heads, cfg.d_ff, cfg.context, cfg.dropout)
            for _ in range(cfg.n_layers))
        self.final_norm = nn.LayerNorm(cfg.d_model)
        self.lm_head = nn.Linear(cfg.d_model, vocab_size)  # the language-model head

    def embed(self, idx: torch.Tensor) -> torch.Tensor:
        """Token embedding plus positional encoding: what the first layer reads."""
        T = idx.shape[1]
        if T > self.context:
            raise ValueError(f"sequence of {T} tokens is longer than the context ({self.context})")
        return self.token_embedding(idx) + self.positional_encoding[:T]  # (B,T,C) + (T,C)

    def forward(self, idx: torch.Tensor, return_attention: bool = False):
        """(B, T) ids -> (B, T, V) logits; with return_attention also each layer's (B, H, T, T)."""
        x = self.embedding_dropout(self.embed(idx))  # (B, T) -> (B, T, C)
        all_weights = []
        for layer in self.layers:
            x, weights = layer(x, return_attention)  # (B, T, C) -> (B, T, C)
            all_weights.append(weights)
        logits = self.lm_head(self.final_norm(x))  # (B, T, C) @ (C, V) -> (B, T, V)
        return (logits, all_weights) if return_attention else logits


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


# %% [markdown]
# ## 10. The loss: how surprised the model is by the true next character
#
# For every position the model outputs V logits; the loss is the cross-entropy between their
# softmax and the true next character, averaged over the real (unpadded) positions $\mathcal{R}$:
#
# $$\mathcal{L} = -\frac{1}{|\mathcal{R}|} \sum_{(b,t) \in \mathcal{R}}
#   \log \mathrm{softmax}(\mathrm{logits}_{b,t})_{\,\mathrm{target}_{b,t}}$$
#
# It is in nats per token. A model that knows nothing spreads its bets evenly and scores $\ln V$,
# about 4.3 for the 73 characters of the proverbs. **Perplexity** $e^{\mathcal{L}}$ is the number of
# tokens the model hesitates between. **Bits per character**, what a compressor driven by the model
# would need per letter, $\mathrm{bpc} = \mathcal{L}\, N_{tokens} / (N_{chars} \ln 2)$, is the only
# one that compares characters with section 3's pieces.
# %%
def sequence_loss(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy over the positions whose target is not IGNORE (padding)."""
    V = logits.size(-1)
    flat_logits, flat_targets = logits.reshape(-1, V).float(), targets.reshape(-1)  # (BT, V), (BT,)
    return F.cross_entropy(flat_logits, flat_targets, ignore_index=IGNORE)


def bits_per_character(loss: float, split) -> float:
    """Mean loss per token of a split -> its loss in bits per character it stands for."""
    return loss * split.n_tokens / split.n_chars / math.log(2)


def perplexity_report(loss: float, split=None, unit: str = "character") -> str:
    """Loss in nats per token, perplexity e^loss, bits per character (and characters per token)."""
    if unit == "character":
        return (f"loss {loss:.3f} nats/char | perplexity {math.exp(loss):.2f} | "
                f"{loss / math.log(2):.3f} bits/char")
    per = (f"{bits_per_character(loss, split):.3f} bits/char "
           f"({split.n_chars / split.n_tokens:.2f} characters per {unit})")
    return f"loss {loss:.3f} nats/{unit} | perplexity {math.exp(loss):.2f} per {unit} | {per}"


# %% [markdown]
# **The floor: counting.** A table of counts is a language model too. The **unigram** model
# gives each token its share of the training split, the **bigram** model its share after the
# token before it. Smoothing, said openly: add-one (Laplace), every count starts at 1, so no
# token gets probability 0 and no loss is infinite. What the network scores below the bigram
# is what attention and the layers bought:
#
# $$p(c) = \frac{n(c) + 1}{N + V}, \qquad p(c \mid b) = \frac{n(b\,c) + 1}{n(b) + V}$$
# %%
def count_pairs(split, V: int) -> torch.Tensor:
    """(V, V) counts of (token, next token) over a split's real targets, each plus 1."""
    counts = torch.ones(V, V)  # add-one smoothing
    for inputs, targets in split.batches(4096):  # (B, T) each, in order, every target once
        real = targets != IGNORE  # (B, T)
        pairs = (inputs[real], targets[real])  # (n,), (n,)
        counts.index_put_(pairs, torch.ones(len(pairs[0])), accumulate=True)
    return counts


def counting_losses(counts: torch.Tensor, split) -> tuple[float, float]:
    """(unigram, bigram) mean loss per token on a split, from count_pairs' table."""
    V = len(counts)
    unigram = counts.sum(0) - (V - 1)  # (V,) n(c) + 1: the column sums hold V - 1 extra ones
    log_p1 = (unigram / unigram.sum()).log()  # (V,) log p(c)
    log_p2 = (counts / counts.sum(1, keepdim=True)).log()  # (V, V) row b: log p(c | b)
    total, n = torch.zeros(2, dtype=torch.float64), 0
    for inputs, targets in split.batches(4096):
        real = targets != IGNORE
        b, c = inputs[real], targets[real]  # (n,), (n,)
        total -= torch.stack([log_p1[c].sum(), log_p2[b, c].sum()]).double()
        n += len(c)
    return total[0].item() / n, total[1].item() / n


# %% [markdown]
# ## 11. The learning-rate schedule
#
# The rate rises linearly over the first `warmup` steps (at most `warmup_cap`, a fifth, of all
# steps), while Adam's averages are rough guesses, then follows half a cosine from `lr` down to
# `lr_floor` × `lr` (a tenth), $f$: big steps while the model is far from good, small ones after:
#
# $$\eta(s) = \begin{cases} \eta_{max}\,\dfrac{s + 1}{s_{warm}} & s < s_{warm} \\[1ex]
#   \eta_{max}\left(f + (1 - f)\cdot\dfrac{1 + \cos(\pi p)}{2}\right),
#   \quad p = \dfrac{s - s_{warm}}{s_{total} - s_{warm}} & \text{after} \end{cases}$$

# %%
def learning_rate(step: int, total_steps: int, cfg: Config) -> float:
    """Linear warm-up for cfg.warmup steps (at most cfg.warmup_cap of the run), then a cosine
    down to lr_floor."""
    warmup = min(cfg.warmup, int(total_steps * cfg.warmup_cap))
    if step < warmup:
        return cfg.lr * (step + 1) / warmup
    progress, floor = (step - warmup) / max(1, total_steps - warmup), cfg.lr_floor  # 0 -> 1
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


# %% [markdown]
# ## 12. Adam
#
# The gradient $g$ of the loss says which way is downhill for every parameter. Adam (Kingma &
# Ba, 2014) keeps running averages of the gradient and of its square, and steps by their ratio:
#
# $$m \leftarrow \beta_1 m + (1-\beta_1)\, g, \qquad v \leftarrow \beta_2 v + (1-\beta_2)\, g^2,
#   \qquad p \leftarrow p - \eta\, \frac{m / (1-\beta_1^t)}{\sqrt{v / (1-\beta_2^t)} + \epsilon}$$
#
# $m$ and $v$ start at 0, so early on they are too small; dividing by $1 - \beta^t$ undoes that.
# Dividing $m$ by $\sqrt{v}$ takes away the gradient's scale: every parameter moves about $\eta$
# per step while its gradient keeps its sign. **AdamW** (`--optimizer adamw`) also pulls every
# matrix towards 0, $p \leftarrow p\,(1 - \eta\lambda)$, apart from the gradient ("decoupled").
# `Adam` below is the formula, one tensor at a time, and it is what `python LLM.py` runs on a
# CPU. (On a GPU the run plugs in, through a hook of section 14, an Adam that does each line for
# all tensors at once; a test proves both take `torch.optim.Adam`'s and `AdamW`'s steps.)
# %%
class Adam:
    """Adam, written out; a group with weight_decay > 0 gets AdamW's decoupled decay."""

    def __init__(self, groups: list[dict], lr: float, betas=(0.9, 0.999), eps: float = 1e-8):
        self.param_groups = [{"params": list(g["params"]), "lr": lr,
                              "weight_decay": g.get("weight_decay", 0.0)} for g in groups]
        self.betas, self.eps, self.t = betas, eps, 0  # t counts the steps taken
        self.m = [[torch.zeros_like(p) for p in g["params"]] for g in self.param_groups]
        self.v = [[torch.zeros_like(p) for p in g["params"]] for g in self.param_groups]

    @torch.no_grad()
    def step(self):
        self.t += 1
        beta1, beta2 = self.betas
        for group, ms, vs in zip(self.param_groups, self.m, self.v):
            lr, decay = group["lr"], group["weight_decay"]
            for p, m, v in zip(group["params"], ms, vs):
                g = p.grad
                m.lerp_(g, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
                v.mul_(beta2).addcmul_(g, g, value=1 - beta2)  # v <- beta2 v + (1 - beta2) g^2
                if decay:
                    p.mul_(1 - lr * decay)  # AdamW only: pull towards 0
                denominator = v.sqrt() / math.sqrt(1 - beta2 ** self.t) + self.eps  # sqrt(v^) + eps
                p.addcdiv_(m, denominator, value=-lr / (1 - beta1 ** self.t))  # p - lr m^ / denom.

    def zero_grad(self):
        for p in [p for group in self.param_groups for p in group["params"]]:
            p.grad = None


def make_optimizer(model: nn.Module, cfg: Config, kind=Adam) -> Adam:
    """Adam (or a class with its arguments: `kind`), or AdamW with weight decay on the matrices
    only."""
    if cfg.optimizer == "adamw":
        matrices = [p for p in model.parameters() if p.dim() >= 2]  # weights, the embedding table
        others = [p for p in model.parameters() if p.dim() < 2]  # biases, layer-norm gains, shifts
        groups = [{"params": matrices, "weight_decay": cfg.weight_decay},
                  {"params": others, "weight_decay": 0.0}]
    else:
        groups = [{"params": model.parameters()}]
    return kind(groups, lr=cfg.lr, betas=(cfg.beta1, cfg.beta2), eps=cfg.eps)


# %% [markdown]
# ## 13. One training step, and measuring
#
# One step on one batch: the forward pass gives the logits, the loss compares them with the
# targets, `backward()` computes the gradient of the loss for every parameter, and Adam moves the
# parameters. Before the update the gradient is **clipped**: seen as one long vector $g$, if it is
# longer than `clip` it is scaled down to that length, so one unlucky batch cannot throw the
# weights far away (`clip` 0: never scaled, only measured):
#
# $$g \leftarrow g \cdot \min\!\left(1, \frac{\mathrm{clip}}{\lVert g \rVert}\right)$$
#
# `evaluate` measures the mean loss over a whole split, dropout off, no gradients. Both run the
# forward pass inside `autocast()`: nothing here, the hook where lower precision plugs in.
# %%
def train_step(model: nn.Module, optimizer: Adam, inputs: torch.Tensor, targets: torch.Tensor,
               lr: float, clip: float, autocast=contextlib.nullcontext):
    """Forward, loss, backward, clip, update; returns (loss, gradient norm before clipping), both
    tensors on the device."""
    with autocast():
        logits = model(inputs)  # (B, T) -> (B, T, V)
    loss = sequence_loss(logits, targets)  # (B, T, V) vs (B, T) -> scalar
    for group in optimizer.param_groups:
        group["lr"] = lr
    optimizer.zero_grad()
    loss.backward()
    longest = clip if clip > 0 else math.inf  # clip 0: measure ||g||, scale nothing
    norm = torch.nn.utils.clip_grad_norm_(model.parameters(), longest)  # ||g||; g scaled to clip
    optimizer.step()
    return loss, norm


@torch.no_grad()
def evaluate(model: TransformerLM, split: LineSplit, batch_size: int, device,
             autocast=contextlib.nullcontext) -> float:
    """Mean loss per real token over a whole split, with dropout off."""
    was_training = model.training
    model.eval()
    total, count = 0.0, 0
    for inputs, targets in split.batches(batch_size):
        inputs, targets = inputs.to(device), targets.to(device)
        n = int((targets != IGNORE).sum())
        with autocast():
            logits = model(inputs)
        total += sequence_loss(logits, targets).item() * n
        count += n
    model.train(was_training)
    return total / count


# %% [markdown]
# ## 14. The training loop
#
# One **epoch** is one pass over the training lines in a new random order, set by the seed and
# the epoch number. The epoch with the lowest validation loss is the **best**; the model ends
# with its weights. **Early stopping**: after `patience` epochs without a better validation loss,
# more training only learns the lines by heart, so it stops; a NaN or infinite loss stops it too.
#
# **Hooks**: a GPU, several processes, a progress line, checkpoints and pictures get in only
# through a `Hooks` object, whose methods are called at fixed moments and here change nothing.
# %%
class Hooks:
    """The moments at which Part II plugs into training. The defaults change nothing."""
    processes = 1  # processes training together: each takes 1 of every `processes` batches

    def optimizer(self, model, cfg): return make_optimizer(model, cfg)  # what updates the weights
    def network(self, model): return model  # what the forward pass runs through
    def autocast(self): return contextlib.nullcontext()  # the context of every forward pass
    def batches(self, batch_stream): return batch_stream  # this process's batches of one epoch
    def totals(self, sums): return sums  # the epoch's sums (TrainingState.sums), all processes
    def on_start(self, optimizer, state): pass  # before the first step
    def on_step(self, state): pass  # after every optimizer step
    def on_new_best(self, state, record: dict): pass  # after an epoch better than all before it
    def on_epoch_end(self, state, record: dict): pass  # after every epoch


class TrainingDiverged(UserError):
    """The loss became NaN or infinite."""


# %%
@dataclass
class TrainingState:
    """Where training stands, for the hooks to read (a checkpoint keeps it to resume from)."""
    step: int = 0  # optimizer steps taken
    history: list = field(default_factory=list)  # one record per finished epoch
    best: dict = field(default_factory=lambda: {"epoch": 0, "val_loss": math.inf})  # best record
    epochs_without_progress: int = 0
    epoch: int = 0  # the epoch under way, the steps it has taken and will take, when it started
    epoch_steps: int = 0
    steps_per_epoch: int = 0
    epoch_started: float = 0.0
    sums: torch.Tensor | None = None  # (4,) loss x tokens, tokens, sum of ||g||, clipped steps
    lr: float = 0.0  # the learning rate of the last step
    started: float = field(default_factory=time.perf_counter)  # when training started

    def start_epoch(self, epoch: int, device):
        self.epoch, self.epoch_steps, self.epoch_started = epoch, 0, time.perf_counter()
        self.sums = torch.zeros(4, device=device)

    def count(self, loss, norm, targets: torch.Tensor, lr: float, clip: float):
        n = (targets != IGNORE).sum()  # the real (unpadded) targets of the batch
        clipped = norm > (clip if clip > 0 else math.inf)
        self.sums += torch.stack([loss.detach() * n, n, norm, clipped])
        self.step, self.epoch_steps, self.lr = self.step + 1, self.epoch_steps + 1, lr

    def record(self, sums, val_loss: float, val_split, seconds: float, processes: int) -> dict:
        """The epoch in numbers, from its sums over every process; `seconds` of training."""
        loss_sum, tokens, norm_sum, clipped = sums  # (4,) -> 4 scalars
        steps = max(1, self.epoch_steps * processes)
        return {"epoch": self.epoch, "step": self.step, "train_loss": (loss_sum / tokens).item(),
                "val_loss": val_loss, "val_bits_per_char": bits_per_character(val_loss, val_split),
                "lr": self.lr, "grad_norm": norm_sum.item() / steps,
                "clipped": clipped.item() / steps, "elapsed": time.perf_counter() - self.started,
                "tokens_per_second": tokens.item() / seconds}


def epoch_line(record: dict, improved: bool, cfg: Config) -> str:
    r = record
    clipped = f" ({r['clipped']:.0%} clipped)" if cfg.clip > 0 else ""
    return (f"epoch {r['epoch']:>3}/{cfg.epochs} | train loss {r['train_loss']:.3f} | val loss "
            f"{r['val_loss']:.3f}{' *' if improved else '  '} | {r['val_bits_per_char']:.3f} "
            f"bits/char | lr {r['lr']:.1e} | grad norm {r['grad_norm']:.2f}{clipped} | "
            f"{r['elapsed']:5.1f} s | {r['tokens_per_second']:,.0f} tokens/s")


# %%
def train_epoch(network, optimizer: Adam, data: Data, cfg: Config, device, hooks: Hooks,
                state: TrainingState):
    """One pass over the training batches, in an order set by the seed and the epoch alone."""
    network.train()  # dropout on
    total_steps = cfg.epochs * state.steps_per_epoch
    order = torch.Generator().manual_seed(cfg.seed * 1_000_003 + state.epoch)  # resumable
    for inputs, targets in hooks.batches(data.train_split.batches(cfg.batch_size, order)):
        inputs = inputs.to(device, non_blocking=True)  # (B, T)
        targets = targets.to(device, non_blocking=True)  # (B, T)
        lr = learning_rate(state.step, total_steps, cfg)
        loss, norm = train_step(network, optimizer, inputs, targets, lr, cfg.clip, hooks.autocast)
        state.count(loss, norm, targets, lr, cfg.clip)
        hooks.on_step(state)


def measure_epoch(model, data: Data, cfg: Config, device, hooks: Hooks,
                  state: TrainingState) -> dict:
    """The validation loss and the epoch's record; a loss that is not a number stops training."""
    seconds = time.perf_counter() - state.epoch_started  # the epoch's training, not measuring
    val_loss = evaluate(model, data.val_split, cfg.eval_batch, device, hooks.autocast)
    record = state.record(hooks.totals(state.sums), val_loss, data.val_split, seconds,
                          hooks.processes)
    bad = [x for x in (record["train_loss"], val_loss) if not math.isfinite(x)]  # NaN, infinity
    if bad:
        kept = f"epoch {state.best['epoch']}" if state.best["epoch"] else "its starting weights"
        raise TrainingDiverged(f"the loss became {bad[0]} in epoch {state.epoch}: training "
                               f"stopped, the model keeps {kept}. Try a lower --lr (now "
                               f"{cfg.lr:g}) or --clip 1")
    state.history.append(record)
    return record


# %%
def train(model: TransformerLM, data: Data, cfg: Config, device, hooks: Hooks | None = None,
          state: TrainingState | None = None, log=print) -> list[dict]:
    """Train for up to cfg.epochs, keep the best epoch, stop early; one record per epoch."""
    hooks, state = hooks or Hooks(), state or TrainingState()
    optimizer = hooks.optimizer(model, cfg)
    hooks.on_start(optimizer, state)  # a resumed run loads the optimizer's averages here
    network = hooks.network(model)
    batches = math.ceil(len(data.train_split) / cfg.batch_size)
    state.steps_per_epoch = max(1, batches // hooks.processes)
    best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
    first = state.history[-1]["epoch"] + 1 if state.history else 1  # after a resumed epoch
    try:
        for epoch in range(first, cfg.epochs + 1):
            state.start_epoch(epoch, device)
            train_epoch(network, optimizer, data, cfg, device, hooks, state)
            record = measure_epoch(model, data, cfg, device, hooks, state)
            improved = record["val_loss"] < state.best["val_loss"]
            if improved:  # the best epoch so far: keep its weights
                hooks.on_new_best(state, record)
                state.best, state.epochs_without_progress = record, 0
                best_weights = {k: v.detach().clone() for k, v in model.state_dict().items()}
            else:
                state.epochs_without_progress += 1
            log(epoch_line(record, improved, cfg))
            hooks.on_epoch_end(state, record)
            if cfg.patience and state.epochs_without_progress >= cfg.patience:
                log(f"early stop: the validation loss has not improved for {cfg.patience} epochs")
                break
    finally:
        model.load_state_dict(best_weights)  # whatever happened (Ctrl-C too): the best epoch
    best = state.best
    if state.history and best["epoch"] and best["epoch"] != state.history[-1]["epoch"]:
        log(f"restored the weights of epoch {best['epoch']}, the best validation loss "
            f"({best['val_loss']:.3f})")
    return state.history


# %% [markdown]
# ## 15. Writing: one character at a time
#
# To write, the model predicts the next character, we pick one, append it and repeat, until it
# writes ⏎ (the proverb is over) or `max_chars` characters are written. Picking:
#
# $$p = \mathrm{softmax}(\mathrm{logits} / \tau)$$
#
# A temperature $\tau < 1$ sharpens $p$ (safer, more repetitive), $\tau > 1$ flattens it. Sort
# the characters by $p$; **top-k** keeps the k most likely, **top-p** the fewest whose
# probabilities add up to p. Draw $u$ uniformly in $[0, 1)$ and take the first kept candidate
# whose cumulative probability exceeds $u \times$ (the kept mass): that samples in proportion to
# $p$ (`table.txt` shows each draw). **Greedy** always takes the most likely. The entropy
# $H(p) = -\sum_c p_c \log_2 p_c$ says how unsure the model was: 0 bits = certain.

# %%
@dataclass
class Sampling:
    """How to pick each next character."""
    temperature: float = 1.0
    top_k: int = 0  # 0 = all characters
    top_p: float = 1.0  # 1 = all characters
    greedy: bool = False
    max_chars: int = 120  # stop once this many new characters are written if no ⏎ came

    @classmethod
    def of(cls, cfg: Config) -> "Sampling":
        return cls(cfg.temperature, cfg.top_k, cfg.top_p, cfg.greedy, cfg.max_chars)


@dataclass
class Choice:
    """One token picked, with everything that table.txt shows about it."""
    id: int  # the character chosen
    logits: torch.Tensor  # (V,) the model's scores
    probs: torch.Tensor  # (V,) p = softmax(logits / temperature)
    order: torch.Tensor  # (V,) character ids, most likely first
    cumulative: torch.Tensor  # (V,) cumulative p in that order
    kept: int  # how many candidates top-k and top-p kept
    u: float | None  # the uniform draw (None when greedy)
    position: int = 0  # where it goes in the sequence (the opening ⏎ is 0); set by generate()
    window: list = field(default_factory=list)  # the ids the model saw; set by generate()


def choose_next(logits: torch.Tensor, sampling: Sampling, generator: torch.Generator) -> Choice:
    """Pick one id from (V,) logits as `sampling` says."""
    probs = torch.softmax(logits.float() / sampling.temperature, dim=-1)  # (V,)
    sorted_p, order = probs.sort(descending=True)  # (V,), (V,)
    cumulative = sorted_p.cumsum(0)  # (V,)
    kept = len(probs) if sampling.top_k == 0 else min(sampling.top_k, len(probs))
    if sampling.top_p < 1.0:  # the fewest candidates whose probabilities reach top_p
        kept = min(kept, int((cumulative < sampling.top_p).sum()) + 1)
    if sampling.greedy:
        return Choice(int(order[0]), logits, probs, order, cumulative, 1, None)
    u = float(torch.rand((), generator=generator))
    target = u * cumulative[kept - 1]  # u x the kept mass
    rank = min(int(torch.searchsorted(cumulative[:kept], target, right=True)), kept - 1)
    return Choice(int(order[rank]), logits, probs, order, cumulative, kept, u)


# %%
@torch.no_grad()
def generate(model: TransformerLM, tokenizer: CharTokenizer, prompt: str, sampling: Sampling,
             generator: torch.Generator | None = None, trace: list | None = None,
             stop_at_eol: bool = True) -> str:
    """prompt + its completion, until ⏎ or sampling.max_chars characters; appends a Choice per
    token to `trace`."""
    ids = [tokenizer.eol_id] + tokenizer.encode(prompt)  # raises UnknownCharacterError
    generator = generator if generator is not None else torch.Generator().manual_seed(0)
    device = next(model.parameters()).device
    was_training = model.training
    model.eval()
    written = 0  # characters written: a token may be several (section 3)
    while written < sampling.max_chars:
        window = ids[-model.context:]  # crop to the context the model was trained on
        logits = model(torch.tensor([window], device=device))[0, -1].float().cpu()  # (1,T,V)->(V,)
        choice = choose_next(logits, sampling, generator)
        if trace is not None:
            trace.append(replace(choice, position=len(ids), window=window))
        if choice.id == tokenizer.eol_id and stop_at_eol:
            break
        ids.append(choice.id)
        written += len(tokenizer.token_text(choice.id))
    model.train(was_training)
    return tokenizer.decode(ids[1:])


# %% [markdown]
# ## 16. The whole story, end to end
#
# Read, split, build, train, test once, write. Each sample names its **nearest** training proverb
# by edit distance $d$ (the fewest insertions, deletions and substitutions that turn one into the
# other, $D_{i,j} = \min(D_{i-1,j} + 1,\ D_{i,j-1} + 1,\ D_{i-1,j-1} + [a_i \ne b_j])$) and how
# many characters it follows it for. $d = 0$: **memorised**; a held-out proverb it never trained
# on: **rediscovered**; else **new**. The run counts the words written that are words of the
# corpus: a model that learned to spell writes real words.
# The last cell runs the story for one epoch when Part I runs alone (a notebook, or pasted into
# Python). `python LLM.py` runs it through Part II's hooks and adds `parameters.txt` (every
# parameter, $N_{params} = VC + N(4C^2 + 2CF + F + 9C) + 2C + CV + V$), `table.txt` (every
# character written, its candidates, the draw), pictures and their gallery.
# %%
@dataclass
class Sample:
    """One thing the model wrote, from one prompt."""
    prompt: str
    text: str  # prompt + completion
    kind: str  # memorised, rediscovered or new (line mode); "" for a long text
    picks: list  # one Choice per token written
    nearest: str = ""  # the training line with the fewest edits from text (line mode)
    edits: int = 0  # the edit distance from text to it
    follows: int = 0  # characters text and nearest share from their start


def corpus_word_share(samples: list[Sample], lines: list[str]) -> tuple[int, int]:
    """(words written that are words of the corpus, words written), prompts excluded: does it
    write Spanish?"""
    known = {w.lower() for line in lines for w in re.findall(r"\w+", line)}
    written = [w.lower() for s in samples for w in re.findall(r"\w+", s.text[len(s.prompt):])]
    return sum(w in known for w in written), len(written)


# %%
def edit_distances(text: str, lines: list[str]) -> torch.Tensor:
    """(N,) the edit distance from text to each line, all lines at once, row D_i by row."""
    L, N = max(len(line) for line in lines), len(lines)
    codes = "".join(line.ljust(L, "\0") for line in lines).encode("utf-32-le")  # 4 bytes a char
    lengths = torch.tensor([len(line) for line in lines])  # (N,)
    j = torch.arange(L + 1, dtype=torch.int32)  # (L+1,)
    chars = torch.frombuffer(bytearray(codes), dtype=torch.int32).view(N, L)  # (N, L)
    chars = chars.masked_fill(j[1:] > lengths[:, None], -1)  # the padding matches no character
    row = j.repeat(N, 1)  # (N, L+1): D_0,j = j
    for i, char in enumerate(text, 1):
        kept = torch.minimum(row[:, :-1] + (chars != ord(char)), row[:, 1:] + 1)  # (N, L)
        kept = torch.cat([torch.full((N, 1), i, dtype=torch.int32), kept], dim=1)  # D_i,0 = i
        row = (kept - j).cummin(dim=1).values + j  # insertions: min over k <= j of D_i,k + j - k
    return row.gather(1, lengths[:, None])[:, 0]  # (N, L+1) -> (N,)


def nearest_in_words(sample: Sample, item: str = "proverb") -> str:
    first = f"its first {sample.follows} characters"
    same = {0: "none of its characters", 1: "its first character"}.get(sample.follows, first)
    edits = f"{sample.edits} edit{'s' * (sample.edits != 1)}"
    return f"nearest training {item}, {edits} away: «{sample.nearest}» ({same} the same)"


def label(sample: Sample, data: Data) -> Sample:
    """The sample's nearest training line and its kind: memorised, rediscovered or new."""
    edits = edit_distances(sample.text, data.train_text)  # (N,)
    sample.edits = int(edits.min())
    sample.nearest = data.train_text[int(edits.argmin())]
    pairs = zip(sample.text, sample.nearest)
    sample.follows = next((k for k, (a, b) in enumerate(pairs) if a != b), len(sample.nearest))
    held_out = sample.text in data.held_out_text
    sample.kind = "memorised" if sample.edits == 0 else "rediscovered" if held_out else "new"
    return sample


# %%
def write_samples(model: TransformerLM, data: Data, cfg: Config, text: str,
                  log=print) -> list[Sample]:
    """Complete every prompt of cfg.prompts; print the samples and the share of real words."""
    generator = torch.Generator().manual_seed(cfg.seed)
    samples = []
    log(f"samples (memorised: a {data.item} it trained on; rediscovered: a held-out one):")
    for prompt in cfg.prompts:
        picks: list[Choice] = []
        completion = generate(model, data.tokenizer, prompt, Sampling.of(cfg), generator, picks,
                              stop_at_eol=data.mode == "line")
        sample = Sample(prompt, completion, "", picks)
        if data.mode == "line":
            label(sample, data)
        samples.append(sample)
        kind = f"   [{sample.kind}]" if sample.kind else ""
        log("      " + completion.replace(EOL, EOL + "      ") + kind)  # a book: many lines
        if sample.kind in ("new", "rediscovered"):
            log(f"         {nearest_in_words(sample, data.item)}")
    known, written = corpus_word_share(samples, text_lines(text[:5_000_000]))  # at most 5 MB
    share = known / max(written, 1)
    log(f"      {known} of the {written} words written are words of the corpus ({share:.0%})")
    return samples


# %%
def train_and_write(cfg: Config, log=print) -> tuple[TransformerLM, Data]:
    """The story with Part I alone: cfg.data's proverbs, a new model trained with the default
    hooks, samples."""
    text = unicodedata.normalize("NFC", Path(cfg.data).read_text(encoding="utf-8"))
    device, data = torch.device("cpu"), prepare_data(text, cfg)
    torch.manual_seed(cfg.seed)
    model = TransformerLM(data.tokenizer.vocab_size, cfg)
    log(f"{len(data.train_split):,} proverbs to train on, a vocabulary of "
        f"{data.tokenizer.vocab_size} {data.tokenizer.unit}s, a model of "
        f"{count_parameters(model):,} parameters, on {device}")
    unigram, bigram = counting_losses(count_pairs(data.train_split, data.tokenizer.vocab_size),
                                      data.val_split)
    log(f"to beat, counting (section 10): unigram {unigram:.3f}, bigram {bigram:.3f} per token")
    train(model, data, cfg, device, log=log)
    if data.test_split is not None:
        test_loss = evaluate(model, data.test_split, cfg.eval_batch, device)
        report = perplexity_report(test_loss, data.test_split, data.tokenizer.unit)
        log(f"test split, never seen in training: {report}")
    write_samples(model, data, cfg, text, log)
    return model, data


# %%
if __name__ == "__main__" and "__file__" not in globals():  # Part I alone: a notebook, or pasted
    story_model, story_data = train_and_write(replace(Config(), epochs=1))

# %% [markdown]
# # APPENDIX. Part II: the machinery
#
# Everything a real program needs around the story, and a first reading does not. The story
# never calls it; it plugs in through the story's hooks (section 14) and calls the story's
# functions. Nothing here changes what the model computes. Each part has its own banner:
#
# - **A. Settings, devices, files**: `validate`, `pick_device`, reading a text file safely,
#   writing a file in one piece, checking a prompt, the memory a shape needs, one run per
#   folder, SIGTERM.
# - **B. Long texts and word pieces**: a book cut into windows instead of lines (`--mode
#   stream`), encoding 100 MB of text in seconds, and `BPETokenizer`, section 3's merges learned
#   fast, with what a checkpoint keeps of a tokenizer.
# - **C. Faster arithmetic**: the fast code for GPUs (`--code`), bf16 mixed precision,
#   `torch.compile`.
# - **D. Several processes**: `torchrun` and `DistributedDataParallel`.
# - **E. The run's hooks**: what `python LLM.py` plugs into the training loop: the device, the
#   processes, the progress line, the checkpoint of every new best epoch, resuming.
# - **F. Checkpoints and fine-tuning**: `model.pt`, `--resume`, `--init-from`.
# - **G. The outputs and the pictures**: `parameters.txt`, `table.txt`, the pictures and their
#   registry, the gallery.
# - **H. The explorer**: `explorer.html`, the trained model running in a web page.
# - **I. What if, and what the numbers say**: `--without`, `--what-if`, and their comparison.
# - **J. Talking to the model**: `--chat`.
# - **K. The command line**: `main()`, flags, presets, errors, signals, and the whole run.
# - **L. Practice**: `--workbook` (this book with Part I's exercises blank) and `--check` (each
#   exercise against PyTorch, with the usual mistakes named).

# %% [markdown]
# ## A. Settings, devices, files
#
# Impossible settings are refused before anything runs, with one sentence each; so are files
# that are missing, binary, not UTF-8 or empty, numbers that would crash later (a seed too big
# for the generator, a temperature so small the probabilities underflow) and shapes that cannot
# fit in memory. Text typed by a person is read like the data (NFC, UTF-8 checked).
#
# Every output file is written by `write_file`: whole or not at all, and a failure (a full disk)
# is one line that says what is left. One run at a time writes a folder (`writing_folder`); a
# run lists what it writes in the folder's manifest, `.written`, and the next run there removes
# exactly those files at its first write (`recording`), so a folder never mixes two runs. A new
# run on another text with no `--out` writes `outputs/<its name>/`. SIGTERM stops a run the way
# Ctrl-C does.

# %%
import argparse
import ast
import base64
import codecs
import errno
import glob
import hashlib
import json
import os
import shutil
import warnings
from dataclasses import asdict, fields


@dataclass
class RunConfig(Config):
    """Section 1's Config and the run's own settings, which the story never reads: what
    `python LLM.py` takes from its flags (--help lists both, in the groups of FLAG_GROUPS)."""
    mode: str = setting("auto", "samples: line (one per line), stream (windows of a long text) or auto (line if lines are short)")
    out: str = setting("outputs", "folder where every output file is written")
    device: str = setting("auto", "where to compute: auto (GPU if there is one), cpu, cuda, cuda:N or mps")
    tokenizer: str = setting("char", "tokens: char (one character each) or bpe (word pieces, byte-pair encoding, section 3)")
    vocab_size: int = setting(512, "--tokenizer bpe: the pieces to end with, the characters of the text included")
    code: str = setting("auto", "story: Part I's attention() and Adam, as written; fast: PyTorch's fused attention and "
                                "an Adam over all tensors at once (the same numbers); auto: story on a CPU, fast on a GPU")
    without: tuple = setting((), "ideas to take out of the model (section 9): causal-mask positions scaling residual layer-norm")
    precision: str = setting("auto", "bf16: bfloat16 where safe (autocast); fp32: never; auto: bf16 on a GPU that has it")
    compile: bool = setting(False, "compile the training step into fused kernels: tens of seconds first, then maybe faster")
    snapshot: int = setting(1, "draw outputs/epoch_<N>.png, and keep the weights for explorer.html, every this many epochs (0 = never)")
    progress: float = setting(10.0, "in a longer epoch, say how far it is every this many seconds (0 = never)")
    pictures: tuple = setting(("all",), "pictures to draw: all, or names listed at the end of --help (alone: none)")
    chat_epochs: int = setting(3, "epochs that /train trains when it is given no number")
    chat_weight: int = setting(10, "/train counts every typed line this many times per epoch, next to the corpus")
    chat_lr_divisor: float = setting(3.0, "/train trains at --lr divided by this: a trained model only needs nudging")
    seeds: int = setting(3, "--what-if: trainings per switch, with seeds --seed, --seed + 1, ...: what one seed "
                            "changes is the noise a difference must beat")


MAX_CHARS = 100_000  # the longest sample --max-chars allows
MAX_VOCABULARY = 100_000  # the most pieces --vocab-size allows
IDEAS = ("causal-mask", "positions", "scaling", "residual", "layer-norm")  # what --without can switch off (section 9)
TEMPERATURE_RANGE = (0.01, 100.0)  # the sampling temperatures allowed


def validate(cfg: Config, check_device: bool = True) -> Config:
    """Refuse impossible settings with one clear sentence each (raised as UserError)."""
    if not cfg.out.strip():  # '' would be the current folder, with whatever files it holds
        raise UserError("--out must name a folder for the outputs, got an empty name")
    check_names({"--out": cfg.out, "--data": cfg.data})
    validate_shape_and_splits(cfg)
    validate_numbers(cfg)
    unknown = [name for name in cfg.pictures if name not in PICTURES and name != "all"]
    if unknown:
        raise UserError(f"--pictures knows all {' '.join(PICTURES)}; not: {' '.join(unknown)}")
    unknown = [name for name in cfg.without if name not in IDEAS]
    if unknown:
        raise UserError(f"--without knows {' '.join(IDEAS)}; not: {' '.join(unknown)}")
    cfg = replace(cfg, without=tuple(idea for idea in IDEAS if idea in cfg.without))  # one order: one label
    validate_choices_and_sampling(cfg)
    if not check_device:  # the settings saved in a checkpoint: the machine may be another one
        return cfg
    device = pick_device(cfg.device)  # raises on an unknown or absent device
    if cfg.compile and device.type == "cpu" and not any(shutil.which(c) for c in ("g++", "clang++", "c++")):
        raise UserError("--compile needs a C++ compiler (g++ or clang++) on a CPU, and none was found: "
                        "leave out --compile, or install one")
    return cfg


def validate_shape_and_splits(cfg: Config):
    """Sizes that must be positive, heads that divide the width, fractions that leave text to train on."""
    positive = ["d_model", "n_heads", "n_layers", "d_ff", "context", "batch_size", "eval_batch", "epochs", "max_chars",
                "chat_epochs", "chat_weight", "vocab_size", "seeds"]
    for name in positive:
        if getattr(cfg, name) <= 0:
            raise UserError(f"{flag_of(name)} must be a positive whole number, got {getattr(cfg, name)}")
    if cfg.d_model % cfg.n_heads != 0:
        raise UserError(f"--d-model ({cfg.d_model}) must be divisible by --heads ({cfg.n_heads}): "
                        f"each head gets d_model / heads numbers")
    if not 0.0 < cfg.val_fraction < 1.0:
        raise UserError(f"--val-fraction must be between 0 and 1, got {cfg.val_fraction}")
    if not (0.0 <= cfg.test_fraction < 1.0 and cfg.val_fraction + cfg.test_fraction < 1.0):
        raise UserError(f"--test-fraction must be 0 or more, and --val-fraction + --test-fraction below 1 "
                        f"(something must be left to train on), got {cfg.val_fraction} + {cfg.test_fraction}")
    if cfg.vocab_size > MAX_VOCABULARY:
        raise UserError(f"--vocab-size can be at most {MAX_VOCABULARY:,}, got {cfg.vocab_size}")
    if cfg.max_chars > MAX_CHARS:
        raise UserError(f"--max-chars can be at most {MAX_CHARS:,} (a sample that long is a book), got {cfg.max_chars}")


def validate_numbers(cfg: Config):
    """The seed, the rates and the optimizer's numbers: in range and finite (NaN fails every comparison)."""
    if not 0 <= cfg.seed < 2 ** 32:
        raise UserError(f"--seed must be a whole number from 0 to {2 ** 32 - 1}, got {cfg.seed}")
    if not 0.0 <= cfg.dropout < 1.0:
        raise UserError(f"--dropout must be in [0, 1), got {cfg.dropout}")
    if not (cfg.lr > 0 and math.isfinite(cfg.lr)):
        raise UserError(f"--lr must be a positive number, got {cfg.lr}")
    inside = {"beta1": ("[0, 1)", 0 <= cfg.beta1 < 1), "beta2": ("[0, 1)", 0 <= cfg.beta2 < 1),
              "lr_floor": ("[0, 1]", 0 <= cfg.lr_floor <= 1), "warmup_cap": ("(0, 1]", 0 < cfg.warmup_cap <= 1)}
    for name, (interval, ok) in inside.items():
        if not ok:
            raise UserError(f"{flag_of(name)} must be in {interval}, got {getattr(cfg, name)}")
    for name in ("eps", "chat_lr_divisor"):
        if not (getattr(cfg, name) > 0 and math.isfinite(getattr(cfg, name))):
            raise UserError(f"{flag_of(name)} must be a positive number, got {getattr(cfg, name)}")
    for name in ("snapshot", "top_k", "warmup", "patience"):
        if getattr(cfg, name) < 0:
            raise UserError(f"{flag_of(name)} must be 0 or more, got {getattr(cfg, name)}")
    for name in ("clip", "weight_decay", "progress"):
        if not (getattr(cfg, name) >= 0 and math.isfinite(getattr(cfg, name))):
            raise UserError(f"{flag_of(name)} must be 0 or a positive number, got {getattr(cfg, name)}")


def validate_choices_and_sampling(cfg: Config):
    """The settings that name one of a few choices, and the sampling numbers."""
    choices = {"mode": ("auto", "line", "stream"), "code": ("auto", "story", "fast"), "tokenizer": tuple(TOKENIZERS),
               "optimizer": ("adam", "adamw"), "precision": ("auto", "bf16", "fp32")}
    for name, allowed in choices.items():
        if getattr(cfg, name) not in allowed:
            quoted = [f"'{a}'" for a in allowed]
            listed = ", ".join(quoted[:-1]) + " or " + quoted[-1] if len(quoted) > 1 else quoted[0]
            raise UserError(f"{flag_of(name)} must be {listed}, got '{getattr(cfg, name)}'")
    problem = temperature_problem(cfg.temperature)
    if problem:
        raise UserError(f"--temperature {problem}")
    if not 0.0 < cfg.top_p <= 1.0:
        raise UserError(f"--top-p must be in (0, 1], got {cfg.top_p}")


def temperature_problem(value: float) -> str | None:
    """What is wrong with a sampling temperature, or None. Below 0.01 the logits divided by it
    overflow float32 and the probabilities become NaN: that is greedy sampling (--greedy)."""
    if not (math.isfinite(value) and TEMPERATURE_RANGE[0] <= value <= TEMPERATURE_RANGE[1]):
        return (f"must be a number from {TEMPERATURE_RANGE[0]} to {TEMPERATURE_RANGE[1]:g} "
                f"(for always the most likely character use --greedy), got {value}")
    return None


def memory_needed(cfg: Config, vocab_size: int, batch: int, T: int, fused: bool = False, eval_batch: int = 0) -> int:
    """Bytes a training run of this shape needs at most, roughly: the buffers (positional
    encoding, causal masks), the parameters with their gradients, Adam's two averages and the
    best epoch's copy, and the activations of one batch of `batch` sequences of T tokens kept
    for the backward pass (the (T, T) attention matrices only when section 7's attention() runs:
    `fused` attention keeps none); or, if more, one evaluation batch of `eval_batch` sequences."""
    C, F_, N, H, V = cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.n_heads, vocab_size
    parameters = V * C + N * (4 * C * C + 2 * C * F_ + F_ + 9 * C) + 2 * C + C * V + V  # section 9
    buffers = 4 * cfg.context * C + N * cfg.context ** 2  # float32 (context, C), N bool (context, context)
    per_token = N * (16 * C + 3 * F_) + 4 * V  # activations kept per token, in float32 numbers
    per_sequence = T * per_token + (0 if fused else 3 * N * H * T * T)
    training = buffers + 4 * 6 * parameters + 4 * batch * per_sequence
    # evaluation keeps nothing for a backward pass, but one batch of cfg.eval_batch sequences holds its
    # logits, a layer's feed-forward and attention weights at once
    evaluating = buffers + 4 * 2 * parameters + 4 * eval_batch * T * (2 * V + F_ + 6 * C + 2 * H * T)
    return int(MEMORY_MARGIN * max(training, evaluating))


MEMORY_MARGIN = 1.25  # what the sum above leaves out (temporaries while building, the allocator): measured, tests/test_faults.py


def memory_of(device: torch.device) -> int | None:
    """Bytes of memory the device has: the GPU's own, or the machine's RAM (None if unknown:
    Windows, where this check is skipped)."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None


def check_memory(cfg: Config, vocab_size: int, batch: int, T: int, device: torch.device, eval_batch: int = 0):
    """Refuse a shape that cannot fit before allocating it, instead of dying inside torch.empty."""
    needed = memory_needed(cfg, vocab_size, batch, T, fast_code(cfg, device), eval_batch)
    have = memory_of(device)
    if have is not None and needed > 0.9 * have:
        where = str(device) if device.type == "cuda" else "this machine"
        raise UserError(f"this model would need about {needed / 2 ** 30:,.1f} GiB of memory and {where} has "
                        f"{have / 2 ** 30:,.1f} GiB: make --context, --d-model, --d-ff, --layers, "
                        f"--batch-size or --eval-batch smaller")


def pick_device(name: str) -> torch.device:
    """'auto' takes a CUDA GPU if there is one, then Apple's GPU (mps), else the CPU. On a Mac
    the GPU is kept for the bigger models; for the classroom one compare with --device cpu."""
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
    for f in fields(RunConfig):
        if f.name == field_name:
            return f.metadata["flag"] or "--" + f.name.replace("_", "-")
    raise KeyError(field_name)


DOWNLOADS = {  # texts the README trains on that LLM.py does not ship, and how to get each
    "tinyshakespeare.txt": "curl -L -o tinyshakespeare.txt "
                           "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"}


def show_path(path) -> str:
    """A path as text that any console and any UTF-8 file can hold on one line, whatever its bytes
    (a byte that is not UTF-8 as \\xNN, a newline as \\n, any control character escaped: one_line)."""
    text = "".join(f"\\x{ord(c) - 0xDC00:02x}" if 0xDC80 <= ord(c) <= 0xDCFF else c for c in str(path))
    return one_line(text.encode("utf-8", "backslashreplace").decode("utf-8"))


def first_line(error: BaseException) -> str:
    """An exception's message on one line (its first, at most 200 characters), or its type's name when it has none."""
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


def name_problem(path) -> str | None:
    """Why no file can ever be read or written under this name, or None: a part of it longer than
    the file system allows (255 bytes on most), or symbolic links that lead to each other."""
    try:
        os.stat(path)
    except OSError as e:
        if e.errno in (errno.ENAMETOOLONG, errno.ELOOP):
            return e.strerror
    except ValueError:  # a NUL byte: no file has it
        return "a file name cannot hold a NUL byte"
    return None


def check_names(paths: dict):
    """The UserError for the first flag whose file name no file can have (name_problem)."""
    for flag, path in paths.items():
        if path is not None and (problem := name_problem(path)):
            raise UserError(f"{flag} {show_path(path)}: {problem}")


def read_text(path: str | Path) -> str:
    """The text of a UTF-8 file in Unicode NFC form, line ends as '\\n'; a UserError for a
    missing, unreadable, binary, non-UTF-8 or empty file."""
    path = Path(path)
    if not path.exists():
        fetch = DOWNLOADS.get(path.name)
        raise UserError(f"data file not found: {path}" + (f" (download it first: {fetch})" if fetch else ""))
    if not path.is_file():
        piped = path.is_fifo() or str(path).startswith("/dev/fd/") or str(path).startswith("/proc/self/fd/")
        raise UserError(f"data path is not a file: {path}" + (
            ": a pipe (such as <(command)) can be read only once, and a run reads its text more than once; save "
            "the text to a file first (command > text.txt) and give that" if piped else ""))
    try:
        raw = path.read_bytes()
    except OSError as e:
        raise UserError(f"cannot read data file {path}: {e.strerror}") from None
    utf16 = utf16_text(raw)  # Windows Notepad's "Unicode": read as it is
    if utf16 is None and b"\x00" in raw:
        raise UserError(f"data file {path} looks binary (it contains zero bytes): give a UTF-8 text file")
    skip = 3 if raw.startswith(b"\xef\xbb\xbf") else 0  # a byte-order mark some editors write: dropped
    try:
        text = utf16 if utf16 is not None else str(memoryview(raw)[skip:], "utf-8")  # a view: a 100 MB file is not doubled
    except UnicodeDecodeError as e:
        raise UserError(f"data file {path} is not UTF-8 text (byte 0x{raw[skip + e.start]:02x} at offset "
                        f"{skip + e.start}){legacy_encoding(raw, path)}") from None
    del raw
    text = unicodedata.normalize("NFC", text.replace("\r\n", EOL).replace("\r", EOL))
    if not text.strip():
        raise UserError(f"data file {path} is empty: it has no line with text")
    return text


def utf16_text(raw: bytes) -> str | None:
    """The text of a UTF-16 file: with its byte-order mark, or without one when every second
    byte of a mostly Latin text is zero; None for anything else."""
    if raw[:2] in (b"\xff\xfe", b"\xfe\xff"):
        encoding = "utf-16"
    elif len(raw) >= 4 and len(raw) % 2 == 0 and raw[1::2].count(0) > 0.9 * (len(raw) // 2) and b"\x00" not in raw[0::2]:
        encoding = "utf-16-le"
    elif len(raw) >= 4 and len(raw) % 2 == 0 and raw[0::2].count(0) > 0.9 * (len(raw) // 2) and b"\x00" not in raw[1::2]:
        encoding = "utf-16-be"
    else:
        return None
    try:
        return raw.decode(encoding)
    except UnicodeDecodeError:
        return None


def legacy_encoding(raw: bytes, path: Path) -> str:
    """What to do with a text that is not UTF-8: the command that converts it, when its bytes
    read as Windows-1252 (Latin-1's superset) letters."""
    try:
        text = raw.decode("cp1252")
    except UnicodeDecodeError:
        return ": save it as UTF-8"
    high = [c for c in text if ord(c) > 127]
    if sum(c.isalpha() for c in high) < 0.8 * len(high):
        return ": save it as UTF-8"
    name = shell_word(show_path(path))
    return (f": it reads as Latin-1 / Windows-1252 ({''.join(dict.fromkeys(high))[:8]}); convert it with "
            f"iconv -f WINDOWS-1252 -t UTF-8 {name} > {shell_word(show_path(path.with_stem(path.stem + '-utf8')))}")


def check_line_count(lines: list[str], cfg: Config):
    """Line mode needs a line to train on, one to validate and (unless --test-fraction 0) one to test."""
    needed = 2 + (cfg.test_fraction > 0)
    if len(lines) < needed:
        raise UserError(f"data file {cfg.data} has {'a single line' if len(lines) == 1 else 'too few lines'}: "
                        f"line mode needs at least {needed} (train, validation"
                        f"{', test' if cfg.test_fraction > 0 else ''}); --mode stream reads it as one text")


def check_prompt(tokenizer: CharTokenizer, prompt: str) -> str:
    """The one place a prompt is checked: returns it as the model will read it, in NFC like the
    data (an accent typed as a separate combining mark is joined to its letter), or raises a
    UserError for bytes that are not UTF-8 and an UnknownCharacterError that names every
    character the model never saw."""
    check_utf8(prompt, "the prompt")
    prompt = unicodedata.normalize("NFC", prompt)
    tokenizer.encode(prompt)
    return prompt


def check_utf8(text: str, what: str):
    """Bytes that were not UTF-8 reach Python as lone surrogates (U+DC80 to U+DCFF, one per
    byte): refuse them, naming the first byte."""
    bad = next((c for c in text if "\udc80" <= c <= "\udcff"), None)
    if bad is not None:
        raise UserError(f"{what} is not UTF-8 text (byte 0x{ord(bad) - 0xDC00:02x}): type it again, "
                        f"or set the terminal to UTF-8")


def write_file(path: Path, write):
    """Write one output file whole or not at all: `write(file)` fills a temporary file of its own
    beside `path` (a name no other run can pick), which is then renamed over `path` in one step.
    Readers see the old file or the new one, never half of one. On any failure the temporary
    file is removed; a failed write (a full disk, a lost permission, torch's "file write failed")
    becomes a UserError that says what is left at `path`."""
    path = Path(path)
    if path.is_symlink():  # a link the user made (outputs/model.pt -> a disk with room): the file it names is written
        path = path.resolve()
    if path.exists() and not path.is_file():  # a folder, or a device (/dev/null), a pipe: renaming would replace it
        raise UserError(f"cannot write {show_path(path)}: it is {'a folder' if path.is_dir() else 'a device or a pipe'}, "
                        f"not a regular file, and a file written there would replace it; it is left as it is")
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{os.urandom(4).hex()}.tmp")
    remove_orphans(path)
    try:
        with open(temporary, "xb") as file:  # x: fails rather than share a file with another run
            write(file)
            file.flush()
            os.fsync(file.fileno())  # on the disk before the rename makes it the real file
        os.replace(temporary, path)  # atomic
        listed(path)  # in the manifest of the run writing this folder, if one is
    except BaseException as error:  # Ctrl-C included: never leave a temporary file behind
        with contextlib.suppress(OSError):
            temporary.unlink()
        cause = error.__context__  # torch.save reports what stopped its writes as a RuntimeError around it
        if isinstance(error, RuntimeError) and isinstance(cause, KeyboardInterrupt):
            raise cause from None  # Ctrl-C, SIGTERM or SIGHUP inside the write: an interruption, not a disk's fault
        if isinstance(error, RuntimeError) and isinstance(cause, OSError):
            error = cause  # its reason in words ("No space left on device"), not torch's
        if isinstance(error, (OSError, RuntimeError)):
            reason = getattr(error, "strerror", None) or first_line(error)
            left = "the earlier file there is untouched" if path.is_file() else "nothing was written there"
            raise UserError(f"cannot write {show_path(path)} ({reason}): {left}") from None
        raise


def remove_orphans(path: Path):
    """Remove the temporary files of `path` that a run killed while writing it (`kill -9`, a power
    cut) left behind: those whose process no longer exists. A running one's are never touched."""
    with contextlib.suppress(OSError):
        for orphan in path.parent.glob(f".{glob.escape(path.name)}.*-*.tmp"):
            pid = orphan.name[len(path.name) + 2:].split("-")[0]
            if pid.isdigit() and not process_exists(int(pid)):
                orphan.unlink()


def process_exists(pid: int) -> bool:
    if pid == os.getpid() or os.name == "nt":  # Windows' os.kill would stop the process instead of asking
        return True
    try:
        os.kill(pid, 0)  # signal 0: only asks whether the process is there
    except ProcessLookupError:
        return False
    except (PermissionError, OSError, OverflowError):  # another user's, or a platform that cannot ask
        return True
    return True


MANIFEST = ".written"  # in an output folder: the files the run that wrote the folder wrote there, one a line
MANIFEST_HEADER = "# the files the run that wrote this folder wrote here; the next run there replaces them\n"
RECORDING = {}  # resolved folder -> its Recording, while a run writes that folder


@dataclass
class Recording:
    """A run writing a folder: the earlier run's files, removed at this run's first write."""
    out: Path
    earlier: list  # the earlier run's files there, until this run writes its first file
    keep: Path | None  # never removed: the checkpoint --resume goes on from
    log: object
    written: set = field(default_factory=set)  # the names this run wrote there


def listed(path: Path):
    """After a file is written: if a run is recording its folder, the earlier run's files go at
    the run's first write (so a run that fails before it leaves the earlier folder whole), and
    the file is added to the folder's manifest."""
    record = RECORDING.get(path.parent.resolve())
    if record is None or path.name == MANIFEST:
        return
    if record.earlier is not None:
        gone = [f for f in record.earlier if f.name != path.name and f.is_file()
                and not (record.keep is not None and same_file(f, record.keep))]
        for f in gone:
            f.unlink()
        if gone:
            record.log(f"note: {record.out}/ held the files of an earlier run: its {counted(len(gone), 'other file')} "
                       f"{'is' if len(gone) == 1 else 'are'} removed")
        record.earlier = None
        save_text(record.out / MANIFEST, MANIFEST_HEADER)
        if record.keep is not None and record.keep.is_file() and same_file(record.keep.parent, record.out):
            append_line(record.out / MANIFEST, record.keep.name)  # --resume: the same run's checkpoint goes on
    record.written.add(path.name)
    if path.name not in manifest_names(record.out):
        append_line(record.out / MANIFEST, path.name)


def this_run_wrote(folder: Path) -> set:
    """The names of the files the run recording `folder` has written there so far."""
    record = RECORDING.get(Path(folder).resolve())
    return set(record.written) if record is not None else set()


def manifest_names(folder: Path) -> list[str]:
    """The file names a folder's manifest lists (a name with a path in it is ignored: only that folder's files)."""
    try:
        lines = (Path(folder) / MANIFEST).read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError):
        return []
    return [name for name in lines[1:] if name and name == Path(name).name and name not in (".", "..")]


@contextlib.contextmanager
def recording(out: Path, keep: Path | None = None, log=print):
    """A run writes `out`: the files the earlier run there wrote (its manifest) are removed at
    this run's first write, all but `keep`, so a folder never holds the files of two runs, and
    every file this run writes is listed in a new manifest. A folder holding a file a run writes
    that no manifest lists (another program's, or an older LLM.py's) is refused."""
    out = Path(out)
    clash = [name for name in OUTPUT_TEXTS + RUN_PICTURES if (out / name).exists()]  # a checkpoint alone may be replaced
    if not (out / MANIFEST).is_file() and keep is None and clash:
        raise UserError(f"{out}/ already holds {', '.join(clash[:3])}{' ...' if len(clash) > 3 else ''}, which no run "
                        f"listed as its own (another program's files, or an older LLM.py's run): give another --out, "
                        f"or empty that folder, so that a run never replaces a file it did not write")
    RECORDING[out.resolve()] = Recording(out, [out / name for name in manifest_names(out)], keep, log)
    try:
        yield
    finally:
        RECORDING.pop(out.resolve(), None)


def save_text(path: Path, text: str):
    """A UTF-8 text file (a report of the program's), written whole or not at all; a text's
    control characters are written out as \\xNN, as on the console."""
    write_file(path, lambda file: file.write(controls_written_out(text).encode("utf-8")))


def save_figure(fig, path: Path):
    """A matplotlib figure as a PNG, written whole or not at all."""
    write_file(path, lambda file: fig.savefig(file, format="png"))


def append_line(path: Path, line: str):
    """Add one line to a text file (the chat log) by writing the whole file again, atomically:
    a failure leaves the file as it was, never half a line."""
    earlier = path.read_bytes() if path.is_file() else b""
    if earlier and not earlier.endswith(b"\n"):
        earlier += b"\n"
    write_file(path, lambda file: file.write(earlier + (line + EOL).encode("utf-8")))


def same_file(a: Path, b: Path) -> bool:
    """True when two paths name one file (through '..', links or another spelling)."""
    a, b = Path(a), Path(b)
    if name_problem(a) or name_problem(b):  # no file has that name: compare the names as written
        return os.path.abspath(a) == os.path.abspath(b)
    if a.exists() and b.exists():
        return os.path.samefile(a, b)
    return a.resolve() == b.resolve()


@contextlib.contextmanager
def writing_folder(out: Path):
    """One run at a time writes a folder: a second run started while the first writes the same
    --out is refused, so what each run says about its files stays true. The lock is the
    operating system's (flock; msvcrt on Windows) on the file .lock in the folder: it ends with
    the process, however the process ends."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise UserError(f"--out {out} is a file, not a folder: name a folder for the outputs")
    try:
        out.mkdir(parents=True, exist_ok=True)
        lock = open(out / ".lock", "a+b")
    except OSError as e:
        raise UserError(f"cannot write to the output folder {out}: {e.strerror or e}") from None
    with lock:
        if not locked(lock):
            raise UserError(f"another run is writing {out}/ right now: wait for it to end, "
                            f"or give this run another --out")
        yield


def locked(lock) -> bool:
    """Take the operating system's exclusive lock on an open file (flock; msvcrt on Windows):
    False when another process, or another open of it, holds it. It ends with the process."""
    try:
        if os.name == "nt":
            import msvcrt
            lock.seek(0)
            msvcrt.locking(lock.fileno(), msvcrt.LK_NBLCK, 1)
        else:
            import fcntl
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        return True
    except OSError:
        return False


def stand_in(error: UnicodeEncodeError) -> tuple[str, int]:
    """What a console that cannot show a character prints instead: ⏎ as <eol>, ␣ as _, a letter
    with an accent as the letter alone (é as e), anything else as ?."""
    text = error.object[error.start:error.end]
    if any(0xDC80 <= ord(c) <= 0xDCFF for c in text):  # a byte of a file name that is not UTF-8: shown as \xNN
        return show_path(text).encode("ascii", "replace").decode(), error.end
    return "".join(STAND_INS.get(c) or unicodedata.normalize("NFKD", c).encode("ascii", "ignore").decode() or "?"
                   for c in text), error.end


STAND_INS = {"⏎": "<eol>", "␣": "_", "→": "->", "≈": "~"}  # for a console without these signs


def console_stand_ins():
    """Printing never stops on a character the console cannot encode (Windows' cp1252 when the
    output is redirected, some IDE consoles): it prints a stand-in. Files are UTF-8 whatever
    the console. A stream the shell closed (`>&-`, `<&-`) prints nowhere, or reads as empty."""
    for name, mode in (("stdout", "w"), ("stderr", "w"), ("stdin", "r")):
        if getattr(sys, name) is None:
            setattr(sys, name, open(os.devnull, mode, encoding="utf-8"))
    codecs.register_error("stand-ins", stand_in)
    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):  # also on a UTF-8 console: a file name's stray bytes print as \xNN
            stream.reconfigure(errors="stand-ins")


class ConsoleLost(Exception):
    """Standard output stopped taking text: its reader went away (`| head -1`: a broken pipe), or
    its device failed (`> /dev/full`: no space left). `kept` says what the run keeps."""

    def __init__(self, error: OSError):
        super().__init__(error.strerror or str(error))
        self.error, self.kept = error, ""


class GuardedOutput:
    """sys.stdout as it was, except that a text's control characters are written out (\\x1b: a
    text's escape codes never colour or move the console), and its first failed write raises
    ConsoleLost (the command stops, main() says so on stderr) and any later one prints nowhere."""

    def __init__(self, stream):
        self.stream, self.lost = stream, False

    def write(self, text: str) -> int:
        if not self.lost:
            try:
                self.stream.write(controls_written_out(text))
            except OSError as error:
                self.give_up(error)
        return len(text)

    def flush(self):
        if not self.lost:
            try:
                self.stream.flush()
            except OSError as error:
                self.give_up(error)

    def give_up(self, error: OSError):
        self.lost = True
        with contextlib.suppress(OSError, ValueError):  # the text still buffered goes nowhere at exit, quietly
            os.dup2(os.open(os.devnull, os.O_WRONLY), self.stream.fileno())
        raise ConsoleLost(error) from None

    def __getattr__(self, name):  # isatty, encoding, fileno, ...: the stream's own
        return getattr(self.stream, name)


CONTROLS = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f-\x9f]")  # all but tab, line end and carriage return


def controls_written_out(text: str) -> str:
    """A text's control characters as \\xNN (ESC as \\x1b), kept: tab, \\n and \\r (progress lines)."""
    return CONTROLS.sub(lambda found: f"\\x{ord(found.group()):02x}", text)


def say(text: str):
    """One line on stderr, the channel of errors and interruptions; a stderr that cannot take it is left alone."""
    with contextlib.suppress(OSError, ValueError):
        print(one_line(text), file=sys.stderr)


def one_line(text: str) -> str:
    """Text with its control characters (a file name's newline, a terminal's escape) written out as
    \\n, \\x1b: what a path or a prompt holds can never break a message into lines nor colour a console."""
    return "".join(c.encode("unicode_escape").decode("ascii") if unicodedata.category(c) in ("Cc", "Zl", "Zp") else c
                   for c in text)


def need_packages(*names: str):
    """Refuse, before any work, a run that needs a package this Python does not have."""
    missing = []
    for name in names:
        try:
            __import__(name)
        except ImportError:
            missing.append(name)
    if missing:
        raise UserError(f"{' and '.join(missing)} {'is' if len(missing) == 1 else 'are'} not installed here, and this "
                        f"run draws pictures with {'them' if len(missing) > 1 else 'it'}: pip install -r requirements.txt "
                        f"(or add --pictures alone to draw none)")


def find_default_data(cfg: Config, typed: bool) -> Config:
    """The default corpus is looked for next to LLM.py when the working folder has none, so
    `python path/to/LLM.py` runs from any folder."""
    here = globals().get("__file__")  # not defined in a notebook, which runs in the file's folder
    if typed or here is None or Path(cfg.data).exists():
        return cfg
    beside = Path(here).resolve().parent / cfg.data
    return replace(cfg, data=str(beside)) if beside.is_file() else cfg


class Terminated(KeyboardInterrupt):
    """A signal that would end the program: SIGTERM (a `kill`, a scheduler's time limit), SIGHUP (a
    closing terminal), SIGQUIT (Ctrl-\\), SIGXCPU (a CPU-time limit), SIGUSR1, SIGUSR2, SIGALRM."""

    def __init__(self, signum: int = 15):
        import signal
        super().__init__()
        self.signum, self.name = signum, signal.Signals(signum).name  # exit code 128 + signum, as shells report it


STOPPING_SIGNALS = ("SIGTERM", "SIGHUP", "SIGQUIT", "SIGXCPU", "SIGUSR1", "SIGUSR2", "SIGALRM")  # those the OS has


@contextlib.contextmanager
def signals_like_ctrl_c():
    """While inside, every signal that would end the program (STOPPING_SIGNALS) stops it the way
    Ctrl-C does: training says which epoch the checkpoint keeps, and no file is left half
    written. A signal the program was started ignoring stays ignored: `nohup python LLM.py &`
    goes on when its terminal closes. (SIGXFSZ, a file-size limit, Python itself ignores: the
    write fails and says so.)"""
    import signal
    import threading
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return

    def stop(signum, frame):
        raise Terminated(signum)

    caught = [getattr(signal, name) for name in STOPPING_SIGNALS if hasattr(signal, name)  # Windows: SIGTERM only
              and signal.getsignal(getattr(signal, name)) is not signal.SIG_IGN]  # `nohup`'s SIGHUP stays ignored
    previous = {signum: signal.signal(signum, stop) for signum in caught}
    try:
        yield
    finally:
        for signum, handler in previous.items():
            if signal.getsignal(signum) is not signal.SIG_IGN:  # one ignored while stopping (ignore_sigterm) stays so
                signal.signal(signum, handler)


# %% [markdown]
# ## B. Long texts: a book cut into windows
#
# A list of proverbs is one sample per line (section 4). A book is one long text: **stream
# mode** reads the whole text as one sequence, and the samples are windows of `context`
# characters cut from it, from a new random offset every epoch; ⏎ is then simply the character
# that ends a line of the book. A window is teacher-forced like a line:
# input = `text[i : i + T]`, target = `text[i + 1 : i + T + 1]`; all windows have the same
# length, so they need no padding. `--mode auto` picks line mode when the lines are short (95%
# fit in the context) and no blank line separates them, stream mode otherwise.
#
# The held-out parts are contiguous blocks at the end of the text (train | validation | test),
# because a random window would overlap its neighbours in the training text. A 100 MB book is
# encoded through a lookup table, a million characters at a time, into the smallest integer
# type that holds its ids: 100 MB of text takes about 100 MB of ids.

# %%
def choose_mode(text: str, context: int) -> tuple[str, str]:
    """('line' or 'stream', the reason in words) for --mode auto."""
    rows = text[:1_000_000].strip().split(EOL)  # the first million characters tell the kind of text
    blank = sum(not row.strip() for row in rows)
    fitting = sum(len(row.strip()) + 1 < context for row in rows if row.strip())
    filled = len(rows) - blank
    if blank == 0 and fitting >= 0.95 * filled and filled >= 3:
        return "line", f"{filled} lines, none blank, {fitting / filled:.0%} fit in the context"
    if blank:
        return "stream", f"{counted(blank, 'blank line')}: paragraphs of a running text"
    return "stream", f"only {fitting} of {counted(filled, 'line')} fit in the context of {context}"


def code_points(text: str, chunk: int = 1 << 20):
    """The Unicode code points of text as int32 tensors, a million at a time: a 100 MB text
    is never held as one 400 MB tensor of 32-bit numbers."""
    for start in range(0, len(text), chunk):
        yield torch.frombuffer(bytearray(text[start:start + chunk].encode("utf-32-le")), dtype=torch.int32)


def smallest_int_dtype(vocab_size: int) -> torch.dtype:
    """uint8 for up to 256 characters, int16 or int32 beyond: a 100 MB text then takes 100 MB."""
    return torch.uint8 if vocab_size <= 256 else torch.int16 if vocab_size <= 32767 else torch.int32


MERGE_TEXT = 10_000_000  # the characters of a book's training block that section 3's merges are learned from


def line_chunks(text: str, size: int = 1 << 20):
    """text in pieces of about `size` characters, cut after a ⏎ (no word piece spans one)."""
    start = 0
    while start < len(text):
        end = text.find(EOL, start + size)
        end = len(text) if end < 0 else end + 1
        yield text[start:end]
        start = end


def encode_long_text(tokenizer: CharTokenizer, text: str) -> torch.Tensor:
    """tokenizer.encode(text) for long texts, vectorized: (N,) ids in the smallest integer
    type. A table maps every code point to its id (-1 when unknown); indexing it with the code
    points of a chunk encodes the chunk in one operation."""
    texts = [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)]
    if any(len(t) != 1 for t in texts):  # word pieces: encoded a million characters (whole lines) at a time
        return torch.cat([torch.tensor(tokenizer.encode(chunk), dtype=smallest_int_dtype(tokenizer.vocab_size))
                          for chunk in line_chunks(text)] or [torch.empty(0, dtype=torch.uint8)])
    lookup = torch.full((max(map(ord, texts)) + 2,), -1, dtype=torch.int32)  # code point -> id
    lookup[torch.tensor([ord(c) for c in texts])] = torch.arange(tokenizer.vocab_size, dtype=torch.int32)
    ids = torch.empty(len(text), dtype=smallest_int_dtype(tokenizer.vocab_size))  # (N,)
    start = 0
    for points in code_points(text):
        chunk = lookup[points.clamp(max=len(lookup) - 1)]  # beyond the table: the -1 in its last slot
        if (chunk < 0).any():
            tokenizer.encode(text[start:start + len(points)])  # names the unknown characters
        ids[start:start + len(points)] = chunk.to(ids.dtype)
        start += len(points)
    return ids


@dataclass
class StreamSplit:
    """One contiguous block of the text, cut into windows when batched."""
    ids: torch.Tensor  # (N,) token ids, in the smallest integer type that holds them
    context: int  # window length T
    n_chars: int = 0  # the characters its targets stand for: the block's, but the first token's

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
        pieces = [(inputs, targets)] if n else []  # a block shorter than T has no whole window
        if tail and len(body) - 1 > n * T:
            pieces.append((body[n * T:-1].unsqueeze(0), body[n * T + 1:].unsqueeze(0)))  # (1, T')
        return pieces

    def batches(self, batch_size: int, generator: torch.Generator | None = None):
        """Yield (inputs, targets), each (B, T). With a generator (training): the windows from a
        random offset in a random order. Without one: every window from the start, plus the
        shorter last one."""
        if generator is None:
            for inputs, targets in self.windows(0, tail=True):  # (n, T)
                for x, y in zip(inputs.split(batch_size), targets.split(batch_size)):
                    yield x.long(), y.long()  # (B, T) each, as the int64 that embeddings want
            return
        largest = min(self.context - 1, len(self.ids) - 2 - self.context)  # leave at least one window
        offset = int(torch.randint(largest + 1, (), generator=generator))
        inputs, targets = self.windows(offset)[0]  # (n, T)
        order = torch.randperm(len(inputs), generator=generator)  # (n,)
        for rows in order.split(batch_size):  # rows: (B,)
            yield inputs[rows].long(), targets[rows].long()  # (n, T) -> (B, T)


def window_data(text: str, cfg: Config, tokenizer: CharTokenizer | None, reason: str, extra_train=()) -> Data:
    """Stream mode: contiguous blocks, train | validation | test, each a StreamSplit. The
    tokenizer is learned from the training block unless one is given."""
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
    extra = "".join(line + EOL for line in extra_train)
    parts = (extra + text[:n_train], text[n_train:n_train + n_val], text[n_train + n_val:])  # train | val | test
    tokenizer = tokenizer or TOKENIZERS[cfg.tokenizer].learn(text, text_lines(parts[0][:MERGE_TEXT]), cfg)
    blocks = []
    for part in parts:
        ids = encode_long_text(tokenizer, part)  # (N,)
        blocks.append(StreamSplit(ids, cfg.context, len(part) - len(tokenizer.token_text(ids[0])) if len(ids) else 0))
    sample_lines = text_lines((extra + text[:min(n_train, 200_000)])[:200_000])  # for the pictures
    return Data("stream", reason, tokenizer, blocks[0], blocks[1], blocks[2] if n_test else None, sample_lines, n)


class BPETokenizer(CharTokenizer):
    """The corpus's characters, then the pieces its most frequent pairs were merged into."""
    kind, unit = "bpe", "piece"

    def __init__(self, chars, merges=(), counts=()):
        super().__init__(chars)  # ids 0 .. len(chars) - 1: the characters, sorted, as in section 2
        self.pieces = list(self.chars)  # id -> text; a merge appends its new piece
        self.merges, self.counts = {}, []  # (a, b) -> (rank, id of ab); how often each pair was seen
        for (left, right), count in zip(merges, counts or [0] * len(merges)):
            self.add_merge((self.ids[left], self.ids[right]), count)
        self.cache = {}  # word -> its ids: a corpus repeats its words

    def add_merge(self, pair: tuple[int, int], count: int) -> int:
        text = self.pieces[pair[0]] + self.pieces[pair[1]]
        if text not in self.ids:  # two merges may spell the same piece: it keeps one id
            self.ids[text] = len(self.pieces)
            self.pieces.append(text)
        self.merges[pair] = (len(self.merges), self.ids[text])
        self.counts.append(count)
        return self.ids[text]

    @classmethod
    def learn(cls, text: str, train_lines: list[str], cfg: Config) -> "BPETokenizer":
        """The characters of the whole text, then merges of the training words' pairs up to cfg.vocab_size."""
        tokenizer = cls(text)
        counted = Counter(word for line in train_lines for word in WORD.findall(line))  # word -> how often
        spelled, often = [[tokenizer.ids[c] for c in word] for word in counted], list(counted.values())
        pairs, holders = Counter(), defaultdict(set)  # pair -> how often; pair -> the words that hold it
        for w, (ids, n) in enumerate(zip(spelled, often)):
            for pair in zip(ids, ids[1:]):
                pairs[pair] += n
                holders[pair].add(w)
        while tokenizer.vocab_size < cfg.vocab_size and pairs:
            top = max(pairs.values())
            if top < 2:  # a pair seen once: merging it would only learn that one word by heart
                break
            best = min(pair for pair, n in pairs.items() if n == top)  # the most frequent; ties: smaller ids
            new = tokenizer.add_merge(best, top)
            for w in holders.pop(best):  # only the words that hold the pair change: recount theirs
                ids, n = spelled[w], often[w]
                for pair in zip(ids, ids[1:]):
                    pairs[pair] -= n
                    if not pairs[pair]:
                        del pairs[pair]
                spelled[w] = ids = merge_pair(ids, best, new)
                for pair in zip(ids, ids[1:]):
                    pairs[pair] += n
                    holders[pair].add(w)
        return tokenizer

    def encode_word(self, word: str) -> list[int]:
        """The word's characters, merged while a learned pair is left, the earliest learned first."""
        if word not in self.cache:
            ids = [self.ids[c] for c in word]
            while learned := [pair for pair in zip(ids, ids[1:]) if pair in self.merges]:
                first = min(learned, key=lambda pair: self.merges[pair][0])  # the pair learned earliest
                ids = merge_pair(ids, first, self.merges[first][1])
            self.cache[word] = ids
        return self.cache[word]

    def encode(self, text: str) -> list[int]:
        super().encode(text)  # only to name any character outside the vocabulary
        return [i for word in WORD.findall(text) for i in self.encode_word(word)]

    @property
    def vocab_size(self) -> int: return len(self.pieces)
    def token_text(self, i: int) -> str: return self.pieces[int(i)]
    def decode(self, ids) -> str: return "".join(self.pieces[int(i)] for i in ids)
    def merge_texts(self) -> list[list[str]]: return [[self.pieces[a], self.pieces[b]] for a, b in self.merges]

TOKENIZERS = {"char": CharTokenizer, "bpe": BPETokenizer}  # --tokenizer (and a checkpoint's kind) -> its class


def tokenizer_record(tokenizer: CharTokenizer) -> dict:
    """What a checkpoint keeps of a tokenizer, as plain data: its kind, its characters, its merges."""
    merges = [[tokenizer.token_text(a), tokenizer.token_text(b)] for a, b in tokenizer.merges]  # in learned order
    pieces = {"merges": merges, "counts": list(tokenizer.counts)} if tokenizer.kind == "bpe" else {}
    return {"kind": tokenizer.kind, "chars": tokenizer.alphabet(), **pieces}


def tokenizer_from_record(stored: dict) -> CharTokenizer:
    """The tokenizer a record describes, every field checked (a ValueError says which is wrong)."""
    chars = stored.get("chars")
    if not (isinstance(chars, list) and EOL in chars and chars == sorted(set(chars))
            and all(isinstance(c, str) and len(c) == 1 for c in chars)):
        raise ValueError("a list of distinct single characters, sorted, with the end of line")
    if stored.get("kind") == "char":
        return CharTokenizer(chars)
    merges, counts = stored.get("merges"), stored.get("counts")
    if not isinstance(merges, list):
        raise ValueError("no list of merges")
    known = set(chars)
    for pair in merges:
        if not (isinstance(pair, list) and len(pair) == 2 and all(p in known and p != EOL for p in pair)):
            raise ValueError(f"merge {pair!r}: not two earlier pieces (none of them the end of line)")
        known.add(pair[0] + pair[1])
    if not (isinstance(counts, list) and len(counts) == len(merges)
            and all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in counts)):
        raise ValueError("a count of at least 0 for every merge")
    return BPETokenizer(chars, merges, counts)


def with_characters(tokenizer: CharTokenizer, text: str) -> tuple[CharTokenizer, list[str]]:
    """Fine-tuning on a new text: (the tokenizer that also knows its new characters, those characters).
    Word pieces keep their merges; the ids are those of the sorted characters, then the pieces."""
    added = tokenizer.unknown(text)
    if not added:
        return tokenizer, []
    return tokenizer_from_record({**tokenizer_record(tokenizer), "chars": sorted(tokenizer.alphabet() + added)}), added


def prepare_any_text(text: str, cfg: Config, tokenizer: CharTokenizer | None = None, extra_train=()) -> Data:
    """prepare_data (section 4) for any text: the mode of cfg.mode, or the one --mode auto
    picks; a book goes to stream mode, proverbs to the story's line mode."""
    text, separators = without_separators(text)
    mode, reason = (cfg.mode, "chosen with --mode") if cfg.mode != "auto" else choose_mode(text, cfg.context)
    if separators:
        reason += f"; {counted(separators, 'line')} that {'is' if separators == 1 else 'are'} only % (a fortune file's separators) left out"
    item = "proverb" if is_the_proverbs(cfg.data) else "line"  # samples are "a line it trained on" for other texts
    if mode == "stream":
        return replace(window_data(text, cfg, tokenizer, reason, extra_train), item=item)
    check_line_count(text_lines(text), cfg)  # a clear error for a text of one or two lines
    if tokenizer is None:  # the tokenizer --tokenizer names, learned from the training lines only
        train_lines = split_lines(text_lines(text), cfg.val_fraction, cfg.seed, cfg.test_fraction)[0]
        tokenizer = TOKENIZERS[cfg.tokenizer].learn(text, train_lines, cfg)
    return replace(prepare_data(text, cfg, tokenizer, extra_train), reason=reason, item=item)


def counted(n: int, word: str, plural: str | None = None) -> str:
    """'1 line', '2 lines', '1,000 lines': a number with its word in the singular or the plural."""
    return f"{n:,} {word if n == 1 else plural or word + 's'}"


def without_separators(text: str) -> tuple[str, int]:
    """A fortune file (Debian's fortunes: entries between lines that are only %) without those
    lines, and how many there were; any other text as it is."""
    lines = text.split(EOL)
    marks = sum(line.strip() == "%" for line in lines)
    if marks < 3 or marks < 0.1 * sum(bool(line.strip()) for line in lines):
        return text, 0
    return EOL.join(line for line in lines if line.strip() != "%"), marks


def is_the_proverbs(data: str) -> bool:
    """True for the shipped refranes.txt (wherever it is read from), the text the story speaks of."""
    return Path(data).name == "refranes.txt" and same_file(data, find_default_data(RunConfig(), False).data)


# %% [markdown]
# ## C. Faster arithmetic: the fast code, mixed precision, compile
#
# **The fast code** (`--code`). On a CPU a run trains with the story's own `attention()` and
# `Adam`, so that what a class reads is what runs. On a GPU (`--code auto`), or with `--code
# fast`, two faster versions of the same formulas take their place, and the run's device line
# says which code ran:
#
# - `FusedSelfAttention` computes section 7's attention with PyTorch's
#   `F.scaled_dot_product_attention`: one fused kernel that never keeps the (T, T) weights. When
#   the weights are asked for (the pictures, the explorer) it calls section 7's `attention()`.
# - `FastAdam` is section 12's Adam with each line applied to every tensor of a group in one call
#   (`torch._foreach_*`): on a GPU every call is a kernel launch, so a step costs 7 launches per
#   group (8 with AdamW's decay) instead of 7 per tensor. On a 2-core CPU that saves little: 0.80
#   ms per step instead of 1.52 at the classroom shape (37 tensors), 3.48 instead of 3.67 at
#   nanoGPT's CPU shape (2026-11-23). Adam is written out rather than taken from `torch.optim`
#   because creating a `torch.optim` optimizer loads PyTorch's compiler: 1.8 s on a 2-core CPU.
#
# The tests prove both equal to the story's code (and to PyTorch's own layers and optimizers);
# what the story's code costs on a CPU, measured side by side, is in tests/BENCHMARK.md.
#
# **Mixed precision** (`--precision`). Under bf16 autocast the matrix products run in bfloat16
# (8 bits of mantissa instead of 23: about 3 significant digits, but float32's range), which GPUs
# compute several times faster; sums, softmax and the loss stay in float32. Most CPUs have no fast
# bfloat16, so `auto` uses it only on a GPU that supports it; with it off, no autocast context is
# entered at all. It plugs into the story's `autocast` hook.
#
# **torch.compile** (`--compile`, off by default) traces the model once and writes fused kernels
# for it: fewer trips through memory, less Python per step, the same numbers up to rounding. The
# first steps wait tens of seconds for the compiler, so it pays only in long runs on a GPU; on a
# 2-core CPU it was slower (tests/BENCHMARK.md). It plugs into the `network` hook. The compiler
# needs a C++ compiler and a cache folder of its own; when it cannot work, the run says so in one
# line (`compiler_failure`) instead of its traceback.

# %%
def fast_code(cfg: Config, device: torch.device) -> bool:
    """--code: True where PyTorch's fused attention and FastAdam train, False where the story's
    attention() and Adam do (auto: the story's on a CPU and in a workbook, the fast ones on a GPU)."""
    return cfg.code == "fast" or (cfg.code == "auto" and device.type != "cpu" and not STUDENT_EXERCISES)


def code_in_words(cfg: Config, device: torch.device) -> str:
    if fast_code(cfg, device):
        return "fast (fused attention, Adam on all tensors at once; --code story runs Part I's)"
    return "the story's (Part I's attention() and Adam, as written)"


class FusedSelfAttention(MultiHeadSelfAttention):
    """Section 7's attention in PyTorch's fused kernel: the same numbers, no weights kept. When
    the weights are asked for (pictures, the explorer), section 7's attention() computes them."""
    is_causal = True  # False once --without causal-mask has opened the mask

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        if return_weights:
            return super().forward(x, True)
        q, k, v = self.queries_keys_values(x)  # 3 x (B, H, T, D)
        heads = F.scaled_dot_product_attention(q, k, v, is_causal=self.is_causal)  # (B, H, T, D)
        return self.output(join_heads(heads)), None  # (B, T, C)


def use_code(model: TransformerLM, cfg: Config, device) -> TransformerLM:
    """Every attention module computes with the fused kernel where --code asks for the fast
    code on `device`, with section 7's attention() where not; the weights stay as they are."""
    fused = fast_code(cfg, torch.device(device))
    for layer in model.layers:
        layer.attention.__class__ = FusedSelfAttention if fused else MultiHeadSelfAttention
        if fused:  # the kernel's own mask, unless --without causal-mask opened the buffer
            layer.attention.is_causal = not bool(layer.attention.causal_mask.all())
    return model


def build_model(vocab_size: int, cfg: Config, device="cpu") -> TransformerLM:
    """Section 9's model, on the CPU, with the ideas of --without taken out (part I), computing
    with the code --code asks for on `device`."""
    return use_code(take_out(TransformerLM(vocab_size, cfg), cfg.without), cfg, device)


class FastAdam(Adam):
    """Adam's step for all tensors of a group at once: the same lines, on lists of tensors."""

    @torch.no_grad()
    def step(self):
        self.t += 1
        beta1, beta2 = self.betas
        for group, m, v in zip(self.param_groups, self.m, self.v):
            params, grads = group["params"], [p.grad for p in group["params"]]
            torch._foreach_lerp_(m, grads, 1 - beta1)  # m <- beta1 m + (1 - beta1) g
            torch._foreach_mul_(v, beta2)
            torch._foreach_addcmul_(v, grads, grads, 1 - beta2)  # v <- beta2 v + (1 - beta2) g^2
            if group["weight_decay"]:
                torch._foreach_mul_(params, 1 - group["lr"] * group["weight_decay"])  # AdamW only
            denominator = torch._foreach_sqrt(v)
            torch._foreach_div_(denominator, math.sqrt(1 - beta2 ** self.t))
            torch._foreach_add_(denominator, self.eps)  # sqrt(v / (1 - beta2^t)) + eps
            torch._foreach_addcdiv_(params, m, denominator, -group["lr"] / (1 - beta1 ** self.t))


def uses_bf16(cfg: Config, device: torch.device) -> bool:
    if cfg.precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return cfg.precision == "bf16"


def mixed_precision(cfg: Config, device: torch.device):
    """The context in which forward passes run: bf16 autocast, or nothing at all."""
    if not uses_bf16(cfg, device):
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16)


# %% [markdown]
# ## D. Several processes: torchrun
#
# `torchrun --nproc_per_node=N LLM.py ...` starts N copies of this file; each learns who it is
# from the environment (RANK, WORLD_SIZE). DistributedDataParallel (DDP) keeps the copies in
# step: every copy starts from the same weights, trains on its own share of every N consecutive
# batches, and during `backward()` the gradients are averaged across the copies (an all-reduce),
# so every copy takes the very same optimizer step. One step then learns from N batches at once.
# Only the first copy (rank 0) prints and writes files. With one process none of this happens.

# %%
@dataclass
class Ranks:
    """Who this process is among the processes training together."""
    rank: int = 0  # 0 .. world - 1
    world: int = 1  # number of processes

    @property
    def is_writer(self) -> bool:  # rank 0 prints and writes the files
        return self.rank == 0


def started_by_torchrun() -> bool:
    """True in a process torchrun started: it sets RANK, MASTER_ADDR and MASTER_PORT."""
    return all(os.environ.get(name) for name in ("RANK", "MASTER_ADDR", "MASTER_PORT"))


def torchrun_world() -> int:
    """How many processes train together: WORLD_SIZE when torchrun set it, with RANK, MASTER_ADDR
    and MASTER_PORT; 1 when one of those is missing (a WORLD_SIZE a cluster job left behind is
    not torchrun's). A value that is not a whole number is refused, naming the variable."""
    for name in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_PORT"):
        value = os.environ.get(name)
        if value is not None and not value.strip().isdigit():
            raise UserError(f"the environment variable {name} is {value!r}: torchrun sets it to a whole number "
                            f"(unset it to train in one process)")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if not started_by_torchrun():
        return 1
    for name in ("RANK", "LOCAL_RANK"):
        if int(os.environ.get(name, "0")) >= max(world, 1):
            raise UserError(f"the environment variable {name} is {os.environ[name]}, but WORLD_SIZE is {world}: a rank "
                            f"counts the processes from 0, so it must be below WORLD_SIZE (torchrun sets both)")
    return world


def start_distributed(device: torch.device, log=print) -> tuple[Ranks, torch.device]:
    """Join the process group when started by torchrun (gloo on CPU, nccl on GPUs)."""
    world = torchrun_world()
    if world <= 1 and int(os.environ.get("WORLD_SIZE", "1")) > 1:
        log(f"note: WORLD_SIZE={os.environ['WORLD_SIZE']} is set, but not by torchrun (no RANK, MASTER_ADDR "
            f"and MASTER_PORT): this run trains in one process")
    if world <= 1:
        return Ranks(), device
    import torch.distributed as dist
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ.get("LOCAL_RANK", "0")))  # one GPU per process
        torch.cuda.set_device(device)
    if not dist.is_initialized():
        join_process_group("nccl" if device.type == "cuda" else "gloo", world, log)
    return Ranks(dist.get_rank(), dist.get_world_size()), device


JOIN_TIMEOUT = 300  # seconds the processes of a launch without torchrun wait for each other to join


def join_process_group(backend: str, world: int, log=print):
    """Join the processes of this run. torchrun starts them all together (it sets TORCHELASTIC_RUN_ID);
    processes started another way, or torchrun's variables left in the environment, may wait for
    partners that never come: they wait JOIN_TIMEOUT seconds at most, and say so first."""
    import datetime
    import torch.distributed as dist
    if os.environ.get("TORCHELASTIC_RUN_ID"):
        dist.init_process_group(backend)
        return
    where = f"{os.environ['MASTER_ADDR']}:{os.environ['MASTER_PORT']}"
    log(f"note: RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT are set, but not by torchrun: process "
        f"{os.environ['RANK']} of {world} joins the others at {where}, waiting at most {JOIN_TIMEOUT} s")
    try:
        dist.init_process_group(backend, timeout=datetime.timedelta(seconds=JOIN_TIMEOUT))
    except RuntimeError as e:
        raise UserError(f"the {world} processes never all joined at {where} ({collective_failure(e)}): start "
                        f"every one of them (torchrun does), or unset RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT "
                        f"to train in one process") from None


def current_ranks() -> Ranks:
    """This process's place in the process group, or Ranks() when it trains alone."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        return Ranks(dist.get_rank(), dist.get_world_size())
    return Ranks()


def collective_failure(error: RuntimeError) -> str:
    """gloo's or NCCL's reason in a few words: "[.../pair.cc:537] Read error [127.0.0.1]:17100: Connection
    reset by peer. This is typically caused by ..." -> "Read error [127.0.0.1]:17100: Connection reset by peer"."""
    return re.sub(r"^\[[^\]]*\]\s*", "", first_line(error)).split(". ")[0]


def compiler_failure(error: Exception) -> str:
    """torch.compile's reason in a line: "PyTorch's compiler failed (InductorError: InvalidCxxCompiler: ...)"."""
    return f"PyTorch's compiler failed ({type(error).__name__}: {first_line(error)})"


def from_the_compiler(error: Exception) -> bool:
    """Raised inside torch.compile's machinery (dynamo traces, inductor writes the kernels)?"""
    return type(error).__module__.startswith(("torch._dynamo", "torch._inductor"))


def ignore_sigterm():
    """From now on SIGTERM changes nothing: the process is already stopping, and says how."""
    import signal
    import threading
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, signal.SIG_IGN)


def checkpoint_holds(path: Path) -> str:
    """What a checkpoint another process writes holds now, in words (whole or absent: writes are atomic)."""
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
        return f"{path} keeps epoch {payload['epoch']} (validation loss {payload['val_loss']:.3f})"
    except Exception:
        return f"no checkpoint was written to {path}"


def end_distributed(together: bool = True):
    """Leave the process group together: the other ranks wait here while rank 0 writes. After an
    error (together=False) each process leaves at once, waiting for no other."""
    import torch.distributed as dist
    if dist.is_available() and dist.is_initialized():
        if together:
            dist.barrier()
        dist.destroy_process_group()


def check_a_batch_for_every_process(data: Data, cfg: Config, ranks: Ranks):
    """Under torchrun each process takes one batch a step: an epoch of fewer batches than
    processes would take no step at all, and measure nothing."""
    split = data.train_split
    windows = len(split) if data.mode == "line" else max(1, (len(split.ids) - split.context) // split.context)
    batches = -(-windows // cfg.batch_size)  # the fewest an epoch gives (stream mode starts at a random offset)
    if batches < ranks.world:
        raise UserError(f"{ranks.world} processes take {ranks.world} batches a step, and an epoch of {cfg.data} gives "
                        f"{batches} {'batch' if batches == 1 else 'batches'} of --batch-size {cfg.batch_size}: "
                        f"run fewer processes (torchrun --nproc-per-node), give a smaller --batch-size or a longer text")


def my_share(batch_stream, ranks: Ranks):
    """Of every `world` consecutive batches, the one with this rank's index. An unfinished
    group at the end is dropped by every rank, so all take the same number of steps."""
    group = []
    for batch in batch_stream:
        group.append(batch)
        if len(group) == ranks.world:
            yield group[ranks.rank]
            group = []


def summed_over_ranks(values: torch.Tensor, ranks: Ranks) -> torch.Tensor:
    """The element-wise sum of a tensor over all ranks (itself with one process)."""
    if ranks.world == 1:
        return values
    import torch.distributed as dist
    total = values.clone()
    dist.all_reduce(total)
    return total


def same_weights_everywhere(model: nn.Module, ranks: Ranks) -> bool:
    """True if every rank holds exactly the same weights (checked, not assumed)."""
    import torch.distributed as dist
    flat = torch.cat([p.detach().float().flatten() for p in model.parameters()])  # (P,) on the model's device
    gathered = [torch.empty_like(flat) for _ in range(ranks.world)]
    dist.all_gather(gathered, flat)
    return all(torch.equal(flat, other) for other in gathered)


# %% [markdown]
# ## E. The run's hooks
#
# The story's training loop (section 14) lets other code in at a few moments, through a `Hooks`
# object. `DeviceHooks` is what any training on a device needs: the Adam `--code` asks for (the
# story's, or `FastAdam` of part C), bf16 where
# asked, and on a GPU the batches in page-locked memory, so the copy to the GPU runs while it
# computes (the chat's `/train` uses it). `RunHooks` is what `python LLM.py` adds: DDP and `torch.compile` around the
# model, this process's share of the batches and the sums over all processes, the progress line
# inside a long epoch, the checkpoint of every new best epoch, the epoch pictures, and resuming
# exactly where a checkpoint left off.

# %%
class DeviceHooks(Hooks):
    """The Adam --code asks for; bf16 autocast where asked; page-locked batches on a GPU."""

    def __init__(self, cfg: Config, device: torch.device):
        self.cfg, self.device = cfg, device

    def optimizer(self, model, cfg: Config) -> Adam:
        return make_optimizer(model, cfg, FastAdam if fast_code(self.cfg, self.device) else Adam)

    def autocast(self):
        return mixed_precision(self.cfg, self.device)

    def batches(self, batch_stream):
        for inputs, targets in batch_stream:
            if self.device.type == "cuda":  # page-locked memory: the copy to the GPU runs while it computes
                inputs, targets = inputs.pin_memory(), targets.pin_memory()
            yield inputs, targets


class RunHooks(DeviceHooks):
    """Everything `python LLM.py` plugs into train(): see the banner above."""

    def __init__(self, setup: Setup, pictures):
        super().__init__(setup.cfg, setup.device)
        self.ranks, self.checkpoint, self.tokenizer = setup.ranks, setup.checkpoint, setup.data.tokenizer
        self.processes, self.resume, self.pictures, self.out_log = setup.ranks.world, setup.resume_state, pictures, setup.log
        self.in_place = setup.log is print and sys.stdout.isatty()  # progress inside an epoch: redrawn on one line
        self.progress_width, self.next_progress = 0, math.inf  # the progress line's width on screen; when next
        self.state, self.adam, self.model = TrainingState(), None, setup.model  # the optimizer: set once training starts
        explorer = setup.writes and wanted(setup.cfg, "explorer")
        self.snapshot_epochs = snapshot_epochs(setup.cfg, count_parameters(setup.model)) if explorer else set()
        self.snapshots: list[Snapshot] = []
        self.data, self.untrained_loss = setup.data, None
        self.text = text_fingerprint(setup.text)  # --resume proves it goes on with this very text
        self.counting = Counting.of(setup.data) if setup.writes else None  # section 10's floor

    def log(self, message: str):
        """Print a line; a progress line drawn in place is wiped first."""
        if self.progress_width:
            print("\r" + " " * self.progress_width + "\r", end="", flush=True)
            self.progress_width = 0
        self.out_log(message)

    def network(self, model):
        self.model, network = model, model
        if self.ranks.world > 1:
            from torch.nn.parallel import DistributedDataParallel
            network = DistributedDataParallel(model, device_ids=[self.device] if self.device.type == "cuda" else None)
        if self.cfg.compile:  # training's forward and backward run as generated kernels; evaluation stays plain
            try:
                network = torch.compile(network)
            except Exception as e:  # its own files and settings (TORCHINDUCTOR_CACHE_DIR, the locale) it cannot use
                raise UserError(f"--compile: {compiler_failure(e)}: leave out --compile") from None
            self.log("torch.compile: the first steps of each new batch shape wait for the compiler (tens of seconds)")
        return network

    def batches(self, batch_stream):
        return super().batches(my_share(batch_stream, self.ranks))

    def totals(self, sums):
        return summed_over_ranks(sums, self.ranks)

    def on_start(self, optimizer: Adam, state: TrainingState):
        self.adam, self.state = optimizer, state
        if self.resume is None and not state.history:  # a new model: what it scores knowing nothing
            self.untrained_loss = evaluate(self.model, self.data.val_split, self.cfg.eval_batch,
                                           self.device, self.autocast)
            self.log(start_note(self.untrained_loss, self.tokenizer.vocab_size, self.tokenizer.unit))
            self.log(self.counting.before_training(self.data) if self.counting else
                     f"counting (section 10) left out: {self.tokenizer.vocab_size:,} {self.tokenizer.unit}s would "
                     f"need a table of {self.tokenizer.vocab_size ** 2:,} pairs (at most {COUNTING_MOST:,} tokens)")
        if self.resume is not None:  # the checkpoint's epoch ended here: go on exactly from there
            load_optimizer_state(optimizer, self.resume["optimizer"])
            state.step, state.history = self.resume["step"], list(self.resume["history"])
            state.best = dict(state.history[-1])
            torch.set_rng_state(self.resume["rng"])  # dropout continues with the same random numbers
            if self.device.type == "cuda" and self.resume.get("cuda_rng") is not None:
                torch.cuda.set_rng_state(self.resume["cuda_rng"], self.device)

    def on_step(self, state: TrainingState):
        if state.epoch_steps == 1:  # a new epoch: its first progress line after cfg.progress seconds
            self.next_progress = state.epoch_started + self.cfg.progress if self.cfg.progress else math.inf
        if time.perf_counter() >= self.next_progress:
            self.show_progress(state)

    def show_progress(self, state: TrainingState):
        """How far a long epoch is, every cfg.progress seconds: redrawn in place on a terminal,
        a plain line in a file or a notebook (reading the sums waits for a GPU, so not every step)."""
        now = time.perf_counter()
        elapsed, loss_sum, tokens = now - state.epoch_started, state.sums[0].item(), state.sums[1].item()
        done = min(state.epoch_steps / state.steps_per_epoch, 1.0)
        line = (f"  epoch {state.epoch}/{self.cfg.epochs}: {done:4.0%} ({state.epoch_steps:,}/"
                f"{state.steps_per_epoch:,} steps) | running loss {loss_sum / max(tokens, 1):.3f} | "
                f"{tokens / elapsed:,.0f} tokens/s | about {elapsed / done - elapsed:,.0f} s left")
        if self.in_place:
            print("\r" + line.ljust(self.progress_width), end="", flush=True)
            self.progress_width = len(line)
        else:
            self.log(line)
        self.next_progress = now + self.cfg.progress

    def on_new_best(self, state: TrainingState, record: dict):
        """Save the new best epoch; if that fails, say what the checkpoint still holds."""
        if self.checkpoint is None:
            return
        cuda_rng = torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None
        try:
            save_checkpoint(self.checkpoint, self.model, self.cfg, self.tokenizer, record,
                            training={"step": state.step, "history": state.history, "rng": torch.get_rng_state(),
                                      "cuda_rng": cuda_rng, "optimizer": optimizer_state(self.adam), "text": self.text})
        except UserError as e:
            raise UserError(f"{e}; training stopped in epoch {record['epoch']}"
                            + (f" and {self.kept('still holds')}" if state.best["epoch"] else "")) from None

    def on_epoch_end(self, state: TrainingState, record: dict):
        for note in epoch_notes(state.history, self.cfg):
            self.log(f"      note: {note}")
        if self.pictures is not None and record["epoch"] % self.cfg.snapshot == 0:
            self.pictures.draw(self.model, record)
        if record["epoch"] in self.snapshot_epochs:  # for explorer.html: these weights, at half the size
            weights = {k: v.detach().to("cpu", torch.float16, copy=True) for k, v in self.model.state_dict().items()}
            self.snapshots.append(Snapshot(record["epoch"], record["val_loss"], weights))

    def when(self) -> str:
        return f"in epoch {self.state.epoch}" if self.state.epoch else "before its first epoch"

    def kept(self, verb: str) -> str:
        """What the checkpoint holds now, in words."""
        if self.checkpoint is None or not self.state.best["epoch"] or not self.checkpoint.is_file():
            return "no checkpoint was written" + (" yet" if verb == "keeps" else "")
        best = self.state.best
        return f"{self.checkpoint} {verb} epoch {best['epoch']} (validation loss {best['val_loss']:.3f})"


# %% [markdown]
# ## F. Checkpoints and fine-tuning
#
# A checkpoint is one file, `outputs/model.pt`, with everything needed to use the model again:
# the weights, the Config that shaped it and the vocabulary (as plain data). The run keeps the
# epoch with the best validation loss, and what is needed to resume training exactly where that
# epoch ended: the optimizer's running averages, the step count, the history of losses and the
# state of the random number generator.
#
# It is written atomically, like every output (`write_file`, part A), so a run killed at any
# moment leaves either the old file or the new one, never half of one. It is read with
# `torch.load(weights_only=True)`, which accepts only tensors and plain Python data: opening a
# checkpoint cannot run code. Then it has to prove itself: it carries a SHA-256 of everything in
# it, tensors, settings, vocabulary, losses and history, so one bit changed on the disk or one
# value edited by hand is caught; its weights must be finite; and its settings, vocabulary,
# epoch, losses and history pass the checks of typed flags (`validate`) and of their ranges, so
# even a file edited with its checksum made right is refused in one line naming the field.
#
# A run never writes over the checkpoint it starts from: `--init-from outputs/model.pt --data
# otro.txt` writes `outputs/otro/`, and the chat's `/train` saves `model-chat.pt` beside the
# file it read. The one exception is `--resume`, the same run going on: its file is replaced
# only by a later epoch with a lower validation loss.
#
# **Fine-tuning** (`--init-from`) starts from a trained model and trains it on a new text, which
# may use characters the model never saw. Each needs a row in the embedding table (its vector)
# and one in the linear head (its score): those rows are new and random, while every known
# character keeps its learned rows, wherever the sorted vocabulary now puts it.

# %%
CHECKPOINT_FORMAT = "LLM.py checkpoint 5"  # 2: a checksum of its tensors; 3: the tokenizer by name; 5: of every field
SHAPE_FIELDS = ("d_model", "n_heads", "n_layers", "d_ff", "context", "tokenizer", "vocab_size", "without")  # fixed by the weights


def to_cpu(value):
    """The same nested dicts / lists of tensors, with every tensor on the CPU."""
    if isinstance(value, torch.Tensor):
        return value.detach().cpu()
    if isinstance(value, dict):
        return {k: to_cpu(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_cpu(v) for v in value)
    return value


def named_tensors(value, name: str = ""):
    """('/model/lm_head.bias', tensor), ...: every tensor inside nested dicts and lists."""
    if isinstance(value, torch.Tensor):
        yield name, value
    elif isinstance(value, dict):
        for key, item in value.items():
            yield from named_tensors(item, f"{name}/{key}")
    elif isinstance(value, (list, tuple)):
        for index, item in enumerate(value):
            yield from named_tensors(item, f"{name}/{index}")


def tensors_checksum(payload: dict) -> str:
    """SHA-256 of a whole checkpoint: every field that is plain data (settings, vocabulary and
    merges, epoch, losses, history, as JSON) and every tensor (its name, dtype, shape and bytes,
    in name order). One flipped bit anywhere, or one value edited by hand, changes it."""
    plain = json.dumps(payload, sort_keys=True, default=lambda t: f"tensor {tuple(t.shape)} {t.dtype}")  # NaN too
    digest = hashlib.sha256(plain.encode())
    for name, tensor in sorted(named_tensors(payload), key=lambda item: item[0]):
        tensor = tensor.detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def save_checkpoint(path: Path, model: TransformerLM, cfg: Config, tokenizer: CharTokenizer, record: dict,
                    training: dict | None = None):
    payload = {"format": CHECKPOINT_FORMAT,
               "config": {k: list(v) if isinstance(v, tuple) else v  # data as a full path: usable from any folder
                          for k, v in asdict(replace(cfg, data=str(Path(cfg.data).resolve()))).items()},
               "tokenizer": tokenizer_record(tokenizer),
               "model": to_cpu(model.state_dict()),
               "epoch": record["epoch"], "val_loss": record["val_loss"],
               "training": to_cpu(training)}  # for --resume: step, history, rng, optimizer
    payload["checksum"] = tensors_checksum(payload)
    write_file(path, lambda file: torch.save(payload, file))  # atomic: the old file or the new one


def load_checkpoint(path: str | Path, device) -> tuple[TransformerLM, CharTokenizer, Config, dict]:
    """(model, tokenizer, config, payload) from a checkpoint that proves itself: readable,
    unchanged since it was written (the checksum), with settings a fresh run would accept and
    finite weights. Anything else is a UserError, never a traceback."""
    path = Path(path)
    if path.exists() and not path.is_file():
        raise UserError(f"{show_path(path)} is {'a folder' if path.is_dir() else 'not a regular file'}, not a checkpoint "
                        f"(a checkpoint is a file such as outputs/model.pt)")
    if not path.is_file():
        raise UserError(f"checkpoint not found: {show_path(path)} (train one first: python LLM.py)")
    try:
        with warnings.catch_warnings():  # a pickle of another program: its refusal below says enough
            warnings.simplefilter("ignore")
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        raise UserError(f"{show_path(path)} is not a readable checkpoint (corrupt, cut short or another format)") from None
    if not isinstance(payload, dict) or payload.get("format") != CHECKPOINT_FORMAT:
        older = isinstance(payload, dict) and str(payload.get("format", "")).startswith("LLM.py checkpoint")
        raise UserError(f"{show_path(path)} is a checkpoint of an older LLM.py, checked in another way: train it again"
                        if older else f"{show_path(path)} is not an LLM.py checkpoint")
    if payload.get("checksum") != tensors_checksum({k: v for k, v in payload.items() if k != "checksum"}):
        raise UserError(f"{show_path(path)} is damaged: its numbers no longer match the checksum saved with them "
                        f"(the file changed after it was written); use another copy or train again")
    cfg, tokenizer = checkpoint_settings(path, payload)
    try:
        model = build_model(tokenizer.vocab_size, cfg, torch.device(device))
        model.load_state_dict(payload["model"])
    except (KeyError, TypeError, ValueError, RuntimeError) as e:
        reason = first_line(e)
        raise UserError(f"{show_path(path)} does not match the model it describes: {reason}") from None
    if not all(torch.isfinite(t).all() for t in model.state_dict().values() if t.is_floating_point()):
        raise UserError(f"{show_path(path)} holds weights that are not finite numbers (NaN or infinity): it cannot be used")
    return model.to(device).eval(), tokenizer, cfg, payload


def checkpoint_settings(path: Path, payload: dict) -> tuple[Config, CharTokenizer]:
    """The Config and vocabulary a checkpoint stores, checked with the rules of a fresh run
    (validate), so that a hand-edited file is refused in one line instead of crashing later."""
    saved, stored = payload.get("config"), payload.get("tokenizer")
    if not isinstance(saved, dict):
        raise UserError(f"{path} has no settings")
    kinds = {"int": (int,), "float": (int, float), "str": (str,), "bool": (bool,), "tuple": (list, tuple)}
    values = {}
    for f in fields(RunConfig):
        value = saved.get(f.name, f.default)  # a setting newer than the checkpoint: its default
        if (not isinstance(value, kinds[f.type]) or (f.type in ("int", "float") and isinstance(value, bool))
                or (f.type == "tuple" and not all(isinstance(v, str) for v in value))):
            raise UserError(f"{path} has no valid setting {f.name} (found {value!r})")
        values[f.name] = tuple(value) if f.type == "tuple" else value
    try:
        cfg = validate(RunConfig(**values), check_device=False)
    except UserError as e:
        raise UserError(f"{path} has an impossible setting: {e}") from None
    if not (isinstance(stored, dict) and isinstance(stored.get("kind"), str) and stored["kind"] in TOKENIZERS):
        raise UserError(f"{path} has no valid vocabulary (no tokenizer of a kind this LLM.py knows: "
                        f"{', '.join(TOKENIZERS)})")
    try:
        tokenizer = tokenizer_from_record(stored)
    except ValueError as e:
        raise UserError(f"{path} has no valid vocabulary ({e})") from None
    check_memory(cfg, tokenizer.vocab_size, 1, 1, torch.device("cpu"))  # the model is built on the CPU first
    epoch, val_loss = payload.get("epoch"), payload.get("val_loss")
    if not (isinstance(epoch, int) and not isinstance(epoch, bool) and epoch >= 1):
        raise UserError(f"{path} has no valid epoch (found {epoch!r}: a whole number, 1 or more)")
    if not (isinstance(val_loss, float) and math.isfinite(val_loss) and val_loss >= 0):
        raise UserError(f"{path} has no valid val_loss (found {val_loss!r}: a loss is a finite number, 0 or more)")
    return cfg, tokenizer


def extend_vocabulary(model: TransformerLM, tokenizer: CharTokenizer, text: str,
                      cfg: Config) -> tuple[TransformerLM, CharTokenizer, list[str]]:
    """Make room for the characters of `text` that the model never saw: new embedding and
    head rows for them, the learned rows for the others. Returns (model, tokenizer, added)."""
    bigger, added = with_characters(tokenizer, text)
    if not added:
        return model, tokenizer, []
    device = next(model.parameters()).device
    torch.manual_seed(cfg.seed)
    grown = build_model(bigger.vocab_size, cfg, device).to(device)  # new rows freshly initialized
    state, fresh = model.state_dict(), grown.state_dict()
    old_rows = torch.tensor([bigger.token_id(tokenizer.token_text(i)) for i in range(tokenizer.vocab_size)],
                            device=device)  # (V_old,) the new id of every known token
    for name in ("token_embedding.weight", "lm_head.weight", "lm_head.bias"):
        rows = fresh[name].clone()  # (V_new, C) or (V_new,)
        rows[old_rows] = state[name]  # known tokens keep their learned rows
        state[name] = rows
    grown.load_state_dict(state)
    return grown, bigger, added


def optimizer_state(optimizer: Adam) -> dict:
    """What a checkpoint keeps of Adam: its step count and running averages."""
    return {"t": optimizer.t, "m": optimizer.m, "v": optimizer.v}


def load_optimizer_state(optimizer: Adam, state: dict):
    """Put a checkpoint's Adam state back, after checking that it fits this model."""
    shapes = [[p.shape for p in g["params"]] for g in optimizer.param_groups]
    tensors = lambda groups: isinstance(groups, list) and all(  # noqa: E731
        isinstance(group, list) and all(isinstance(t, torch.Tensor) for t in group) for group in groups)
    if not (isinstance(state, dict) and state.keys() == {"t", "m", "v"} and isinstance(state["t"], int)
            and state["t"] >= 0 and tensors(state["m"]) and tensors(state["v"])
            and [[m.shape for m in group] for group in state["m"]] == shapes
            and [[v.shape for v in group] for group in state["v"]] == shapes):
        raise UserError("the checkpoint's optimizer state does not fit this model and --optimizer "
                        "(or comes from an older LLM.py): start a new run from its weights with --init-from")
    device = optimizer.param_groups[0]["params"][0].device
    optimizer.t = state["t"]
    optimizer.m = [[m.to(device) for m in group] for group in state["m"]]
    optimizer.v = [[v.to(device) for v in group] for group in state["v"]]


# %% [markdown]
# ## G. The outputs and the pictures
#
# - `parameters.txt`: every parameter tensor, its name, shape, count and role in plain words,
#   the formulas that give the counts (checked against the tensors), and each tensor's
#   statistics after training.
# - `table.txt`: every sampling step: what the model saw, its top candidates with their
#   probabilities, the draw, the choice, the entropy.
# - The pictures, each registered under its `--pictures` name: `epoch_<N>.png` (every `snapshot`
#   epochs, the architecture as a graph, node area = parameters, colour = how much they changed
#   since the last picture, beside the strongest token → next-token links) and `evolution.gif`,
#   the same pictures as a film; `loss.png`, `attention_layer<L>.png` (the weights of section 7,
#   taken from the model's own forward pass), `positional_encoding.png` (section 6),
#   `embeddings.png`; and `explorer.html`, the page of part H, registered the same way.
# - `outputs/README.md`: a gallery that says how to read each picture, with this run's numbers.
#
# **A new picture** is one function, registered with `@picture("name")`: it draws from the
# finished run into the output folder and returns a `Drawing` per file (its name, the gallery's
# heading and text, whether a notebook shows it). `--pictures name` then draws it, and the
# gallery and the notebook show it; nothing else changes.
#
# Every picture is drawn with matplotlib on a figure attached to no window (networkx lays out
# the graphs). `embeddings.png` uses PCA: centre the rows of the (V, C) embedding table, take
# its singular value decomposition $E - \bar{E} = U S W^\top$; the first two columns of $W$ are
# the directions along which the vectors spread most, and $xy = (E - \bar{E})\,W_{:, :2}$ places
# every token on that plane. Direction $i$ explains $S_i^2 / \sum_j S_j^2$ of the variance.

# %%
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


def parameter_formula(cfg: Config) -> str:
    """The parameter count as a formula in V, C, F and N (no layer norms: 4*C fewer per layer, 2*C fewer at the end)."""
    if "layer-norm" in cfg.without:
        return "V*C + N*(4*C^2 + 2*C*F + F + 5*C) + C*V + V"
    return "V*C + N*(4*C^2 + 2*C*F + F + 9*C) + 2*C + C*V + V"


def parameter_report(model: TransformerLM, cfg: Config, vocab_size: int, unit: str = "character") -> str:
    """The text of parameters.txt: every tensor, the formulas behind the counts, statistics."""
    V, C, d_ff, N, H = vocab_size, cfg.d_model, cfg.d_ff, cfg.n_layers, cfg.n_heads
    named = list(model.named_parameters())
    total = sum(p.numel() for _, p in named)
    lines = ["PARAMETERS OF THE MODEL",
             "=======================",
             f"V = {V} {unit}s, C = d_model = {C}, H = {H} heads of D = C/H = {C // H}, "
             f"N = {N} layers, F = d_ff = {d_ff}, context = {cfg.context}",
             "A Linear layer from a inputs to b outputs has a*b weights plus b biases; "
             "a LayerNorm over C numbers has C gains plus C shifts.",
             "The positional encoding is a fixed formula, not a parameter: it adds 0.",
             "Layers are counted from 1, as in the pictures; PyTorch names the tensors of layer 1 layers.0. (from 0).", ""]
    width = max(len(n) for n, _ in named)
    lines.append(f"{'name':<{width}}  {'shape':<10} {'count':>9}  role")
    lines.append("-" * (width + 80))
    for name, p in named:
        lines.append(f"{name:<{width}}  {str(tuple(p.shape)):<10} {p.numel():>9,}  {parameter_role(name)}")
    norms = "layer-norm" not in cfg.without  # --without layer-norm: identities, no parameters
    attention_count, ffn_count = 4 * C * C + 4 * C, 2 * C * d_ff + d_ff + C
    lines += ["", "SUBTOTALS, WITH THE FORMULA THAT GIVES EACH",
              "-------------------------------------------",
              f"{'component':<26} {'formula':<52} {'by formula':>11} {'counted':>9}"]
    for component, formula, by_formula, counted in parameter_subtotals(named, cfg, V):
        mark = "" if by_formula == counted else "   <- MISMATCH"
        lines.append(f"{component:<26} {formula:<52} {by_formula:>11,} {counted:>9,}{mark}")
    lines += ["", f"Total parameters: {total:,} (= sum of p.numel() over all {len(named)} tensors)",
              f"Per layer: attention {attention_count:,} = 4*{C}^2 + 4*{C}; "
              f"feed-forward {ffn_count:,} = 2*{C}*{d_ff} + {d_ff} + {C}; norms {4 * C * norms} = {4 * norms}*{C}",
              f"Attention heads split C; they add no parameters: {H} heads x D = {C // H} "
              f"uses the same 4*C^2 + 4*C.", ""]
    return "\n".join(lines + tensor_statistics(named, width)) + "\n"


def parameter_subtotals(named: list, cfg: Config, V: int) -> list[tuple[str, str, int, int]]:
    """(component, formula, value by formula, value counted from the tensors), layer by layer."""
    C, d_ff, N = cfg.d_model, cfg.d_ff, cfg.n_layers

    def actual(prefix: str) -> int:
        return sum(p.numel() for n, p in named if n.startswith(prefix))

    attention_count, ffn_count = 4 * C * C + 4 * C, 2 * C * d_ff + d_ff + C
    norms = "layer-norm" not in cfg.without
    layer_count = attention_count + ffn_count + 4 * C * norms
    rows = [("token embedding", "V*C", V * C, actual("token_embedding.")),
            ("positional encoding", "0 (fixed sinusoids)", 0, 0)]
    for i in range(N):  # layer i + 1, as the pictures count; its tensors are named layers.<i>. (PyTorch counts from 0)
        rows += [
            (f"layer {i + 1}: attention", "4*C^2 + 4*C", attention_count, actual(f"layers.{i}.attention.")),
            (f"layer {i + 1}: feed-forward", "2*C*F + F + C", ffn_count, actual(f"layers.{i}.feed_forward.")),
            (f"layer {i + 1}: two layer norms", "2 * 2*C" if norms else "0 (--without layer-norm)", 4 * C * norms,
             actual(f"layers.{i}.attention_norm.") + actual(f"layers.{i}.feed_forward_norm.")),
            (f"layer {i + 1}: total", "4*C^2 + 2*C*F + F + " + ("9*C" if norms else "5*C"), layer_count,
             actual(f"layers.{i}.")),
        ]
    total = sum(p.numel() for _, p in named)
    return rows + [("final layer norm", "2*C" if norms else "0 (--without layer-norm)", 2 * C * norms,
                    actual("final_norm.")),
                   ("linear head", "C*V + V", C * V + V, actual("lm_head.")),
                   ("TOTAL", parameter_formula(cfg), V * C + N * layer_count + 2 * C * norms + C * V + V, total)]


def tensor_statistics(named: list, width: int) -> list[str]:
    """parameters.txt's last table: each tensor's mean, std, min and max."""
    lines = ["STATISTICS OF EVERY TENSOR AT THE END OF TRAINING",
             "-------------------------------------------------",
             f"{'name':<{width}}  {'mean':>9} {'std':>9} {'min':>9} {'max':>9}"]
    for name, p in named:
        p = p.detach().float()
        std = p.std().item() if p.numel() > 1 else 0.0
        lines.append(f"{name:<{width}}  {p.mean().item():>9.4f} {std:>9.4f} "
                     f"{p.min().item():>9.4f} {p.max().item():>9.4f}")
    return lines


def sampling_table(samples: list[Sample], cfg: Config, tokenizer: CharTokenizer, item: str = "proverb") -> str:
    """The text of table.txt: every pick of every sample, with the kept candidates and two
    rejected ones (or the top 10 when all are kept), and always as far down as the chosen one."""
    if cfg.greedy:
        how = f"greedy: always the most likely {tokenizer.unit}"
    else:
        how = (f"temperature {cfg.temperature}, top-k {cfg.top_k or 'off'}, top-p "
               f"{cfg.top_p if cfg.top_p < 1 else 'off'}, seed {cfg.seed}")
    heading = f"HOW THE MODEL CHOSE EVERY {tokenizer.unit.upper()}"
    out = [heading, "=" * len(heading)] + ([f"The model was trained {without_label(cfg)} (section 9)."] if cfg.without else []) + [
           f"Sampling: {how}.",
           "Each block is one step. 'context' is what the model saw (⏎ = start or end of a proverb,",
           "␣ = space). The candidates are sorted by p = softmax(logit / temperature); 'cum p' adds",
           "them up. Kept candidates are marked with *. To sample, draw u in [0, 1), multiply it by",
           "the kept mass, and take the first kept candidate whose cum p is above that number.",
           f"Entropy H = -sum p log2 p over all {tokenizer.unit}s, in bits: 0 = certain.", ""]
    width = min(12, max(4, *(len(tokenizer.token_text(i)) for i in range(tokenizer.vocab_size))))  # the widest token
    text = tokenizer.token_text
    for n, sample in enumerate(samples, 1):
        kind = [f"{sample.kind}; {nearest_in_words(sample, item)}"] if sample.kind else []
        out += [f"SAMPLE {n}: prompt \"{sample.prompt}\"", f"result: {sample.text}"] + kind + ["=" * 72]
        for c in sample.picks:
            chosen_rank = int((c.order == c.id).nonzero()) + 1
            shown = min(len(c.probs), max(c.kept + 2 if c.kept < len(c.probs) else 10, chosen_rank))
            kept_mass, entropy = float(c.cumulative[c.kept - 1]), float(-(c.probs * torch.log2(c.probs.clamp_min(1e-30))).sum())
            out += [f"step {c.position - len(sample.prompt):>3} | position {c.position:>3} | context: "
                    f"{show(tokenizer.decode(c.window))}",
                    f"      rank  {'char' if width == 4 else tokenizer.unit:<{width}}        logit        p    cum p"]
            out += [f"    {'*' if rank <= c.kept else ' '} {rank:>4}  {show(text(i)):<{width}} {float(c.logits[i]):>11.3f} "
                    f"{float(c.probs[i]):>8.4f} {float(cum):>8.4f}"
                    for rank, (i, cum) in enumerate(zip(c.order[:shown], c.cumulative[:shown]), 1)]
            draw = ("greedy: the most likely" if c.u is None else
                    f"u = {c.u:.4f}, u x kept mass {round(kept_mass, 6):.4f} = {c.u * kept_mass:.4f}")
            out += [f"      {draw} -> chose '{show(text(c.id))}' (p = {float(c.probs[c.id]):.4f}), "
                    f"entropy {entropy:.2f} bits", ""]
        out.append("")
    return "\n".join(out)


class EpochPictures:
    """Draws outputs/epoch_<N>.png. The figure is built once: layout, token set and
    colour scale stay fixed, so the images can be flipped through like a film, and each
    snapshot only recolours the nodes, redraws the links and retitles (fast)."""

    CHANGE_RANGE = (1e-3, 1.0)  # colour scale of the relative change ||dW|| / ||W||, log scale
    EDGE_SCALE = 10.0  # a link of this strength (in logits) gets the widest line
    N_CHARS = 14  # tokens on each side of the token graph
    N_EDGES = 36  # links drawn in the token graph

    def __init__(self, model: TransformerLM, data: Data, cfg: Config, out: Path):
        import matplotlib
        from matplotlib import colors
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        self.cfg, self.tokenizer, self.out = cfg, data.tokenizer, out
        self.groups = self._parameter_groups(cfg)
        self.graph, self.pos = self._architecture(cfg, self.tokenizer.unit)
        self.previous = self._weights(model)
        self.norm = colors.LogNorm(*self.CHANGE_RANGE)
        self.cmap = matplotlib.colormaps["viridis"]
        self.fig = Figure(figsize=(13, 6.6), dpi=90)
        FigureCanvasAgg(self.fig)  # draws in memory: render() reuses the unchanging part of the picture
        ax, self.ax2 = self.fig.subplots(1, 2, gridspec_kw={"width_ratios": [1.5, 1]})
        self._draw_architecture(ax)
        self._draw_token_sides(self.ax2, data.train_text)
        self.link_artist = None
        self.frames = []  # one small image per picture, for evolution.gif
        self.drawn: list[tuple[int, str]] = []  # (epoch, file name) of the pictures written so far
        self.background = None  # the unchanging part of the figure, drawn once (see render)
        self.title = self.fig.suptitle("", fontsize=12)
        self.fig.subplots_adjust(left=0.01, right=0.99, top=0.88, bottom=0.1, wspace=0.04)

    def _draw_architecture(self, ax):
        """Left: the architecture. Node area grows with the parameter count."""
        import networkx as nx
        self.nodes = list(self.graph.nodes)
        counts = {n: sum(t.numel() for t in self._group_tensors(self.previous, n)) for n in self.groups}
        largest = max(counts.values())
        radius = {n: math.sqrt(counts.get(n, 0) / largest) for n in self.nodes}
        sizes = [60 + 1000 * radius[n] if n in self.groups else 90 for n in self.nodes]
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
        for i in range(self.cfg.n_layers):
            ax.text(1.3 * (i + 1), 0.6, f"layer {i + 1}", ha="center", fontsize=10, fontweight="bold")
        ax.set_xlim(-0.3, 1.3 * (self.cfg.n_layers + 1) + 0.8)
        ax.set_ylim(-7.0, 0.9)
        ax.axis("off")
        ax.set_title("Architecture: node area = parameters, colour = change since the last picture", fontsize=10)
        self._architecture_legend(ax)

    def _architecture_legend(self, ax):
        """The colour bar of the change and the legend of the lines, under the architecture."""
        from matplotlib import cm
        from matplotlib.lines import Line2D
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

    def _draw_token_sides(self, ax2, train_lines: list[str]):
        """Right: the most frequent tokens on both sides; the links are drawn per snapshot."""
        import networkx as nx
        from matplotlib.lines import Line2D
        counts = Counter(i for line in train_lines[:20_000] for i in self.tokenizer.encode(line + EOL))
        self.ids = sorted(sorted(counts, key=lambda i: (-counts[i], i))[:self.N_CHARS])  # the most frequent, by id
        self.char_graph = nx.DiGraph()
        self.char_pos = {}
        for row, i in enumerate(self.ids):
            for side, x in (("now", 0.0), ("next", 1.0)):
                self.char_graph.add_node((side, i))
                self.char_pos[(side, i)] = (x, -row)
        char_nodes = nx.draw_networkx_nodes(self.char_graph, self.char_pos, node_size=260, node_color="white",
                                            edgecolors="0.3", ax=ax2)
        char_labels = nx.draw_networkx_labels(self.char_graph, self.char_pos, font_size=10, ax=ax2,
                                              labels={node: show(self.tokenizer.token_text(node[1]))
                                                      for node in self.char_graph.nodes})
        self.over_links = [char_nodes, *char_labels.values()]  # redrawn over the links of each picture
        ax2.text(0, 0.9, self.tokenizer.unit, ha="center", fontsize=10)
        ax2.text(1, 0.9, f"next {self.tokenizer.unit}", ha="center", fontsize=10)
        ax2.set_xlim(-0.3, 1.3)
        ax2.set_ylim(-len(self.ids) - 0.6, 1.4)
        ax2.axis("off")
        ax2.set_title(f"Direct path, skipping the layers: head(norm(embedding)),\n"
                      f"the {self.N_EDGES} strongest links between frequent {self.tokenizer.unit}s", fontsize=10)
        ax2.legend(handles=[Line2D([], [], color="tab:blue", lw=2, label="next more likely"),
                            Line2D([], [], color="tab:red", lw=2, label="next less likely")],
                   loc="lower center", ncol=2, fontsize=9, frameon=False)

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
        if "layer-norm" in cfg.without:  # identities: grey nodes, like the positional encoding, with no parameters
            groups = {node: tensors for node, tensors in groups.items() if "norm" not in node}
        return groups

    @staticmethod
    def _architecture(cfg, unit: str):
        """The network as a directed graph with fixed positions: one column per layer."""
        import networkx as nx
        G = nx.DiGraph()
        pos = {}

        def add(node, x, y, label):
            G.add_node(node, label=label)
            pos[node] = (x, y)

        add("ids", 0, 0, f"{unit} ids")
        add("embedding", 0, -1.2, "embedding")
        add("+PE", 0, -2.4, "+ positional\n   encoding")
        G.add_edges_from([("ids", "embedding"), ("embedding", "+PE")], kind="flow")
        previous = "+PE"
        for i in range(cfg.n_layers):
            EpochPictures._add_layer(G, add, i, cfg.n_heads, previous)
            previous = f"L{i}.add2"
        x = 1.3 * (cfg.n_layers + 1)
        add("final norm", x, -4.6, "norm")
        add("head", x, -5.6, "linear head")
        add("logits", x, -6.5, "logits")
        G.add_edges_from([(previous, "final norm"), ("final norm", "head"), ("head", "logits")], kind="flow")
        return G, pos

    @staticmethod
    def _add_layer(G, add, i: int, H: int, previous: str):
        """Encoder layer i as nodes one column wide: norm, H heads, W_O, +, norm, W_1, W_2, +."""
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

    @staticmethod
    def _weights(model):
        return {n: p.detach().float().cpu().clone() for n, p in model.named_parameters()}

    def _group_tensors(self, weights, node):
        return [weights[n] if rows is None else weights[n][rows] for n, rows in self.groups[node]]

    def direct_path(self, model: TransformerLM) -> torch.Tensor:
        """(V, V): logits = head(final_norm(E[a] * sqrt(C))) for every character a, each row
        minus its mean. What the model would predict if every layer added nothing."""
        with torch.no_grad():
            emb = model.token_embedding.weight * math.sqrt(model.token_embedding.embedding_dim)  # (V, C)
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
        ids = self.ids
        links = self.direct_path(model)[ids][:, ids]  # (n, n)
        n = len(ids)
        strongest = links.abs().flatten().argsort(descending=True)[:self.N_EDGES]
        edges = [(("now", ids[int(f) // n]), ("next", ids[int(f) % n])) for f in strongest]
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
        write_file(path, lambda file: image.convert("RGB").save(file, format="PNG"))
        self.frames.append(image.convert("RGB").resize((round(width * 0.6), round(height * 0.6)), Image.LANCZOS)
                           .quantize(colors=128))  # a smaller frame for evolution.gif

    def draw(self, model: TransformerLM, record: dict):
        """outputs/epoch_<N>.png for the epoch that just ended."""
        name = f"epoch_{record['epoch']}.png"
        self.render(self.measure(model), record["epoch"], record, self.out / name)
        self.drawn.append((record["epoch"], name))


def new_figure(width: float, height: float, dpi: int = 90):
    """A matplotlib figure attached to no window and no pyplot state: it only draws into files."""
    from matplotlib.figure import Figure
    return Figure(figsize=(width, height), dpi=dpi)


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
    return [tokenizer.token_text(i) for i in ids], [w[0].float().cpu() for w in weights]  # N x (H, T, T)


def head_habits(weights: torch.Tensor, chars: list[str], unit: str = "character") -> list[tuple[str, float]]:
    """For each head of one layer, (its main habit, the mean weight it gives to it): the
    character itself, the one 1, 2 or 3 places back, the last space (where the current word
    began) or the ⏎ that starts the line, averaged over the rows t >= 4; 'spread out' when no
    habit takes a quarter of the weight."""
    H, T, _ = weights.shape
    if T < 5:  # a context of 4 or fewer characters: no row t >= 4 to average over
        return [(f"too few {unit}s to tell", 0.0)] * H
    rows = torch.arange(4, T)
    last_space = torch.tensor([max((s for s in range(t) if " " in chars[s]), default=-1) for t in range(T)])
    spaced = rows[last_space[rows] >= 0]  # rows with a space somewhere before them
    habits = []
    for h in range(H):
        w = weights[h]
        shares = {"itself": float(w[rows, rows].mean()),
                  f"the previous {unit}": float(w[rows, rows - 1].mean()),
                  f"the {unit} 2 back": float(w[rows, rows - 2].mean()),
                  f"the {unit} 3 back": float(w[rows, rows - 3].mean()),
                  "the last space (where the word began)":
                      float(w[spaced, last_space[spaced]].mean()) if len(spaced) else 0.0,
                  "the ⏎ that starts the line": float(w[rows, 0].mean())}
        name = max(shares, key=shares.get)
        habits.append((name, shares[name]) if shares[name] >= 0.25 else ("spread out", shares[name]))
    return habits


def draw_attention(chars: list[str], weights: torch.Tensor, layer: int, path: Path, unit: str = "character"):
    """attention_layer<L>.png: one heatmap per head, the causal triangle visible."""
    import matplotlib
    H, T, _ = weights.shape
    labels = [show(c) for c in chars]
    cmap = matplotlib.colormaps["viridis"].with_extremes(bad="0.93")  # grey above the diagonal: the future
    future = torch.ones(T, T, dtype=torch.bool).triu(1)
    fig = new_figure(4.4 * H + 1.0, 5.4)
    axes = fig.subplots(1, H, squeeze=False)[0]
    fig.subplots_adjust(left=0.035, right=0.935, top=0.86, bottom=0.1, wspace=0.1)
    habits = head_habits(weights, chars, unit)
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
            ax.set_ylabel(f"the {unit} that looks (query position t)", fontsize=10,
                          labelpad=14 + 5 * max(len(label) - 1 for label in labels))  # clear of the longest label
        ax.set_xlabel("looks at (key position s)", fontsize=10, labelpad=14)
        name, share = habits[h]
        ax.set_title(f"head {h + 1}: {name}" + (f" ({share:.0%})" if name != "spread out" else ""), fontsize=11)
    bar = fig.colorbar(image, cax=fig.add_axes([0.95, 0.18, 0.01, 0.6]))
    bar.set_label("attention weight (each row sums to 1)", fontsize=10)
    bar.ax.tick_params(labelsize=9)
    fig.suptitle(f"Layer {layer}: where each {unit} of \u201c{''.join(chars[1:])}\u201d looks; "
                 f"grey = the future, masked", fontsize=12)
    save_figure(fig, path)


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
    explained = S[:2] ** 2 / (S ** 2).sum().clamp(min=1e-30)  # (2,)
    missing = 2 - xy.shape[1]  # C = 1 (or V = 1) has one direction: the other is drawn as 0
    return F.pad(xy * flip, (0, missing)), F.pad(explained, (0, missing))


VOWEL_NAMES = {"LATIN": {"A", "E", "I", "O", "U"}, "GREEK": {"ALPHA", "EPSILON", "ETA", "IOTA", "OMICRON", "UPSILON", "OMEGA"},
               "CYRILLIC": {"A", "IE", "IO", "I", "O", "U", "YERU", "E", "YU", "YA", "UKRAINIAN IE", "YI",
                            "BYELORUSSIAN-UKRAINIAN I"}}  # the alphabets whose letters are vowels or consonants


def character_kind(c: str) -> str:
    """The colour group of a token's text in embeddings.png, from the character's Unicode name:
    a letter of the Latin, Greek or Cyrillic alphabet is a vowel or a consonant (é: LATIN SMALL
    LETTER E WITH ACUTE, a vowel); a letter of another script (Chinese, Arabic...) a letter."""
    if len(c) > 1:
        return "word start" if c.startswith(" ") else "word piece"
    if c.isalpha():
        script, _, rest = unicodedata.name(c, "").partition(" ")
        letter = re.sub(r"^(SMALL |CAPITAL )?LETTER ", "", rest).split(" WITH ")[0]
        if script not in VOWEL_NAMES:
            return "letter"
        return "vowel" if letter in VOWEL_NAMES[script] else "consonant"
    if c in (" ", EOL):
        return "space or ⏎"
    if unicodedata.category(c).startswith("P"):
        return "punctuation"
    return "other"


KIND_COLORS = {"vowel": "tab:red", "consonant": "tab:blue", "letter": "tab:cyan", "punctuation": "tab:green",
               "space or ⏎": "black", "word start": "tab:brown", "word piece": "tab:orange", "other": "tab:purple"}
EMBEDDING_LABELS = 150  # embeddings.png writes the texts of at most this many tokens: the most frequent


def token_counts(data: Data) -> Counter:
    """How often each token id occurs in (the first 20,000 lines of) the training text."""
    return Counter(i for line in data.train_text[:20_000] for i in data.tokenizer.encode(line + EOL))


def nearest_tokens(tokenizer: CharTokenizer, table: torch.Tensor, text: str, k: int = 3) -> list[str]:
    """The k tokens whose embedding vectors point most nearly the same way as the token `text`'s."""
    unit = F.normalize(table.detach().float().cpu(), dim=1)  # (V, C), rows of length 1
    me = tokenizer.token_id(text)
    similarity = unit @ unit[me]  # (V, C) @ (C,) -> (V,) cosine similarities
    return [tokenizer.token_text(i) for i in similarity.argsort(descending=True).tolist() if i != me][:k]



@dataclass
class Drawing:
    """One picture a run wrote, and what the gallery says about it."""
    file: str  # its name in the output folder: the gallery shows it
    title: str  # the gallery's heading
    text: str  # how to read it, with this run's numbers (markdown)
    inline: bool = True  # shown under the run in a notebook
    named: str = ""  # how the run's last line names it (default: the file)


@dataclass
class Finished:
    """What a picture is drawn from: the run, once trained."""
    setup: Setup
    history: list[dict]
    test_loss: float | None
    epochs: EpochPictures | None  # the epoch pictures drawn during training
    snapshots: list = field(default_factory=list)  # the Snapshots kept for explorer.html
    samples: list = field(default_factory=list)  # what the model wrote at the end (Sample)
    untrained_loss: float | None = None  # the validation loss before training (None when resumed)
    counting: "Counting | None" = None  # the unigram and bigram models of section 10
    drawings: list = field(default_factory=list)  # what write_pictures_and_gallery drew

    @property
    def best(self) -> dict:
        return min(self.history, key=lambda r: r["val_loss"])


def fonts_for(characters, log=print):
    """The pictures draw with DejaVu Sans. A character it lacks (Chinese, say) is drawn with an
    installed font that has it (matplotlib falls back font by font); those no installed font
    has are drawn as empty boxes, said in one note instead of a warning per character."""
    import warnings
    from matplotlib import font_manager, rcParams
    from matplotlib.ft2font import FT2Font

    def covers(path) -> set[int]:
        with contextlib.suppress(Exception):  # a font file FreeType cannot read covers nothing
            return set(FT2Font(str(path)).get_charmap())
        return set()

    missing = {c for c in characters if ord(c) not in covers(font_manager.findfont("DejaVu Sans")) and c.isprintable()}
    families = ["DejaVu Sans"]
    for path in sorted(font_manager.findSystemFonts()) if missing else []:
        found = {c for c in missing if ord(c) in covers(path)}
        if found:
            families.append(font_manager.FontProperties(fname=path).get_name())
            missing -= found
    if len(families) > 1:
        rcParams["font.family"] = families
    if missing:
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        shown = " ".join(sorted(missing)[:12]) + (" ..." if len(missing) > 12 else "")
        log(f"note: no installed font has {len(missing):,} of this text's characters ({shown}): the pictures draw "
            f"{'it' if len(missing) == 1 else 'them'} as empty boxes; a font that has them draws them (Debian: "
            f"apt install fonts-noto-cjk)")


PICTURES = {}  # --pictures name -> function(Finished) -> list[Drawing]; the gallery follows this order


def picture(name: str):
    """Register a picture: a function that draws into run.setup.out and returns its Drawings."""
    def register(draw):
        PICTURES[name] = draw
        return draw
    return register


def wanted(cfg: Config, name: str) -> bool:
    return name in cfg.pictures or "all" in cfg.pictures


@picture("loss")
def loss_picture(run: Finished) -> list[Drawing]:
    """loss.png: train and validation loss per epoch, the learning rate on a second axis."""
    from matplotlib.lines import Line2D
    history, best, test_loss = run.history, run.best, run.test_loss
    snapshots, epochs = [epoch for epoch, _ in run.epochs.drawn] if run.epochs else [], [r["epoch"] for r in history]
    fig = new_figure(9, 4.8)
    ax = fig.subplots()
    draw_guides(ax, snapshots, run.counting)
    ax.plot(epochs, [r["train_loss"] for r in history], "o-", ms=3, color="tab:blue", label="train loss")
    ax.plot(epochs, [r["val_loss"] for r in history], "o-", ms=3, color="tab:orange", label="validation loss")
    ax.plot([best["epoch"]], [best["val_loss"]], "*", ms=14, color="tab:orange", mec="black",
            label=f"best epoch {best['epoch']}: {best['val_loss']:.3f} (kept in model.pt)")
    if test_loss is not None:
        ax.plot([best["epoch"]], [test_loss], "D", ms=7, color="tab:red", mec="black",
                label=f"test loss of that model: {test_loss:.3f}")
    ax.set_xlabel("epoch", fontsize=11)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel(f"cross-entropy loss (nats per {run.setup.data.tokenizer.unit})", fontsize=11)
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
    V = run.setup.data.tokenizer.vocab_size
    handles += [Line2D([], [], ls="", label=f"knowing nothing: ln {V} = {math.log(V):.3f}"
                       + (f"; before training: {run.untrained_loss:.3f}" if run.untrained_loss is not None else ""))]
    ax.legend(handles=handles, fontsize=10, loc="upper right", framealpha=0.95)
    below = history[-1]["val_loss"] < history[-1]["train_loss"]
    ax.set_title("Loss per epoch: validation below training, as training's is the mean over each epoch" if below else
                 "Loss per epoch: the gap between the curves is what the model learned by heart", fontsize=12)
    fig.subplots_adjust(left=0.09, right=0.9, top=0.92, bottom=0.11)
    save_figure(fig, run.setup.out / "loss.png")
    return [Drawing("loss.png", "loss.png: learning, epoch by epoch", loss_text(run))]


def draw_guides(ax, snapshots: list[int], counting: Counting | None):
    """Grey lines at the epochs with a picture; section 10's floor on the validation split, the
    unigram and bigram losses, as flat lines."""
    for epoch in snapshots:
        ax.axvline(epoch, color="0.88", lw=1, zorder=0)
    if counting is not None:
        for loss, name, style in zip(counting.val, ("unigram", "bigram"), (":", "-.")):
            ax.axhline(loss, ls=style, lw=1.4, color="0.3", label=f"counting, {name}: {loss:.3f} (validation)")


def loss_text(run: Finished) -> str:
    """What the gallery says of loss.png, with this run's numbers."""
    history, best = run.history, run.best
    tested = ", and the red diamond the test loss of that model, measured once at the end" if run.test_loss else ""
    V, last = run.setup.data.tokenizer.vocab_size, history[-1]
    start = (f" Before training the model scored {run.untrained_loss:.3f}; even guesses over the {V} "
             f"{run.setup.data.tokenizer.unit}s score ln {V} = {math.log(V):.3f}." if run.untrained_loss is not None else "")
    relation = (f" In the last epoch the validation loss ({last['val_loss']:.3f}) is below the training loss "
                f"({last['train_loss']:.3f}): the training loss is the mean over the epoch, while the weights were "
                f"still improving, and the validation loss is measured at its end" +
                (", with dropout off" if run.setup.cfg.dropout else "") + "."
                if last["val_loss"] < last["train_loss"] else
                f" In the last epoch the validation loss ({last['val_loss']:.3f}) is above the training loss "
                f"({last['train_loss']:.3f}): the gap is what the model knows of its training lines only.")
    unit = run.setup.data.tokenizer.unit
    bits = (f" ({best['val_bits_per_char']:.3f} bits per character, the figure that compares with a model of "
            "characters)" if unit != "character" and "val_bits_per_char" in best else "")
    floor = ""
    if run.counting is not None:
        unigram, bigram = run.counting.val
        floor = (f" The two flat grey lines are section 10's counting models on the same validation lines: the "
                 f"unigram ({unigram:.3f}) and the bigram ({bigram:.3f}), which predicts each {unit} from the one "
                 f"before it; the best epoch is {bigram - best['val_loss']:.3f} " +
                 ("below the bigram: what attention and the layers bought." if best["val_loss"] < bigram else
                  "above it: the model has not yet learned what a table of pairs knows."))
    return (
        f"Train loss (blue) and validation loss (orange) per epoch, in nats per {unit}; the grey dashed line "
        "is the learning rate (right axis): the short warm-up, then the cosine down to its floor. The star is the "
        f"best epoch, the one kept in model.pt{tested}. Here the best validation loss is "
        f"{best['val_loss']:.3f} at epoch {best['epoch']}{bits}.{start}{floor}{relation} What to look for: both curves fall fast in the "
        "first epochs (spelling is easy), then slowly; when the validation curve stops falling while the training "
        "curve goes on, the model is learning the training lines by heart, and early stopping ends the run.")


@picture("attention")
def attention_pictures(run: Finished) -> list[Drawing]:
    example, unit = pick_example(run.setup.data.train_text), run.setup.data.tokenizer.unit
    tokens, weights = attention_maps(run.setup.model, run.setup.data.tokenizer, example)
    drawings = []
    for layer, layer_weights in enumerate(weights, 1):
        name = f"attention_layer{layer}.png"
        draw_attention(tokens, layer_weights, layer, run.setup.out / name, unit)
        told = "; ".join(f"head {h + 1} spreads its weight, no habit above 25%" if what == "spread out" else
                         f"head {h + 1}: {what}, with a context this short" if share == 0 else
                         f"head {h + 1} looks mostly at {what} ({share:.0%} of its weight)"
                         for h, (what, share) in enumerate(head_habits(layer_weights, tokens, unit)))
        drawings.append(Drawing(name, f"{name}: where layer {layer} looks", (
            f"The attention weights of the {len(layer_weights)} heads of layer {layer} while the model reads "
            f"\u201c{example}\u201d. Row t is the {unit} that looks, column s where it looks; "
            "each row adds up to 1, and the grey triangle above the diagonal is the future, which the causal mask "
            f"hides. A bright diagonal just below the main one means 'look at the previous {unit}', a bright "
            f"first column 'look at the start of the line'. In this run: {told}.")))
    return drawings


@picture("positions")
def positions_picture(run: Finished) -> list[Drawing]:
    """positional_encoding.png: the (T, C) matrix as a heatmap and a few columns as curves."""
    pe = run.setup.model.positional_encoding.cpu()
    T, C = pe.shape
    dims = [d for d in (0, 10, 20, 40) if d < C]
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
    save_figure(fig, run.setup.out / "positional_encoding.png")
    return [Drawing("positional_encoding.png", "positional_encoding.png: how the model knows where a character stands", (
        "Left, the matrix PE(pos, i) that section 6 adds to every character's vector: one row per position, one "
        "column per dimension. Right, a few columns as curves: dimension 0 is sin(pos), a turn every 6.3 positions; "
        "higher dimensions are slower waves. No two rows are alike, so every position has a fingerprint, and "
        "nearby positions have similar ones. Nothing here is learned: it is the same picture for every run with "
        "the same width."))]


@picture("embeddings")
def embeddings_picture(run: Finished) -> list[Drawing]:
    """embeddings.png: the embedding table in 2-D by PCA, at the start and end of training."""
    tokenizer, table = run.setup.data.tokenizer, run.setup.model.token_embedding.weight
    before, after = run.setup.initial_embedding, table
    from matplotlib.lines import Line2D
    fig = new_figure(13, 6.2)
    axes = fig.subplots(1, 2)
    texts = [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)]
    kinds = [character_kind(c) for c in texts]
    counts = token_counts(run.setup.data)
    labelled = set(sorted(range(len(texts)), key=lambda i: (-counts[i], i))[:EMBEDDING_LABELS])  # the most frequent
    for ax, table, when in zip(axes, (before, after), ("at the start of training", "at the end of training")):
        draw_embedding_map(ax, table, texts, kinds, labelled)
        ax.set_title(f"{tokenizer.unit.capitalize()} embeddings {when}", fontsize=12)
    axes[1].legend(handles=[Line2D([], [], ls="", marker="s", color=color, label=kind)
                            for kind, color in KIND_COLORS.items() if kind in kinds],
                   fontsize=10, loc="upper right", framealpha=0.9)
    fig.subplots_adjust(left=0.06, right=0.98, top=0.94, bottom=0.09, wspace=0.15)
    save_figure(fig, run.setup.out / "embeddings.png")
    near = lambda text: (", ".join(f"'{show(n)}'" for n in nearest_tokens(tokenizer, table, text))  # noqa: E731
                         if tokenizer.token_id(text) is not None else "(not in this text)")
    pieces = "" if tokenizer.unit == "character" else (
        f" Only the {EMBEDDING_LABELS} most frequent of the {len(texts)} pieces are written, the others are dots; "
        f"a piece that begins a word (with its space, '␣que') is brown, a piece inside one orange. The pieces "
        f"nearest '␣que' are {near(' que')}.")
    return [Drawing("embeddings.png", f"embeddings.png: what the model learned about each {tokenizer.unit}", (
        "Every token's embedding vector, projected to 2-D along the two directions in which the vectors differ "
        "most (PCA). At the start the vectors are random and the characters are mixed; at the end characters that "
        "play the same role sit together (colours: vowels, consonants, punctuation, space). In this run the "
        f"{tokenizer.unit}s whose vectors point most nearly the same way as 'a' are {near('a')}, and as '.' are "
        f"{near('.')}.{pieces} Two directions show only part of the picture: the axis labels say how much of the "
        "spread they hold."))]


def draw_embedding_map(ax, table: torch.Tensor, texts: list[str], kinds: list[str], labelled: set):
    """One side of embeddings.png: the rows of the table in 2-D by PCA, each written as its token
    (or, for a rare piece, a dot) in the colour of its kind."""
    xy, explained = pca_2d(table)
    for i, ((x, y), c, kind) in enumerate(zip(xy.tolist(), texts, kinds)):
        if i in labelled:
            ax.text(x, y, show(c), color=KIND_COLORS[kind], fontsize=11 if len(texts) <= 100 else 9,
                    ha="center", va="center", fontweight="bold" if kind == "vowel" else "normal")
        else:  # a rarer piece: a dot
            ax.plot(x, y, ".", color=KIND_COLORS[kind], alpha=0.35, markersize=3)
    pad = 0.08 * float((xy.max(0).values - xy.min(0).values).max())
    ax.set_xlim(float(xy[:, 0].min()) - pad, float(xy[:, 0].max()) + pad)
    ax.set_ylim(float(xy[:, 1].min()) - pad, float(xy[:, 1].max()) + pad)
    ax.set_xlabel(f"first principal direction ({explained[0]:.0%} of the variance)", fontsize=10)
    ax.set_ylabel(f"second principal direction ({explained[1]:.0%})", fontsize=10)
    ax.tick_params(labelsize=9)


@picture("epochs")
def epoch_pictures(run: Finished) -> list[Drawing]:
    if run.epochs is None or not run.epochs.drawn:  # --snapshot 0, or no epoch reached a multiple of it
        return []
    files = [name for _, name in run.epochs.drawn]
    return [Drawing(files[-1], "epoch_N.png: the network, epoch by epoch", (
        "Left, the architecture as a graph, read from top to bottom; node area = number of parameters, colour = "
        "how much those weights changed since the previous picture (||ΔW|| / ||W||, log scale): bright early, "
        "darker as learning settles. Right, the direct path head(norm(embedding)): which next character each "
        "frequent character makes more (blue) or less (red) likely, before any layer helps. Files: "
        + ", ".join(f"[{f}]({f})" for f in files) + "."), named=f"{len(files)} epoch_<N>.png")]


@picture("evolution")
def evolution_film(run: Finished) -> list[Drawing]:
    if run.epochs is None or not run.epochs.frames:
        return []
    # Written by Pillow (the image library matplotlib itself uses) from the frames EpochPictures
    # kept, 0.8 s each; the last one stays on screen three times as long.
    frames = run.epochs.frames
    durations = [800] * (len(frames) - 1) + [3 * 800]
    write_file(run.setup.out / "evolution.gif", lambda file: frames[0].save(
        file, format="GIF", save_all=True, append_images=frames[1:], duration=durations, loop=0))
    return [Drawing("evolution.gif", "evolution.gif: the epoch pictures as a film", (
        "The same pictures one after the other, same layout and colour scale, the last held longer: watch the "
        "colours cool down and the character links grow."), inline=False)]


TEXT_FILES = {"parameters.txt": "every parameter tensor: its shape, count and role, the formulas that give the counts, "
                                "and statistics of each tensor after training",
              "table.txt": "every character the model wrote for the samples: what it saw, its top candidates with "
                           "their probabilities, the random draw and the choice",
              "tokens.txt": "the vocabulary: how often each token occurs, the first merges of word pieces (section 3) "
                            "with their counts, and proverbs cut into their tokens",
              "model.pt": "the checkpoint (best epoch): weights, settings and vocabulary; not kept in git, use it "
                          "with `python LLM.py --chat`, `--generate`, `--eval` or `--resume`"}


def cut(tokenizer: CharTokenizer, text: str) -> str:
    """'No | ␣hay | ␣mal': a text as its tokens, each shown with its visible spaces."""
    return " | ".join(show(tokenizer.token_text(i)) for i in tokenizer.encode(text))


def tokens_in_words(data: Data) -> str:
    """The gallery's two sentences about tokens.txt, with this run's numbers."""
    tokenizer, split = data.tokenizer, data.train_split
    example = pick_example(data.train_text, 40)
    if tokenizer.unit == "character":
        return (f"Every one of the {tokenizer.vocab_size} characters of the text is a token, so \u201c{example}\u201d is "
                f"{len(tokenizer.encode(example))} tokens. The file counts how often each one occurs; `--tokenizer bpe` "
                "learns word pieces instead (section 3 of LLM.py), and the file then lists the merges it learned.")
    merges = list(tokenizer.merges)
    first = ", ".join(f"'{show(tokenizer.token_text(a))}' + '{show(tokenizer.token_text(b))}'" for a, b in merges[:3])
    return (f"Starting from the {len(tokenizer.alphabet())} characters, byte-pair encoding merged the most frequent "
            f"pair of the training text {len(merges)} times (first {first}), for {tokenizer.vocab_size} {tokenizer.unit}s "
            f"of {split.n_chars / split.n_tokens:.2f} characters on average. So \u201c{example}\u201d is "
            f"{len(tokenizer.encode(example))} {tokenizer.unit}s, {cut(tokenizer, example)}, where the characters "
            f"would be {len(example)}.")


def tokens_report(data: Data) -> str:
    """The text of tokens.txt: the vocabulary and its counts, the first 30 merges, proverbs cut."""
    tokenizer, split = data.tokenizer, data.train_split
    counts, merges = token_counts(data), list(tokenizer.merges)
    heading = f"THE {tokenizer.vocab_size} TOKENS OF THIS RUN ({tokenizer.kind} tokenizer, section {2 if not merges else 3} of LLM.py)"
    out = [heading, "=" * len(heading), f"Vocabulary: {vocabulary_in_words(tokenizer)}; "
           f"{split.n_chars / split.n_tokens:.2f} characters per token in the training text. ⏎ = end of line, ␣ = space.", ""]
    if merges:
        out += [f"THE FIRST {min(30, len(merges))} MERGES, in the order they were learned: the most frequent adjacent pair "
                "of the training words", "at that moment (count), merged into one new piece", "",
                f"  {'rank':>4}  {'pair':<22} {'piece':<14} {'count':>7}"]
        out += [f"  {rank:>4}  {repr(show(tokenizer.token_text(a))) + ' + ' + repr(show(tokenizer.token_text(b))):<22} "
                f"{repr(show(tokenizer.token_text(a) + tokenizer.token_text(b))):<14} {count:>7,}"
                for rank, ((a, b), count) in enumerate(zip(merges[:30], tokenizer.counts), 1)]
        out.append("")
    else:
        out += ["One character is one token. `--tokenizer bpe` learns word pieces instead (section 3 of LLM.py), and",
                "this file then lists the merges it learned.", ""]
    out += ["PROVERBS CUT INTO TOKENS (the first trained on, the others held out"
            + (": never seen by the merges)" if merges else ")"), ""]
    for line in [pick_example(data.train_text, 40)] + data.held_out_text[:2]:
        out += [f"  {line}", f"  {cut(tokenizer, line)}", f"  {len(line)} characters -> {len(tokenizer.encode(line))} tokens", ""]
    out += ["THE TOKENS, MOST FREQUENT FIRST (occurrences in the training text)", ""]
    ranked = sorted(range(tokenizer.vocab_size), key=lambda i: (-counts[i], i))
    out += ["  " + "   ".join(f"{repr(show(tokenizer.token_text(i)))} {counts[i]:,}" for i in ranked[row:row + 6])
            for row in range(0, len(ranked), 6)]
    return "\n".join(out) + "\n"


def gallery(run: Finished, drawings: list[Drawing]) -> str:
    """outputs/README.md: every file of the run, with how to read it."""
    data, cfg = run.setup.data, run.setup.cfg
    lines = ["# What the model wrote: a gallery", "",
             f"Written by `python LLM.py` on `{show_path(Path(cfg.data).name)}`: {data.n_chars:,} characters read in {data.mode} "
             f"mode{'' if data.tokenizer.unit == 'character' else ', cut into ' + vocabulary_in_words(data.tokenizer)}, a model of {count_parameters(run.setup.model):,} parameters"
             + (f" **{without_label(cfg)}**" if cfg.without else "") + f", {len(run.history)} epochs. Every "
             f"file below is rebuilt by each run; the same seed on the same machine gives the same files.", ""]
    for d in drawings:
        shown = f"![{d.title}]({d.file})" if d.file.endswith((".png", ".gif")) else f"Open [{d.file}]({d.file})."
        lines += [f"## {d.title}", "", shown, "", d.text, ""]
    lines += samples_in_gallery(run.samples, run.setup.data.item)
    lines += [f"## tokens.txt: how the text was cut into {data.tokenizer.unit}s", "", "Open [tokens.txt](tokens.txt).", "",
              tokens_in_words(data), ""]
    # model.pt is not kept in git, so it is named but not linked: every link must lead somewhere
    listed = [(f"- `{name}`" if name == "model.pt" else f"- [{name}]({name})") + f": {what}."
              for name, what in TEXT_FILES.items() if name != "model.pt" or (run.setup.out / name).is_file()]
    return "\n".join(lines + ["## Text files", ""] + listed) + "\n"


def samples_in_gallery(samples: list[Sample], item: str) -> list[str]:
    """The gallery's section on what the model wrote: each sample, its kind and nearest proverb."""
    if not samples:
        return []
    lines = [f"## What it wrote, and how near each sample is to a {item} it read", "",
             f"The samples of the run's end (`table.txt` shows how every character of them was chosen). *Memorised*: "
             f"a training {item}, word for word; *rediscovered*: a held-out {item} it never trained on; *new*: "
             f"neither. The nearest training {item} is the one with the fewest edits (insertions, deletions, "
             f"substitutions) from the sample: a sample a few edits from a {item} is a near copy, not an invention.", ""]
    for s in samples:
        said = s.text.replace(EOL, " ⏎ ").replace("|", "/")
        lines.append(f"- {said}" + (f" *[{s.kind}]* {nearest_in_words(s, item)}" if s.kind else ""))
    return lines + [""]


def write_pictures_and_gallery(run: Finished, log=print) -> list[Drawing]:
    """The end of the run: the pictures --pictures asks for, outputs/README.md, the last line."""
    started = time.perf_counter()
    drawings = [d for name, draw in PICTURES.items() if wanted(run.setup.cfg, name) for d in draw(run)]
    save_text(run.setup.out / "README.md", gallery(run, drawings))
    best = f"epoch {run.best['epoch']}, best validation loss {run.best['val_loss']:.3f}"
    checkpoint = (f"model.pt ({best})" if "model.pt" in this_run_wrote(run.setup.out) else
                  f"model.pt as it was ({best}: no epoch did better)" if (run.setup.out / "model.pt").is_file() else
                  f"no model.pt (no epoch did better than the checkpoint it went on from, {run.best['val_loss']:.3f})")
    log(f"wrote {run.setup.out}/: {checkpoint}, parameters.txt, table.txt, tokens.txt" + "".join(f", {d.named or d.file}" for d in drawings)
        + f" and README.md, the gallery ({time.perf_counter() - started:.1f} s for the pictures after training)")
    return drawings


# %% [markdown]
# ## H. The explorer: the trained model in a web page
#
# Every run writes `explorer.html`, one file that runs the trained model in the browser: type a
# beginning and see the next-character probabilities as bars, move the temperature, top-k and
# top-p sliders and watch the kept set change, step one character at a time with the same
# random draws as PyTorch (`--generate` with the same seed writes the same line), see every
# head's attention for your own text, the loss curves, the model as it was at every `--snapshot`
# epoch, and the map of the character embeddings. `python LLM.py --explorer` writes the page
# again from a checkpoint (any `--checkpoint`; into its own folder unless `--out` is given).
#
# The page is offline: no server, no network, no library. The weights, the vocabulary and the
# settings are embedded in it as base64 numbers (the best epoch in float32, exactly as trained;
# the earlier snapshots in float16, half the size, within `EXPLORER_SNAPSHOT_BYTES`). Its
# JavaScript is below in plain functions, each named after the Part I section whose formula it
# computes; the tests run it in a real Chromium and find its logits, probabilities and attention
# equal to PyTorch's within $10^{-4}$. The same functions are the page's API,
# `window.explorer`: `logits(text)`, `probabilities(text, {temperature, top_k, top_p, greedy})`,
# `attention(text)` ([layer][head][t][s]), `generate(text, options)` and `vocabulary`.

# %%
EXPLORER_SNAPSHOT_BYTES = 2_500_000  # float16 bytes of earlier epochs a page embeds at most (the best comes on top)
EXPLORER_MAX_PARAMETERS = 20_000_000  # a larger model would make a page of hundreds of MB: no page


def snapshot_epochs(cfg: Config, parameters: int) -> set[int]:
    """The --snapshot epochs whose weights explorer.html embeds: as many as the budget holds
    (2 bytes a number), evenly spread, the first and the last of the run among them."""
    count = cfg.epochs // cfg.snapshot if cfg.snapshot else 0  # epochs snapshot, 2 * snapshot, ...: never listed
    room = EXPLORER_SNAPSHOT_BYTES // (2 * parameters)  # (--epochs may be in the billions)
    if room >= count:
        return {cfg.snapshot * (k + 1) for k in range(count)}
    if room < 2:
        return {cfg.snapshot * count} if room and count else set()
    return {cfg.snapshot * (1 + round(i * (count - 1) / (room - 1))) for i in range(room)}


@dataclass
class Snapshot:
    """The weights of one epoch, as explorer.html shows them."""
    epoch: int
    val_loss: float
    weights: dict  # the model's state_dict on the CPU: float16 for a snapshot, float32 for the best epoch


def packed(weights: dict, dtype: str) -> str:
    """Every tensor of a state_dict, flattened in its order, as little-endian float32 or float16, in base64."""
    flat = torch.cat([t.detach().float().cpu().reshape(-1) for t in weights.values()]).numpy()
    return base64.b64encode(flat.astype("<f4" if dtype == "float32" else "<f2").tobytes()).decode("ascii")


def explorer_data(model: TransformerLM, tokenizer: CharTokenizer, cfg: Config, best: dict, history: list[dict],
                  test_loss: float | None, snapshots: list[Snapshot], source: str, source_kind: str = "data",
                  counts: list[int] | None = None) -> dict:
    """Everything explorer.html needs, as plain JSON data: shape, vocabulary, sampling settings,
    the training history and the weights of the best epoch and of the snapshots. `source` is the
    data file's name (or the checkpoint's path, source_kind "checkpoint"); `counts`, how often the
    training text has each token, names the most frequent on the page's map."""
    final = Snapshot(best["epoch"], best["val_loss"], model.state_dict())
    shown = sorted([s for s in snapshots if s.epoch != final.epoch] + [final], key=lambda s: s.epoch)
    texts = [tokenizer.token_text(i) for i in range(tokenizer.vocab_size)]
    epochs = []
    for s in shown:
        xy, explained = pca_2d(s.weights["token_embedding.weight"])
        dtype = "float32" if s is final else "float16"
        epochs.append({"epoch": s.epoch, "val_loss": s.val_loss, "best": s is final, "dtype": dtype,
                       "weights": packed(s.weights, dtype), "map": [[round(x, 4), round(y, 4)] for x, y in xy.tolist()],
                       "explained": [round(float(e), 4) for e in explained]})
    return {"format": "LLM.py explorer 1", "source": source, "source_kind": source_kind, "parameters": count_parameters(model),
            "model": {"vocab_size": tokenizer.vocab_size, "d_model": cfg.d_model, "n_heads": cfg.n_heads,
                      "n_layers": cfg.n_layers, "d_ff": cfg.d_ff, "context": cfg.context, "without": list(cfg.without)},
            "tokenizer": {"kind": tokenizer.kind, "unit": tokenizer.unit, "vocabulary": texts,
                          "merges": [[a, b, new] for (a, b), (_, new) in tokenizer.merges.items()],  # in rank order
                          "eol_id": tokenizer.eol_id, "kinds": [character_kind(c) for c in texts], "counts": counts},
            "sampling": {"temperature": cfg.temperature, "top_k": cfg.top_k, "top_p": cfg.top_p,
                         "greedy": cfg.greedy, "max_chars": cfg.max_chars, "seed": cfg.seed},
            "prompts": list(cfg.prompts), "mode": cfg.mode,
            "history": [{k: r[k] for k in ("epoch", "train_loss", "val_loss", "lr")} for r in history],
            "test_loss": test_loss, "best_epoch": best["epoch"],
            "tensors": [[name, list(t.shape)] for name, t in model.state_dict().items()],
            "epochs": epochs}


def explorer_html(data: dict) -> str:
    """The page: EXPLORER_PAGE with the data embedded as JSON. Every <, > and & of the data is
    written \\u003c, \\u003e, \\u0026 (the same string to JSON), so that no text of the data
    ('</script>', '<!--') can end or open anything in the page; U+2028 and U+2029 likewise."""
    embedded = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    for character in "<>&\u2028\u2029":
        embedded = embedded.replace(character, f"\\u{ord(character):04x}")
    return (EXPLORER_PAGE.replace("/*STYLE*/", EXPLORER_STYLE).replace("/*SCRIPT*/", EXPLORER_SCRIPT)
            .replace("/*DATA*/", embedded))


def write_explorer(path: Path, model: TransformerLM, tokenizer: CharTokenizer, cfg: Config, best: dict,
                   history: list[dict], test_loss: float | None, snapshots: list[Snapshot], source: str,
                   source_kind: str = "data", counts: list[int] | None = None) -> bool:
    """explorer.html at `path`; False (nothing written) for a model too large for a page."""
    if count_parameters(model) > EXPLORER_MAX_PARAMETERS:
        return False
    page = explorer_html(explorer_data(model, tokenizer, cfg, best, history, test_loss, snapshots, source,
                                       source_kind, counts))
    save_text(path, page)
    return True


@picture("explorer")
def explorer_picture(run: Finished) -> list[Drawing]:
    setup = run.setup
    counted = token_counts(setup.data)  # as tokens.txt counts them
    counts = [counted.get(i, 0) for i in range(setup.data.tokenizer.vocab_size)]
    written = write_explorer(setup.out / "explorer.html", setup.model, setup.data.tokenizer, setup.cfg, run.best,
                             run.history, run.test_loss, run.snapshots, show_path(Path(setup.cfg.data).name), "data", counts)
    if not written:
        setup.log(f"explorer.html: not written, a model of {count_parameters(setup.model):,} parameters is too large "
                  f"for a page (at most {EXPLORER_MAX_PARAMETERS:,})")
        return []
    epochs = sorted({s.epoch for s in run.snapshots} | {run.best["epoch"]})
    size = (setup.out / "explorer.html").stat().st_size
    return [Drawing("explorer.html", "explorer.html: ask the model anything, in the browser", (
        "Open it from the folder with a double click: it needs no server and no network. Type a beginning and see "
        "the next character's probabilities, move temperature, top-k and top-p, step one character at a time with "
        "the same draws as `--generate`, read every head's attention for your own text, and compare the model at "
        f"epochs {', '.join(map(str, epochs))} ({size / 1e6:.1f} MB, the weights inside)."), inline=False)]


def explorer_from_checkpoint(cfg: Config, checkpoint: Path, out: Path, log=print):
    """--explorer: explorer.html for a checkpoint, with the loss history it saved (no snapshots)."""
    model, tokenizer, trained_cfg, payload = load_checkpoint(checkpoint, "cpu")
    trained_cfg = replace(trained_cfg, **{name: getattr(cfg, name) for name in SAMPLING_FIELDS})
    training = payload.get("training") or {}
    history = [r for r in training.get("history", []) if isinstance(r, dict)]
    best = {"epoch": payload["epoch"], "val_loss": payload["val_loss"]}
    path = out / "explorer.html"
    if path.exists() and path.name not in manifest_names(out):
        raise UserError(f"{path} is a file no run wrote (no {MANIFEST} there lists it): give another --out, so that a "
                        f"page never replaces a file of yours")
    with writing_folder(out):
        if not write_explorer(path, model, tokenizer, trained_cfg, best, history, None, [], show_path(checkpoint), "checkpoint"):
            raise UserError(f"{checkpoint} holds {count_parameters(model):,} parameters: too large for a page "
                            f"(at most {EXPLORER_MAX_PARAMETERS:,})")
        if path.name not in manifest_names(out):  # listed as a run's file: the next --explorer may replace it
            if not (out / MANIFEST).is_file():
                save_text(out / MANIFEST, MANIFEST_HEADER)
            append_line(out / MANIFEST, path.name)
    log(f"wrote {path} ({path.stat().st_size / 1e6:.1f} MB): {checkpoint}, epoch {payload['epoch']}; open it in a "
        f"browser")


SAMPLING_FIELDS = ("temperature", "top_k", "top_p", "greedy", "max_chars", "seed")  # the page's starting sliders


EXPLORER_PAGE = """<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta http-equiv="Content-Security-Policy" content="default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; img-src data:">
<title>LLM.py explorer</title>
<style>/*STYLE*/</style>
</head>
<body>
<header>
  <h1 data-t="title">LLM.py explorer: ask the model anything</h1>
  <p id="about"></p>
  <div class="bar">
    <label><span data-t="epoch">Model after epoch</span> <select id="epoch"></select></label>
    <button id="projector" type="button" aria-pressed="false" data-t="projector">Projector</button>
    <button id="language" type="button" aria-label="Español / English" lang="es">Español</button>
  </div>
</header>
<main>
<section id="write-panel" aria-labelledby="write-heading">
  <h2 id="write-heading" data-t="write">1. Write a beginning</h2>
  <p class="why" data-t="write-why"></p>
  <label for="text" class="sr" data-t="beginning">Beginning</label>
  <input id="text" type="text" autocomplete="off" spellcheck="false" value="" aria-describedby="known">
  <p id="known" class="why"></p>
  <p id="message" role="status" aria-live="polite"></p>
  <div class="buttons">
    <button id="step" type="button" data-t="step">Step: one character</button>
    <button id="finish" type="button" data-t="finish">Write to the end</button>
    <button id="undo" type="button" data-t="undo">Undo</button>
    <button id="reset" type="button" data-t="reset">Reset</button>
  </div>
  <div class="sliders">
    <label for="temperature"><span data-t="temperature">Temperature τ</span> <output id="temperature-value"></output></label>
    <input id="temperature" type="range" min="0.05" max="2" step="0.05">
    <label for="top-k"><span data-t="top-k">Top-k (0 = all)</span> <output id="top-k-value"></output></label>
    <input id="top-k" type="range" min="0" step="1">
    <label for="top-p"><span data-t="top-p">Top-p (1 = all)</span> <output id="top-p-value"></output></label>
    <input id="top-p" type="range" min="0.05" max="1" step="0.05">
    <label class="inline"><input id="greedy" type="checkbox"> <span data-t="greedy">Greedy: always the most likely</span></label>
    <label class="inline"><span data-t="seed">Seed</span> <input id="seed" type="number" min="0" step="1"></label>
  </div>
  <p class="read" data-t="write-read"></p>
</section>
<section id="next-panel" aria-labelledby="next-heading">
  <h2 id="next-heading" data-t="next">2. What comes next</h2>
  <p class="why" data-t="next-why"></p>
  <p id="next-summary"></p>
  <div id="bars" role="list" data-t-aria="bars-aria"></div>
  <p id="bar-detail" aria-live="polite"></p>
  <p class="read" data-t="next-read"></p>
</section>
<section id="attention-panel" aria-labelledby="attention-heading">
  <h2 id="attention-heading" data-t="attention">3. Where it looks: attention</h2>
  <p class="why" data-t="attention-why"></p>
  <div class="bar">
    <label><span data-t="layer">Layer</span> <select id="layer"></select></label>
    <label><span data-t="head">Head</span> <select id="head"></select></label>
  </div>
  <canvas id="heatmap" tabindex="0" width="400" height="400" role="img" data-t-aria="heatmap-aria"></canvas>
  <p id="heat-scale"><span class="key"><span class="ramp"></span><span data-t="scale"></span></span>
    <span class="key"><span class="swatch"></span><span data-t="future"></span></span></p>
  <p id="looks" aria-live="polite"></p>
  <div id="strip" aria-hidden="true"></div>
  <p class="read" data-t="attention-read"></p>
</section>
<section id="steps-panel" aria-labelledby="steps-heading">
  <h2 id="steps-heading" data-t="steps">4. Step by step, as in table.txt</h2>
  <p class="why" data-t="steps-why"></p>
  <div id="steps"></div>
  <p class="read" data-t="steps-read"></p>
</section>
<section id="training-panel" aria-labelledby="training-heading">
  <h2 id="training-heading" data-t="training">5. How it learned</h2>
  <p class="why" data-t="training-why"></p>
  <svg id="loss" viewBox="0 0 480 260" role="group" data-t-aria="loss-aria"></svg>
  <table id="compare"><caption id="compare-note"></caption></table>
  <p class="read" data-t="training-read"></p>
</section>
<section id="map-panel" aria-labelledby="map-heading">
  <h2 id="map-heading" data-t="map">6. The embedding map</h2>
  <p class="why" data-t="map-why"></p>
  <svg id="map" viewBox="0 0 480 400" role="img" tabindex="0" data-t-aria="map-aria"></svg>
  <p id="map-legend"></p>
  <p id="map-note" aria-live="polite"></p>
  <p class="read" data-t="map-read"></p>
</section>
<section id="api-panel" aria-labelledby="api-heading">
  <h2 id="api-heading" data-t="api">7. For the curious: window.explorer</h2>
  <p class="why" data-t="api-why"></p>
<pre id="api-code"></pre>
</section>
</main>
<script type="application/json" id="explorer-data">/*DATA*/</script>
<script>/*SCRIPT*/</script>
</body>
</html>
"""

EXPLORER_STYLE = """
:root { --ink: #1d1d1f; --soft: #5b5b66; --line: #d9d9e0; --edge: #767680; --kept: #2c6fbb; --focus: #0b57d0;
  --chosen: #b35900; --back: #f6f6f9; }
* { box-sizing: border-box; }
body { margin: 0; font: 15px/1.4 system-ui, -apple-system, "Segoe UI", Roboto, sans-serif; color: var(--ink); background: var(--back); }
header { padding: 8px 16px 4px; background: #fff; border-bottom: 1px solid var(--line); }
h1 { font-size: 20px; margin: 0 0 2px; }
h2 { font-size: 16px; margin: 0 0 4px; }
#about, .why, .read, #map-note { color: var(--soft); margin: 2px 0 6px; font-size: 13px; }
.read { border-top: 1px solid var(--line); padding-top: 4px; margin-top: 8px; }
.bar { display: flex; gap: 16px; align-items: center; flex-wrap: wrap; margin: 4px 0; }
main { display: grid; grid-template-columns: repeat(3, minmax(0, 1fr)); gap: 10px; padding: 10px 16px; }
section { background: #fff; border: 1px solid var(--line); border-radius: 8px; padding: 10px 12px; min-width: 0; }
#steps-panel, #training-panel, #map-panel { grid-column: span 1; }
#api-panel { grid-column: 1 / -1; }
@media (max-width: 1000px) { main { grid-template-columns: repeat(2, minmax(0, 1fr)); } }
@media (max-width: 680px) { main { grid-template-columns: minmax(0, 1fr); padding: 6px; } h1 { font-size: 17px; } }
input[type=text] { width: 100%; font: 20px/1.3 ui-monospace, Menlo, Consolas, monospace; padding: 6px 8px;
  border: 2px solid var(--edge); border-radius: 6px; }
input[type=text]:focus, button:focus-visible, select:focus-visible, input:focus-visible, canvas:focus-visible,
  svg:focus-visible, svg .mark:focus-visible, .row:focus-visible { outline: 3px solid var(--focus); outline-offset: 1px; }
input.unknown { border-color: #c0392b; }
#message { min-height: 1.4em; margin: 4px 0; font-size: 14px; }
#message.problem { color: #c0392b; font-weight: 600; }
.buttons { display: flex; gap: 6px; flex-wrap: wrap; margin: 6px 0; }
button, select { font: inherit; padding: 5px 10px; border: 1px solid var(--edge); border-radius: 6px; background: #eef1f7; cursor: pointer; }
button[aria-pressed=true] { background: var(--ink); color: #fff; }
button:disabled { opacity: 0.45; cursor: default; }
.sliders { display: grid; grid-template-columns: 1fr; gap: 2px; }
.sliders label { display: flex; justify-content: space-between; font-size: 14px; }
.sliders label.inline { justify-content: flex-start; gap: 6px; align-items: center; margin-top: 4px; }
.sliders input[type=range] { width: 100%; }
#seed { width: 7em; font: inherit; }
output { font-weight: 600; font-variant-numeric: tabular-nums; }
.row { display: grid; grid-template-columns: 2.4em 1fr 4.2em; align-items: center; gap: 6px; height: 21px; font-size: 14px; }
.pieces .row { grid-template-columns: 5.2em 1fr 4.2em; }
.pieces .row .char { text-align: left; padding-left: 6px; }
.row .char { font: 16px ui-monospace, Menlo, Consolas, monospace; text-align: center; }
.row .track { background: #f0f1f4; height: 15px; border-radius: 3px; overflow: hidden; }
.row .fill { display: block; height: 100%; background: var(--kept); }
.row.dropped .fill { background: repeating-linear-gradient(135deg, var(--edge) 0 3px, #b9bec8 3px 6px); }
.row.dropped .char, .row.dropped .pct { color: #5f6673; }
.row:not(.dropped) .char { font-weight: 700; color: var(--kept); box-shadow: inset 3px 0 var(--kept); }
.row.chosen .char { outline: 2px solid var(--chosen); border-radius: 3px; }
#bar-detail { font-size: 14px; min-height: 1.4em; margin: 4px 0; font-variant-numeric: tabular-nums; }
.row .pct { text-align: right; font-variant-numeric: tabular-nums; }
#next-summary { font-size: 14px; margin: 2px 0 6px; }
canvas#heatmap { width: 100%; max-width: 520px; aspect-ratio: 1; display: block; touch-action: manipulation; }
#heat-scale, #map-legend { display: flex; flex-wrap: wrap; gap: 4px 14px; font-size: 13px; margin: 4px 0; }
#heat-scale .key { display: inline-flex; align-items: center; gap: 5px; }
#heat-scale .ramp { width: 90px; height: 12px; border: 1px solid var(--edge);
  background: linear-gradient(90deg, #440154, #3b528b, #21918c, #5ec962, #fde725); }
#heat-scale .swatch { width: 14px; height: 12px; background: #ececef; border: 1px solid var(--edge); }
#map-legend span { font-weight: 600; }
#looks { font-size: 14px; margin: 4px 0 2px; min-height: 1.4em; }
#strip { font: 16px ui-monospace, Menlo, Consolas, monospace; display: flex; flex-wrap: wrap; gap: 1px; }
#strip span { padding: 1px 2px; border-radius: 2px; min-width: 0.9em; text-align: center; }
#steps { max-height: 420px; overflow-y: auto; font: 13px ui-monospace, Menlo, Consolas, monospace; }
#steps .step { border-bottom: 1px solid var(--line); padding: 4px 0; white-space: pre-wrap; }
#steps .empty { font-family: system-ui, sans-serif; color: var(--soft); }
svg { width: 100%; height: auto; display: block; }
svg text { font: 12px system-ui, sans-serif; fill: var(--ink); }
svg .tick { fill: var(--soft); font-size: 11px; }
svg .mark { cursor: pointer; }
#compare { border-collapse: collapse; font-size: 13px; margin-top: 6px; width: 100%; }
#compare td, #compare th { border-bottom: 1px solid var(--line); padding: 2px 4px; text-align: left; }
#compare tr.current { background: #fff6dc; }
#compare caption { caption-side: bottom; text-align: left; color: var(--soft); font-size: 13px; padding-top: 2px; }
#compare .mono { font-family: ui-monospace, Menlo, Consolas, monospace; }
#map text.token { font: 15px ui-monospace, Menlo, Consolas, monospace; text-anchor: middle; dominant-baseline: central; }
pre { background: var(--back); padding: 8px; overflow-x: auto; font-size: 13px; margin: 4px 0 0; }
.sr { position: absolute; left: -9999px; }
body.projector { font-size: 20px; }
body.projector main { grid-template-columns: repeat(2, minmax(0, 1fr)); }
body.projector h1 { font-size: 28px; } body.projector h2 { font-size: 23px; }
body.projector #about, body.projector .why, body.projector .read, body.projector #map-note, body.projector #message,
body.projector .sliders label, body.projector .row, body.projector #next-summary, body.projector #looks,
body.projector #compare, body.projector #steps, body.projector pre, body.projector #bar-detail, body.projector #heat-scale,
body.projector #map-legend, body.projector #compare caption, body.projector #strip { font-size: 18px; }
body.projector .row { height: 27px; } body.projector .row .char { font-size: 20px; }
body.projector svg text { font-size: 17px; } body.projector svg .tick { font-size: 16px; }
body.projector #map text.token { font-size: 19px; }
@media (max-width: 680px) { body.projector main { grid-template-columns: minmax(0, 1fr); } }
"""

EXPLORER_SCRIPT = r"""
"use strict";
// LLM.py's model, run in the page on the weights embedded above. Each function computes the
// formula of the Part I section it is named after, in float64 on the float32 weights (float16
// for an earlier snapshot), so the numbers equal PyTorch's within 1e-4.
const DATA = JSON.parse(document.getElementById("explorer-data").textContent);
const V = DATA.model.vocab_size, C = DATA.model.d_model, H = DATA.model.n_heads, D = C / H;
const N = DATA.model.n_layers, F = DATA.model.d_ff, CONTEXT = DATA.model.context;
const VOCABULARY = DATA.tokenizer.vocabulary, EOL_ID = DATA.tokenizer.eol_id, UNIT = DATA.tokenizer.unit;
const IDS = new Map(VOCABULARY.map((c, i) => [c, i]));
const WITHOUT = new Set(DATA.model.without);  // the ideas this model was trained without (section 9's --without)

// ---- the weights: base64 -> float32 (the best epoch) or float16 (a snapshot), named like state_dict
const HALF = (() => {  // every float16 bit pattern as a float32 number
  const table = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1, exponent = (h >> 10) & 0x1f, fraction = h & 0x3ff;
    table[h] = exponent === 0 ? sign * 2 ** -14 * (fraction / 1024)
      : exponent === 31 ? (fraction ? NaN : sign * Infinity) : sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
  }
  return table;
})();

function weightsOf(snapshot) {
  if (snapshot.tensors) return snapshot.tensors;
  const binary = atob(snapshot.weights), bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i++) bytes[i] = binary.charCodeAt(i);
  let values;
  if (snapshot.dtype === "float16") {
    const halves = new Uint16Array(bytes.buffer);
    values = new Float64Array(halves.length);
    for (let i = 0; i < halves.length; i++) values[i] = HALF[halves[i]];
  } else {
    values = Float64Array.from(new Float32Array(bytes.buffer));  // float64 arithmetic is the faster here
  }
  const tensors = {};
  let offset = 0;
  for (const [name, shape] of DATA.tensors) {
    const size = shape.reduce((a, b) => a * b, 1);
    tensors[name] = values.subarray(offset, offset + size);
    offset += size;
  }
  snapshot.tensors = tensors;
  return tensors;
}

// ---- sections 2 and 3: the tokenizer, text in NFC; the model reads ⏎ first. One character is one
// token, or (word pieces) each word with its space starts as characters and takes the learned
// merges, the earliest learned pair present first
function unknownCharacters(text) { return [...new Set([...text.normalize("NFC")])].filter(c => !IDS.has(c)); }
const MERGES = new Map(DATA.tokenizer.merges.map(([a, b, id], rank) => [a + "," + b, {a, b, id, rank}]));
const WORD = /[ ]?[\p{L}\p{N}_]+|[ ]?[^\p{L}\p{N}_\s]+|\s/gu;  // section 3's WORD: " ?\w+| ?[^\w\s]+|\s"
const WORDS = new Map();  // word -> its ids: a text repeats its words

function encodeWord(word) {
  if (!WORDS.has(word)) {
    let ids = [...word].map(c => IDS.get(c));
    for (;;) {
      let first = null;  // the pair present that was learned earliest
      for (let i = 0; i + 1 < ids.length; i++) {
        const merge = MERGES.get(ids[i] + "," + ids[i + 1]);
        if (merge && (first === null || merge.rank < first.rank)) first = merge;
      }
      if (first === null) break;
      const merged = [];
      for (let i = 0; i < ids.length; i++) {
        if (i + 1 < ids.length && ids[i] === first.a && ids[i + 1] === first.b) { merged.push(first.id); i++; }
        else merged.push(ids[i]);
      }
      ids = merged;
    }
    WORDS.set(word, ids);
  }
  return WORDS.get(word);
}

function encode(text) {
  const unknown = unknownCharacters(text);
  if (unknown.length) throw new Error(unknownMessage(unknown));
  text = text.normalize("NFC");
  return MERGES.size ? (text.match(WORD) || []).flatMap(encodeWord) : [...text].map(c => IDS.get(c));
}

function windowOf(source) {  // section 15: the last `context` tokens of ⏎ + a text (or of its ids)
  return [EOL_ID, ...(typeof source === "string" ? encode(source) : source)].slice(-CONTEXT);
}

// ---- section 5: x_t = E[id_t] * sqrt(C)
function scaledEmbedding(table, ids) {
  const x = new Float64Array(ids.length * C), scale = Math.sqrt(C);
  ids.forEach((id, t) => { for (let c = 0; c < C; c++) x[t * C + c] = table[id * C + c] * scale; });
  return x;  // (T, C)
}

// ---- section 6: PE(pos, 2i) = sin(pos / 10000^(2i/C)), PE(pos, 2i+1) = cos(the same)
function sinusoidalPositionalEncoding(from, T) {  // the rows of positions from .. T-1
  const pe = new Float64Array((T - from) * C);
  for (let pos = from; pos < T; pos++) {
    for (let i = 0; 2 * i < C; i++) {
      const angle = pos / 10000 ** (2 * i / C), row = (pos - from) * C;
      pe[row + 2 * i] = Math.sin(angle);
      if (2 * i + 1 < C) pe[row + 2 * i + 1] = Math.cos(angle);
    }
  }
  return pe;  // (T - from, C)
}

// nn.Linear: y = x W^T + b, W stored (out, in) as in PyTorch; four sums at a time, for speed
function linear(x, T, W, b, inputs, outputs) {
  const y = new Float64Array(T * outputs), whole = inputs - inputs % 4;
  for (let t = 0; t < T; t++) {
    const xt = x.subarray(t * inputs, (t + 1) * inputs);
    for (let o = 0; o < outputs; o++) {
      const w = W.subarray(o * inputs, (o + 1) * inputs);
      let s0 = 0, s1 = 0, s2 = 0, s3 = 0;
      for (let i = 0; i < whole; i += 4) {
        s0 += xt[i] * w[i]; s1 += xt[i + 1] * w[i + 1]; s2 += xt[i + 2] * w[i + 2]; s3 += xt[i + 3] * w[i + 3];
      }
      for (let i = whole; i < inputs; i++) s0 += xt[i] * w[i];
      y[t * outputs + o] = b[o] + (s0 + s1) + (s2 + s3);
    }
  }
  return y;  // (T, outputs)
}

// ---- the key/value cache. With the causal mask, position t reads positions 0..t only, so the
// keys, values, attention rows and outputs of the positions already computed never change when
// the text grows: a keystroke or a Step computes the new positions alone, with the same sums in
// the same order as a pass over the whole window. A `cache` holds, per layer, one key and one
// value row (C numbers) per position and each head's attention rows.
function emptyCache() {
  const layer = () => ({keys: [], values: [], weights: Array.from({length: H}, () => [])});
  return {ids: [], outputs: [], layers: Array.from({length: N}, layer)};  // outputs: the last layer's rows
}

// ---- section 7: softmax(Q K^T / sqrt(d_k) + M) V, M = -inf above the diagonal (the causal mask)
function causalMask(t, s) { return s <= t || WITHOUT.has("causal-mask"); }

function attention(q, layer, start, T, h) {  // one head, positions start..T-1: columns h*D .. h*D+D-1
  const out = new Float64Array((T - start) * D), scale = WITHOUT.has("scaling") ? 1 : Math.sqrt(D);
  for (let t = start; t < T; t++) {
    const seen = WITHOUT.has("causal-mask") ? T : t + 1;  // the mask: row t reads s <= t only
    const row = new Float64Array(seen), qt = (t - start) * C + h * D, ot = (t - start) * D;
    let max = -Infinity;
    for (let s = 0; s < seen; s++) {
      const key = layer.keys[s];
      let dot = 0;
      for (let d = 0; d < D; d++) dot += q[qt + d] * key[h * D + d];
      row[s] = dot / scale;
      if (row[s] > max) max = row[s];
    }
    let total = 0;
    for (let s = 0; s < seen; s++) { row[s] = Math.exp(row[s] - max); total += row[s]; }
    for (let s = 0; s < seen; s++) {
      row[s] /= total;  // row t sums to 1
      const value = layer.values[s], weight = row[s];
      for (let d = 0; d < D; d++) out[ot + d] += weight * value[h * D + d];
    }
    layer.weights[h].push(row);
  }
  return out;  // (T - start, D)
}

const rows = (x, width) => Array.from({length: x.length / width}, (_, t) => x.slice(t * width, (t + 1) * width));

function multiHeadSelfAttention(w, prefix, x, layer, start, T) {
  const n = T - start, q = linear(x, n, w[prefix + "query.weight"], w[prefix + "query.bias"], C, C);
  layer.keys.push(...rows(linear(x, n, w[prefix + "key.weight"], w[prefix + "key.bias"], C, C), C));
  layer.values.push(...rows(linear(x, n, w[prefix + "value.weight"], w[prefix + "value.bias"], C, C), C));
  const concat = new Float64Array(n * C);
  for (let h = 0; h < H; h++) {  // each head on its own D numbers, then side by side again
    const head = attention(q, layer, start, T, h);
    for (let t = 0; t < n; t++) for (let d = 0; d < D; d++) concat[t * C + h * D + d] = head[t * D + d];
  }
  return linear(concat, n, w[prefix + "output.weight"], w[prefix + "output.bias"], C, C);
}

// ---- section 8: LayerNorm(x) = gamma (x - mu) / sqrt(sigma^2 + eps) + beta; FFN(x) = max(0, x W1 + b1) W2 + b2
function layerNorm(x, T, gamma, beta, eps = 1e-5) {
  const y = new Float64Array(T * C);
  for (let t = 0; t < T; t++) {
    let mean = 0, variance = 0;
    for (let c = 0; c < C; c++) mean += x[t * C + c] / C;
    for (let c = 0; c < C; c++) variance += (x[t * C + c] - mean) ** 2 / C;
    const scale = 1 / Math.sqrt(variance + eps);
    for (let c = 0; c < C; c++) y[t * C + c] = gamma[c] * (x[t * C + c] - mean) * scale + beta[c];
  }
  return y;
}

function feedForward(w, prefix, x, T) {
  const hidden = linear(x, T, w[prefix + "expand.weight"], w[prefix + "expand.bias"], C, F).map(a => Math.max(0, a));
  return linear(hidden, T, w[prefix + "contract.weight"], w[prefix + "contract.bias"], F, C);
}

function norm(x, T, w, name) { return WITHOUT.has("layer-norm") ? x : layerNorm(x, T, w[name + ".weight"], w[name + ".bias"]); }

function encoderLayer(w, n, x, layer, start, T) {  // pre-norm: x + MultiHead(LayerNorm(x)), then x + FFN(LayerNorm(x))
  const p = `layers.${n}.`, residual = WITHOUT.has("residual") ? 0 : 1, rowsIn = T - start;
  const attended = multiHeadSelfAttention(w, p + "attention.", norm(x, rowsIn, w, p + "attention_norm"), layer, start, T);
  const mid = x.map((a, i) => residual * a + attended[i]);
  const fed = feedForward(w, p + "feed_forward.", norm(mid, rowsIn, w, p + "feed_forward_norm"), rowsIn);
  return mid.map((a, i) => residual * a + fed[i]);
}

// ---- section 9: logits = LayerNorm(x) W_head + b_head, after the N layers
const work = {positions: 0};  // the positions computed so far, every layer: what a keystroke costs

function extend(w, cache, ids) {  // the positions of `ids` that `cache` lacks, through every layer
  const start = cache.ids.length, T = ids.length;
  if (start >= T) return;
  const positions = WITHOUT.has("positions") ? 0 : 1, pe = sinusoidalPositionalEncoding(start, T);
  let x = scaledEmbedding(w["token_embedding.weight"], ids.slice(start)).map((a, i) => a + positions * pe[i]);
  for (let n = 0; n < N; n++) x = encoderLayer(w, n, x, cache.layers[n], start, T);
  cache.outputs.push(...rows(x, C));
  cache.ids = ids.slice();
  work.positions += T - start;
}

function transformerLM(w, cache) {  // the logits after the last position of a filled cache
  const last = norm(cache.outputs[cache.ids.length - 1], 1, w, "final_norm");
  const logits = linear(last, 1, w["lm_head.weight"], w["lm_head.bias"], C, V);
  const attention = cache.layers.map(layer => layer.weights.map(head => head.slice()));
  return {ids: cache.ids.slice(), logits: Array.from(logits), attention};  // (V,), [N][H][T][<= T]
}

// ---- section 15: p = softmax(logits / tau), top-k, top-p, the draw u
function softmax(values) {
  const max = Math.max(...values), exps = values.map(a => Math.exp(a - max)), total = exps.reduce((a, b) => a + b, 0);
  return exps.map(e => e / total);
}

function chooseNext(logits, sampling, generator) {
  const probs = softmax(logits.map(a => a / sampling.temperature));
  const order = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a] || a - b);
  const cumulative = [];
  order.reduce((sum, i, r) => (cumulative[r] = sum + probs[i]), 0);
  let kept = sampling.top_k > 0 ? Math.min(sampling.top_k, V) : V;
  if (sampling.top_p < 1) kept = Math.min(kept, cumulative.filter(c => c < sampling.top_p).length + 1);
  if (sampling.greedy) return {id: order[0], logits, probs, order, cumulative, kept: 1, u: null};
  const u = generator.uniform(), target = u * cumulative[kept - 1];
  let rank = cumulative.slice(0, kept).findIndex(c => c > target);
  if (rank < 0) rank = kept - 1;
  return {id: order[rank], logits, probs, order, cumulative, kept, u};
}

function entropyBits(probs) { return -probs.reduce((sum, p) => sum + (p > 0 ? p * Math.log2(p) : 0), 0); }

// torch.Generator on the CPU is a Mersenne Twister (MT19937); torch.rand(()) takes 24 bits of
// each number. This one gives the same u for the same seed, so the page draws what PyTorch draws.
class MersenneTwister {
  constructor(seed) {
    this.state = new Uint32Array(624);
    this.state[0] = seed >>> 0;
    for (let i = 1; i < 624; i++) {
      const previous = this.state[i - 1] ^ (this.state[i - 1] >>> 30);
      this.state[i] = (Math.imul(1812433253, previous) + i) >>> 0;
    }
    this.index = 624;
  }
  copy() { const other = Object.create(MersenneTwister.prototype); other.state = this.state.slice(); other.index = this.index; return other; }
  next() {
    if (this.index >= 624) {
      for (let k = 0; k < 624; k++) {
        const y = (this.state[k] & 0x80000000) | (this.state[(k + 1) % 624] & 0x7fffffff);
        this.state[k] = this.state[(k + 397) % 624] ^ (y >>> 1) ^ (y & 1 ? 0x9908b0df : 0);
      }
      this.index = 0;
    }
    let y = this.state[this.index++];
    y ^= y >>> 11;
    y ^= (y << 7) & 0x9d2c5680;
    y ^= (y << 15) & 0xefc60000;
    y ^= y >>> 18;
    return y >>> 0;
  }
  uniform() { return (this.next() & 0xffffff) / 16777216; }
}

// ---- the page's model: one cache per epoch, kept for the next keystroke, Step and the sliders
const caches = new Map();  // epoch -> the cache of the window it computed last
let current = DATA.epochs.find(e => e.best);

function sharedStart(a, b) { let n = 0; while (n < a.length && n < b.length && a[n] === b[n]) n++; return n; }

function cachePrefix(cache, n) {  // the cache of its first n positions (what a shorter or edited text still shares)
  return {ids: cache.ids.slice(0, n), outputs: cache.outputs.slice(0, n), layers: cache.layers.map(layer =>
    ({keys: layer.keys.slice(0, n), values: layer.values.slice(0, n), weights: layer.weights.map(h => h.slice(0, n))}))};
}

function run(source, snapshot = current) {  // source: a text, or the ids of one
  const ids = windowOf(source), w = weightsOf(snapshot);
  let cache = caches.get(snapshot.epoch) || emptyCache();
  const shared = sharedStart(cache.ids, ids);
  // Past the context the window slides: every position moves, so it is computed again from its
  // start, as generate() does. Without the mask every row reads the future: no cache at all.
  if (WITHOUT.has("causal-mask")) cache = shared === ids.length && shared === cache.ids.length ? cache : emptyCache();
  else if (shared < cache.ids.length) cache = cachePrefix(cache, shared);
  extend(w, cache, ids);
  caches.set(snapshot.epoch, cache);
  return transformerLM(w, cache);
}

function filtered(choice) {  // the V probabilities sampling draws from: the kept ones, rescaled
  const out = new Array(V).fill(0), mass = choice.cumulative[choice.kept - 1];
  for (let r = 0; r < choice.kept; r++) out[choice.order[r]] = choice.probs[choice.order[r]] / mass;
  return out;
}

function samplingOf(options = {}) {
  return {temperature: options.temperature ?? 1, top_k: options.top_k ?? 0, top_p: options.top_p ?? 1,
          greedy: options.greedy ?? false, max_chars: options.max_chars ?? DATA.sampling.max_chars};
}

function generateText(text, options = {}) {  // section 15's generate(): until ⏎ or max_chars characters
  const sampling = samplingOf({...DATA.sampling, ...options}), generator = new MersenneTwister(options.seed ?? DATA.sampling.seed);
  let written = text.normalize("NFC"), ids = encode(written), count = 0;
  while (count < sampling.max_chars) {
    const choice = chooseNext(run(ids).logits, sampling, generator);
    if (choice.id === EOL_ID && DATA.mode !== "stream") break;
    ids = [...ids, choice.id];  // the ids written, never the text encoded again: as generate() does
    written += VOCABULARY[choice.id];
    count += [...VOCABULARY[choice.id]].length;
  }
  return written;
}

window.explorer = {
  vocabulary: VOCABULARY.slice(),
  epochs: DATA.epochs.map(e => e.epoch),
  get epoch() { return current.epoch; },
  use(epoch) { const found = DATA.epochs.find(e => e.epoch === epoch); if (!found) throw new Error(`no epoch ${epoch} in this page`); current = found; render(true); },
  logits(text) { return run(text).logits.slice(); },
  probabilities(text, options = {}) {
    const sampling = samplingOf(options), choice = chooseNext(run(text).logits, {...sampling, greedy: false}, {uniform: () => 0});
    if (sampling.greedy) { const out = new Array(V).fill(0); out[choice.order[0]] = 1; return out; }
    return filtered(choice);
  },
  attention(text) {  // every row as long as the window: the masked future as 0, as PyTorch gives it
    const result = run(text), T = result.ids.length;
    return result.attention.map(layer => layer.map(head => head.map(row => Array.from({length: T}, (_, s) => row[s] ?? 0))));
  },
  generate: generateText,
  unknown: unknownCharacters,
  encode: (text) => encode(text),
  timings: {},
  work,  // work.positions: the positions computed so far (each through every layer)
  forget() { caches.clear(); },  // the next call computes its whole window: one forward pass
};

// ---- the panels
const LABELS = {
  en: {
    title: "LLM.py explorer: ask the model anything", epoch: "Model after epoch", write: "1. Write a beginning",
    "write-why": "Type the start of a proverb: the model reads ⏎ and your text, and predicts the next character. Step writes one character with the sliders' settings; the same seed always writes the same.",
    "write-read": "Read section 15 of LLM.py (Writing: one character at a time).",
    beginning: "Beginning", step: "Step: one character", finish: "Write to the end", undo: "Undo",
    temperature: "Temperature τ", "top-k": "Top-k (0 = all)", "top-p": "Top-p (1 = all)", greedy: "Greedy: always the most likely", seed: "Seed",
    next: "2. What comes next", "next-why": "The bars are p = softmax(logits / τ) for the next character, the likeliest first. Blue bars are the kept set that top-k and top-p leave to draw from; grey ones cannot be drawn.",
    "next-read": "Read sections 9 (the model's logits) and 15 (temperature, top-k, top-p).",
    attention: "3. Where it looks: attention", "attention-why": "Row t is the character that looks, column s where it looks; each row adds up to 1. The grey triangle is the future, which the causal mask hides. Hover or use the arrow keys to pick a row.",
    "attention-read": "Read section 7 (attention, with the causal mask).", layer: "Layer", head: "Head",
    steps: "4. Step by step, as in table.txt", "steps-why": "Every step you take: what the model saw, its top candidates (kept ones marked *), the draw u and the choice. With the run's settings and seed it repeats table.txt's first sample.",
    "steps-read": "Read section 15 and outputs/table.txt.",
    training: "5. How it learned", "training-why": "Train (blue) and validation (orange) loss per epoch. The dots are the epochs saved in this page: click one, or choose it above, to ask that earlier model. The table asks every saved epoch about your beginning.",
    "training-read": "Read sections 10 (the loss) and 14 (the training loop).",
    map: "6. The embedding map", "map-why": "Every character's embedding vector, projected to 2-D along the two directions in which the vectors differ most (PCA). Characters that play the same role end up close together.",
    "map-read": "Read section 5 (embeddings) and outputs/embeddings.png.",
    api: "7. For the curious: window.explorer", "api-why": "Open the browser's console (F12) and call the model yourself. The tests of LLM.py call these same functions and compare them with PyTorch.",
    about: (d) => `A model of ${d.parameters} parameters (${V} ${UNIT}s, C = ${C}, ${H} heads, ${N} layers, context ${CONTEXT}), ${d.source}. Everything runs in this page, offline.`,
    unknown: (list, n) => `The model has never seen ${list}: it cannot read ${n > 1 ? "them" : "it"}. Remove ${n > 1 ? "them" : "it"} to go on.`,
    knows: known => `The characters it knows: ${known}`,
    projector: "Projector", reset: "Reset", stop: "Stop",
    writing: (n, most) => `Writing… ${n} of at most ${most} characters. Stop ends it here.`,
    stopped: "Stopped: what is written stays; Undo takes it back one step at a time.",
    "bars-aria": "the next character's probabilities, the likeliest first",
    "bar-hint": "With the keyboard: Tab to the bars, then ↑ ↓ for each bar's logit, p and cumulative p.",
    detail: (s) => `${s.rank}. “${s.token}”: logit ${s.logit}, p ${s.p}, cumulative p ${s.cumulative}; ${s.kept ? "kept: it can be drawn" : "dropped: it cannot be drawn"}.`,
    "heatmap-aria": "attention heatmap: row t looks at column s", scale: "attention weight, 0 to 1", future: "the future, hidden by the mask",
    "loss-aria": "loss curves; each dot chooses a saved epoch", "map-aria": "embedding map; the arrow keys visit the tokens",
    comparePending: "The other epochs answer once typing pauses.", compareNone: "—",
    "from-data": (name) => `trained on ${name}`, "from-checkpoint": (path) => `written by python LLM.py --explorer from ${path}`,
    kinds: {"vowel": "vowel", "consonant": "consonant", "letter": "letter", "punctuation": "punctuation", "space or ⏎": "space or ⏎",
            "word start": "word start", "word piece": "word piece", "other": "other"},
    colours: "Colours: ",
    mapPoint: (s) => `“${s.token}”: ${s.kind}${s.count === null ? "" : `, ${s.count} times in the training text`}.`,
    mapLabelled: (n, total) => `Labelled: the ${n} most frequent of ${total}; the others are dots (point at one, or use the arrow keys).`,
    "api-code": `explorer.vocabulary                  // the tokens (characters or pieces), in id order
explorer.logits("No hay")            // the V logits after the last character
explorer.probabilities("No hay", {temperature: 0.4, top_k: 3, top_p: 1, greedy: false})
                                     // V probabilities after filtering, in vocabulary order
explorer.attention("No hay")         // [layer][head][t][s], t and s over ⏎ + the text
explorer.generate("No hay", {seed: 1337})  // the beginning and its completion, like --generate
explorer.epochs, explorer.use(epoch) // the saved epochs; which one every call uses
explorer.work.positions              // positions computed so far: what each key costs`,
    "seed-bad": typed => `The seed must be a whole number from 0 to 4294967295, as python LLM.py --seed takes it, got ${typed === "" ? "nothing" : typed}: Step waits for one.`,
    summary: (s) => `After “${s.text}” (${s.seen} ${UNIT}s seen${s.cut ? `, the last ${CONTEXT}` : ""}): entropy ${s.entropy} bits; kept ${s.kept} of ${V} (mass ${s.mass}).`,
    done: "⏎: the proverb is over. Undo, or change the beginning.", empty: "No steps yet: press Step or Write to the end.",
    looks: (s) => `Head ${s.head} of layer ${s.layer}: “${s.char}” (position ${s.t}) looks most at “${s.top}” (position ${s.s}, ${s.share}).`,
    stepHead: (n, position, context) => `step ${n} | position ${position} | context: ${context}`,
    columns: "  rank char   logit       p   cum p", entropy: "entropy",
    without: "Trained without (section 9 of LLM.py): ", all: "all",
    maskless: "This model was trained without the mask: nothing is grey, every row also reads the future.", chose: "chose", greedyDraw: "greedy: the most likely", compareEpoch: "epoch", compareLoss: "val. loss", compareTop: "top 3 after your beginning (p at τ)",
    mapNote: (e) => `Epoch ${e.epoch}: the two directions hold ${e.a} and ${e.b} of the spread.`,
    lossAxis: "loss (nats per character)", trainLoss: "train loss", valLoss: "validation loss", epochAxis: "epoch", best: "best", stream: "(stream mode: a text, not proverbs)",
  },
  es: {
    title: "Explorador de LLM.py: pregúntale al modelo", epoch: "Modelo tras la época", write: "1. Escribe un comienzo",
    "write-why": "Escribe el comienzo de un refrán: el modelo lee ⏎ y tu texto y predice el carácter siguiente. Paso escribe un carácter con los ajustes de los deslizadores; la misma semilla escribe siempre lo mismo.",
    "write-read": "Lee la sección 15 de LLM.py (escribir carácter a carácter).",
    beginning: "Comienzo", step: "Paso: un carácter", finish: "Escribir hasta el final", undo: "Deshacer",
    temperature: "Temperatura τ", "top-k": "Top-k (0 = todos)", "top-p": "Top-p (1 = todos)", greedy: "Voraz: siempre el más probable", seed: "Semilla",
    next: "2. Qué viene después", "next-why": "Las barras son p = softmax(logits / τ) del carácter siguiente, el más probable primero. Las azules son el conjunto que top-k y top-p dejan sortear; las grises no pueden salir.",
    "next-read": "Lee las secciones 9 (los logits del modelo) y 15 (temperatura, top-k, top-p).",
    attention: "3. Adónde mira: la atención", "attention-why": "La fila t es el carácter que mira, la columna s adónde mira; cada fila suma 1. El triángulo gris es el futuro, que la máscara causal oculta. Pasa el ratón o usa las flechas para elegir una fila.",
    "attention-read": "Lee la sección 7 (la atención, con la máscara causal).", layer: "Capa", head: "Cabeza",
    steps: "4. Paso a paso, como en table.txt", "steps-why": "Cada paso que das: lo que vio el modelo, sus mejores candidatos (los que quedan, con *), el sorteo u y la elección. Con los ajustes y la semilla de la ejecución repite la primera muestra de table.txt.",
    "steps-read": "Lee la sección 15 y outputs/table.txt.",
    training: "5. Cómo aprendió", "training-why": "Pérdida de entrenamiento (azul) y de validación (naranja) por época. Los puntos son las épocas guardadas en esta página: pulsa una, o elígela arriba, para preguntar a ese modelo anterior. La tabla pregunta a cada época guardada por tu comienzo.",
    "training-read": "Lee las secciones 10 (la pérdida) y 14 (el bucle de entrenamiento).",
    map: "6. El mapa de las incrustaciones", "map-why": "El vector de cada carácter, proyectado en 2-D sobre las dos direcciones en que más difieren (PCA). Los caracteres que hacen el mismo papel acaban juntos.",
    "map-read": "Lee la sección 5 (incrustaciones) y outputs/embeddings.png.",
    api: "7. Para curiosos: window.explorer", "api-why": "Abre la consola del navegador (F12) y llama tú al modelo. Las pruebas de LLM.py llaman a estas mismas funciones y las comparan con PyTorch.",
    about: (d) => `Un modelo de ${d.parameters} parámetros (${V} caracteres, C = ${C}, ${H} cabezas, ${N} capas, contexto ${CONTEXT}), ${d.source}. Todo se calcula en esta página, sin red.`,
    unknown: (list, n) => `El modelo nunca ha visto ${list}: no sabe leer${n > 1 ? "los" : "lo"}. Quíta${n > 1 ? "los" : "lo"} para seguir.`,
    knows: known => `Los caracteres que conoce: ${known}`,
    projector: "Proyector", reset: "Reiniciar", stop: "Parar",
    writing: (n, most) => `Escribiendo… ${n} de ${most} caracteres como mucho. Parar lo deja aquí.`,
    stopped: "Parado: lo escrito se queda; Deshacer lo quita paso a paso.",
    "bars-aria": "las probabilidades del carácter siguiente, la mayor primero",
    "bar-hint": "Con el teclado: Tabulador hasta las barras y luego ↑ ↓ para el logit, p y p acumulada de cada barra.",
    detail: (s) => `${s.rank}. «${s.token}»: logit ${s.logit}, p ${s.p}, p acumulada ${s.cumulative}; ${s.kept ? "queda: puede salir" : "descartado: no puede salir"}.`,
    "heatmap-aria": "mapa de calor de la atención: la fila t mira a la columna s", scale: "peso de atención, de 0 a 1", future: "el futuro, oculto por la máscara",
    "loss-aria": "curvas de pérdida; cada punto elige una época guardada", "map-aria": "mapa de incrustaciones; las flechas recorren los tokens",
    comparePending: "Las otras épocas responden cuando dejas de escribir.", compareNone: "—",
    "from-data": (name) => `entrenado con ${name}`, "from-checkpoint": (path) => `escrito por python LLM.py --explorer a partir de ${path}`,
    kinds: {"vowel": "vocal", "consonant": "consonante", "letter": "letra", "punctuation": "puntuación", "space or ⏎": "espacio o ⏎",
            "word start": "inicio de palabra", "word piece": "pieza de palabra", "other": "otro"},
    colours: "Colores: ",
    mapPoint: (s) => `«${s.token}»: ${s.kind}${s.count === null ? "" : `, ${s.count} veces en el texto de entrenamiento`}.`,
    mapLabelled: (n, total) => `Con nombre: las ${n} más frecuentes de ${total}; las demás son puntos (señala una o usa las flechas).`,
    "api-code": `explorer.vocabulary                  // los tokens (caracteres o piezas), en orden de id
explorer.logits("No hay")            // los V logits tras el último carácter
explorer.probabilities("No hay", {temperature: 0.4, top_k: 3, top_p: 1, greedy: false})
                                     // V probabilidades tras filtrar, en orden de vocabulario
explorer.attention("No hay")         // [capa][cabeza][t][s], t y s sobre ⏎ + el texto
explorer.generate("No hay", {seed: 1337})  // el comienzo y su continuación, como --generate
explorer.epochs, explorer.use(epoch) // las épocas guardadas; cuál usa cada llamada
explorer.work.positions              // posiciones calculadas hasta ahora: lo que cuesta cada tecla`,
    "seed-bad": typed => `La semilla debe ser un número entero de 0 a 4294967295, como la toma python LLM.py --seed; se ha escrito ${typed === "" ? "nada" : typed}: Paso espera una.`,
    summary: (s) => `Tras «${s.text}» (${s.seen} caracteres vistos${s.cut ? `, los últimos ${CONTEXT}` : ""}): entropía ${s.entropy} bits; quedan ${s.kept} de ${V} (masa ${s.mass}).`,
    done: "⏎: el refrán ha terminado. Deshaz o cambia el comienzo.", empty: "Aún no hay pasos: pulsa Paso o Escribir hasta el final.",
    looks: (s) => `Cabeza ${s.head} de la capa ${s.layer}: «${s.char}» (posición ${s.t}) mira sobre todo a «${s.top}» (posición ${s.s}, ${s.share}).`,
    stepHead: (n, position, context) => `paso ${n} | posición ${position} | contexto: ${context}`,
    columns: "  rango car.  logit       p   p acum.", entropy: "entropía",
    without: "Entrenado sin (sección 9 de LLM.py): ", all: "todos",
    maskless: "Este modelo se entrenó sin la máscara: nada es gris, cada fila lee también el futuro.", chose: "elige", greedyDraw: "voraz: el más probable", compareEpoch: "época", compareLoss: "pérdida val.", compareTop: "los 3 primeros tras tu comienzo (p con τ)",
    mapNote: (e) => `Época ${e.epoch}: las dos direcciones recogen el ${e.a} y el ${e.b} de la dispersión.`,
    lossAxis: "pérdida (nats por carácter)", trainLoss: "pérdida de entrenamiento", valLoss: "pérdida de validación", epochAxis: "época", best: "mejor", stream: "(modo flujo: un texto, no refranes)",
  },
};
const PIECE_LABELS = {  // the texts that change when a token is a word piece (section 3)
  en: {"write-why": "Type the start of a proverb: the model reads ⏎ and your text cut into word pieces, and predicts the next piece. Step writes one piece with the sliders' settings; the same seed always writes the same.",
       step: "Step: one piece", "next-why": "The bars are p = softmax(logits / τ) for the next piece (␣ is a space), the likeliest first. Blue bars are the kept set that top-k and top-p leave to draw from; grey ones cannot be drawn.",
       "attention-why": "Row t is the piece that looks, column s where it looks; each row adds up to 1. The grey triangle is the future, which the causal mask hides. Hover or use the arrow keys to pick a row.",
       "map-why": "Every piece's embedding vector, projected to 2-D along the two directions in which the vectors differ most (PCA). Pieces that play the same role end up close together.",
       "bars-aria": "the next piece's probabilities, the likeliest first",
       lossAxis: "loss (nats per piece)", columns: "  rank piece  logit       p   cum p", "write-read": "Read sections 3 (word pieces) and 15 (writing) of LLM.py."},
  es: {"write-why": "Escribe el comienzo de un refrán: el modelo lee ⏎ y tu texto cortado en piezas de palabra, y predice la pieza siguiente. Paso escribe una pieza con los ajustes de los deslizadores; la misma semilla escribe siempre lo mismo.",
       step: "Paso: una pieza", "next-why": "Las barras son p = softmax(logits / τ) de la pieza siguiente (␣ es un espacio), la más probable primero. Las azules son el conjunto que top-k y top-p dejan sortear; las grises no pueden salir.",
       "attention-why": "La fila t es la pieza que mira, la columna s adónde mira; cada fila suma 1. El triángulo gris es el futuro, que la máscara causal oculta. Pasa el ratón o usa las flechas para elegir una fila.",
       "map-why": "El vector de cada pieza, proyectado en 2-D sobre las dos direcciones en que más difieren (PCA). Las piezas que hacen el mismo papel acaban juntas.",
       "bars-aria": "las probabilidades de la pieza siguiente, la mayor primero",
       lossAxis: "pérdida (nats por pieza)", columns: "  rango pieza logit       p   p acum.", "write-read": "Lee las secciones 3 (piezas de palabra) y 15 (escribir) de LLM.py.",
       about: (d) => `Un modelo de ${d.parameters} parámetros (${V} piezas, C = ${C}, ${H} cabezas, ${N} capas, contexto ${CONTEXT}), ${d.source}. Todo se calcula en esta página, sin red.`,
       summary: (s) => `Tras «${s.text}» (${s.seen} piezas vistas${s.cut ? `, las últimas ${CONTEXT}` : ""}): entropía ${s.entropy} bits; quedan ${s.kept} de ${V} (masa ${s.mass}).`},
};
if (UNIT !== "character") Object.keys(PIECE_LABELS).forEach(l => Object.assign(LABELS[l], PIECE_LABELS[l]));
const LANGUAGE_KEPT = "llm-explorer-language";  // where the page remembers the language chosen (file:// too)

function startingLanguage() {  // the language chosen before, else the browser's: Spanish first for a Spanish class
  try {
    const kept = localStorage.getItem(LANGUAGE_KEPT);
    if (kept === "en" || kept === "es") return kept;
  } catch (error) { /* storage refused (a private window): the browser's language decides */ }
  return /^es\b/i.test((navigator.languages && navigator.languages[0]) || navigator.language || "") ? "es" : "en";
}

let language = startingLanguage();
const t = (key) => LABELS[language][key];
const $ = (id) => document.getElementById(id);
const shown = (c) => c.replace(/\n/g, "⏎").replace(/ /g, "␣");
const num = (x, digits) => {  // as the language writes a number: 0.780 in English, 0,780 in Spanish
  const text = x.toFixed(digits);
  return language === "es" ? text.replace(".", ",") : text;
};
const percent = (p) => num(100 * p, p < 0.001 && p > 0 ? 2 : 1) + (language === "es" ? " %" : "%");
const KIND_COLORS = {"vowel": "#c0392b", "consonant": "#1f5fa8", "letter": "#00707a", "punctuation": "#1e7a1e", "space or ⏎": "#111111",
                     "word start": "#8c564b", "word piece": "#b35900", "other": "#7b3fa0"};  // each 4.5:1 on white
const PROJECTOR_KEPT = "llm-explorer-projector";  // where the page remembers projector mode
const COMPARE_PAUSE_MS = 300;  // the other epochs answer once typing has paused this long
const MAP_LABELS = V <= 100 ? V : 60;  // a map of more than 100 tokens names the 60 most frequent; the rest are dots

const KNOWN = [...new Set(VOCABULARY.filter(p => [...p].length === 1 && p !== "\n"))].sort()  // its characters
  .map(c => c === " " ? "␣" : c).join(" ");

function unknownMessage(unknown) {
  const named = unknown.map(c => `“${c}” (U+${c.codePointAt(0).toString(16).toUpperCase().padStart(4, "0")})`);
  return LABELS[language].unknown(named.join(", "), named.length) + " " + LABELS[language].knows(KNOWN);
}

const SEED_MOST = 4294967295;  // what python LLM.py --seed takes: a whole number from 0 to 2^32 - 1

function seedProblem() {  // Python's rule and message: a seed the page cannot take is said, never changed
  const typed = $("seed").value.trim();
  return /^\d+$/.test(typed) && Number(typed) <= SEED_MOST ? "" : LABELS[language]["seed-bad"](typed);
}

const page = {text: "", ids: [], generator: null, history: [], steps: [], over: false, row: null,  // ids: of the text
              bar: 0, mapPoint: null, writing: null, stopped: false, comparing: null, comparedFor: null, trainingSeen: false};

function setText(text) {  // a beginning typed by hand: its ids are encoded once; Step appends to them
  page.text = text;
  page.ids = unknownCharacters(text).length ? [] : encode(text);
}

function settings() {
  return {temperature: +$("temperature").value, top_k: +$("top-k").value, top_p: +$("top-p").value,
          greedy: $("greedy").checked, max_chars: DATA.sampling.max_chars};
}

function restart() {  // a beginning typed by hand: the draws start again from the seed
  page.generator = seedProblem() ? null : new MersenneTwister(Number($("seed").value.trim()));
  page.history = []; page.steps = []; page.over = false; page.stopped = false;
}

function disable(id, off) {  // a button that goes off while it has the focus hands the focus on
  const button = $(id), had = document.activeElement === button;
  button.disabled = off;
  if (off && had) ($("step").disabled ? $("text") : $("step")).focus();
}

function readable() {  // false when the text has a character the model never saw; a bad seed stops Step only
  const unknown = unknownCharacters(page.text), seedBad = seedProblem();
  const problem = unknown.length ? unknownMessage(unknown) : seedBad;
  $("text").classList.toggle("unknown", unknown.length > 0);
  $("seed").classList.toggle("unknown", seedBad !== "");
  $("message").classList.toggle("problem", problem !== "");
  const writing = page.writing ? LABELS[language].writing(page.writing.written, DATA.sampling.max_chars) : "";
  $("message").textContent = problem || writing || (page.over ? t("done") : page.stopped ? t("stopped") : "");
  disable("step", problem !== "" || page.over || page.writing !== null);
  disable("finish", (problem !== "" || page.over) && page.writing === null);
  $("finish").textContent = page.writing ? t("stop") : t("finish");
  disable("undo", page.history.length === 0 || page.writing !== null);
  return unknown.length === 0;
}

function stepOnce() {
  if (!readable() || seedProblem()) return false;
  const result = run(page.ids);
  page.history.push({text: page.text, ids: page.ids, generator: page.generator.copy(), over: page.over});  // for Undo
  const choice = chooseNext(result.logits, settings(), page.generator);
  page.steps.push({position: page.ids.length + 1, window: result.ids, choice});
  page.row = null;  // the heatmap follows the newest token
  if (choice.id === EOL_ID && DATA.mode !== "stream") page.over = true;
  else { page.text += VOCABULARY[choice.id]; page.ids = [...page.ids, choice.id]; }
  $("text").value = page.text;
  return !page.over;
}

function writeToTheEnd() {  // Step until ⏎ or max_chars characters, as generate() does, drawing as it goes
  if (page.writing) { page.writing.stop = true; return; }  // the button is Stop while it writes
  const job = {start: [...page.text].length, written: 0, stop: false};
  page.writing = job; page.stopped = false;
  document.body.dataset.writing = "yes";
  const some = (first = false) => {  // the first time one step: the button is Stop at once
    const until = first ? 0 : performance.now() + 40;  // about 25 redraws a second, the page answering in between
    let going = !job.stop;
    do {
      going = going && job.written < DATA.sampling.max_chars && stepOnce();
      job.written = [...page.text].length - job.start;
    } while (going && performance.now() < until);
    if (going && !job.stop) { render(); setTimeout(some, 0); return; }
    page.writing = null; page.stopped = job.stop && !page.over;
    delete document.body.dataset.writing;
    render();
  };
  some(true);
}

function undo() {
  const last = page.history.pop();
  if (!last) return;
  page.text = last.text; page.ids = last.ids; page.generator = last.generator; page.over = last.over;
  page.steps.pop(); page.row = null; page.stopped = false;
  $("text").value = page.text;
  render();
}

function reset() {  // the run's own settings, seed, best epoch and first beginning again
  if (page.writing) page.writing.stop = true;
  const s = DATA.sampling;
  $("temperature").value = s.temperature; $("top-k").value = s.top_k; $("top-p").value = s.top_p;
  $("greedy").checked = s.greedy; $("seed").value = s.seed;
  current = DATA.epochs.find(e => e.best);
  setText(DATA.prompts.find(p => p && !unknownCharacters(p).length) ?? "");
  $("text").value = page.text;
  page.row = null; page.writing = null; page.mapPoint = null;
  delete document.body.dataset.writing;
  restart();
  showValues();
  render(true);
}

function keepingFocus(draw) {  // redraw, and give the focus back to the new copy of what had it
  const key = document.activeElement && document.activeElement.dataset ? document.activeElement.dataset.focusKey : undefined;
  draw();
  if (key && !document.activeElement?.dataset?.focusKey) document.querySelector(`[data-focus-key="${key}"]`)?.focus({preventScroll: true});
}

function render(everything = false) {  // everything: also the panels that depend only on the epoch
  keepingFocus(() => {
    $("epoch").value = String(current.epoch);
    if (readable()) {
      const result = run(page.ids);
      drawBars(result);
      drawAttention(result);
      scheduleComparison();
    } else {
      emptyTextPanels();
    }
    drawSteps();
    if (everything) { drawLoss(); drawMap(); }
  });
}

function emptyTextPanels() {  // a text the model cannot read: nothing of the last readable one stays
  ["bars", "next-summary", "bar-detail", "looks", "strip"].forEach(id => { $(id).textContent = ""; });
  const canvas = $("heatmap");
  canvas.getContext("2d").clearRect(0, 0, canvas.width, canvas.height);
  clearTimeout(page.comparing);
  page.comparedFor = null;
  drawComparison(false);
}

function drawBars(result) {
  const choice = chooseNext(result.logits, {...settings(), greedy: false}, {uniform: () => 0});
  const kept = settings().greedy ? 1 : choice.kept, bars = $("bars");
  const text = [...page.text], seen = result.ids.length;
  $("next-summary").textContent = LABELS[language].summary({
    text: text.length > 24 ? "…" + text.slice(-24).join("") : page.text, seen, cut: page.ids.length + 1 > CONTEXT,
    entropy: num(entropyBits(choice.probs), 2), kept, mass: num(choice.cumulative[kept - 1], 3)});
  bars.textContent = "";
  const top = choice.probs[choice.order[0]], shownRows = choice.order.slice(0, Math.max(12, Math.min(kept + 2, 20)));
  page.bar = Math.min(page.bar, shownRows.length - 1);
  shownRows.forEach((id, rank) => {
    const row = document.createElement("div"), p = choice.probs[id];
    row.className = "row" + (rank < kept ? "" : " dropped");
    row.setAttribute("role", "listitem");
    row.tabIndex = rank === page.bar ? 0 : -1;  // one stop for Tab; the arrow keys move between bars
    row.dataset.focusKey = "bar-" + rank;
    row.innerHTML = `<span class="char"></span><span class="track"><span class="fill"></span></span><span class="pct"></span>`;
    row.querySelector(".char").textContent = shown(VOCABULARY[id]);
    row.querySelector(".fill").style.width = (100 * p / top).toFixed(1) + "%";
    row.querySelector(".pct").textContent = percent(p);
    const detail = LABELS[language].detail({rank: rank + 1, token: shown(VOCABULARY[id]), logit: num(result.logits[id], 3),
                                            p: num(p, 4), cumulative: num(choice.cumulative[rank], 4), kept: rank < kept});
    row.title = detail;
    row.setAttribute("aria-label", detail);
    const tell = () => { page.bar = rank; $("bar-detail").textContent = detail; };
    row.addEventListener("focus", tell);
    row.addEventListener("mouseenter", () => { $("bar-detail").textContent = detail; });
    bars.appendChild(row);
  });
  const focused = bars.contains(document.activeElement);
  $("bar-detail").textContent = focused ? bars.children[page.bar].title : t("bar-hint");
}

function wireBars() {  // ↑ ↓ Home End move between the bars, each telling its numbers
  $("bars").addEventListener("keydown", (event) => {
    const rows = [...$("bars").children], moves = {ArrowUp: -1, ArrowDown: 1, Home: -rows.length, End: rows.length};
    if (!(event.key in moves) || !rows.length) return;
    event.preventDefault();
    page.bar = Math.min(rows.length - 1, Math.max(0, page.bar + moves[event.key]));
    rows.forEach((row, r) => { row.tabIndex = r === page.bar ? 0 : -1; });
    rows[page.bar].focus();
  });
}

function heatColor(w) {  // viridis, as the attention pictures
  const stops = [[68, 1, 84], [59, 82, 139], [33, 145, 140], [94, 201, 98], [253, 231, 37]];
  const x = Math.min(Math.max(w, 0), 1) * (stops.length - 1), i = Math.min(Math.floor(x), stops.length - 2), f = x - i;
  return stops[i].map((a, j) => Math.round(a + f * (stops[i + 1][j] - a)));  // [r, g, b]
}

function heatLabels(g, labels, size) {  // the labels' font, margin and spacing: none may overlap another
  const projector = document.body.classList.contains("projector");
  let font = projector ? 16 : 12;
  g.font = `${font}px ui-monospace, monospace`;
  const widest = Math.max(...labels.map(label => g.measureText(label).width));
  const margin = Math.ceil(Math.min(Math.max(widest, font) + 8, size * 0.22)), cell = (size - margin) / labels.length;
  if (cell < font + 2) font = Math.max(10, Math.min(font, Math.floor(cell) - 1));  // short rows: a smaller font, >= 10 px
  const upright = widest > font * 1.3;  // word pieces: the column labels written upwards, as wide as the font
  return {font, margin, cell, upright, every: Math.ceil((font + 2) / cell),
          everyColumn: Math.ceil(((upright ? font : widest) + 4) / cell)};
}

function drawAttention(result) {
  const layer = +$("layer").value, head = +$("head").value, weights = result.attention[layer][head];
  const T = result.ids.length, canvas = $("heatmap"), ratio = window.devicePixelRatio || 1;
  const size = canvas.clientWidth || 400, labels = result.ids.map(i => shown(VOCABULARY[i]));
  canvas.width = size * ratio; canvas.height = size * ratio;
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, size, size);
  const layout = heatLabels(g, labels, size), {margin, cell} = layout;
  page.heatMargin = margin;
  if (page.row === null || page.row >= T) page.row = T - 1;
  const cells = new ImageData(T, T);  // one pixel per (t, s), then scaled up without smoothing
  for (let r = 0; r < T; r++) {
    for (let s = 0; s < T; s++) {
      const rgb = causalMask(r, s) ? heatColor(weights[r][s]) : [236, 236, 239];  // grey: the masked future
      cells.data.set([...rgb, 255], 4 * (r * T + s));
    }
  }
  const pixels = document.createElement("canvas");
  pixels.width = T; pixels.height = T;
  pixels.getContext("2d").putImageData(cells, 0, 0);
  g.imageSmoothingEnabled = false;
  g.drawImage(pixels, margin, margin, size - margin, size - margin);
  g.strokeStyle = "#f0a500"; g.lineWidth = 2;
  g.strokeRect(margin, margin + page.row * cell, size - margin, cell);
  drawHeatLabels(g, labels, layout);
  const row = weights[page.row], strongest = row.indexOf(Math.max(...row));
  $("looks").textContent = LABELS[language].looks({head: head + 1, layer: layer + 1, char: labels[page.row], t: page.row,
                                                  top: labels[strongest], s: strongest, share: percent(row[strongest])});
  drawStrip(labels, row);
}

function drawHeatLabels(g, labels, layout) {  // every k-th row and column named, k as small as the font allows
  const {font, margin, cell, upright, every, everyColumn} = layout, drawn = [];  // drawn: [x, y, width, height] boxes
  g.fillStyle = "#1d1d1f"; g.font = `${font}px ui-monospace, monospace`; g.textBaseline = "middle";
  labels.forEach((label, i) => {
    const middle = margin + (i + 0.5) * cell, width = Math.min(g.measureText(label).width, margin - 6);
    if (i % every === 0) {
      g.textAlign = "right"; g.fillText(label, margin - 4, middle, margin - 6);
      drawn.push({label, font, box: [margin - 4 - width, middle - font / 2, width, font]});
    }
    if (i % everyColumn) return;
    if (upright) {
      g.save(); g.translate(middle, margin - 4); g.rotate(-Math.PI / 2);
      g.textAlign = "left"; g.fillText(label, 0, 0, margin - 6); g.restore();
      drawn.push({label, font, box: [middle - font / 2, margin - 4 - width, font, width]});
    } else {
      g.textAlign = "center"; g.fillText(label, middle, margin / 2);
      drawn.push({label, font, box: [middle - width / 2, margin / 2 - font / 2, width, font]});
    }
  });
  window.explorer.heatmapLabels = drawn;  // for the curious, and for the tests: nothing overlaps
}

function drawStrip(labels, row) {  // the chosen row, large: how much each token is looked at
  const strip = $("strip");
  strip.textContent = "";
  labels.forEach((label, s) => {
    const span = document.createElement("span"), w = s <= page.row ? row[s] ?? 0 : 0;
    const alpha = Math.min(1, w * 1.5), rgb = [44, 111, 187].map(c => Math.round(255 - alpha * (255 - c)));
    span.textContent = label;
    span.style.background = s <= page.row ? `rgb(${rgb.join(", ")})` : "#ececef";
    span.style.color = luminance(rgb) > 0.18 ? "#000" : "#fff";  // the ink of larger contrast: at least 4.6:1
    if (s === page.row) span.style.outline = "2px solid #b35900";
    strip.appendChild(span);
  });
}

function luminance(rgb) {  // WCAG's relative luminance of an sRGB colour
  const [r, g, b] = rgb.map(c => { c /= 255; return c <= 0.03928 ? c / 12.92 : ((c + 0.055) / 1.055) ** 2.4; });
  return 0.2126 * r + 0.7152 * g + 0.0722 * b;
}

function drawSteps() {
  const box = $("steps");
  box.textContent = "";
  if (!page.steps.length) {
    box.innerHTML = `<p class="empty"></p>`;
    box.firstChild.textContent = t("empty");
    return;
  }
  const first = Math.max(0, page.steps.length - 60);  // the last 60: a long writing keeps the page quick
  page.steps.slice(first).forEach((step, k) => {
    const c = step.choice, div = document.createElement("div"), n = first + k;
    const rows = c.order.slice(0, Math.max(c.kept + 2, c.order.indexOf(c.id) + 1)).slice(0, 10).map((id, r) =>
      `${r < c.kept ? "*" : " "} ${String(r + 1).padStart(3)}  ${shown(VOCABULARY[id]).padEnd(3)} ${num(c.logits[id], 3).padStart(8)} ` +
      `${num(c.probs[id], 4).padStart(7)} ${num(c.cumulative[r], 4).padStart(7)}`);
    const mass = c.cumulative[c.kept - 1];
    const draw = c.u === null ? t("greedyDraw") : `u = ${num(c.u, 4)}, u × ${num(mass, 4)} = ${num(c.u * mass, 4)}`;
    div.className = "step";
    div.textContent = LABELS[language].stepHead(n + 1, step.position, step.window.map(i => shown(VOCABULARY[i])).join("")) +
      `\n${t("columns")}\n${rows.join("\n")}\n${draw} → ${t("chose")} '${shown(VOCABULARY[c.id])}' ` +
      `(p = ${num(c.probs[c.id], 4)}), ${t("entropy")} ${num(entropyBits(c.probs), 2)} bits`;
    box.appendChild(div);
  });
  box.scrollTop = box.scrollHeight;
}

function svg(tag, attributes, parent) {
  const element = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attributes)) element.setAttribute(k, v);
  if (parent) parent.appendChild(element);
  return element;
}

const TRAIN_COLOR = "#1f77b4", VAL_COLOR = "#b04f00";  // 4.8:1 and 5.3:1 on white

function drawLoss() {
  const box = $("loss"), history = DATA.history, W = 480, Hh = 260, left = 56, right = 12, top = 12, bottom = 36;
  box.textContent = "";
  if (!history.length) return;
  const losses = history.flatMap(r => [r.train_loss, r.val_loss]).filter(Number.isFinite);
  const low = Math.min(...losses) * 0.95, high = Math.max(...losses) * 1.02, first = history[0].epoch, last = history[history.length - 1].epoch;
  const x = (e) => left + (last === first ? 0.5 : (e - first) / (last - first)) * (W - left - right);
  const y = (v) => top + (high - v) / (high - low || 1) * (Hh - top - bottom);
  for (let i = 0; i <= 4; i++) {
    const v = low + (high - low) * i / 4;
    svg("line", {x1: left, x2: W - right, y1: y(v), y2: y(v), stroke: "#eee"}, box);
    svg("text", {x: left - 4, y: y(v) + 4, "text-anchor": "end", class: "tick"}, box).textContent = num(v, 2);
  }
  history.forEach(r => { if (history.length < 16 || r.epoch % Math.ceil(history.length / 10) === 0)
    svg("text", {x: x(r.epoch), y: Hh - bottom + 16, "text-anchor": "middle", class: "tick"}, box).textContent = r.epoch; });
  svg("text", {x: (left + W) / 2, y: Hh - 4, "text-anchor": "middle"}, box).textContent = t("epochAxis");
  svg("text", {x: 12, y: (top + Hh - bottom) / 2, "text-anchor": "middle", transform: `rotate(-90 12 ${(top + Hh - bottom) / 2})`},
      box).textContent = t("lossAxis");
  [["train_loss", TRAIN_COLOR, t("trainLoss")], ["val_loss", VAL_COLOR, t("valLoss")]].forEach(([key, color, label], n) => {
    svg("polyline", {points: history.map(r => `${x(r.epoch)},${y(r[key])}`).join(" "), fill: "none", stroke: color, "stroke-width": 2}, box);
    svg("text", {x: W - right - 4, y: top + 14 + 18 * n, "text-anchor": "end", style: `fill: ${color}`}, box).textContent = label;
  });
  DATA.epochs.forEach(e => drawEpochMark(box, e, history, x, y));
}

function drawEpochMark(box, e, history, x, y) {  // a dot that chooses its epoch: click, Enter or Space
  const record = history.find(r => r.epoch === e.epoch);
  if (!record) return;
  const name = `${t("epochAxis")} ${e.epoch}: ${num(record.val_loss, 3)}${e.best ? " (" + t("best") + ")" : ""}`;
  const mark = svg("circle", {cx: x(e.epoch), cy: y(record.val_loss), r: e === current ? 8 : 5, fill: e.best ? VAL_COLOR : "#fff",
                              stroke: e === current ? "#1d1d1f" : VAL_COLOR, "stroke-width": 3, class: "mark", tabindex: 0,
                              role: "button", "aria-label": name, "aria-pressed": String(e === current),
                              "data-focus-key": "epoch-" + e.epoch}, box);
  svg("title", {}, mark).textContent = name;
  const choose = () => window.explorer.use(e.epoch);
  mark.addEventListener("click", choose);
  mark.addEventListener("keydown", (event) => {
    if (event.key !== "Enter" && event.key !== " ") return;
    event.preventDefault();  // Space would scroll the page
    choose();
  });
}

function scheduleComparison() {  // the other epochs' passes wait until typing pauses and the table can be seen
  const key = current.epoch + ":" + settings().temperature + ":" + page.ids.join(",");
  if (key === page.comparedFor) return;
  clearTimeout(page.comparing);
  drawComparison(false);  // the epochs and losses at once, the answers to this text once computed
  page.comparing = setTimeout(() => {
    if (!page.trainingSeen) return;  // drawn when the panel scrolls into view
    page.comparedFor = key;
    drawComparison(true);
  }, COMPARE_PAUSE_MS);
}

function drawComparison(answers) {  // answers: ask every saved epoch about the text (one cached pass each)
  const table = $("compare"), caption = $("compare-note");
  [...table.rows].forEach(row => row.remove());
  const head = table.insertRow();
  [t("compareEpoch"), t("compareLoss"), t("compareTop")].forEach(label => { const th = document.createElement("th"); th.textContent = label; head.appendChild(th); });
  const readableText = !unknownCharacters(page.text).length;
  caption.textContent = answers || !readableText ? "" : t("comparePending");
  DATA.epochs.forEach(e => {
    const row = table.insertRow();
    row.className = e === current ? "current" : "";
    row.insertCell().textContent = e.epoch + (e.best ? " ★" : "");
    row.insertCell().textContent = num(e.val_loss, 3);
    const cell = row.insertCell();
    cell.className = "mono";
    if (!answers || !readableText) { cell.textContent = t("compareNone"); return; }
    const probs = softmax(run(page.ids, e).logits.map(a => a / settings().temperature));
    const order = probs.map((p, i) => i).sort((a, b) => probs[b] - probs[a]);
    cell.textContent = order.slice(0, 3).map(i => `${shown(VOCABULARY[i])} ${percent(probs[i])}`).join("   ");
  });
}

function mapOrder() {  // the tokens by how often the training text has them (the page's data), else by id
  const counts = DATA.tokenizer.counts;
  return VOCABULARY.map((_, i) => i).sort((a, b) => counts ? counts[b] - counts[a] || a - b : a - b);
}

function apart(places, minimum) {  // labels nudged apart where they would overlap; the dot stays true
  for (let round = 0; round < 40; round++) {
    let moved = false;
    for (let i = 0; i < places.length; i++) for (let j = i + 1; j < places.length; j++) {
      const a = places[i], b = places[j], dx = b.x - a.x, dy = b.y - a.y, d = Math.hypot(dx, dy);
      if (d >= minimum) continue;
      const push = (minimum - d) / 2 + 0.01, ux = d ? dx / d : 1, uy = d ? dy / d : 0;
      a.x -= push * ux; a.y -= push * uy; b.x += push * ux; b.y += push * uy; moved = true;
    }
    if (!moved) break;
  }
}

function drawMap() {
  const box = $("map"), W = 480, Hh = 400, pad = 22, points = current.map, order = mapOrder();
  box.textContent = "";
  const xs = points.map(p => p[0]), ys = points.map(p => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const x = (v) => pad + (v - x0) / (x1 - x0 || 1) * (W - 2 * pad), y = (v) => Hh - pad - (v - y0) / (y1 - y0 || 1) * (Hh - 2 * pad);
  const named = new Set(order.slice(0, MAP_LABELS));
  const color = (i) => KIND_COLORS[DATA.tokenizer.kinds[i]] || "#333";
  order.filter(i => !named.has(i)).forEach(i => {  // the less frequent tokens: a dot each, named on hover
    const dot = svg("circle", {cx: x(points[i][0]).toFixed(1), cy: y(points[i][1]).toFixed(1), r: 2.6, fill: color(i),
                               "fill-opacity": 0.45}, box);  // faint: the names stay readable above them
    svg("title", {}, dot).textContent = shown(VOCABULARY[i]);
    dot.addEventListener("mouseenter", () => { page.mapPoint = order.indexOf(i); drawMapPoint(); });
  });
  const places = [...named].map(i => ({i, x: x(points[i][0]), y: y(points[i][1])}));
  apart(places, document.body.classList.contains("projector") ? 17 : 13);
  places.forEach(({i, x: px, y: py}) => {  // a label moved off its place keeps a line to a dot there
    const [tx, ty] = [x(points[i][0]), y(points[i][1])];
    if (Math.hypot(px - tx, py - ty) > 4) {
      svg("line", {x1: tx, y1: ty, x2: px, y2: py, stroke: "#b9bec8", "stroke-width": 1}, box);
      svg("circle", {cx: tx, cy: ty, r: 1.8, fill: color(i)}, box);
    }
    svg("text", {x: px.toFixed(1), y: py.toFixed(1), class: "token", style: `fill: ${color(i)}`}, box).textContent = shown(VOCABULARY[i]);
  });
  page.mapPlace = (i) => [x(points[i][0]), y(points[i][1])];
  drawMapLegend(order.length > MAP_LABELS ? LABELS[language].mapLabelled(MAP_LABELS, order.length) : "");
  drawMapPoint();
}

function drawMapLegend(labelled) {  // the colours' meaning, in the colours, for the kinds this vocabulary has
  const legend = $("map-legend"), kinds = [...new Set(DATA.tokenizer.kinds)];
  legend.textContent = t("colours");
  kinds.forEach(kind => {
    const span = document.createElement("span");
    span.textContent = t("kinds")[kind] ?? kind;
    span.style.color = KIND_COLORS[kind] || "#333";
    legend.appendChild(span);
  });
  $("map-note").textContent = LABELS[language].mapNote({epoch: current.epoch, a: percent(current.explained[0]),
                                                        b: percent(current.explained[1])}) + (labelled ? " " + labelled : "");
}

function drawMapPoint() {  // the token pointed at (mouse or arrow keys): a ring and its name
  $("map").querySelector(".pointed")?.remove();
  if (page.mapPoint === null) return;
  const i = mapOrder()[page.mapPoint], [px, py] = page.mapPlace(i), counts = DATA.tokenizer.counts;
  const group = svg("g", {class: "pointed"}, $("map"));
  svg("circle", {cx: px, cy: py, r: 9, fill: "none", stroke: "#0b57d0", "stroke-width": 2.5}, group);
  svg("text", {x: px, y: py - 16, class: "token", style: "fill: #0b57d0; font-weight: 700"}, group).textContent = shown(VOCABULARY[i]);
  $("map-note").textContent = LABELS[language].mapPoint({token: shown(VOCABULARY[i]), kind: t("kinds")[DATA.tokenizer.kinds[i]] ?? "",
                                                         count: counts ? counts[i].toLocaleString(language) : null});
}

function wireMap() {  // ← → visit the tokens, the most frequent first
  $("map").addEventListener("keydown", (event) => {
    const moves = {ArrowRight: 1, ArrowDown: 1, ArrowLeft: -1, ArrowUp: -1, Home: -V, End: V};
    if (!(event.key in moves)) return;
    event.preventDefault();
    page.mapPoint = Math.min(V - 1, Math.max(0, (page.mapPoint ?? -1) + moves[event.key]));
    drawMapPoint();
  });
}

function translate() {
  document.documentElement.lang = language;
  document.title = t("title");
  document.querySelectorAll("[data-t]").forEach(element => { element.textContent = t(element.dataset.t); });
  document.querySelectorAll("[data-t-aria]").forEach(element => element.setAttribute("aria-label", t(element.dataset.tAria)));
  if (WITHOUT.has("causal-mask")) $("attention-panel").querySelector(".why").textContent += " " + t("maskless");
  const source = DATA.source_kind === "checkpoint" ? LABELS[language]["from-checkpoint"](DATA.source) : LABELS[language]["from-data"](DATA.source);
  $("about").textContent = LABELS[language].about({parameters: DATA.parameters.toLocaleString(language), source})
    + (DATA.mode === "stream" ? " " + t("stream") : "") + (WITHOUT.size ? " " + t("without") + [...WITHOUT].join(", ") + "." : "");
  $("known").textContent = LABELS[language].knows(KNOWN);
  $("api-code").textContent = t("api-code");
  $("language").textContent = language === "en" ? "Español" : "English";
  $("language").lang = language === "en" ? "es" : "en";
  showValues();
  render(true);
}

function showValues() {
  $("temperature-value").textContent = num(+$("temperature").value, 2);
  $("top-k-value").textContent = +$("top-k").value || t("all");
  $("top-p-value").textContent = num(+$("top-p").value, 2);
}

function setUp() {  // the controls at the run's settings, their events, then the first drawing
  $("top-k").max = V;
  DATA.epochs.forEach(e => $("epoch").add(new Option(e.epoch + (e.best ? " ★" : ""), String(e.epoch))));
  for (let n = 0; n < N; n++) $("layer").add(new Option(String(n + 1), String(n)));
  for (let h = 0; h < H; h++) $("head").add(new Option(String(h + 1), String(h)));
  document.body.classList.toggle("pieces", MERGES.size > 0);  // word pieces: wider labels
  setProjector(remembered(PROJECTOR_KEPT) === "yes");
  wireControls();
  wireHeatmap();
  wireBars();
  wireMap();
  watchTraining();
  reset();
  translate();
  window.explorer.timings.ready = performance.now();
  document.body.dataset.ready = "yes";
}

function remembered(key) { try { return localStorage.getItem(key); } catch (error) { return null; } }  // a private window: nothing kept
function remember(key, value) { try { localStorage.setItem(key, value); } catch (error) { /* shown, not remembered */ } }

function setProjector(on) {  // larger text for the back row, remembered like the language
  document.body.classList.toggle("projector", on);
  $("projector").setAttribute("aria-pressed", String(on));
}

function watchTraining() {  // the comparison is computed when its panel is on the screen
  const panel = $("training-panel");
  if (!("IntersectionObserver" in window)) { page.trainingSeen = true; return; }
  new IntersectionObserver((entries) => {
    page.trainingSeen = entries.some(entry => entry.isIntersecting);
    if (page.trainingSeen && readable()) scheduleComparison();
  }).observe(panel);
}

function wireControls() {
  ["temperature", "top-k", "top-p", "greedy"].forEach(id => $(id).addEventListener("input", () => { showValues(); render(); }));
  $("seed").addEventListener("input", () => { restart(); render(); });  // a seed it cannot take: said at once
  const typed = () => {
    if (page.writing) page.writing.stop = true;  // typing takes the text back from Write to the end
    setText($("text").value.replace(/[\r\n]/g, "").normalize("NFC")); page.row = null; restart(); render();
  };
  $("text").addEventListener("input", (event) => { if (!event.isComposing) typed(); });  // a dead key's ´ is no error
  $("text").addEventListener("compositionend", typed);  // the accent and its letter, composed: now it is read
  $("text").addEventListener("keydown", (event) => {  // Enter in the box is Step
    if (event.key !== "Enter" || event.isComposing) return;
    event.preventDefault();
    if (!$("step").disabled) { stepOnce(); render(); }
  });
  $("step").addEventListener("click", () => { stepOnce(); render(); });
  $("finish").addEventListener("click", writeToTheEnd);
  $("undo").addEventListener("click", undo);
  $("reset").addEventListener("click", reset);
  $("epoch").addEventListener("change", () => window.explorer.use(+$("epoch").value));
  $("layer").addEventListener("change", () => render());
  $("head").addEventListener("change", () => render());
  $("language").addEventListener("click", () => { language = language === "en" ? "es" : "en"; remember(LANGUAGE_KEPT, language); translate(); });
  $("projector").addEventListener("click", () => {
    const on = !document.body.classList.contains("projector");
    setProjector(on); remember(PROJECTOR_KEPT, on ? "yes" : "no"); render(true);
  });
  window.addEventListener("resize", () => render(true));
}

function wireHeatmap() {  // the row that the strip below shows: the mouse's, a tap's, or moved with the arrow keys
  const heatmap = $("heatmap"), rowAt = (event) => {
    const T = run(page.ids).ids.length, box = heatmap.getBoundingClientRect();
    const margin = (page.heatMargin ?? 0) * box.height / (heatmap.clientHeight || box.height);
    return Math.min(T - 1, Math.max(0, Math.floor((event.clientY - box.top - margin) / ((box.height - margin) / T))));
  };
  heatmap.addEventListener("mousemove", (event) => { if (readable()) { page.row = rowAt(event); drawAttention(run(page.ids)); } });
  heatmap.addEventListener("click", (event) => { if (readable()) { page.row = rowAt(event); drawAttention(run(page.ids)); } });
  heatmap.addEventListener("keydown", (event) => {
    if (!readable() || !["ArrowUp", "ArrowDown"].includes(event.key)) return;
    event.preventDefault();
    const T = run(page.ids).ids.length;
    page.row = Math.min(T - 1, Math.max(0, (page.row ?? T - 1) + (event.key === "ArrowDown" ? 1 : -1)));
    drawAttention(run(page.ids));
  });
}

setUp();
"""


# %% [markdown]
# ## I. What if, and what the numbers say
#
# `--without IDEA` (section 9) trains a model with one idea of the Transformer switched off; the
# run says so in every file it writes, and the checkpoint keeps the switch, so `--generate`,
# `--chat` and the explorer use the model as it was trained. `python LLM.py --what-if` trains the
# classroom run once as it is and once without each idea, each with `--seeds` seeds (3), into
# `outputs/what-if/`, and writes there a table of means ± spreads, the validation curves side by
# side and a few sentences per switch, made from that run's own numbers: a difference counts only
# when it is larger than what another seed changes.
#
# Every run also says what its numbers mean: before training, the loss of the untrained model
# next to $\ln V$, what a model that knows nothing scores, and section 10's counting models
# (`Counting`); after an epoch, a sentence when something deserves one (the validation loss below
# the training loss, a gap that grows, a loss that stopped falling, gradients clipped at most
# steps); after training, how far below the bigram the model ended.

# %%
WITHOUT_MEANS = {"causal-mask": "no causal mask: every position may read the characters after it",
                 "positions": "no positional encoding: the model is not told where a character stands",
                 "scaling": "no division by sqrt(d_k) in attention",
                 "residual": "no residual connections: each block's output replaces its input",
                 "layer-norm": "no layer norms: every LayerNorm is the identity"}


PREDICT_FIRST = {  # the question the what-if gallery asks before its answers (English, Spanish)
    "causal-mask": ("Every position may now read the characters after it, the one it must predict included. Will "
                    "the validation loss go up or down, and will the samples be better or worse?",
                    "Cada posición puede leer ahora los caracteres que vienen después, también el que debe "
                    "predecir. ¿Subirá o bajará la pérdida de validación, y las muestras serán mejores o peores?"),
    "positions": ("\"sal\" and \"las\" are now the same bag of letters. Can the model still learn anything about "
                  "order, and from what?", "\"sal\" y \"las\" son ahora la misma bolsa de letras. ¿Puede el modelo "
                  "aprender algo del orden, y de dónde?"),
    "scaling": ("The attention scores are now sqrt(d_k) times larger. Will the attention be sharper or flatter, and "
                "will the model learn faster or slower?", "Los scores de la atención son ahora sqrt(d_k) veces "
                "mayores. ¿Será la atención más nítida o más plana, y aprenderá el modelo más rápido o más lento?"),
    "residual": ("Each block's output now replaces its input. How much will that cost at 2 layers, and at 6?",
                 "La salida de cada bloque sustituye ahora a su entrada. ¿Cuánto costará con 2 capas, y con 6?"),
    "layer-norm": ("Nothing keeps the activations at one scale any more. Will the loss end higher or lower at this "
                   "size?", "Ya nada mantiene las activaciones en una escala. ¿Acabará la pérdida más alta o más "
                   "baja con este tamaño?"),
}


def take_out(model: TransformerLM, ideas) -> TransformerLM:
    """--without: the built model with each idea taken out, swapping or wrapping its modules;
    the weights keep their names and shapes, so a checkpoint loads into it as into any model."""
    for layer in model.layers:
        if "causal-mask" in ideas:  # M = 0 everywhere: every position may attend to every other
            layer.attention.causal_mask.fill_(True)
        if "scaling" in ideas:  # q x sqrt(D) cancels attention()'s / sqrt(D)
            sqrt_d = math.sqrt(layer.attention.query.out_features // layer.attention.n_heads)
            layer.attention.query.register_forward_hook(lambda _, inputs, q, s=sqrt_d: q * s)
        if "residual" in ideas:
            layer.__class__ = EncoderLayerWithoutResidual
        if "layer-norm" in ideas:
            layer.attention_norm, layer.feed_forward_norm = nn.Identity(), nn.Identity()
    if "positions" in ideas:
        model.positional_encoding.zero_()
    if "layer-norm" in ideas:
        model.final_norm = nn.Identity()
    return model


class EncoderLayerWithoutResidual(EncoderLayer):
    """Section 8's layer with nothing added back: each block's output replaces its input."""

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        attended, weights = self.attention(self.attention_norm(x), return_weights)
        x = self.dropout(attended)  # x <- block(x): no x +
        x = self.dropout(self.feed_forward(self.feed_forward_norm(x)))
        return x, weights


def without_label(cfg: Config) -> str:
    return "without " + ", ".join(cfg.without) if cfg.without else "as it is"


COUNTING_MOST = 4096  # the most tokens whose pairs are counted: 4096^2 counts take 64 MB


def short_unit(unit: str) -> str:
    return "char" if unit == "character" else unit


@dataclass
class Counting:
    """Section 10's counting models on one run's data: the floor the Transformer must go below."""
    counts: torch.Tensor  # (V, V) pairs counted on the training split, each plus 1
    val: tuple  # (unigram, bigram) loss per token on the validation split
    test: tuple | None  # the same on the test split (None without one)

    @classmethod
    def of(cls, data: Data) -> "Counting | None":
        """None when V x V counts would not fit in memory at ease (V > COUNTING_MOST)."""
        if data.tokenizer.vocab_size > COUNTING_MOST:
            return None
        counts = count_pairs(data.train_split, data.tokenizer.vocab_size)
        test = counting_losses(counts, data.test_split) if data.test_split is not None else None
        return cls(counts, counting_losses(counts, data.val_split), test)

    def before_training(self, data: Data) -> str:
        unit, (unigram, bigram) = short_unit(data.tokenizer.unit), self.val
        bits = ("" if unit == "char" else f" ({bits_per_character(unigram, data.val_split):.3f} and "
                f"{bits_per_character(bigram, data.val_split):.3f} bits/char)")
        return (f"counting, no network (section 10, add-one smoothing): unigram {unigram:.3f}, bigram {bigram:.3f} "
                f"nats/{unit}{bits} on the validation split; the model has to go below the bigram's {bigram:.3f}")

    def after_training(self, data: Data, history: list[dict], test_loss: float | None) -> str:
        """How far below (or above) the bigram the model ends, on the test split (else validation)."""
        unit = short_unit(data.tokenizer.unit)
        name, split, loss, bigram = (("test", data.test_split, test_loss, self.test[1]) if test_loss is not None else
                                     ("best validation", data.val_split, min(r["val_loss"] for r in history), self.val[1]))
        bits = bits_per_character(abs(bigram - loss), split)
        if loss < bigram:
            return (f"the {name} loss, {loss:.3f}, is {bigram - loss:.3f} nats/{unit} ({bits:.3f} bits/char) below the "
                    f"bigram's {bigram:.3f} on the same lines: what attention and the layers bought over counting pairs")
        return (f"the {name} loss, {loss:.3f}, is {loss - bigram:.3f} nats/{unit} above the bigram's {bigram:.3f}: the model "
                f"has not yet learned what counting pairs knows; train longer (--epochs) or look at --lr")


def start_note(untrained_loss: float, vocab_size: int, unit: str = "character") -> str:
    """Before training: the untrained model's loss next to ln V."""
    uniform = math.log(vocab_size)
    how = ("about what spreading its bets evenly gives" if abs(untrained_loss - uniform) < 0.25 else
           "more than even bets would cost: its random scores are confidently wrong here and there"
           if untrained_loss > uniform else "less than even bets: its random scores happen to favour common characters")
    return (f"before training: validation loss {untrained_loss:.3f}; a model that knows nothing and guesses all "
            f"{vocab_size} {unit}s evenly scores ln {vocab_size} = {uniform:.3f}: the "
            f"untrained one scores {how}")


def epoch_notes(history: list[dict], cfg: Config) -> list[str]:
    """Plain sentences about the last epoch of `history`, when its numbers call for one."""
    now, before = history[-1], history[-2] if len(history) > 1 else None
    gap, notes = now["val_loss"] - now["train_loss"], []
    if gap < 0 and (before is None or before["val_loss"] >= before["train_loss"]):
        why = (f" and dropout ({cfg.dropout:g}) is on while training, off while measuring" if cfg.dropout else "")
        notes.append(f"the validation loss ({now['val_loss']:.3f}) is below the training loss ({now['train_loss']:.3f}): "
                     f"the training loss is the mean over the epoch, while the weights were still getting better"
                     f"{why}; the validation loss is measured once, at the end of the epoch")
    if gap > 0 and before is not None and before["val_loss"] < before["train_loss"]:
        notes.append(f"the validation loss is now above the training loss ({now['val_loss']:.3f} against "
                     f"{now['train_loss']:.3f}): the model starts doing better on the lines it trains on than on new ones")
    gaps = [r["val_loss"] - r["train_loss"] for r in history[-3:]]
    if len(gaps) == 3 and gaps[0] > 0 and gaps[0] < gaps[1] < gaps[2] and gaps[2] > 0.02:
        notes.append(f"the gap between validation and training loss grew for two epochs, from {gaps[0]:.3f} to "
                     f"{gaps[2]:.3f}: the model is learning the training lines by heart (more text, more --dropout "
                     f"or fewer epochs help; the best epoch is kept either way)")
    best = min(r["val_loss"] for r in history)
    if len(history) >= 3 and min(r["val_loss"] for r in history[-2:]) > min(r["val_loss"] for r in history[:-2]):
        notes.append(f"the validation loss has not fallen for two epochs (the best is still {best:.3f}): more epochs "
                     f"at this size buy little")
    if cfg.clip and now["clipped"] > 0.5:
        notes.append(f"the gradient was clipped in {now['clipped']:.0%} of the steps: the steps are often longer than "
                     f"--clip {cfg.clip:g}, a sign that --lr ({cfg.lr:g}) is on the high side")
    return notes


@torch.no_grad()
def sharpness(model: TransformerLM, tokenizer: CharTokenizer, lines: list[str], n: int = 64) -> float:
    """How one-hot attention is: the mean, over heads, layers and rows t >= 4, of a row's largest
    weight, on the first n lines (1 = every head looks at one character only)."""
    largest = []
    for line in lines[:n]:
        tokens, weights = attention_maps(model, tokenizer, line)
        largest += [w[:, 4:].max(dim=-1).values.flatten() for w in weights if w.shape[-1] > 4]
    return float(torch.cat(largest).mean()) if largest else math.nan


@dataclass
class Seeded:
    """One training of --what-if: one switch, one seed, in numbers."""
    seed: int
    history: list[dict]
    test_loss: float | None  # None with --test-fraction 0
    words: tuple[int, int]  # words of the samples that are words of the corpus, words written
    sample: str  # the second sample (the first prompted one)
    sharpness: float  # sharpness() of its attention


def last(key: str):
    """What a Seeded ended with: its last epoch's `key` (train_loss, val_loss, clipped)."""
    return lambda run: run.history[-1][key]


def word_share(run: Seeded) -> float:
    return run.words[0] / max(run.words[1], 1)


def mean_and_spread(values: list[float]) -> tuple[float, float]:
    """The mean, and the standard deviation over the seeds (n - 1 in the denominator; 0 for one)."""
    mean = sum(values) / len(values)
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0


@dataclass
class WhatIf:
    """One switch of --what-if (or the run as it is), over its seeds."""
    name: str  # "as it is", or "without <idea>"
    idea: str  # the idea switched off ("" for the run as it is)
    runs: list[Seeded]  # one per seed, the first with --seed itself

    def mean(self, of) -> float:
        return mean_and_spread([of(r) for r in self.runs])[0]

    def spread(self, of) -> float:
        return mean_and_spread([of(r) for r in self.runs])[1]

    def shown(self, of, digits: int = 3) -> str:
        return f"{self.mean(of):.{digits}f} ± {self.spread(of):.{digits}f}" if len(self.runs) > 1 else f"{self.mean(of):.{digits}f}"


def what_if_folder(cfg: Config, idea: str, seed: int) -> Path:
    """what-if/as-it-is/ or what-if/without-<idea>/ for --seed; what-if/seed-<N>/<that>/ for the others."""
    name = f"without-{idea}" if idea else "as-it-is"
    return Path(cfg.out) / "what-if" / ("" if seed == cfg.seed else f"seed-{seed}") / name


def what_if_runs(cfg: Config, log=print) -> list[WhatIf]:
    """The run as it is, then once per idea switched off; each with cfg.seeds seeds."""
    results, seeds = [], [cfg.seed + k for k in range(cfg.seeds)]
    for idea in ("",) + IDEAS:
        result = WhatIf(f"without {idea}" if idea else "as it is", idea, [])
        for seed in seeds:
            log((f"what if: {result.name} ({WITHOUT_MEANS[idea]})" if idea else "what if: the classroom run as it is")
                + (f", seed {seed} ({seeds.index(seed) + 1} of {len(seeds)})" if len(seeds) > 1 else ""))
            run_done = what_if_train(cfg, idea, seed, log, done=sum(len(r.runs) for r in results) + len(result.runs))
            if run_done is not None:  # None: a torchrun process that writes nothing
                result.runs.append(run_done)
        if result.runs:
            results.append(result)
    return results


def what_if_train(cfg: Config, idea: str, seed: int, log, done: int) -> Seeded | None:
    """One training of --what-if, its numbers only, in what_if_folder."""
    out = what_if_folder(cfg, idea, seed)
    variant = replace(cfg, without=(idea,) if idea else (), out=str(out), seed=seed, pictures=())
    try:
        finished = run(variant, log=lambda line: log("      " + line.lstrip("\n"))
                       if line.lstrip("\n").startswith(("epoch", "test", "training stopped", "stopped")) else None)
    except (KeyboardInterrupt, ConsoleLost):
        name = (f"without {idea}" if idea else "as it is") + (f", seed {seed}" if cfg.seeds > 1 else "")
        log(f"what if: stopped in the run {name}; {done} of "
            f"{(1 + len(IDEAS)) * cfg.seeds} runs finished, every file written is whole; "
            f"{Path(cfg.out) / 'what-if'}/README.md is written only when every run has finished")
        raise
    if finished is None:
        return None
    setup = finished.setup
    return Seeded(seed, finished.history, finished.test_loss, corpus_word_share(finished.samples, text_lines(setup.text)),
                  finished.samples[1 % len(finished.samples)].text,
                  sharpness(setup.model, setup.data.tokenizer, setup.data.held_out_text))


VAL, TRAIN, CLIPPED = last("val_loss"), last("train_loss"), last("clipped")


def beyond_noise(r: WhatIf, base: WhatIf) -> str:
    """Whether the switch's change of the validation loss is more than what a seed changes."""
    if len(r.runs) < 2:
        return " One seed only: whether that is more than noise, --seeds 3 tells."
    dv, noise = r.mean(VAL) - base.mean(VAL), r.spread(VAL) + base.spread(VAL)
    verdict = ("more than the two spreads added ({:.3f} and {:.3f}): a real difference, not noise" if abs(dv) > noise
               else "within the two spreads added ({:.3f} and {:.3f}): another seed could reverse it, so this "
                    "proves nothing").format(r.spread(VAL), base.spread(VAL))
    return f" Over {len(r.runs)} seeds the change, {dv:+.3f}, is {verdict}."


def what_if_lesson(r: WhatIf, base: WhatIf, cfg: Config) -> str:
    """Two or three sentences on one switch, from the mean numbers of both over their seeds."""
    dv = r.mean(VAL) - base.mean(VAL)
    share, base_share = r.mean(word_share), base.mean(word_share)
    against = f"{r.shown(VAL)} against {base.shown(VAL)} as it is"
    deeper = (f" At {cfg.n_layers} layers the signal crosses {2 * cfg.n_layers} blocks; tests/BENCHMARK.md measures 6 layers "
              f"(`--layers 6 --what-if`)." if cfg.n_layers < 6 else "")
    if r.idea == "causal-mask":
        return mask_lesson(r, base, share, base_share, against)
    if r.idea == "positions":
        how = ("higher" if dv > 0.05 else "barely different")
        return (f"Its validation loss ended {how}: {against}. Without positions \u201csal\u201d and \u201clas\u201d "
                f"look alike; what still gives order away is the causal mask, since a position can only attend to the "
                f"characters before it, the further on the more of them, so the model learns something all the same. "
                f"{share:.0%} of its words are words of the corpus (as it is: {base_share:.0%})." + beyond_noise(r, base))
    if r.idea == "scaling":
        d = cfg.d_model // cfg.n_heads
        return (f"Without the division by sqrt(d_k) = sqrt({d}) the attention scores are {math.sqrt(d):g} times larger "
                f"and the softmax sharper: a row's largest weight averages {r.mean(lambda x: x.sharpness):.2f}, against "
                f"{base.mean(lambda x: x.sharpness):.2f} as it is. Validation loss {against}"
                + (": nearly one-hot attention learns more slowly." if dv > 0.02 else
                   f": with heads only {d} wide the scores stay small enough that it hardly matters here.")
                + beyond_noise(r, base))
    if r.idea == "residual":
        return (f"Without residual connections the validation loss ended at {against} ({dv:+.3f}): every block must "
                f"now carry the whole signal through its own weights, and the gradient reaches the first layer only "
                f"through every block after it. The more layers, the more that costs ({cfg.n_layers} here)."
                + beyond_noise(r, base) + deeper)
    return (f"Without layer norms the validation loss ended at {against} ({dv:+.3f})"
            + (": lower, at this size, not higher." if dv < 0 else ".")
            + f" The gradient was clipped in {r.mean(CLIPPED):.0%} of the last epoch's steps ({base.mean(CLIPPED):.0%} "
              f"as it is): nothing keeps the activations at one scale any more, and clipping is left to hold the steps "
              f"in check." + beyond_noise(r, base) + deeper)


def mask_lesson(r: WhatIf, base: WhatIf, share: float, base_share: float, against: str) -> str:
    """what_if_lesson for --without causal-mask: a model that copies what it can see."""
    tested = [x.test_loss for x in r.runs if x.test_loss is not None]
    if r.mean(TRAIN) < base.mean(TRAIN) - 0.2:
        return (f"Its training loss fell to {r.shown(TRAIN)} (as it is: {base.shown(TRAIN)}), and its validation loss "
                f"with it ({r.shown(VAL)}" + (f", test {sum(tested) / len(tested):.3f}" if tested else "") + "): every "
                f"position could read the character it had to predict, and learned to copy it. Those losses were "
                f"measured the same way, with the answer in sight, so they prove nothing. Writing, there is no answer "
                f"ahead to copy: {share:.0%} of its words are words of the corpus (as it is: {base_share:.0%}).")
    return (f"Its losses ({against}) did not fall below the run as it is: at this size it did not learn to copy "
            f"the next character it could see; {share:.0%} of its words are words of the corpus." + beyond_noise(r, base))


def draw_what_if(results: list[WhatIf], path: Path):
    """what_if.png: the mean validation loss per epoch of every switch, a band of ± one standard
    deviation over the seeds around it, and each seed's own curve faintly."""
    fig = new_figure(9, 4.8)
    ax = fig.subplots()
    for r in results:
        epochs = min(len(x.history) for x in r.runs)  # early stopping may end a seed sooner
        curves = torch.tensor([[h["val_loss"] for h in x.history[:epochs]] for x in r.runs])  # (seeds, epochs)
        mean, sd = curves.mean(0), curves.std(0) if len(r.runs) > 1 else torch.zeros(epochs)
        xs = list(range(1, epochs + 1))
        line, = ax.plot(xs, mean, "o-", ms=3, lw=2.4 if not r.idea else 1.6, color="black" if not r.idea else None,
                        label=f"{r.name}: {r.shown(VAL)}")
        ax.fill_between(xs, mean - sd, mean + sd, color=line.get_color(), alpha=0.15, lw=0)
        ax.errorbar(xs[-1], mean[-1], yerr=sd[-1], color=line.get_color(), capsize=4, lw=1.2)  # the last epoch's
        for curve in curves:
            ax.plot(xs, curve, lw=0.6, alpha=0.35, color=line.get_color())
    ax.set_xlabel("epoch", fontsize=11)
    ax.xaxis.get_major_locator().set_params(integer=True)
    ax.set_ylabel("validation loss (nats per character)", fontsize=11)
    ax.grid(axis="y", color="0.92")
    ax.legend(fontsize=10, framealpha=0.95, title=f"mean ± spread over {len(results[0].runs)} seeds", title_fontsize=10)
    ax.set_title("What if one idea is switched off: the validation loss of each run", fontsize=12)
    fig.subplots_adjust(left=0.09, right=0.97, top=0.92, bottom=0.11)
    save_figure(fig, path)


def shortened(text: str, most: int = 70) -> str:
    return text if len(text) <= most else text[:most] + "…"


def what_if_report(results: list[WhatIf], cfg: Config, seconds: float) -> str:
    """outputs/what-if/README.md: the table, the picture, the sentences."""
    base, seeds = results[0], [run.seed for run in results[0].runs]
    named = ", ".join(map(str, seeds))
    lines = ["# What if: the classroom run with one idea switched off", "",
             f"`python LLM.py --what-if` trained {sum(len(r.runs) for r in results)} models on "
             f"`{show_path(Path(cfg.data).name)}`, {cfg.epochs} epoch{'s' * (cfg.epochs > 1)} each, in {seconds:.0f} s: once as it is and once "
             f"without each idea of section 9 of LLM.py, each with {len(seeds)} seed{'s' * (len(seeds) > 1)} ({named}). "
             "A seed sets the split into training, validation and test proverbs, the starting weights and the order "
             "of the batches: what changes from one seed to the next is noise, and a difference between two switches "
             "means something only when it is larger than that. Each folder below holds that run's `table.txt`, "
             "`parameters.txt` and `model.pt` (the first seed's; `seed-<N>/` the others'): `--generate`, `--chat` and "
             "`--explorer` use it as it was trained.", "", "## Predict first", "",
             "Before reading the table, write down an answer to each question; the answers, in this run's numbers, "
             "come below. *Antes de leer la tabla, escribe una respuesta a cada pregunta; las respuestas, con los "
             "números de esta ejecución, vienen debajo.*", ""]
    lines += [f"- **Without {r.idea}.** {PREDICT_FIRST[r.idea][0]} *{PREDICT_FIRST[r.idea][1]}*" for r in results[1:]]
    spread = (f" Every loss is the mean over the {len(seeds)} seeds ± their standard deviation, the spread."
              if len(seeds) > 1 else "")
    lines += ["", "## The answers", "", f"The losses are those of the last epoch.{spread}", "",
              "| run | train loss | validation loss | test loss | words of the corpus | one sample (first seed) |",
              "|---|---|---|---|---|---|"]
    for r in results:
        first = r.runs[0]
        folder = f"without-{r.idea}" if r.idea else "as-it-is"
        tested = all(x.test_loss is not None for x in r.runs)
        test = r.shown(lambda x: x.test_loss) if tested else "-"
        lines.append(f"| [{r.name}]({folder}/README.md) | {r.shown(TRAIN)} | {r.shown(VAL)} | {test} | "
                     f"{r.mean(word_share):.0%} | {shortened(first.sample).replace('|', '/')} |")
    lines += ["", "![the validation loss of every run](what_if.png)", ""]
    for r in results[1:]:
        lines += [f"## Without {r.idea}", "", f"{WITHOUT_MEANS[r.idea][0].upper() + WITHOUT_MEANS[r.idea][1:]}. {what_if_lesson(r, base, cfg)}", ""]
    return "\n".join(lines)


def what_if_estimate(cfg: Config) -> float:
    """Seconds --what-if will take: 10 training steps, timed after 2 that warm up, times the steps
    of every run, and one validation pass timed, times the epochs plus two (the test, the samples)."""
    data, device = prepare_any_text(read_text(cfg.data), cfg), pick_device(cfg.device)
    model = build_model(data.tokenizer.vocab_size, cfg, device)
    hooks = DeviceHooks(cfg, device)
    optimizer = hooks.optimizer(model, cfg)
    batches = data.train_split.batches(cfg.batch_size, torch.Generator().manual_seed(cfg.seed))
    started, timed = time.perf_counter(), 0
    for step, (inputs, targets) in zip(range(12), batches):
        if step == 2:  # the first steps set things up
            started = time.perf_counter()
        loss, _ = train_step(model, optimizer, inputs.to(device), targets.to(device), cfg.lr, cfg.clip, hooks.autocast)
        timed += step >= 2
    loss.item()  # waits for a GPU to finish
    per_step, started = (time.perf_counter() - started) / max(timed, 1), time.perf_counter()
    evaluate(model, data.val_split, cfg.eval_batch, device, hooks.autocast)
    per_run = (math.ceil(len(data.train_split) / cfg.batch_size) * per_step * cfg.epochs  # training
               + (time.perf_counter() - started) * (cfg.epochs + 2))  # every epoch's validation, the test, the rest
    return per_run * (1 + len(IDEAS)) * cfg.seeds


def what_if(cfg: Config, log=print):
    """--what-if: every run, then outputs/what-if/README.md and what_if.png."""
    started = time.perf_counter()
    check_not_an_output(cfg, Path(cfg.out) / "what-if")  # its README.md and picture, and every run's folder
    if cfg.seeds > 1 and not os.environ.get("TORCHELASTIC_RUN_ID"):  # several processes: each trains a share
        runs = (1 + len(IDEAS)) * cfg.seeds
        seconds = what_if_estimate(cfg)
        about = f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} minutes"
        log(f"what if: {runs} trainings ({1 + len(IDEAS)} runs x {cfg.seeds} seeds, {cfg.epochs} epoch"
            f"{'s' * (cfg.epochs > 1)} each): about {about} on this machine, timed on 10 steps (--seeds 1: one run "
            f"per switch, a {'third' if cfg.seeds == 3 else f'1/{cfg.seeds}'} of the time, but no spread)")
    results = what_if_runs(cfg, log)
    if not results:
        return
    folder = Path(cfg.out) / "what-if"
    with recording(folder, log=log):  # the folder's own files: each run's folder has its own list
        draw_what_if(results, folder / "what_if.png")
        save_text(folder / "README.md", what_if_report(results, cfg, time.perf_counter() - started))
    log(f"wrote {folder}/: README.md (the table and what each switch shows), what_if.png and one folder per run "
        f"({time.perf_counter() - started:.0f} s in all)")


# %% [markdown]
# ### The class's own experiment
#
# Every run ends with one result line (`result seed=... lr=... test_loss=...`). Each student runs
# with their own `--seed` or `--lr` and pastes that line into one shared text file; `python
# LLM.py --class FILE` reads every line of it and draws the class's results: the test loss
# against the learning rate, every seed a dot, the mean of each rate a line, the bigram's loss
# below them; with the table in `<out>/class/README.md`. A line it cannot read is named, with
# why, and left out; every other line is drawn.

# %%
RESULT_NUMBERS = {"seed": int, "lr": float, "test_loss": float}  # what a result line must hold
RESULT_SETTINGS = ("epochs", "layers", "d_model", "tokenizer", "without", "data")  # runs differ in these: grouped


def result_line(cfg: Config, data: Data, finished_test: float | None, best_val: float, counting: Counting | None) -> str:
    """The run in one line, for the class's shared file (--class)."""
    test = f"{finished_test:.4f}" if finished_test is not None else "-"
    bigram = "-" if counting is None else f"{counting.test[1] if counting.test is not None else counting.val[1]:.4f}"
    return (f"result seed={cfg.seed} lr={cfg.lr:g} epochs={cfg.epochs} layers={cfg.n_layers} d_model={cfg.d_model} "
            f"tokenizer={cfg.tokenizer} without={','.join(cfg.without) or '-'} data={Path(cfg.data).name.replace(' ', '_')} "
            f"test_loss={test} val_loss={best_val:.4f} bigram={bigram}")


def read_result(text: str) -> dict:
    """One result line -> its fields, numbers as numbers; a ValueError says what is wrong."""
    found = dict(re.findall(r"(\w+)=(\S+)", text))
    missing = [key for key in RESULT_NUMBERS if key not in found]
    if missing:
        raise ValueError(f"no {' and no '.join(k + '=' for k in missing)}")
    result = dict(found)
    for key, kind in [*RESULT_NUMBERS.items(), ("bigram", float)]:
        if key in found:
            try:
                result[key] = kind(found[key])
            except ValueError:
                raise ValueError(f"{key}={found[key]} is not a number") from None
            if not (math.isfinite(result[key]) and result[key] >= 0) or (key == "lr" and result[key] == 0):
                raise ValueError(f"{key}={found[key]} is not a number the run could have printed")
    return result


def read_results(path: Path, log=print) -> list[dict]:
    """Every result line of the class's file; each line that is not one is said, with why."""
    try:
        text = read_text(path)
    except UserError as e:  # read_text speaks of a data file
        raise UserError(f"--class: {str(e).replace('data file', 'file').replace('data path', 'path')}") from None
    results, seen, skipped, blank = [], {}, 0, 0
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            blank += 1
            continue
        try:
            result = read_result(line)
            if line.strip() in seen:
                raise ValueError(f"the same as line {seen[line.strip()]}")
        except ValueError as why:
            skipped += 1
            log(f"line {number} left out: {why}: {shortened(one_line(line.strip()), 60)}")
            continue
        seen[line.strip()] = number
        results.append({**result, "line": number})
    if not results:
        raise UserError(f"--class: {show_path(path)} holds no result line (each run prints one at its end: "
                        f"'result seed=... lr=... test_loss=...')")
    log(f"{show_path(path)}: {counted(len(results), 'result')}, {counted(skipped, 'line')} left out, {blank} blank or comments")
    return results


def class_groups(results: list[dict]) -> dict:
    """The results by their settings other than seed and lr: {(setting=value, ...): [results]}."""
    groups = defaultdict(list)
    for r in results:
        groups[tuple(f"{k}={r[k]}" for k in RESULT_SETTINGS if k in r)].append(r)
    return dict(groups)


def class_table(results: list[dict]) -> list[str]:
    """The Markdown table: one row per learning rate (and settings), its seeds, mean ± spread."""
    groups = class_groups(results)
    rows = ["| settings | lr | runs | seeds | test loss: mean ± spread | lowest | highest |", "|---|---|---|---|---|---|---|"]
    for settings, runs in groups.items():
        for lr in sorted({r["lr"] for r in runs}):
            losses = [r["test_loss"] for r in runs if r["lr"] == lr]
            mean, sd = mean_and_spread(losses)
            seeds = ", ".join(sorted({str(r["seed"]) for r in runs if r["lr"] == lr}, key=int))
            rows.append(f"| {' '.join(settings) if len(groups) > 1 else 'all the same'} | {lr:g} | {len(losses)} | "
                        f"{seeds} | {mean:.3f} ± {sd:.3f} | {min(losses):.3f} | {max(losses):.3f} |")
    return rows


def draw_class(results: list[dict], path: Path):
    """class.png: test loss against learning rate, every run a dot, each rate's mean a line."""
    fig = new_figure(9, 4.8)
    ax = fig.subplots()
    groups = class_groups(results)
    for settings, runs in groups.items():
        rates = sorted({r["lr"] for r in runs})
        means = [sum(r["test_loss"] for r in runs if r["lr"] == lr) / sum(r["lr"] == lr for r in runs) for lr in rates]
        line, = ax.plot(rates, means, "-", lw=1.6, label=("mean of each rate" if len(groups) == 1 else " ".join(settings)))
        ax.plot([r["lr"] for r in runs], [r["test_loss"] for r in runs], "o", ms=6, alpha=0.6, color=line.get_color(),
                label="one run (one seed)" if len(groups) == 1 else None)
    bigrams = [r["bigram"] for r in results if "bigram" in r]
    if bigrams:
        ax.axhline(sum(bigrams) / len(bigrams), ls="-.", color="0.3", lw=1.4,
                   label=f"counting, bigram: {sum(bigrams) / len(bigrams):.3f} (mean)")
    rates = sorted({r["lr"] for r in results})
    if len(rates) > 1:
        from matplotlib.ticker import NullLocator
        ax.set_xscale("log")
        ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticks(rates, [f"{lr:g}" for lr in rates])  # a tick at each rate the class ran
    ax.set_xlabel("learning rate (--lr)", fontsize=11)
    ax.set_ylabel("test loss (nats per token)", fontsize=11)
    ax.grid(color="0.92")
    ax.legend(fontsize=10, framealpha=0.95)
    ax.set_title(f"The class's runs: {len(results)} results, test loss against learning rate", fontsize=12)
    fig.subplots_adjust(left=0.09, right=0.97, top=0.92, bottom=0.11)
    save_figure(fig, path)


def class_report(results: list[dict], source: Path) -> str:
    """<out>/class/README.md: the picture, the table and what to read in them."""
    return "\n".join(["# The class's experiment", "",
                      f"`python LLM.py --class {show_path(source)}`: {len(results)} result lines, each one run's "
                      "last line. Every dot is one run; the line joins the mean test loss of each learning rate. "
                      "The spread is the standard deviation over the seeds of one rate: two rates whose means differ "
                      "by less than their spreads added are not told apart by these runs. One run proves little.", "",
                      "![the class's runs](class.png)", ""] + class_table(results) + ["", class_verdict(results), ""])


def class_verdict(results: list[dict]) -> str:
    """The two best learning rates of the largest group: is the difference more than noise?"""
    runs = max(class_groups(results).values(), key=len)
    by_rate = defaultdict(list)
    for r in runs:
        by_rate[r["lr"]].append(r["test_loss"])
    stats = sorted((*mean_and_spread(v), lr, len(v)) for lr, v in by_rate.items())
    (mean, sd, lr, n) = stats[0]
    said = f"The lowest mean test loss is at lr {lr:g}: {mean:.3f} ± {sd:.3f} over {n} run{'s' * (n > 1)}."
    if len(stats) == 1:
        return said + " One learning rate only: a sweep needs several (--lr)."
    (mean2, sd2, lr2, n2) = stats[1]
    if n < 2 or n2 < 2:
        return said + f" The next, lr {lr2:g}, scores {mean2:.3f}; with one run at a rate the noise is unknown: add seeds."
    real = mean2 - mean > sd + sd2
    return said + (f" The next, lr {lr2:g}, scores {mean2:.3f} ± {sd2:.3f}: the difference, {mean2 - mean:.3f}, is "
                   + ("more than the two spreads added: the seeds agree." if real else
                      "within the two spreads added: these runs cannot tell the two rates apart."))


def class_experiment(source: Path, out: Path, log=print):
    """--class FILE: read the result lines, draw class.png, write README.md, print the table."""
    results = read_results(source, log)
    folder = out / "class"
    if folder.resolve() in (source.resolve().parent,):
        raise UserError(f"--class: {show_path(source)} is in {show_path(folder)}/, which this command writes: "
                        f"move it, or give another --out")
    with recording(folder, log=log):
        draw_class(results, folder / "class.png")
        save_text(folder / "README.md", class_report(results, source))
    for row in class_table(results):
        log(row)
    log(class_verdict(results))
    log(f"wrote {show_path(folder)}/: class.png and README.md")


# %% [markdown]
# ## J. Talking to the model: --chat
#
# `python LLM.py --chat` loads the checkpoint and waits: type the start of a proverb, the model
# completes it. Slash commands change the sampling on the fly, and `/train` teaches the model
# what you typed: it trains a few more epochs on the corpus plus the lines of this session (and
# of the `--chat-log` file), growing the vocabulary for new characters (as fine-tuning does),
# saves the result beside the checkpoint (`model-chat.pt`: the checkpoint the chat read is never
# overwritten) and chats on; if that save fails, the chat says so and `/save FILE` puts the model
# elsewhere. Typed lines are read like the data: NFC, and refused if their bytes are not UTF-8. Type whole proverbs: a half line teaches a half line.
#
# The chat log keeps only what you typed, one line each, so it is itself a corpus for a later
# `--data` or `/train`. The model's answers are left out on purpose: a model trained on its own
# writing learns its own mistakes back.

# %%
CHAT_HELP = """Type the start of a proverb and press Enter; the model completes it (an empty line: from nothing).
  /temp 0.8     sampling temperature: lower is safer, higher is wilder (now {temperature})
  /topk 5       sample among the k most likely characters, 0 = all (now {top_k})
  /topp 0.9     sample among the most likely characters that add up to p, 1 = all (now {top_p})
  /greedy       always take the most likely character: on / off (now {greedy})
  /train [N]    train N more epochs (default {chat_epochs}) on the corpus plus what you typed, save, chat on
  /save [FILE]  save the model as it is now (default: {target})
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
            log(f"> {one_line(line)}")
            yield line




class Chat:
    """The state of one chat session: the model, the sampling settings, what was typed."""

    def __init__(self, cfg: Config, checkpoint: Path, chat_log: str | None, log=print, data: str | None = None):
        self.device = pick_device(cfg.device)
        self.checkpoint, self.log = checkpoint, log
        self.model, self.tokenizer, self.trained_cfg, payload = load_checkpoint(checkpoint, self.device)
        if data is not None:  # --data: /train reads this corpus instead of the checkpoint's
            self.trained_cfg = replace(self.trained_cfg, data=data)
        self.item = "proverb" if is_the_proverbs(self.trained_cfg.data) else "line"
        self.sampling, self.typed_cfg = Sampling.of(cfg), cfg  # the settings typed with --chat
        self.generator = torch.Generator().manual_seed(cfg.seed)
        self.typed: list[str] = []
        self.chat_log = Path(chat_log) if chat_log else None
        if self.chat_log is not None and not (self.chat_log.parent.is_dir()
                                              and os.access(self.chat_log.parent, os.W_OK)):
            raise UserError(f"cannot write the chat log {self.chat_log}: its folder is missing or read-only")
        if self.chat_log is not None and self.chat_log.exists():  # it will be written again whole: text only
            if not self.chat_log.is_file() or same_file(self.chat_log, checkpoint) or self.read_chat_log() is None:
                raise UserError(f"the chat log {self.chat_log} must be a UTF-8 text file (one typed line each)")
        self.target, self.target_lock = chat_checkpoint(checkpoint), None  # never the file read above; claimed at /train
        if self.chat_log is not None and (same_file(self.chat_log, self.target) or same_file(self.chat_log, self.trained_cfg.data)):
            raise UserError(f"the chat log {self.chat_log} would be {'where /train saves' if same_file(self.chat_log, self.target) else 'the text /train reads'}: "
                            f"name another file")
        self.epoch, self.val_loss, self.saved_cfg = payload["epoch"], payload["val_loss"], self.trained_cfg
        self.log_lock = None  # one chat at a time appends to a log: a second would lose the first's lines
        if self.chat_log is not None:
            self.log_lock = open(self.chat_log.with_name(f".{self.chat_log.name}.lock"), "a+b")
            if not locked(self.log_lock):
                self.log_lock.close()
                raise UserError(f"another chat is writing the chat log {self.chat_log} right now: end it first, "
                                f"or give this one another --chat-log")
        log(f"chatting with {checkpoint} (epoch {payload['epoch']}, validation loss {payload['val_loss']:.3f}, "
            f"{count_parameters(self.model):,} parameters"
            + (f", trained {without_label(self.trained_cfg)}" if self.trained_cfg.without else "")
            + "). /help lists the commands; exit leaves.")

    def read_chat_log(self) -> list[str] | None:
        """The lines of the chat log (NFC, like every text read), or None if it is not UTF-8 text."""
        try:
            return text_lines(read_text(self.chat_log)) if self.chat_log.read_bytes().strip() else []
        except (UserError, OSError) as e:
            self.log(f"  cannot read the chat log: {e}")
            return None

    def answer(self, line: str):
        """A line that is not a command: remember it, then complete it."""
        try:
            check_utf8(line, "this line")
        except UserError as e:
            self.log(f"  {e}; it was not used")
            return
        if "\x00" in line:  # the log and /train read text files, and a file with a NUL is refused as binary
            self.log("  this line holds a NUL character (U+0000), which no text to learn from may hold; it was not used")
            return
        line = unicodedata.normalize("NFC", line.removeprefix("\ufeff"))  # NFC like the data; no byte-order mark
        self.typed.append(line)
        if self.chat_log is not None and line.strip():
            try:
                append_line(self.chat_log, line.strip())
            except (UserError, OSError) as e:
                self.log(f"  not logged: {e}")
        try:
            prompt = check_prompt(self.tokenizer, line)
        except UnknownCharacterError:
            self.log(f"  the model never saw {name_chars(self.tokenizer.unknown(line))}: it cannot read this line "
                     f"yet; /train teaches it the line")
            return
        self.log("  " + generate(self.model, self.tokenizer, prompt, self.sampling, self.generator,
                                 stop_at_eol=self.trained_cfg.mode != "stream"))

    def command(self, line: str) -> bool:
        """Run a /command; False when the chat should end."""
        name, *rest = line.split(maxsplit=1)
        argument = rest[0].strip() if rest else None  # the rest of the line: /save takes a name with spaces whole
        s = self.sampling
        try:
            if name in ("exit", "quit", "/exit", "/quit"):
                return False
            if name == "/help":
                self.log(CHAT_HELP.format(**{**asdict(s), "greedy": "on" if s.greedy else "off",
                                             "target": self.target, "chat_epochs": self.typed_cfg.chat_epochs}))
            elif name in ("/temp", "/topk", "/topp", "/greedy"):
                self.set_sampling(name, argument)
            elif name == "/train":
                epochs = int(argument) if argument is not None else self.typed_cfg.chat_epochs
                if epochs <= 0:
                    raise ValueError
                self.teach(epochs)
            elif name == "/save":
                self.save(Path(argument) if argument else self.target)
            else:
                self.log(f"  unknown command {name}: /help lists the commands")
        except (TypeError, ValueError):  # a missing or impossible value
            self.log(f"  {name} needs a valid value, for example: "
                     + {"/temp": "/temp 0.8 (from 0.01 to 100)", "/topk": "/topk 5", "/topp": "/topp 0.9", "/train": "/train 3"}[name])
        return True

    def set_sampling(self, name: str, argument: str | None):
        """/temp, /topk, /topp, /greedy: change how the next answers are sampled (a ValueError
        for an impossible value)."""
        s = self.sampling
        if name == "/greedy":
            s.greedy = not s.greedy
            self.log(f"  greedy = {'on' if s.greedy else 'off'}")
            return
        value = int(argument) if name == "/topk" else float(argument)
        if ((name == "/temp" and temperature_problem(value)) or (name == "/topk" and value < 0)
                or (name == "/topp" and not 0 < value <= 1)):
            raise ValueError
        if name == "/temp":
            s.temperature = value
            self.log(f"  temperature = {value}")
        elif name == "/topk":
            s.top_k = value
            self.log(f"  top-k = {value or 'off (all characters)'}")
        else:
            s.top_p = value
            self.log(f"  top-p = {value}")

    def lines_to_teach(self) -> tuple[list[str], str] | None:
        """(the typed lines, log included, each once; the corpus) for /train, or None when there
        is nothing to train on (said so)."""
        logged = self.read_chat_log() if self.chat_log and self.chat_log.exists() else []
        if logged is None:  # the log was edited into something unreadable: said so; keep chatting
            return None
        typed = list(dict.fromkeys(line.strip() for line in logged + self.typed if line.strip()))
        if not typed:
            self.log(f"  nothing typed yet: type some lines (whole {self.item}s teach best), then /train")
            return None
        try:
            return typed, read_text(self.trained_cfg.data)
        except UserError as e:
            moved = "" if Path(self.trained_cfg.data).exists() else " (moved? start the chat with --data ITS_NEW_PLACE)"
            self.log(f"  cannot train: {e}{moved}")
            return None

    def teach(self, epochs: int):
        """/train: more epochs on the corpus plus the typed lines, then save the model."""
        cfg, found = self.trained_cfg, self.lines_to_teach()
        if found is None:
            return
        typed, corpus = found
        self.model, self.tokenizer, added = extend_vocabulary(self.model, self.tokenizer,
                                                              corpus + "".join(typed), cfg)
        if added:
            self.log(f"  new characters, with new embedding and output rows: {name_chars(added)}")
        # Go on at a fraction of the first run's peak learning rate: a trained model only needs
        # nudging. Every typed line counts chat_weight times, so that a few lines weigh
        # something next to thousands of proverbs.
        cfg = replace(cfg, epochs=epochs, lr=cfg.lr / self.typed_cfg.chat_lr_divisor, warmup=0, patience=0, snapshot=0,
                      device=str(self.device))
        try:
            data = prepare_any_text(corpus, cfg, self.tokenizer, extra_train=typed * self.typed_cfg.chat_weight)
        except UserError as e:
            self.log(f"  cannot train: {e}")
            return
        yours = encode_lines(typed, self.tokenizer, cfg.context)
        hooks = DeviceHooks(cfg, self.device)
        before = [evaluate(self.model, split, cfg.eval_batch, self.device, hooks.autocast) for split in (yours, data.val_split)]
        self.log(f"  training {epochs} epoch{'s' * (epochs > 1)} on {cfg.data} plus {len(typed)} typed "
                 f"line{'s' * (len(typed) != 1)}")
        try:
            train(self.model, data, cfg, self.device, hooks, log=lambda m: self.log("  " + m.strip()))
        except KeyboardInterrupt as stop:
            if isinstance(stop, Terminated):
                raise
            self.log("  (training stopped; the chat goes on with the best weights so far)")
        except TrainingDiverged as e:
            self.log(f"  {e}")
        self.model.eval()
        after = [evaluate(self.model, split, cfg.eval_batch, self.device, hooks.autocast) for split in (yours, data.val_split)]
        self.log(f"  loss on your lines {before[0]:.3f} -> {after[0]:.3f}; "
                 f"on the validation {data.item}s {before[1]:.3f} -> {after[1]:.3f}")
        self.epoch, self.saved_cfg, self.val_loss = self.epoch + epochs, cfg, after[1]
        self.save_trained()

    def save_trained(self):
        """/train's save: beside the checkpoint, under a name no other open chat saves to."""
        if self.target_lock is None:
            self.target, self.target_lock = claim_chat_checkpoint(self.checkpoint, self.log)
        self.save(self.target)

    def save(self, target: Path):
        """Save the chat's model (after /train, or /save FILE); a failure leaves the chat going.
        Never over a file the chat reads or writes: its checkpoint, its corpus, its log."""
        if problem := name_problem(target):  # a NUL byte, a name too long, links that loop
            self.log(f"  {show_path(target)}: {problem}: /save OTHER.pt")
            return
        try:
            mine = {"the checkpoint this chat started from": self.checkpoint, "the text /train reads": self.trained_cfg.data,
                    "the chat log": self.chat_log}
            taken = next((what for what, path in mine.items() if path is not None and same_file(target, path)), None)
            if taken or (target.is_file() and not target.suffix == ".pt"):
                self.log(f"  {show_path(target)} is {taken or 'a file that is not a checkpoint'}: it stays as it is; /save OTHER.pt")
                return
            save_checkpoint(target, self.model, self.saved_cfg, self.tokenizer,
                            {"epoch": self.epoch, "val_loss": self.val_loss})
        except OSError as e:  # a folder on the way that cannot be searched, say
            self.log(f"  {show_path(target)}: {e.strerror or e}: /save OTHER.pt")
            return
        except UserError as e:
            self.log(f"  {e}. The model is still here: /save FILE saves it somewhere else (another disk or folder)")
            return
        self.log(f"  saved {show_path(target)} (python LLM.py --chat --checkpoint {shell_word(show_path(target))}); chat on")


def shell_word(text: str) -> str:
    """A file name as a shell command takes it: quoted when it holds a space or a sign the shell reads."""
    return text if re.fullmatch(r"[\w./@%+=:,-]+", text) else "'" + text.replace("'", "'\\''") + "'"


def chat_checkpoint(source: Path, taken=lambda target: False) -> Path:
    """Where /train saves: beside the checkpoint, never over it. model.pt -> model-chat.pt; a
    chat that started from model-chat.pt saves model-chat-2.pt, and so on, past those `taken`."""
    base = re.sub(r"-chat(-\d+)?$", "", source.stem)
    target, n = source.with_name(f"{base}-chat{source.suffix}"), 1
    while same_file(target, source) or taken(target):
        n += 1
        target = source.with_name(f"{base}-chat-{n}{source.suffix}")
    return target


def claim_chat_checkpoint(source: Path, log=print) -> tuple[Path, object]:
    """/train's file, locked for this chat (the lock ends with the process): a second chat on the
    same checkpoint saves under the next name, and says so, so that neither replaces the other's."""
    locks = {}

    def taken(target: Path) -> bool:
        try:
            lock = open(target.with_name(f".{target.name}.lock"), "a+b")
        except OSError:  # a folder it cannot write: /train says so when it saves
            return False
        if locked(lock):
            locks[target] = lock
            return False
        lock.close()
        return True

    target = chat_checkpoint(source, taken)
    if target != chat_checkpoint(source):
        log(f"note: another chat on {show_path(source)} saves to {show_path(chat_checkpoint(source))}: this one's "
            f"/train saves to {show_path(target)}")
    return target, locks.get(target)


def chat(cfg: Config, checkpoint: Path, chat_log: str | None = None, stream=None, log=print,
         data: str | None = None) -> None:
    if stream is None and hasattr(sys.stdin, "reconfigure"):
        sys.stdin.reconfigure(errors="surrogateescape")  # bytes that are not UTF-8: refused line by line
    session = Chat(cfg, checkpoint, chat_log, log, data)
    try:
        chat_session(session, stream, log)
    finally:
        for lock in (session.log_lock, session.target_lock):  # the locks end with the process anyway; their files go now
            if lock is not None:
                lock.close()
                with contextlib.suppress(OSError):
                    Path(lock.name).unlink()


def chat_session(session: Chat, stream, log):
    """The chat's loop: each line typed is a command or the start of a proverb."""
    try:
        for line in chat_lines(stream or sys.stdin, log):
            text = line.strip()
            if text.startswith("/") or text in ("exit", "quit"):
                if not session.command(text):
                    break
            else:
                session.answer(line)
    except KeyboardInterrupt as stop:  # Ctrl-C while waiting for a line
        if isinstance(stop, Terminated):  # SIGTERM or SIGHUP: every file is whole; main() says so
            raise
        log("")
    log("bye")



# %% [markdown]
# ## K. The command line
#
# Every Config field becomes a flag (`d_model` → `--d-model`), with the field's explanation as
# its `--help` text, in the groups of the dataclass; `--preset NAME` starts from one of section
# 1's presets, and the flags typed beside it change it again. `run()` is the whole run: section
# 15's story through the run's hooks (part E), then the outputs (part G). Errors the user can
# fix are printed as one line, `error: ...`, and the program exits with code 2, never with a
# traceback.
#
#     python LLM.py                         train from scratch, write outputs/
#     python LLM.py --preset longer         the longer run, into outputs/longer/
#     python LLM.py --preset pieces         the classroom run in word pieces, into outputs/pieces/
#     python LLM.py --resume                go on training outputs/model.pt from its epoch
#     python LLM.py --init-from M --data F  fine-tune the model M on the text F
#     python LLM.py --eval                  test-split loss, perplexity, bits per character
#     python LLM.py --generate "No hay"     complete a prompt with the trained model
#     python LLM.py --chat                  talk to it
#     python LLM.py --explorer              write explorer.html again from the checkpoint
#     python LLM.py --what-if               the run as it is and without each idea, side by side

# %%
class HelpFormatter(argparse.ArgumentDefaultsHelpFormatter):
    """--help with every default as a user would type it: none for a switch or an empty setting,
    a list as its words ('' for an empty one)."""
    def _get_help_string(self, action):
        default = action.default
        if default is None or default is False or default is argparse.SUPPRESS or action.nargs == 0:
            return action.help
        if isinstance(default, (tuple, list)):
            words = " ".join(f"'{v}'" if not v or " " in v else v for v in default)
            return f"{action.help} (default: {words or 'none'})".replace("%", "%%")
        return super()._get_help_string(action)

    def _split_lines(self, text, width):  # never "causal-" at a line's end and "mask" on the next
        import textwrap
        return textwrap.wrap(" ".join(text.split()), width, break_on_hyphens=False)


class OneLineErrorParser(argparse.ArgumentParser):
    def error(self, message):  # argparse would print the whole usage; we say one line
        raise UserError(f"{message} (see python LLM.py --help)")


PRESETS = {  # name -> the settings it changes; flags typed on the command line change them again
    "classroom": {},  # the defaults above
    "longer": {"d_model": 128, "d_ff": 512, "dropout": 0.05, "optimizer": "adamw", "lr": 3e-3, "epochs": 16,
               "snapshot": 4, "out": "outputs/longer"},  # a few minutes, before class: better samples
    "pieces": {"tokenizer": "bpe", "vocab_size": 512, "out": "outputs/pieces"},  # the classroom run in word pieces
}


FLAG_GROUPS = {  # --help's groups: every field of RunConfig (section 1's Config and the run's own), once
    "data and outputs": ("data", "mode", "out", "val_fraction", "test_fraction", "seed", "device", "tokenizer",
                         "vocab_size"),
    "model shape": ("d_model", "n_heads", "n_layers", "d_ff", "dropout", "context", "without"),
    "training": ("batch_size", "eval_batch", "optimizer", "lr", "lr_floor", "warmup", "warmup_cap", "beta1", "beta2",
                 "eps", "weight_decay", "clip", "code", "precision", "compile", "epochs", "patience", "snapshot",
                 "progress", "pictures"),
    "sampling": ("prompts", "temperature", "top_k", "top_p", "greedy", "max_chars"),
    "the chat's /train": ("chat_epochs", "chat_weight", "chat_lr_divisor"),
    "what if": ("seeds",)}


def build_parser(defaults: bool = True) -> argparse.ArgumentParser:
    """The flags. With defaults=False, flags that were not typed stay out of the result:
    that is how --resume tells what the user asked to change."""
    parser = OneLineErrorParser(
        prog="python LLM.py", formatter_class=HelpFormatter,
        argument_default=None if defaults else argparse.SUPPRESS,
        description="Train a small Transformer on a text file (Spanish proverbs by default), character by "
                    "character or in word pieces (--tokenizer bpe), and write what it learned to an output folder.",
        epilog=f"--pictures names: {' '.join(PICTURES)}. Presets: "
               + "; ".join(f"{name}: " + (" ".join(f"{flag_of(k)} {v}" for k, v in changes.items()) or "the defaults")
                           for name, changes in PRESETS.items()) + ".")
    add_what_to_do(parser, defaults)
    by_name = {f.name: f for f in fields(RunConfig)}
    for title, names in FLAG_GROUPS.items():
        group = parser.add_argument_group(title)
        for name in names:
            add_setting(group, by_name[name], defaults)
    return parser


def add_what_to_do(parser, defaults: bool):
    """The group 'what to do': the actions (one at most) and the flags that go with them."""
    use = parser.add_argument_group("what to do (default: train a new model)")
    action = use.add_mutually_exclusive_group()
    action.add_argument("--resume", action="store_true",
                        help="go on training the checkpoint from the epoch it holds (raise --epochs to train longer)")
    action.add_argument("--init-from", metavar="FILE",
                        help="fine-tune: start from this checkpoint's weights and train on --data")
    action.add_argument("--eval", action="store_true",
                        help="report loss, perplexity and bits per character of the checkpoint on the test split")
    action.add_argument("--generate", metavar="PROMPT",
                        help="load the checkpoint and complete PROMPT, with the settings of the 'sampling' group")
    action.add_argument("--chat", action="store_true",
                        help="talk to the checkpoint: type the start of a proverb, it completes it")
    action.add_argument("--what-if", action="store_true",
                        help="train the run once as it is and once without each idea of --without, into <out>/what-if/")
    action.add_argument("--class", dest="class_file", metavar="FILE",
                        help="draw the class's results: FILE holds the result lines of many runs (each run prints one "
                             "at its end); writes <out>/class/class.png and README.md")
    action.add_argument("--explorer", action="store_true",
                        help="write explorer.html for the checkpoint (into its folder, or --out), and nothing else")
    action.add_argument("--workbook", metavar="DIR",
                        help="write DIR/LLM.py, this book with Part I's exercises for a student to write, and the "
                             "proverbs beside it")
    action.add_argument("--check", nargs="*", metavar="NAME",
                        help="check the exercises (all, or those named) against PyTorch: done, not started or wrong, "
                             "with a hint")
    use.add_argument("--preset", choices=list(PRESETS), default="classroom" if defaults else argparse.SUPPRESS,
                     help="named settings (listed at the end); flags typed beside it change them again")
    use.add_argument("--samples", type=int, default=1 if defaults else argparse.SUPPRESS, metavar="N",
                     help="how many completions --generate prints")
    use.add_argument("--checkpoint", metavar="FILE",
                     help="checkpoint to load (model.pt in the --out folder if not given)")
    use.add_argument("--chat-log", metavar="FILE", help="--chat appends every line you type to this file")
    use.add_argument("--exercises", metavar="NAMES",
                     help="with --workbook: only these exercises, by name, comma-separated (attention,causal_mask)")
    use.add_argument("--lang", choices=LANGUAGES,
                     help="the language of --workbook's comments and --check's messages (default: the locale's)")


def add_setting(group, f, defaults: bool):
    """One field of RunConfig as a flag of `group`, with its help text."""
    flag, help_text = flag_of(f.name), f.metadata["help"]
    default = f.default if defaults else argparse.SUPPRESS
    if f.type == "bool":
        group.add_argument(flag, dest=f.name, action="store_true", help=help_text,
                           **({} if defaults else {"default": argparse.SUPPRESS}))
    elif f.type == "tuple":
        group.add_argument(flag, dest=f.name, nargs="*", default=default, metavar="TEXT", help=help_text)
    else:
        kind = {"int": int, "float": float, "str": str}[f.type]
        group.add_argument(flag, dest=f.name, type=kind, default=default, metavar=f.name.upper(), help=help_text)


def prepare_output_dir(path: str) -> Path:
    out = Path(path)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / f".write-test-{os.getpid()}"
        probe.write_text("ok")
        probe.unlink()
    except OSError as e:
        raise UserError(f"cannot write to the output folder {out}: {e.strerror or e}") from None
    return out



def vocabulary_in_words(tokenizer: CharTokenizer) -> str:
    """'73 characters', or '512 pieces (73 characters and 439 merges)'."""
    if tokenizer.unit == "character":
        return f"{tokenizer.vocab_size} characters"
    return (f"{tokenizer.vocab_size} {tokenizer.unit}s ({len(tokenizer.alphabet())} characters and "
            f"{len(tokenizer.merges)} merges)")


def describe_data(data: Data, cfg: Config, log=print):
    """The data lines of the run: mode, sizes, splits, one teacher-forcing example."""
    test_size = len(data.test_split) if data.test_split is not None else 0
    tokenizer, split = data.tokenizer, data.train_split
    log(f"data: {cfg.data}: {data.n_chars:,} characters, vocabulary of {vocabulary_in_words(tokenizer)}")
    if tokenizer.unit != "character" and tokenizer.vocab_size != cfg.vocab_size:  # asked for, and not reached
        characters = len(tokenizer.alphabet())
        log(f"      note: --vocab-size {cfg.vocab_size:,} " + (
            f"is below the text's {characters:,} characters: the vocabulary is the characters alone, no merge"
            if cfg.vocab_size <= characters else
            f"is more than this text gives: every pair seen at least twice in the training words is merged, "
            f"which makes {tokenizer.vocab_size:,}"))
    if tokenizer.unit != "character":
        per_token = split.n_chars / split.n_tokens
        log(f"      {per_token:.2f} characters per {tokenizer.unit} in the training text: a context of {cfg.context} "
            f"{tokenizer.unit}s holds about {cfg.context * per_token:.0f} characters")
    if data.mode == "line":
        log(f"      line mode ({data.reason}): {counted(len(data.train_split), 'line')} to train on, {len(data.val_split)} for "
            f"validation, {test_size} for the final test")
        lengths = split.lengths.float()
        log(f"      a training sequence is {lengths.mean():.1f} {tokenizer.unit}s long on average, at most "
            f"{int(lengths.max())} (the context: {cfg.context})")
        if data.truncated:
            log(f"      note: {counted(data.truncated, 'line')} {'is' if data.truncated == 1 else 'are'} longer than the "
                f"context ({cfg.context} {tokenizer.unit}s) and {'was' if data.truncated == 1 else 'were'} cut")
        inputs = data.train_split.inputs[0, :data.train_split.lengths[0]]
        targets = data.train_split.targets[0, :data.train_split.lengths[0]]
    else:
        test_tokens = data.test_split.n_tokens + 1 if data.test_split is not None else 0
        log(f"      stream mode ({data.reason}): blocks of {data.train_split.n_tokens + 1:,} {tokenizer.unit}s to train on, "
            f"{data.val_split.n_tokens + 1:,} for validation, {test_tokens:,} for the final test; "
            f"windows of {cfg.context}")
        inputs, targets = (t[0, :min(cfg.context, 60)] for t in data.train_split.windows(0)[0])
    log("teacher forcing, one real example (the model reads the input and must write the target):")
    log(f"      input  = tokens[:-1] = {show(data.tokenizer.decode(inputs))}")
    log(f"      target = tokens[1:]  = {show(data.tokenizer.decode(targets))}")


def describe_model(model: TransformerLM, cfg: Config, vocab_size: int, device, ranks: Ranks, out: Path, log=print):
    V, C, d_ff, N = vocab_size, cfg.d_model, cfg.d_ff, cfg.n_layers
    log(f"model: {count_parameters(model):,} parameters = {parameter_formula(cfg)} "
        f"with V={V}, C={C}, F={d_ff}, N={N} (details: {out / 'parameters.txt'})")
    if cfg.without:
        log(f"      {without_label(cfg)}: {', '.join(WITHOUT_MEANS[idea] for idea in cfg.without)} (section 9)")
    log(f"device: {device}, code: {code_in_words(cfg, device)}, precision: "
        f"{'bf16 autocast' if uses_bf16(cfg, device) else 'fp32'}, optimizer: {cfg.optimizer}"
        + (f"; {ranks.world} processes (DistributedDataParallel), {ranks.world} x {cfg.batch_size} "
           f"sequences per step" if ranks.world > 1 else ""))


@dataclass
class Setup:
    """What run() starts from."""
    cfg: Config  # the settings, with the mode that auto chose
    device: torch.device
    ranks: Ranks
    writes: bool  # False in the torchrun processes that neither print nor write
    log: object  # print, or a function that prints nothing (those other processes)
    out: Path
    text: str  # the whole corpus
    data: Data
    model: TransformerLM
    checkpoint: Path | None  # where the best epoch is saved
    resume_state: dict | None  # the training state of --resume
    initial_embedding: torch.Tensor  # (V, C) before training, for embeddings.png


def set_up_run(cfg: Config, log=print, resume: Path | None = None, init_from: Path | None = None) -> Setup:
    """Device and processes, output folder, data, and the model: new, resumed or fine-tuned."""
    ranks, device = start_distributed(pick_device(cfg.device), log)
    if not ranks.is_writer:
        log = lambda *args: None  # noqa: E731  (the other ranks stay silent)
    check_not_an_output(cfg)
    out = prepare_output_dir(cfg.out)  # every process checks it: none waits for one that could not start
    text = read_text(cfg.data)
    model, tokenizer, resume_state = start_from_checkpoint(cfg, text, device, log, resume, init_from)
    data = prepare_any_text(text, cfg, tokenizer)
    cfg = replace(cfg, mode=data.mode)  # the checkpoint records the mode auto chose
    check_a_batch_for_every_process(data, cfg, ranks)
    longest = data.train_split.inputs.shape[1] if data.mode == "line" else cfg.context
    evaluated = max(len(data.val_split), len(data.test_split or []))  # the largest batch evaluate() makes
    check_memory(cfg, data.tokenizer.vocab_size, min(cfg.batch_size, len(data.train_split)), longest, device,
                 min(cfg.eval_batch, evaluated))
    cfg = replace(cfg, prompts=readable_prompts(cfg, data.tokenizer, log))  # fail now, not after training
    describe_data(data, cfg, log)
    if cfg.pictures and ranks.is_writer:
        fonts_for(data.tokenizer.alphabet(), log)
    if model is None:
        torch.manual_seed(cfg.seed)
        model = build_model(data.tokenizer.vocab_size, cfg, device).to(device)
    use_code(model, cfg, device)  # a checkpoint's model too: --code may differ from its own
    describe_model(model, cfg, data.tokenizer.vocab_size, device, ranks, out, log)
    return Setup(cfg, device, ranks, ranks.is_writer, log, out, text, data, model,
                 out / "model.pt" if ranks.is_writer else None, resume_state,
                 model.token_embedding.weight.detach().float().cpu().clone())


def run(cfg: Config, log=print, resume: Path | None = None, init_from: Path | None = None) -> Finished | None:
    """The whole run of `python LLM.py`: section 16's story through the run's hooks, then the
    files in which the model explains itself. With `resume` training goes on from that
    checkpoint; with `init_from` it fine-tunes it. None in a torchrun process that writes nothing."""
    setup = set_up_run(cfg, log, resume, init_from)  # device, output folder, data, model
    if not setup.writes:
        return train_and_finish(setup)
    with recording(setup.out, resume, setup.log):  # the earlier run's files go; this run's are listed
        return train_and_finish(setup)


def train_and_finish(setup: Setup) -> Finished | None:
    """run() once the run is set up: train, then measure and write every output. Stopped at any
    moment, it says what model.pt keeps (and what the folder holds)."""
    cfg, model, out = setup.cfg, setup.model, setup.out
    epochs = EpochPictures(model, setup.data, cfg, out) if cfg.snapshot and setup.writes and wanted(cfg, "epochs") else None
    hooks = RunHooks(setup, epochs)
    history = train_saying_what_is_kept(setup, hooks)
    if not finish_training(model, setup, setup.log):  # the torchrun processes that write nothing stop here
        return None
    try:
        return write_outputs(setup, hooks, history, epochs)
    except (KeyboardInterrupt, ConsoleLost) as stop:
        record = RECORDING.get(out.resolve())
        so_far = f"{counted(len(record.written), 'file')} of this run written so far" if record else "files of this run written so far"
        held = f"{hooks.kept('keeps')}; {out}/ holds the {so_far} (listed in {MANIFEST}), not yet its gallery"
        if isinstance(stop, ConsoleLost):
            stop.kept = f"the outputs were being written: {held}"
        else:
            how = f"stopped by {stop.name}" if isinstance(stop, Terminated) else "interrupted"
            hooks.log(f"\n{how} while the outputs were written: {held}")
        raise


def train_saying_what_is_kept(setup: Setup, hooks: RunHooks) -> list[dict]:
    """Section 14's train() with the run's hooks; whatever stops it (Ctrl-C, a signal, a closed
    output, a lost torchrun process, a NaN) is said with what model.pt keeps."""
    model, data, cfg = setup.model, setup.data, setup.cfg
    try:
        return train(model, data, cfg, setup.device, hooks, hooks.state, hooks.log)
    except KeyboardInterrupt as stop:
        how = f"stopped by {stop.name}" if isinstance(stop, Terminated) else "interrupted"
        if isinstance(stop, Terminated) and os.environ.get("TORCHELASTIC_RUN_ID"):
            how += " (torchrun stops every process when one of them fails, or when it is stopped itself)"
            ignore_sigterm()  # a second one, while this is said, changes nothing
        if setup.writes:
            hooks.log(f"\ntraining {how} {hooks.when()}: {hooks.kept('keeps')}")
        elif setup.ranks.world == 2:  # rank 0 may be the process lost: the one left says what model.pt holds
            say(f"training {how} {hooks.when()}: {checkpoint_holds(setup.out / 'model.pt')}")
        raise
    except TrainingDiverged as e:
        raise TrainingDiverged(f"{e}; {hooks.kept('still holds')}") from None
    except ConsoleLost as lost:
        lost.kept = f"training stopped {hooks.when()}: {hooks.kept('keeps')}"
        raise
    except Exception as e:  # --compile's kernels that cannot be built; under torchrun, a process that is gone
        if cfg.compile and from_the_compiler(e):
            raise UserError(f"--compile: {compiler_failure(e)}: leave out --compile; training stopped "
                            f"{hooks.when()}: {hooks.kept('keeps')}") from None
        if setup.ranks.world == 1 or not isinstance(e, RuntimeError):
            raise
        ignore_sigterm()  # torchrun's SIGTERM, sent because that process is gone, must not cut this line short
        kept = hooks.kept("keeps") if setup.writes else checkpoint_holds(setup.out / "model.pt")
        lost = UserError(f"another process of this run stopped ({collective_failure(e)}): training stopped "
                         f"{hooks.when()}: {kept}")
        lost.heard = setup.ranks.world == 2  # of two processes the one left says it, even when rank 0 is the one lost
        raise lost from None


def write_outputs(setup: Setup, hooks: RunHooks, history: list[dict], epochs) -> Finished:
    """After training: the test score, the samples, and every file in which the model explains itself."""
    cfg, model, data, out, log = setup.cfg, setup.model, setup.data, setup.out, setup.log
    test_loss = None
    if data.test_split is not None:
        test_loss = evaluate(model, data.test_split, cfg.eval_batch, setup.device, hooks.autocast)
        log(f"test split, never seen in training: {perplexity_report(test_loss, data.test_split, data.tokenizer.unit)}")
    if hooks.counting is not None:
        log(hooks.counting.after_training(data, history, test_loss))
    save_text(out / "parameters.txt", parameter_report(model, cfg, data.tokenizer.vocab_size, data.tokenizer.unit))
    samples = write_samples(model, data, cfg, setup.text, log)
    save_text(out / "table.txt", sampling_table(samples, cfg, data.tokenizer, data.item))
    save_text(out / "tokens.txt", tokens_report(data))
    finished = Finished(setup, history, test_loss, epochs, hooks.snapshots, samples, hooks.untrained_loss,
                        hooks.counting)
    finished.drawings = write_pictures_and_gallery(finished, log)
    log("the run in one line, for the class's shared file (python LLM.py --class FILE draws every line pasted there):")
    log(result_line(cfg, data, test_loss, finished.best["val_loss"], hooks.counting))
    return finished


def readable_prompts(cfg: Config, tokenizer: CharTokenizer, log=print) -> tuple[str, ...]:
    """The prompts, checked (check_prompt). The default ones are Spanish: on another text those
    with characters it lacks are left out with a note, while a typed prompt must be readable."""
    if cfg.prompts != RunConfig().prompts:
        return tuple(check_prompt(tokenizer, p) for p in cfg.prompts)
    kept = tuple(p for p in cfg.prompts if not tokenizer.unknown(p))
    if len(kept) < len(cfg.prompts):
        log(f"note: the default prompts {', '.join(repr(p) for p in cfg.prompts if p not in kept)} use characters "
            f"this text lacks and are left out (give your own with --prompts)")
    return kept


def text_fingerprint(text: str) -> dict:
    """What --resume compares: the text's SHA-256, with its size in words a person can check."""
    return {"sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(), "characters": len(text),
            "lines": text.count(EOL) + (not text.endswith(EOL))}


def check_same_text(resume: Path, saved: dict | None, text: str, cfg: Config):
    """--resume goes on with the text the checkpoint trained on, or not at all: the same split,
    the same best loss to beat. A checkpoint from before fingerprints cannot tell, and goes on."""
    now = text_fingerprint(text)
    if saved is None or saved.get("sha256") == now["sha256"]:
        return
    changed = (f"it had {saved['characters']:,} characters in {saved['lines']:,} lines, it has {now['characters']:,} in "
               f"{now['lines']:,}" if (saved["characters"], saved["lines"]) != (now["characters"], now["lines"])
               else "the same number of characters and lines, but other characters")
    raise UserError(f"{cfg.data} is not the text {resume} trained on ({changed}): resuming would validate on another "
                    f"split and beat another best; to go on training on this text use --init-from {resume}")


def start_from_checkpoint(cfg: Config, text: str, device, log, resume: Path | None, init_from: Path | None):
    """(model, tokenizer, training state) to start from: all None for a new model; the
    checkpoint's for --resume; the checkpoint's grown to the new text's characters for --init-from."""
    if resume is None and init_from is None:
        return None, None, None
    model, tokenizer, _, payload = load_checkpoint(resume or init_from, device)
    if init_from is not None:
        old_size = tokenizer.vocab_size
        model, tokenizer, added = extend_vocabulary(model, tokenizer, text, cfg)
        log(f"fine-tuning {init_from} (epoch {payload['epoch']}, validation loss {payload['val_loss']:.3f}) on "
            f"{cfg.data}, writing into {cfg.out}/ ({init_from} stays as it is): the {old_size} known "
            f"{tokenizer.unit}s keep their weights; "
            + (f"{len(added)} new characters get new embedding and output rows: {name_chars(added)}" if added
               else "no new characters")
            + (f"; the {len(tokenizer.merges)} merges stay those learned on the first text: the new text is cut "
               f"into the same pieces (its new characters stay single)" if tokenizer.unit != "character" else ""))
        return model, tokenizer, None
    unknown = tokenizer.unknown(text)
    if unknown:
        raise UserError(f"{cfg.data} has characters the checkpoint never saw ({name_chars(unknown)}): "
                        f"to train on a new text use --init-from {resume} --data {cfg.data}")
    training_state = payload.get("training")
    if not training_state:
        raise UserError(f"{resume} holds no training state to resume from")
    check_training_state(resume, training_state, model, cfg)
    check_same_text(resume, training_state.get("text"), text, cfg)
    if payload["epoch"] >= cfg.epochs:
        raise UserError(f"{resume} already holds epoch {payload['epoch']} of {cfg.epochs}: to train longer "
                        f"ask for more, for example --resume --epochs {payload['epoch'] + 10}")
    log(f"resuming {resume} from the end of epoch {payload['epoch']} (step {training_state['step']}, "
        f"validation loss {payload['val_loss']:.3f})")
    return model, tokenizer, training_state


HISTORY_FIELDS = ("epoch", "step", "train_loss", "val_loss", "lr", "grad_norm", "clipped", "elapsed",
                  "tokens_per_second")  # one record of the history, as Training.end_epoch writes it


def check_training_state(path: Path, state: dict, model: TransformerLM, cfg: Config):
    """--resume: the step, the history, the random state and the optimizer's averages of a
    checkpoint, checked before training starts (a hand-edited file is bad input)."""
    history, rng = state.get("history"), state.get("rng")
    problem = None
    if not (isinstance(state.get("step"), int) and state["step"] >= 0):
        problem = "its step count"
    elif not (isinstance(history, list) and history and all(
            isinstance(r, dict) and all(isinstance(r.get(k), (int, float)) and not isinstance(r.get(k), bool)
                                        and math.isfinite(r[k]) and r[k] >= 0 for k in HISTORY_FIELDS) for r in history)):
        problem = "its history of losses (a value that is not a finite number, 0 or more)"
    elif [r["epoch"] for r in history] != list(range(1, len(history) + 1)) or history[-1]["step"] != state["step"]:
        problem = "its history of losses (epochs 1, 2, 3, ... and the step count of the last one)"
    elif not (isinstance(rng, torch.Tensor) and rng.dtype == torch.uint8 and rng.shape == torch.get_rng_state().shape):
        problem = "its random-number state"
    else:
        try:
            load_optimizer_state(make_optimizer(model, cfg), state.get("optimizer"))
        except UserError:
            problem = "its optimizer state (or it was saved with another --optimizer)"
    if problem:
        raise UserError(f"{path} has a damaged training state ({problem}): it cannot be resumed; "
                        f"--init-from {path} starts a new run from its weights")


def finish_training(model: TransformerLM, setup: Setup, log=print) -> bool:
    """After training: with several processes, check that they all hold the same weights.
    True in the process that goes on to measure and write the outputs."""
    if setup.ranks.world > 1:
        if not same_weights_everywhere(model, setup.ranks):
            raise UserError(f"the {setup.ranks.world} processes ended with different weights")
        log(f"the {setup.ranks.world} processes end with identical weights (compared element by element)")
    return setup.writes


def evaluate_checkpoint(cfg: Config, checkpoint: Path, data_file: str | None, log=print):
    """--eval: the checkpoint's loss on the test split of its data (or of --data)."""
    device = pick_device(cfg.device)
    model, tokenizer, trained_cfg, payload = load_checkpoint(checkpoint, device)
    if data_file is None and not Path(trained_cfg.data).exists():
        raise UserError(f"{checkpoint} was trained on {trained_cfg.data}, which is not there any more (moved or "
                        f"renamed?): give its new place with --data")
    trained_cfg = replace(trained_cfg, data=data_file or trained_cfg.data)
    if trained_cfg.test_fraction == 0:
        raise UserError(f"{checkpoint} was trained with --test-fraction 0: it has no test split")
    text = read_text(trained_cfg.data)
    unknown = tokenizer.unknown(text)
    if unknown:
        raise UserError(f"{trained_cfg.data} has characters the model never saw: {name_chars(unknown)}")
    data = prepare_any_text(text, trained_cfg, tokenizer)
    log(f"{checkpoint}: epoch {payload['epoch']}, {count_parameters(model):,} parameters; data {trained_cfg.data} "
        f"in {data.mode} mode, split with seed {trained_cfg.seed}")
    for name, split in (("validation", data.val_split), ("test", data.test_split)):
        loss = evaluate(model, split, cfg.eval_batch, device, DeviceHooks(trained_cfg, device).autocast)
        size = (f"{split.n_tokens:,} characters" if tokenizer.unit == "character"
                else f"{split.n_tokens:,} {tokenizer.unit}s = {split.n_chars:,} characters")
        log(f"{name:>10} ({size}): {perplexity_report(loss, split, tokenizer.unit)}")
    if data.mode == "line":
        for line in completion_report(model, data, trained_cfg, device):
            log(line)


@dataclass
class Completion:
    """How well one model completes proverbs from their first half, taking its likeliest token."""
    proverbs: int = 0
    exact: int = 0  # completed to the last character, and stopped there
    right: int = 0  # characters of the second halves written in their place
    chars: int = 0  # characters of the second halves

    def __str__(self) -> str:
        return (f"{self.right / max(self.chars, 1):6.1%} of the characters right, {self.exact:>3} of {self.proverbs} "
                f"completed exactly ({self.exact / max(self.proverbs, 1):.1%})")


@torch.no_grad()
def complete_halves(next_ids, tokenizer: CharTokenizer, lines: list[str], context: int) -> Completion:
    """Give each line's first half (by characters), decode greedily with next_ids: (B, T) ids ->
    (B,) ids, until ⏎. Characters right: the true rest's length less the edits from it to what
    was written (section 16), so a character left out does not make all after it wrong."""
    groups = defaultdict(list)  # prompts of one length in token ids: one batch
    for line in lines:
        half = line[:len(line) // 2]
        prompt = [tokenizer.eol_id] + tokenizer.encode(half)
        groups[len(prompt)].append((prompt, line[len(half):]))
    result = Completion(proverbs=len(lines))
    for group in groups.values():
        ids = torch.tensor([prompt for prompt, _ in group])  # (B, T)
        ended = torch.zeros(len(group), dtype=torch.bool)
        for _ in range(max(len(rest) for _, rest in group) + 1):  # a token is at least one character
            chosen = next_ids(ids[:, -context:])  # (B,)
            ids, ended = torch.cat([ids, chosen[:, None]], dim=1), ended | (chosen == tokenizer.eol_id)
            if ended.all():
                break
        for row, (prompt, rest) in zip(ids.tolist(), group):
            written = tokenizer.decode(row[len(prompt):]).split(EOL)[0]
            result.exact += written == rest
            result.right += max(0, len(rest) - int(edit_distances(written, [rest])[0]))
            result.chars += len(rest)
    return result


def completion_report(model: TransformerLM, data: Data, cfg: Config, device) -> list[str]:
    """--eval: the model completing test and training proverbs, and the bigram the test ones."""
    model.eval()
    greedy = lambda ids: model(ids.to(device))[:, -1].argmax(-1).cpu()  # noqa: E731  (B, T) -> (B,)
    counting = Counting.of(data)  # (V, V) counts: the bigram's likeliest next token is its row's largest
    after = lambda ids: counting.counts[ids[:, -1]].argmax(-1)  # noqa: E731
    test = data.held_out_text[len(data.val_split):]  # the held-out lines after the validation ones
    trained = random.Random(cfg.seed).sample(data.train_text, min(len(test), len(data.train_text)))
    complete = lambda how, lines: complete_halves(how, data.tokenizer, lines, model.context)  # noqa: E731
    on_test, on_trained = complete(greedy, test), complete(greedy, trained)
    counted = complete(after, test) if counting is not None else None  # None: too many tokens to count pairs
    item = data.item  # proverbs, or the lines of another text
    rows = [(f"the {len(test)} test {item}s", on_test), (f"{len(trained)} training {item}s", on_trained)]
    rows += [(f"the bigram, the test {item}s", counted)] if counted else []
    return ([f"completing {item}s from their first half, greedily (the likeliest token each time; characters right: "
             "those of the true second half less the edits from it to what was written):"] + [f"      {name:<30} {c}" for name, c in rows]
            + [f"      {memorising_or_generalising(on_test, on_trained, counted, item)}"])


def memorising_or_generalising(on_test: Completion, on_trained: Completion, bigram: Completion | None,
                                item: str = "proverb") -> str:
    share = lambda c: c.right / max(c.chars, 1)  # noqa: E731
    test, trained = share(on_test), share(on_trained)
    floor = "" if bigram is None else (f"; the bigram gets {share(bigram):.0%}" + (
        ", as many: the model knows little more than pairs yet" if test <= share(bigram) + 0.02 else ""))
    if trained - test > 0.10:
        return (f"it completes the {item}s it read far better ({trained:.0%} of the characters against {test:.0%}): "
                f"much of what it knows is those lines by heart{floor}")
    return (f"it completes the {item}s it read about as well as new ones ({trained:.0%} of the characters against "
            f"{test:.0%}): what it learned carries over to {item}s it never saw{floor}")


def generate_from_checkpoint(cfg: Config, prompt: str, samples: int, checkpoint: Path, log=print):
    """--generate: load the checkpoint and print completions of prompt; no training."""
    if samples <= 0:
        raise UserError(f"--samples must be a positive whole number, got {samples}")
    model, tokenizer, trained_cfg, _ = load_checkpoint(checkpoint, pick_device(cfg.device))
    prompt = check_prompt(tokenizer, prompt)  # a clear error before anything else
    if trained_cfg.without:
        log(f"({checkpoint}: a model trained {without_label(trained_cfg)})")
    generator = torch.Generator().manual_seed(cfg.seed)
    for _ in range(samples):
        log(generate(model, tokenizer, prompt, Sampling.of(cfg), generator, stop_at_eol=trained_cfg.mode != "stream"))


RESUME_FIXED = ("data", "mode", "val_fraction", "test_fraction", "seed", "optimizer")  # the split and the optimizer


def config_of(typed: dict, preset: str) -> Config:
    """The defaults, changed by the preset, changed again by the flags typed."""
    flags = {f.name: tuple(typed[f.name]) if f.type == "tuple" else typed[f.name] for f in fields(RunConfig) if f.name in typed}
    return replace(RunConfig(), **{**PRESETS[preset], **flags})


def config_for_checkpoint(typed: Config, explicit: set, saved: Config, resume: bool) -> Config:
    """--resume: the checkpoint's settings, changed where the user typed a flag.
    --init-from: the typed settings, with the model's shape taken from the checkpoint.
    Either way, settings the checkpoint fixes cannot be changed."""
    fixed = SHAPE_FIELDS + (RESUME_FIXED if resume else ())
    for name in fixed:
        if name == "data" and name in explicit and (same_file(typed.data, saved.data) or not Path(saved.data).exists()):
            continue  # the same file by another path, or the text has moved and this is its new place
        if name in explicit and getattr(typed, name) != getattr(saved, name):
            has = (f"a model of characters ({flag_of(name)} is for --tokenizer bpe)"
                   if name == "vocab_size" and saved.tokenizer == "char" else getattr(saved, name))
            raise UserError(f"{flag_of(name)} cannot change when {'resuming' if resume else 'fine-tuning'}: the "
                            f"checkpoint has {has}" + ("; to train on another text use --init-from" if name == "data" else ""))
    if resume:
        moved = {"data": typed.data} if "data" in explicit else {}
        return replace(saved, **{name: getattr(typed, name) for name in explicit if name not in fixed}, **moved)
    return replace(typed, **{name: getattr(saved, name) for name in SHAPE_FIELDS})


def folder_of_its_own(cfg: Config, typed_data: bool) -> Config:
    """A new run on another text than the proverbs, with no --out, writes into a folder named
    after that text inside the usual one (--data book.txt: outputs/book/): never into the
    classroom run's folder."""
    if not typed_data or same_file(cfg.data, find_default_data(RunConfig(), False).data):
        return cfg
    return replace(cfg, out=str(Path(cfg.out) / folder_name_of(cfg.data)))


def folder_name_of(data: str) -> str:
    """The folder a text's run writes inside the usual one: its name without the extension, but
    never a folder the program writes itself (the presets', what-if/, class/), nor '.' or '..'."""
    stem = Path(data).stem.strip(". ")
    taken = {Path(settings["out"]).name for settings in PRESETS.values() if "out" in settings} | {"what-if", "class"}
    return f"{stem}-text" if stem in taken else stem or "text"


def folder_for_fine_tuning(cfg: Config, typed_out: bool, source: Path) -> Config:
    """--init-from never writes over the checkpoint it starts from. Without --out the run writes
    into a folder named after its text inside the usual one (--data otro.txt: outputs/otro/),
    so the classroom run's files stay as they are; an --out whose model.pt is the source is
    refused."""
    if typed_out:
        if same_file(Path(cfg.out) / "model.pt", source):
            raise UserError(f"--out {cfg.out} would write over {source}, the checkpoint this run starts from: "
                            f"leave out --out (the run then writes {Path(cfg.out) / folder_name_of(cfg.data)}/) "
                            f"or name another folder")
        return cfg
    base = Path(cfg.out) / folder_name_of(cfg.data)
    out, n = base, 1
    while same_file(out / "model.pt", source):  # outputs/otro/model.pt fine-tuned on otro.txt again
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return replace(cfg, out=str(out))


def writes_here() -> bool:
    """Is this the process that prints and writes: the only one, or torchrun's rank 0?"""
    return torchrun_world() == 1 or os.environ["RANK"] == "0"


def writing_folder_of(cfg: Config):
    """The lock on cfg.out (writing_folder) in the process that writes; with torchrun the other
    processes write nothing and take none."""
    if writes_here():
        return writing_folder(Path(cfg.out))
    prepare_output_dir(cfg.out)  # fails here as rank 0 fails in writing_folder: no process waits for one that left
    return contextlib.nullcontext()


def command_of_one_process(args) -> str | None:
    """--eval, --generate, --chat, --explorer or --class when one was given: they train nothing."""
    return next((flag for flag, on in (("--eval", args.eval), ("--generate", args.generate is not None),
                                       ("--chat", args.chat), ("--explorer", args.explorer),
                                       ("--class", args.class_file is not None)) if on), None)


def left_to_rank_0(args) -> bool:
    """True in the processes beside rank 0 when torchrun starts a command of one process: rank 0
    runs it alone and says so, so its output is written and printed once."""
    command, world = command_of_one_process(args), torchrun_world()
    if command is None or world == 1:
        return False
    if writes_here():
        print(f"note: {command} runs in one process: this one (rank 0); the {world - 1} other "
              f"process{'es' * (world > 2)} torchrun started do{'es' * (world == 2)} nothing")
    return not writes_here()


def check_not_an_output(cfg: Config, folder: Path | None = None):
    """A run never writes, nor removes, the file it reads. --data cannot be a file of --out that
    a run writes there, or that the earlier run listed as its own (removed at this run's first
    write); with `folder` (what-if/), nothing inside that folder at all."""
    out, data = Path(folder or cfg.out), Path(cfg.data)
    if folder is not None:
        clash = inside(data, out)
    else:
        clash = same_file(data.parent, out) and (data.name in manifest_names(out) or written_by_a_run(data.name))
    if clash:
        raise UserError(f"--data {cfg.data} is {'inside' if folder else 'a file of'} {out}/, where this run writes "
                        f"and replaces what a run wrote before: copy it elsewhere first, or give another --out")


def written_by_a_run(name: str) -> bool:
    """A name a run writes into its folder (its files, its pictures, its lock and list)."""
    return (name in OUTPUT_TEXTS + RUN_PICTURES + ("model.pt", MANIFEST, ".lock")
            or re.fullmatch(r"(epoch_\d+|attention_layer\d+)\.png", name) is not None)


def inside(path: Path, folder: Path) -> bool:
    """True when `path` is `folder` or lies anywhere below it (through '..' or links too)."""
    if name_problem(path) or name_problem(folder):  # no file has that name: compare the names as written
        return Path(os.path.abspath(path)).is_relative_to(os.path.abspath(folder))
    return path.resolve().is_relative_to(folder.resolve())


OUTPUT_TEXTS = ("parameters.txt", "table.txt", "tokens.txt", "README.md")  # the text files a run writes
RUN_PICTURES = ("loss.png", "embeddings.png", "positional_encoding.png", "evolution.gif", "explorer.html")


def in_notebook() -> bool:
    """True inside a Jupyter kernel (Jupyter, VS Code's notebooks), where sys.argv holds the
    kernel's own arguments and the plots should show in the notebook."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell"


def show_pictures_inline(finished: Finished):
    """In a notebook: show the run's pictures below the cell, those their Drawing marks inline,
    each with its alternative text (the gallery's title and first sentence); the wide ones (the
    attention maps) take the whole width of the notebook, so that their labels stay readable."""
    import html
    from IPython.display import HTML, display
    for d in finished.drawings:
        if d.inline:
            path = finished.setup.out / d.file
            picture = base64.b64encode(path.read_bytes()).decode("ascii")
            alt = html.escape(f"{d.title}. {d.text.split('. ')[0]}.", quote=True)
            width = "100%" if d.file.startswith("attention") else "auto"
            display(HTML(f"<p><b>{html.escape(str(path))}</b>: {html.escape(d.title.split(': ', 1)[-1])}</p>"
                         f'<img src="data:image/png;base64,{picture}" alt="{alt}" style="width: {width}; max-width: 100%">'))


def notebook_log(line: str, width: int = 96):
    """print() for a notebook: a long line is wrapped between words, indented like itself, so
    that the notebook never has to break one in the middle."""
    import textwrap
    for part in str(line).split("\n"):
        indent = " " * (len(part) - len(part.lstrip(" ")) + 2)
        print(textwrap.fill(part, width, subsequent_indent=indent, break_long_words=False,
                            break_on_hyphens=False, drop_whitespace=True) if len(part) > width else part)


def typed_settings(argv: list[str]) -> tuple[dict, set]:
    """The flags typed (and only those), and the names of the settings among them."""
    typed = vars(build_parser(defaults=False).parse_args(argv))
    return typed, set(typed) & {f.name for f in fields(RunConfig)}


def settings_of(args, argv: list[str]) -> tuple[Config, set]:
    """The run's settings (defaults, preset, flags, checked) and the names of those typed."""
    typed, explicit = typed_settings(argv)
    cfg = find_default_data(validate(config_of(typed, args.preset)), "data" in explicit)
    if "vocab_size" in explicit and cfg.tokenizer != "bpe" and not (args.resume or args.init_from):
        raise UserError("--vocab-size sets how many pieces --tokenizer bpe learns: add --tokenizer bpe")
    if "out" not in explicit and not (args.resume or args.init_from or command_of_one_process(args)):
        cfg = folder_of_its_own(cfg, "data" in explicit)
    if not command_of_one_process(args) and cfg.pictures:
        need_packages("matplotlib", "networkx")  # a run that trains draws its pictures after training
    if args.chat_log and not args.chat:
        raise UserError("--chat-log works only with --chat")
    check_names({"--checkpoint": args.checkpoint, "--init-from": args.init_from, "--chat-log": args.chat_log})
    return cfg, explicit


def train_from_checkpoint(args, cfg: Config, explicit: set, checkpoint: Path):
    """--resume (the checkpoint's run, going on) or --init-from (fine-tuning on --data)."""
    source = checkpoint if args.resume else Path(args.init_from)
    _, _, saved, _ = load_checkpoint(source, "cpu")
    cfg = validate(config_for_checkpoint(cfg, explicit, saved, args.resume))
    if args.init_from:
        cfg = folder_for_fine_tuning(cfg, "out" in explicit, source)
    with writing_folder_of(cfg):
        run(cfg, resume=source if args.resume else None, init_from=None if args.resume else source)
    end_distributed()


def run_command(argv: list[str], notebook: bool):
    """What the flags ask for: a new run (the default), --resume, --init-from, --eval, --generate,
    --chat, --what-if or --explorer."""
    args = build_parser().parse_args(argv)
    if args.workbook is not None or args.check is not None or args.exercises is not None:
        return practise(args, argv)
    cfg, explicit = settings_of(args, argv)
    refuse_an_unfinished_workbook(args.lang, print if writes_here() else lambda line: None)
    checkpoint = Path(args.checkpoint or Path(cfg.out) / "model.pt")
    if args.resume or args.init_from:
        train_from_checkpoint(args, cfg, explicit, checkpoint)
    elif left_to_rank_0(args):
        return  # a command of one process, started by torchrun: rank 0 runs it, the others nothing
    elif args.eval:
        evaluate_checkpoint(cfg, checkpoint, cfg.data if "data" in explicit else None)
    elif args.generate is not None:
        generate_from_checkpoint(cfg, args.generate, args.samples, checkpoint)
    elif args.chat:
        chat(cfg, checkpoint, args.chat_log, data=cfg.data if "data" in explicit else None)
    elif args.what_if:
        if cfg.without:
            raise UserError("--what-if switches every idea off in turn: leave out --without")
        with writing_folder_of(replace(cfg, out=str(Path(cfg.out) / "what-if"))):
            what_if(cfg, log=print if writes_here() else lambda line: None)
        end_distributed()
    elif args.class_file is not None:
        check_names({"--class": args.class_file})
        need_packages("matplotlib")
        with writing_folder_of(replace(cfg, out=str(Path(cfg.out) / "class"))):
            class_experiment(Path(args.class_file), Path(cfg.out))
    elif args.explorer:
        explorer_from_checkpoint(cfg, checkpoint, Path(cfg.out) if "out" in explicit else checkpoint.parent)
    else:
        with writing_folder_of(cfg):
            finished = run(cfg, log=notebook_log if notebook else print)
        end_distributed()
        if notebook and finished is not None:
            show_pictures_inline(finished)


def main(argv=None) -> int:
    """The command line: parse the flags, do what they ask, turn a UserError into one line and
    exit code 2. In a notebook, with no argv, it runs the classroom run with the defaults."""
    notebook = in_notebook()
    console_stand_ins()
    guard = None if notebook else GuardedOutput(sys.stdout)  # a closed pipe or a full device: one line, no traceback
    if guard is not None:
        sys.stdout = guard
    if not notebook:
        draw_into_files_only()
    if argv is None:
        argv = [] if notebook else sys.argv[1:]  # a kernel's own arguments are not ours
    try:
        with signals_like_ctrl_c():  # SIGTERM, SIGHUP, ...: stopped like Ctrl-C, no file left half written
            exit_code = run_command(list(argv), notebook)
    except (UserError, OSError) as e:  # an OSError: the file system refused what no check foresaw
        return refused(e)
    except KeyboardInterrupt as stop:
        return stopped(stop)
    except ConsoleLost as lost:
        closed = isinstance(lost.error, BrokenPipeError)  # its reader went away (`| head -1`): stop, quietly
        say(("stopped: the output was closed (a broken pipe)" if closed else f"error: the output cannot be written "
             f"({lost}): stopped") + (f"; {lost.kept}" if lost.kept else "") + "; every file written is whole")
        return 141 if closed else 2  # 141 = 128 + SIGPIPE, as shells report a process a closed pipe stopped
    finally:
        if guard is not None:
            sys.stdout = guard.stream
    return exit_code or 0  # --check: 1 while an exercise does not pass


def draw_into_files_only():
    """matplotlib's Agg backend: never a window, never a block; the user's MPLBACKEND (even a
    misspelt one) never matters here, and is left as it was for whatever this process starts."""
    backend = os.environ.pop("MPLBACKEND", None)
    try:
        import matplotlib
        matplotlib.use("Agg")
    except ImportError:  # not installed: a run that draws says so (need_packages), the others need none
        pass
    finally:
        if backend is not None:
            os.environ["MPLBACKEND"] = backend


def refused(e: Exception) -> int:
    """A UserError (or an OSError no check foresaw) as one line `error: ...`: exit code 2."""
    if isinstance(e, OSError):
        e = UserError(f"{show_path(e.filename) + ': ' if e.filename else ''}{e.strerror or e}")
    if not os.environ.get("TORCHELASTIC_RUN_ID") or os.environ.get("RANK") == "0" or getattr(e, "heard", False):
        say(f"error: {e}")  # under torchrun one line, from rank 0: each process hits the same bad flag
    end_distributed(together=False)
    return 2


def stopped(stop: KeyboardInterrupt) -> int:
    """Ctrl-C or a signal: one line, and 128 + the signal's number, as shells report it."""
    terminated = isinstance(stop, Terminated)
    with contextlib.suppress(OSError, ValueError):
        print(file=sys.stderr)  # after a progress line, or the ^C the terminal echoed
    say(f"stopped by {stop.name}" if terminated else "interrupted")
    return 128 + (stop.signum if terminated else 2)


# %% [markdown]
# ## L. Practice: the workbook and its checks
#
# `python LLM.py --workbook DIR` writes `DIR/LLM.py`, this book with the bodies of fifteen of
# Part I's functions taken out (`--exercises attention,causal_mask`: only those), and
# `DIR/refranes.txt` beside it. Each blank function keeps its signature, its docstring and its
# section, and says in a "your turn" comment what to compute, the shapes in and out and where to
# look; its body raises `NotImplementedError` until the student writes it. `python LLM.py --check`
# (in the book, or in a workbook) checks each exercise's function against an independent
# reference: PyTorch's built-in (`F.embedding`, `F.scaled_dot_product_attention`,
# `nn.TransformerEncoderLayer`, `torch.optim.Adam`, `F.softmax`, ...) or values worked out by
# hand, never the function itself. Each is given several shapes and seeds and the edge cases (a
# sequence of one token, a fully padded row, top-k 1, a tiny top-p, warm-up step 0, Adam's first
# step). A wrong answer is compared with the usual mistakes, each computed here on purpose (d_k
# for √d_k, softmax over the wrong axis, sin and cos swapped, ...), to name the one it matches.
# Every exercise is checked alone: the encoder layer's with PyTorch's attention and feed-forward
# in place of the student's, `encode_lines` with a tokenizer of the check's own, so one mistake
# is reported once, where it is. A student function that raises, runs past `CHECK_SECONDS` or
# returns the wrong type or shape is reported as such, never with a traceback.
#
# A workbook lists its exercises in `STUDENT_EXERCISES`. It trains only once they all pass
# (`python LLM.py` says which one comes first otherwise), and then with the story's code, on any
# device: the student's functions are the ones that run, and the run names them. Filled with the
# book's own bodies, a workbook prints the book's losses.

# %%
STUDENT_EXERCISES: tuple = ()  # a workbook's copy names here the functions its student writes
WORKBOOK_LANG = ""  # ... and the language its comments were written in ("" in the book)
CHECK_SECONDS = 10.0  # the longest a student function may run on one input
LANGUAGES = ("en", "es")


@dataclass
class Exercise:
    """One function of Part I for the student to write."""
    name: str  # as Part I names it: a function, or Class.method
    section: int
    level: int  # 1: a line or two from the formula; 2: shapes to keep straight; 3: an algorithm
    minutes: int  # about how long it takes
    task: dict  # language -> (what to compute, the shapes in and out)
    cases: object  # () -> [Case]: the inputs, what the reference gives, the usual mistakes


@dataclass
class Case:
    """One input of an exercise's check."""
    shown: str  # the call, as code: what the student can run to see it fail
    run: object  # () -> the student's answer
    expected: dict  # part -> the reference's value (a tensor, a list, a number, None)
    mistakes: dict = field(default_factory=dict)  # hint name -> () -> the parts that mistake gives
    parts: object = None  # answer -> {part: value}; raises WrongAnswer if it cannot
    raises: type | None = None  # the exception the book raises on this input, if it should
    error_hints: dict = field(default_factory=dict)  # exception type -> hint (for `raises`: when none came)


class WrongAnswer(Exception):
    """An answer of the wrong type or form: its message says what was expected."""


class TookTooLong(Exception):
    """A student function ran past CHECK_SECONDS."""


@dataclass
class Verdict:
    """What the check found for one exercise."""
    exercise: Exercise
    status: str  # "done", "not started" or "wrong"
    shown: str = ""  # the input that fails
    problem: str = ""  # the first entry that differs (expected and actual), or what it raised
    hint: str = ""  # the usual mistake it matches, in words


def speak(key: str, lang: str, **values) -> str:
    """One message of the checks and the workbook in the language chosen."""
    return WORDS[key][LANGUAGES.index(lang)].format(**values)


def hint_text(key: str, lang: str) -> str:
    return HINTS[key][LANGUAGES.index(lang)]


def language(asked: str | None) -> str:
    """--lang, else the workbook's own, else the locale's (es for Spanish), else English."""
    if asked:
        return asked
    if WORKBOOK_LANG:
        return WORKBOOK_LANG
    import locale
    names = [os.environ.get(v, "") for v in ("LC_ALL", "LC_MESSAGES", "LANG", "LANGUAGE")]
    with contextlib.suppress(ValueError, TypeError):
        names.append(locale.getlocale()[0] or "")
    first = next((n for n in names if n and n not in ("C", "POSIX", "C.UTF-8")), "")
    return "es" if first.lower().startswith(("es", "spanish")) else "en"


@contextlib.contextmanager
def time_limit(seconds: float):
    """Stop what runs inside after `seconds` (a student's endless loop) with TookTooLong: a
    timer interrupts the main thread as Ctrl-C would, on every system."""
    import _thread
    import threading
    fired = threading.Event()
    timer = threading.Timer(seconds, lambda: (fired.set(), _thread.interrupt_main()))
    timer.start()
    try:
        yield
    except KeyboardInterrupt:
        if not fired.is_set():
            raise
        raise TookTooLong from None
    finally:
        timer.cancel()


def where_it_failed(error: BaseException) -> str:
    """'LLM.py, line 440': the last line of this file the error went through."""
    import traceback
    here = Path(globals().get("__file__", "LLM.py")).name
    frames = [f for f in traceback.extract_tb(error.__traceback__) if Path(f.filename).name == here]
    return f"{here}, line {frames[-1].lineno}" if frames else here


def number_text(x) -> str:
    x = float(x)
    return "nan" if x != x else f"{x:.6g}"


def differs(expected: dict, actual: dict, lang: str) -> str | None:
    """The first part whose value differs, in words (expected, then actual); None if all agree."""
    for name, want in expected.items():
        problem = value_differs(name, want, actual.get(name), lang)
        if problem:
            return problem
    return None


def value_differs(name: str, want, got, lang: str) -> str | None:
    if isinstance(want, str):
        return None if want == got else speak("should_be", lang, name=name, want=want, got=got)
    if isinstance(want, torch.Tensor):
        return tensor_differs(name, want, got, lang)
    if want is None or isinstance(want, (int, float)):
        if want is None or got is None:
            shown = lambda x: "None" if x is None else number_text(x)  # noqa: E731
            return None if want is got else speak("should_be", lang, name=name, want=shown(want), got=shown(got))
        if not isinstance(got, (int, float)) or isinstance(got, bool):
            return speak("not_number", lang, name=name, got=type(got).__name__)
        close = math.isclose(float(want), float(got), rel_tol=1e-5, abs_tol=1e-9)
        return None if close else speak("should_be", lang, name=name, want=number_text(want), got=number_text(got))
    if len(got) != len(want):
        return speak("length", lang, name=name, want=len(want), got=len(got), value=list(got)[:12])
    index = next((i for i, (w, g) in enumerate(zip(want, got)) if w != g), None)
    return None if index is None else speak("should_be", lang, name=f"{name}[{index}]", want=want[index],
                                            got=got[index])


def tensor_differs(name: str, want: torch.Tensor, got, lang: str) -> str | None:
    if not isinstance(got, torch.Tensor):
        return speak("not_tensor", lang, name=name, got=type(got).__name__)
    if tuple(got.shape) != tuple(want.shape):
        return speak("shape", lang, name=name, want=tuple(want.shape), got=tuple(got.shape))
    if (want.dtype == torch.bool) != (got.dtype == torch.bool) or got.is_complex():
        return speak("dtype", lang, name=name, want=want.dtype, got=got.dtype)
    w, g = want.detach().double().cpu(), got.detach().double().cpu()
    same = torch.isclose(g, w, rtol=1e-4, atol=1e-5, equal_nan=True)
    if bool(same.all()):
        return None
    index = tuple((~same).nonzero()[0].tolist())
    at = f"{name}[{', '.join(map(str, index))}]" if index else name
    shown = (lambda t: str(bool(t[index]))) if want.dtype == torch.bool else (lambda t: number_text(t[index]))
    return speak("should_be", lang, name=at, want=shown(w), got=shown(g))


def check_exercise(exercise: Exercise, lang: str) -> Verdict:
    """Run every case of one exercise: done, not started, or wrong at the first case that fails,
    named by the usual mistake that gives the student's answers to all of them."""
    try:
        with time_limit(CHECK_SECONDS):
            cases = exercise.cases()
    except NotImplementedError:  # a blank __init__ of the student's class: not started either
        return Verdict(exercise, "not started")
    answers, first_wrong = [], None
    for case in cases:
        outcome = answer_of(exercise, case, lang)
        if isinstance(outcome, Verdict):
            return outcome
        if outcome is not None:
            answers.append((case, outcome))
            problem = differs(case.expected, outcome, lang)
            first_wrong = first_wrong or (problem and (case, problem))
    if first_wrong is None:
        return Verdict(exercise, "done")
    hint = usual_mistake(first_wrong[0], answers, lang)
    return Verdict(exercise, "wrong", first_wrong[0].shown, first_wrong[1], hint_text(hint, lang) if hint else "")


def answer_of(exercise: Exercise, case: Case, lang: str):
    """The student's answer to one case as parts, None when it raised as it should, or the
    Verdict when it cannot be compared (not started, raised, too long, the wrong form)."""
    wrong = lambda problem, hint="": Verdict(exercise, "wrong", case.shown, problem,  # noqa: E731
                                             hint_text(hint, lang) if hint else "")
    try:
        with time_limit(CHECK_SECONDS):
            answer = case.run()
    except NotImplementedError:
        return Verdict(exercise, "not started")
    except TookTooLong:
        return wrong(speak("too_long", lang, seconds=f"{CHECK_SECONDS:g}"), "endless")
    except (Exception, SystemExit) as error:  # noqa: B014 -- a student's code may raise anything
        if case.raises is not None and isinstance(error, case.raises):
            return None
        said = speak("raised", lang, error=type(error).__name__, text=one_line(str(error))[:200],
                     where=where_it_failed(error))
        return wrong(said, mistake_of_error(case, error))
    if case.raises is not None:
        return wrong(speak("should_raise", lang, error=case.raises.__name__, got=one_line(repr(answer))[:120]),
                     case.error_hints.get(case.raises, ""))
    if answer is None:
        return wrong(speak("returned_none", lang), "no_return")
    try:
        return case.parts(answer) if case.parts else {"result": answer}
    except WrongAnswer as form:
        return wrong(speak("form", lang, form=form.args[0][LANGUAGES.index(lang)]))
    except Exception as error:  # noqa: BLE001 -- an answer of a kind no case foresaw
        return wrong(speak("odd_answer", lang, kind=type(answer).__name__, error=one_line(str(error))[:120]))


def usual_mistake(failing: Case, answers: list, lang: str) -> str:
    """The usual mistake that gives the student's answer to the failing case (and, when several
    do, to the most of the other cases: one input alone may not tell two apart), or ''."""
    def agrees(hint: str, case: Case, parts: dict) -> bool:
        with contextlib.suppress(Exception):
            return hint in case.mistakes and differs(case.mistakes[hint](), parts, lang) is None
        return False
    failing_parts = next(parts for case, parts in answers if case is failing)
    candidates = [hint for hint in failing.mistakes if agrees(hint, failing, failing_parts)]
    return max(candidates, default="", key=lambda hint: sum(agrees(hint, case, parts) for case, parts in answers))


def mistake_of_error(case: Case, error: BaseException) -> str:
    """A usual mistake told by the exception itself (a KeyError for an unknown character, say)."""
    return next((hint for kind, hint in case.error_hints.items() if isinstance(error, kind)), "")


def pick_exercises(names, lang: str) -> list[Exercise]:
    """The exercises named (a function, Class.method, or a method's own name when it is unique),
    in reading order; none named: all of them."""
    wanted = [n.strip() for name in names for n in name.split(",") if n.strip()]
    if not wanted:
        return list(EXERCISES)
    chosen = set()
    for name in wanted:
        matches = [e for e in EXERCISES if name.lower() in (e.name.lower(), e.name.split(".")[-1].lower())]
        if len(matches) != 1:
            known = ", ".join(e.name for e in EXERCISES)
            raise UserError(speak("unknown_exercise", lang, name=name, known=known))
        chosen.add(matches[0].name)
    return [e for e in EXERCISES if e.name in chosen]


def check_exercises(names=(), lang: str | None = None, log=print) -> int:
    """--check: one line per exercise (done, not started, or wrong with the input, the first
    entry that differs and a hint), then 'N of M exercises done'. Returns the exit code: 0 if all
    pass, 1 otherwise."""
    lang = language(lang)
    exercises = pick_exercises(names or STUDENT_EXERCISES, lang)
    log(speak("checking", lang))
    verdicts = [check_exercise(e, lang) for e in exercises]
    width = max(len(e.name) for e in exercises)
    for verdict in verdicts:
        for line in verdict_lines(verdict, width, lang):
            log(line)
    done = sum(v.status == "done" for v in verdicts)
    log(speak("tally", lang, done=done, total=len(verdicts)))
    return 0 if done == len(verdicts) else 1


def verdict_lines(verdict: Verdict, width: int, lang: str) -> list[str]:
    e = verdict.exercise
    status = speak(verdict.status.replace(" ", "_"), lang)
    place = speak("place", lang, section=e.section, level=e.level, minutes=e.minutes)
    lines = [f"  {status:<12} {e.name:<{width}}  {place}"]
    if verdict.status == "wrong":
        pad = " " * 15
        lines += [pad + speak("input", lang, shown=verdict.shown), pad + verdict.problem]
        lines += [pad + speak("hint", lang, hint=verdict.hint)] if verdict.hint else []
    return lines


def exercises_left() -> list[Verdict]:
    """A workbook's exercises that do not pass their check yet, in reading order."""
    return [v for v in (check_exercise(e, "en") for e in pick_exercises(STUDENT_EXERCISES, "en"))
            if v.status != "done"]


def refuse_an_unfinished_workbook(lang: str | None, log=print):
    """In a workbook: train only once every exercise passes, and say whose code runs."""
    if not STUDENT_EXERCISES:
        return
    lang = language(lang)
    left = exercises_left()
    if left:
        first = left[0].exercise
        raise UserError(speak("unfinished", lang, n=len(left), name=first.name, section=first.section,
                              status=speak(left[0].status.replace(" ", "_"), lang)))
    log(speak("yours", lang, n=len(STUDENT_EXERCISES), names=", ".join(STUDENT_EXERCISES)))


# %% [markdown]
# The checks, exercise by exercise, in reading order. Each `*_cases` function builds the inputs,
# the reference's answer (a PyTorch built-in, or numbers worked out by hand and written down)
# and the answers of the usual mistakes; `Case.run` is the only call of the student's function.

# %%
def seeded(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def built(seed: int, make):
    """make(), its random initialisation drawn from `seed`, the global generator left as it was."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return make()


@contextlib.contextmanager
def standing_in(**functions):
    """Part I's functions of these names replaced by the check's own while inside: a class of the
    student's is built even before its helpers are written (EncoderLayer needs causal_mask)."""
    book = globals()
    kept = {name: book[name] for name in functions}
    book.update(functions)
    try:
        yield
    finally:
        book.update(kept)


def ids_parts(answer) -> dict:
    if not isinstance(answer, (list, tuple)) or not all(isinstance(i, int) and not isinstance(i, bool)
                                                        for i in answer):
        raise WrongAnswer((f"a list of ints (ids); it returned {type(answer).__name__}",
                           f"una lista de enteros (ids); devolvió {type(answer).__name__}"))
    return {"ids": list(answer)}


def encode_cases() -> list[Case]:
    tokenizer = CharTokenizer("sal y agua")  # ids by hand: ⏎ 0, ␣ 1, a 2, g 3, l 4, s 5, u 6, y 7
    worked = {"": [], "a": [2], "agua y sal": [2, 3, 6, 2, 1, 7, 1, 5, 2, 4], "sal\n": [5, 2, 4, 0]}
    cases = [Case(f'CharTokenizer("sal y agua").encode({text!r})', lambda text=text: tokenizer.encode(text),
                  {"ids": ids}, {"ids_from_one": lambda ids=ids: {"ids": [i + 1 for i in ids]},
                                 "ord": lambda text=text: {"ids": [ord(c) for c in text]},
                                 "chars": lambda text=text: {"ids": list(text)}}, ids_parts)
             for text, ids in worked.items()]
    unknown = Case('CharTokenizer("sal y agua").encode("sal!")', lambda: tokenizer.encode("sal!"), {},
                   raises=UnknownCharacterError, error_hints=dict.fromkeys(
                       (UnknownCharacterError, LookupError, ValueError), "unknown_char"))
    return cases + [unknown]


def merged_by_mistake(ids, pair, new, step=2, stop=0, either=False) -> list[int]:
    """merge_pair with a usual mistake: step 1 after a merge, the last id never looked at, (b, a)
    merged too."""
    out, i = [], 0
    while i < len(ids) - stop:
        joined = tuple(ids[i:i + 2]) in (pair, pair[::-1] if either else pair)
        out.append(new if joined else ids[i])
        i += step if joined else 1
    return out


def merged_twice(ids, pair, new) -> list[int]:
    """Overlapping pairs both merged: 1 1 1 with (1, 1) -> 5 5."""
    starts = {i for i in range(len(ids) - 1) if (ids[i], ids[i + 1]) == pair}
    return [new if i in starts else ids[i] for i in range(len(ids)) if i in starts or i - 1 not in starts]


def merge_cases() -> list[Case]:
    worked = [([1, 2, 3, 1, 2], (1, 2), 9, [9, 3, 9]), ([1, 1, 1], (1, 1), 5, [5, 1]),
              ([1, 1, 1, 1], (1, 1), 5, [5, 5]), ([2, 1], (1, 2), 9, [2, 1]), ([], (1, 2), 9, []),
              ([7], (7, 7), 8, [7]), ([3, 1, 2], (1, 2), 9, [3, 9]), ([1, 2, 3], (1, 2), 9, [9, 3])]
    for seed in range(4):  # longer ones, the reference Python's own str.replace (left to right, no overlap)
        draw = random.Random(seed)
        ids, pair = [draw.randrange(4) for _ in range(25)], (draw.randrange(4), draw.randrange(4))
        letters = "".join(chr(97 + i) for i in ids).replace(chr(97 + pair[0]) + chr(97 + pair[1]), chr(97 + 9))
        worked.append((ids, pair, 9, [ord(c) - 97 for c in letters]))
    return [Case(f"merge_pair({ids}, {pair}, {new})", lambda ids=ids, pair=pair, new=new: merge_pair(list(ids), pair, new),
                 {"ids": expected},
                 {"overlap": lambda a=(ids, pair, new): {"ids": merged_twice(*a)},
                  "skip_both": lambda a=(ids, pair, new): {"ids": merged_by_mistake(*a, step=1)},
                  "last_dropped": lambda a=(ids, pair, new): {"ids": merged_by_mistake(*a, stop=1)},
                  "pair_order": lambda a=(ids, pair, new): {"ids": merged_by_mistake(*a, either=True)}}, ids_parts)
            for ids, pair, new, expected in worked]


class CheckTokenizer:
    """A character tokenizer of the check's own (⏎ 0, a 1, b 2, c 3): encode_lines is checked
    whether or not CharTokenizer.encode is written yet."""
    chars, eol_id, unit, vocab_size = [EOL, "a", "b", "c"], 0, "character", 4
    ids = {c: i for i, c in enumerate(chars)}
    def encode(self, text: str) -> list[int]: return [self.ids[c] for c in text]
    def decode(self, ids) -> str: return "".join(self.chars[int(i)] for i in ids)
    def token_text(self, i: int) -> str: return self.chars[int(i)]


def lines_by_mistake(lines, context, shift=1, opening=True, closing=True, keep=1, pad=IGNORE, extra=0) -> dict:
    """encode_lines with a usual mistake: targets not shifted, no opening or closing ⏎, cut to
    `context`, targets padded with ⏎, lengths one too long."""
    sequences = [([0] if opening else []) + CheckTokenizer().encode(line) + ([0] if closing else []) for line in lines]
    sequences = [s[:context + keep] for s in sequences]
    L = max(len(s) - 1 for s in sequences)
    inputs, targets = torch.zeros(len(lines), L, dtype=torch.long), torch.full((len(lines), L), pad)
    for row, s in enumerate(sequences):
        inputs[row, :len(s) - 1] = torch.tensor(s[:-1])
        targets[row, :len(s) - 1] = torch.tensor(s[shift:len(s) - 1 + shift])
    return {"inputs": inputs, "targets": targets, "lengths": torch.tensor([len(s) - 1 + extra for s in sequences]),
            "n_chars": sum(len(s) - 1 for s in sequences)}


def split_parts(answer) -> dict:
    try:
        return {"inputs": answer.inputs, "targets": answer.targets, "lengths": answer.lengths,
                "n_chars": int(answer.n_chars)}
    except (AttributeError, TypeError, ValueError):
        raise WrongAnswer((f"a LineSplit(inputs, targets, lengths, n_chars); it returned {type(answer).__name__}",
                           f"un LineSplit(inputs, targets, lengths, n_chars); devolvió {type(answer).__name__}"))


def encode_lines_cases() -> list[Case]:
    P = IGNORE  # worked by hand with ⏎ 0, a 1, b 2, c 3: each line is ⏎ line ⏎, cut to context + 1
    worked = [(["ab", "c"], 8, [[0, 1, 2], [0, 3, 0]], [[1, 2, 0], [3, 0, P]], [3, 2], 5),
              (["abc", "a", "cb"], 8, [[0, 1, 2, 3], [0, 1, 0, 0], [0, 3, 2, 0]],
               [[1, 2, 3, 0], [1, 0, P, P], [3, 2, 0, P]], [4, 2, 3], 9),
              (["abcab"], 3, [[0, 1, 2]], [[1, 2, 3]], [3], 3),
              (["a"], 1, [[0]], [[1]], [1], 1),
              (["ba", "abcabc"], 4, [[0, 2, 1, 0], [0, 1, 2, 3]], [[2, 1, 0, P], [1, 2, 3, 1]], [3, 4], 7)]
    mistakes = {"not_shifted": dict(shift=0), "pad_target": dict(pad=0), "cut_context": dict(keep=0),
                "no_opening": dict(opening=False), "no_closing": dict(closing=False), "lengths": dict(extra=1)}
    return [Case(f"encode_lines({lines}, tokenizer, context={context})  # ⏎ 0, a 1, b 2, c 3",
                 lambda lines=lines, context=context: encode_lines(list(lines), CheckTokenizer(), context),
                 {"inputs": torch.tensor(i), "targets": torch.tensor(t), "lengths": torch.tensor(n), "n_chars": c},
                 {hint: (lambda lines=lines, context=context, how=how: lines_by_mistake(lines, context, **how))
                  for hint, how in mistakes.items()}, split_parts)
            for lines, context, i, t, n, c in worked]


def tensor_parts(name: str):
    return lambda answer: {name: answer}


def embedding_cases() -> list[Case]:
    cases = []
    for seed, (V, C, B, T) in enumerate([(7, 8, 2, 5), (3, 4, 1, 1), (11, 6, 3, 4)]):
        table = built(seed, lambda: ScaledEmbedding(V, C))
        idx = torch.randint(V, (B, T), generator=seeded(seed))
        rows = F.embedding(idx, table.weight.detach())  # PyTorch's lookup: (B, T) -> (B, T, C)
        cases.append(Case(f"ScaledEmbedding({V}, {C})(torch.randint({V}, ({B}, {T})))",
                          lambda table=table, idx=idx: table(idx.clone()), {"x": rows * math.sqrt(C)},
                          {"no_scale": lambda r=rows: {"x": r}, "scale_c": lambda r=rows, C=C: {"x": r * C},
                           "divided": lambda r=rows, C=C: {"x": r / math.sqrt(C)}}, tensor_parts("x")))
    return cases


def encoding_by_hand(T: int, C: int, swap=False, exponent="2i", start=0, base=10000.0, halves=False):
    """PE element by element with math.sin and math.cos (and the usual mistakes, on request)."""
    rows = []
    for pos in range(start, T + start):
        row = []
        for j in range(C):
            wave, odd = (j % ((C + 1) // 2), j >= (C + 1) // 2) if halves else (j // 2, j % 2 == 1)
            power = {"2i": 2 * wave, "i": wave, "j": j}[exponent]
            angle = pos / base ** (power / C)
            row.append(math.cos(angle) if odd != swap else math.sin(angle))
        rows.append(row)
    return torch.tensor(rows, dtype=torch.float64)


def positional_cases() -> list[Case]:
    mistakes = {"sin_cos": dict(swap=True), "exponent_i": dict(exponent="i"), "exponent_j": dict(exponent="j"),
                "from_one": dict(start=1), "halves": dict(halves=True), "base": dict(base=1000.0)}
    return [Case(f"sinusoidal_positional_encoding({T}, {C})", lambda T=T, C=C: sinusoidal_positional_encoding(T, C),
                 {"pe": encoding_by_hand(T, C)},
                 {hint: (lambda T=T, C=C, how=how: {"pe": encoding_by_hand(T, C, **how)}) for hint, how in mistakes.items()},
                 tensor_parts("pe"))
            for T, C in [(1, 4), (6, 8), (5, 7), (40, 32)]]


def reference_causal_mask(T: int, device=None) -> torch.Tensor:
    """PyTorch's own causal mask (0 where allowed, -inf in the future), as booleans: True = may attend."""
    return (nn.Transformer.generate_square_subsequent_mask(T) == 0).to(device)


def causal_mask_cases() -> list[Case]:
    device = Case("causal_mask(4, device='meta')", lambda: causal_mask(4, device="meta"), {"device": "meta"},
                  {"device_ignored": lambda: {"device": "cpu"}},
                  lambda answer: {"device": getattr(getattr(answer, "device", None), "type", None)})
    cases = []
    for T in (1, 2, 5, 9):
        want = reference_causal_mask(T)
        cases.append(Case(f"causal_mask({T})", lambda T=T: causal_mask(T), {"mask": want},
                          {"transposed": lambda w=want: {"mask": w.T}, "inverted": lambda w=want: {"mask": ~w},
                           "no_diagonal": lambda T=T: {"mask": torch.ones(T, T, dtype=torch.bool).tril(-1)},
                           "one_ahead": lambda T=T: {"mask": torch.ones(T, T, dtype=torch.bool).tril(1)}},
                          tensor_parts("mask")))
    return cases + [device]


def attention_by_mistake(q, k, v, mask, divide_by=None, axis=-1, mask_rule="keep") -> dict:
    """attention with a usual mistake: another divisor, softmax over the other axis, the mask
    inverted, ignored, or applied after the softmax (the weights no longer add up to 1)."""
    scores = q @ k.transpose(-2, -1) / (math.sqrt(q.size(-1)) if divide_by is None else divide_by)
    if mask is not None and mask_rule in ("keep", "invert"):
        scores = scores.masked_fill(~mask if mask_rule == "keep" else mask, float("-inf"))
    weights = scores.softmax(dim=axis)
    if mask is not None and mask_rule == "after":
        weights = weights.masked_fill(~mask, 0.0)
    return {"output": weights @ v, "weights": weights}


def pair_parts(first: str, second: str):
    def parts(answer) -> dict:
        if not isinstance(answer, (tuple, list)) or len(answer) != 2:
            raise WrongAnswer((f"a pair ({first}, {second}); it returned {type(answer).__name__}",
                               f"un par ({first}, {second}); devolvió {type(answer).__name__}"))
        return {first: answer[0], second: answer[1]}
    return parts


def attention_cases() -> list[Case]:
    cases = []
    for (B, H, T, D), kind, seed in [((2, 3, 5, 4), "causal", 1), ((1, 1, 1, 8), "causal", 2),
                                     ((2, 2, 6, 16), None, 3), ((1, 2, 4, 4), "random", 4)]:
        g = seeded(seed)
        q, k, v = (torch.randn(B, H, T, D, generator=g) for _ in range(3))
        random_mask = (torch.rand(T, T, generator=g) < 0.5) | torch.eye(T, dtype=torch.bool)
        mask = {"causal": reference_causal_mask(T), "random": random_mask, None: None}[kind]
        identity = torch.eye(T).expand(B, H, T, T)  # values = the identity: the output is the weights
        expected = {"output": F.scaled_dot_product_attention(q, k, v, attn_mask=mask),
                    "weights": F.scaled_dot_product_attention(q, k, identity, attn_mask=mask)}
        how = {"d_k": dict(divide_by=D), "no_scaling": dict(divide_by=1.0), "times": dict(divide_by=D ** -0.5),
               "axis": dict(axis=-2), "mask_inverted": dict(mask_rule="invert"), "mask_ignored": dict(mask_rule="ignore"),
               "mask_after": dict(mask_rule="after")}
        shown_mask = {"causal": f"causal_mask({T})", "random": f"a random ({T}, {T}) mask", None: "None"}[kind]
        cases.append(Case(f"attention(q, k, v, {shown_mask}), q, k, v = torch.randn({B}, {H}, {T}, {D}) (seed {seed})",
                          lambda a=(q, k, v, mask): attention(*(t.clone() if t is not None else t for t in a)), expected,
                          {hint: (lambda a=(q, k, v, mask), h=h: attention_by_mistake(*a, **h)) for hint, h in how.items()},
                          pair_parts("output", "weights")))
    return cases


def split_heads_cases() -> list[Case]:
    cases = []
    for (B, T, C), H, seed in [((2, 3, 8), 2, 1), ((1, 1, 4), 4, 2), ((2, 5, 12), 3, 3)]:
        x, D = torch.randn(B, T, C, generator=seeded(seed)), C // H
        cases.append(Case(f"split_heads(torch.randn({B}, {T}, {C}), {H})", lambda x=x, H=H: split_heads(x.clone(), H),
                          {"heads": torch.stack(x.split(D, dim=-1), dim=1)},  # head h = columns h*D ... (h+1)*D - 1
                          {"no_transpose": lambda x=x, s=(B, H, T, D): {"heads": x.reshape(*s)},
                           "interleaved": lambda x=x, s=(B, T, D, H): {"heads": x.reshape(*s).permute(0, 3, 1, 2)}},
                          tensor_parts("heads")))
    return cases


def join_heads_cases() -> list[Case]:
    cases = []
    for B, H, T, D in [(2, 2, 3, 4), (1, 4, 1, 1), (2, 3, 5, 4)]:
        x = torch.randn(B, H, T, D, generator=seeded(B * 100 + H * 10 + T))
        cases.append(Case(f"join_heads(torch.randn({B}, {H}, {T}, {D}))", lambda x=x: join_heads(x.clone()),
                          {"x": torch.cat(x.unbind(1), dim=-1)},  # head 0's D numbers, then head 1's, ...
                          {"join_no_transpose": lambda x=x, s=(B, T, H * D): {"x": x.reshape(*s)},
                           "join_interleaved": lambda x=x, s=(B, T, H * D): {"x": x.permute(0, 2, 3, 1).reshape(*s)}},
                          tensor_parts("x")))
    return cases


def feed_forward_cases() -> list[Case]:
    cases = []
    for seed, (B, T, C, Fd) in enumerate([(2, 3, 8, 16), (1, 1, 4, 8), (3, 2, 6, 12)]):
        block = built(seed, lambda: FeedForward(C, Fd))
        x = torch.randn(B, T, C, generator=seeded(seed))
        W1, b1 = block.expand.weight.detach(), block.expand.bias.detach()
        W2, b2 = block.contract.weight.detach(), block.contract.bias.detach()
        hidden = x @ W1.T + b1  # (B, T, C) @ (C, F) -> (B, T, F), by hand
        cases.append(Case(f"FeedForward({C}, {Fd})(torch.randn({B}, {T}, {C}))", lambda b=block, x=x: b(x.clone()),
                          {"x": hidden.clamp(min=0) @ W2.T + b2},
                          {"no_relu": lambda h=hidden, W=W2, b=b2: {"x": h @ W.T + b},
                           "relu_after": lambda h=hidden, W=W2, b=b2: {"x": (h.clamp(min=0) @ W.T + b).clamp(min=0)},
                           "gelu": lambda h=hidden, W=W2, b=b2: {"x": F.gelu(h) @ W.T + b}}, tensor_parts("x")))
    return cases


class ReferenceSelfAttention(nn.Module):
    """PyTorch's nn.MultiheadAttention with the causal mask, where section 7's module would be."""
    def __init__(self, attention: nn.MultiheadAttention):
        super().__init__()
        self.mha = attention

    def forward(self, x: torch.Tensor, return_weights: bool = False):
        mask = nn.Transformer.generate_square_subsequent_mask(x.size(1))
        out, weights = self.mha(x, x, x, attn_mask=mask, need_weights=True, average_attn_weights=False)
        return out, weights if return_weights else None


def encoder_layer_case(seed: int, B: int, T: int, C: int, H: int, Fd: int, asks: bool, p: float = 0.0) -> Case:
    """EncoderLayer against nn.TransformerEncoderLayer(norm_first=True), sharing its attention,
    its feed-forward and the student's two LayerNorms (their gains and shifts drawn at random).
    With dropout p, both train from one seed: the reference drops out each block's output only,
    as section 8 does, so the two draw the same masks in the same order."""
    with standing_in(causal_mask=reference_causal_mask):
        layer = built(seed, lambda: EncoderLayer(C, H, Fd, 16, p))
    reference = built(seed, lambda: nn.TransformerEncoderLayer(C, H, Fd, dropout=p, batch_first=True,
                                                               norm_first=True))
    reference.dropout, reference.self_attn.dropout = nn.Identity(), 0.0  # inside the blocks: none
    with torch.no_grad():  # gains and shifts far from 1 and 0, each norm its own: a mix-up shows
        for i, norm in enumerate((layer.attention_norm, layer.feed_forward_norm)):
            norm.weight.normal_(generator=seeded(10 * seed + i))
            norm.bias.normal_(generator=seeded(10 * seed + i + 5))
    layer.attention = ReferenceSelfAttention(reference.self_attn)
    layer.feed_forward = nn.Sequential(reference.linear1, nn.ReLU(), reference.linear2)
    reference.norm1, reference.norm2 = layer.attention_norm, layer.feed_forward_norm
    x, mask = torch.randn(B, T, C, generator=seeded(seed)), nn.Transformer.generate_square_subsequent_mask(T)
    with torch.no_grad():
        normed = layer.attention_norm(x)
        expected = {"x": built(seed, lambda: reference(x, src_mask=mask)),
                    "weights": layer.attention(normed, True)[1] if asks else None}
    shown = f"EncoderLayer({C}, {H}, {Fd}, 16, dropout={p:g})(torch.randn({B}, {T}, {C}), return_weights={asks})"
    return Case(shown + (f", training, torch.manual_seed({seed})" if p else ""),
                lambda: built(seed, lambda: layer(x.clone(), asks)), expected, encoder_mistakes(layer, x, asks),
                pair_parts("x", "weights"))


def encoder_mistakes(layer, x: torch.Tensor, asks: bool) -> dict:
    attend = lambda y: layer.attention(y, asks)  # noqa: E731
    ffn, n1, n2 = layer.feed_forward, layer.attention_norm, layer.feed_forward_norm

    def answer(hint: str) -> dict:
        if hint == "post_norm":  # the 2017 paper's order: normalize after the addition
            out, weights = attend(x)
            x1 = n1(x + out)
            return {"x": n2(x1 + ffn(x1)), "weights": weights}
        out, weights = attend(n2(x) if hint == "norms_swapped" else n1(x))
        if hint in ("no_residual", "no_residual_attention"):
            return {"x": ffn(n2(out)) + (out if hint == "no_residual_attention" else 0), "weights": weights}
        x1 = x + out
        x2 = {"no_dropout": lambda: x1 + ffn(n2(x1)), "norms_swapped": lambda: x1 + ffn(n1(x1)),
              "one_norm": lambda: x1 + ffn(n1(x1)),
              "residual_from_input": lambda: x + ffn(n2(x1)), "no_ffn_norm": lambda: x1 + ffn(x1),
              "no_residual_ffn": lambda: ffn(n2(x1))}[hint]()
        return {"x": x2, "weights": weights}
    return {hint: (lambda hint=hint: answer(hint)) for hint in
            ("post_norm", "no_residual", "no_residual_attention", "no_residual_ffn", "norms_swapped", "one_norm",
             "residual_from_input", "no_ffn_norm", "no_dropout")}


def encoder_layer_cases() -> list[Case]:
    return [encoder_layer_case(1, 2, 5, 8, 2, 16, False), encoder_layer_case(2, 1, 1, 8, 2, 16, True),
            encoder_layer_case(3, 3, 4, 12, 3, 24, True), encoder_layer_case(4, 2, 6, 8, 2, 16, False, p=0.5)]


def loss_by_hand(logits: torch.Tensor, targets: torch.Tensor, mean=True, per_row=False) -> torch.Tensor:
    """-log softmax(logits)[target] = logsumexp(logits) - logits[target], over the real targets."""
    real = targets != IGNORE
    picked = logits.double().gather(-1, targets.clamp(min=0).unsqueeze(-1)).squeeze(-1)  # (B, T)
    surprise = logits.double().logsumexp(dim=-1) - picked  # (B, T)
    if per_row:
        return torch.stack([row[keep].mean() for row, keep in zip(surprise, real)]).mean()
    return surprise[real].mean() if mean else surprise[real].sum()


def loss_parts(answer) -> dict:
    if not isinstance(answer, torch.Tensor) or answer.numel() != 1:
        raise WrongAnswer((f"one number in a tensor; it returned {type(answer).__name__}",
                           f"un número en un tensor; devolvió {type(answer).__name__}"))
    if not answer.requires_grad:
        raise WrongAnswer(("a tensor that keeps its gradient (training calls loss.backward()): no .item(), "
                           "no torch.tensor(...)", "un tensor que guarde su gradiente (el entrenamiento llama a "
                           "loss.backward()): sin .item() ni torch.tensor(...)"))
    return {"loss": float(answer.detach())}


def loss_cases() -> list[Case]:
    cases = []
    for seed, (B, T, V, padded) in enumerate([(2, 5, 7, [(1, 3), (1, 4)]), (1, 1, 4, []),
                                              (3, 4, 6, [(2, 0), (2, 1), (2, 2), (2, 3), (0, 3)]), (2, 3, 5, [])]):
        g = seeded(seed)
        logits, targets = torch.randn(B, T, V, generator=g) * 2, torch.randint(V, (B, T), generator=g)
        for row, col in padded:
            targets[row, col] = IGNORE  # padding; in the third case row 2 is padding only
        mistakes = {"padding_averaged": lambda l=logits, t=targets: {"loss": float(loss_by_hand(l, t, False)) / t.numel()},
                    "loss_sum": lambda l=logits, t=targets: {"loss": float(loss_by_hand(l, t, False))},
                    "loss_bits": lambda l=logits, t=targets: {"loss": float(loss_by_hand(l, t)) / math.log(2)},
                    "shifted_again": lambda l=logits, t=targets: {"loss": float(loss_by_hand(l[:, :-1], t[:, 1:]))},
                    "mean_of_rows": lambda l=logits, t=targets: {"loss": float(loss_by_hand(l, t, per_row=True))}}
        cases.append(Case(f"sequence_loss(torch.randn({B}, {T}, {V}), targets), targets padded with IGNORE at {padded}",
                          lambda l=logits, t=targets: sequence_loss(l.clone().requires_grad_(), t.clone()),
                          {"loss": float(loss_by_hand(logits, targets))}, mistakes, loss_parts))
    return cases


def rate_by_mistake(step, total, cfg, from_zero=False, no_cap=False, no_floor=False, over_total=False) -> float:
    """learning_rate with a usual mistake: the warm-up from 0, no cap, no floor, the cosine over
    the whole run."""
    warmup = cfg.warmup if no_cap else min(cfg.warmup, int(total * cfg.warmup_cap))
    if step < warmup:
        return cfg.lr * (step if from_zero else step + 1) / warmup
    progress = (step if over_total else step - warmup) / max(1, total if over_total else total - warmup)
    floor = 0.0 if no_floor else cfg.lr_floor
    return cfg.lr * (floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * min(progress, 1.0))))


def number_parts(name: str):
    def parts(answer) -> dict:
        if isinstance(answer, torch.Tensor) and answer.numel() == 1:
            answer = answer.item()
        if not isinstance(answer, (int, float)) or isinstance(answer, bool):
            raise WrongAnswer((f"a number; it returned {type(answer).__name__}",
                               f"un número; devolvió {type(answer).__name__}"))
        return {name: float(answer)}
    return parts


def learning_rate_cases() -> list[Case]:
    half = 1e-3 * (0.1 + 0.9 * 0.5)  # the cosine's middle: 0.00055
    at_32 = 1e-3 * (0.1 + 0.45 * (1 + math.cos(math.pi * 22 / 90)))  # step 32: 22 of the 90 steps after warm-up
    worked = [(10, 0, 100, 1e-4), (10, 4, 100, 5e-4), (10, 9, 100, 1e-3), (10, 10, 100, 1e-3), (10, 32, 100, at_32),
              (10, 55, 100, half), (10, 100, 100, 1e-4), (10, 150, 100, 1e-4),  # warm-up 10 steps (cap: 20)
              (50, 0, 100, 5e-5), (50, 19, 100, 1e-3), (50, 20, 100, 1e-3), (50, 60, 100, half),  # capped: 20
              (0, 0, 100, 1e-3), (0, 50, 100, half), (10, 0, 30, 1e-3 / 6), (10, 18, 30, half)]  # none; cap 6
    how = {"warmup_from_zero": dict(from_zero=True), "no_cap": dict(no_cap=True), "no_floor": dict(no_floor=True),
           "over_total": dict(over_total=True)}
    cases = []
    for warmup, step, total, rate in worked:
        cfg = replace(Config(), lr=1e-3, warmup=warmup, warmup_cap=0.2, lr_floor=0.1)
        mistakes = {hint: (lambda a=(step, total, cfg), h=h: {"lr": rate_by_mistake(*a, **h)}) for hint, h in how.items()}
        cases.append(Case(f"learning_rate({step}, {total}, cfg) with lr 0.001, warmup {warmup}, warmup_cap 0.2, "
                          f"lr_floor 0.1", lambda a=(step, total, cfg): learning_rate(*a), {"lr": rate},
                          mistakes, number_parts("lr"), error_hints={ZeroDivisionError: "warmup_zero"}))
    return cases


def adam_run(make, params, grads, lr, betas, eps, decay) -> dict:
    """The weights and biases after every step of an optimizer made by make(groups, ...)."""
    weights, biases = (p.clone().requires_grad_() for p in params)
    groups = [{"params": [weights], "weight_decay": decay}, {"params": [biases], "weight_decay": 0.0}]
    optimizer, after = make(groups, lr=lr, betas=betas, eps=eps), {}
    for t, (g_w, g_b) in enumerate(grads, 1):
        weights.grad, biases.grad = g_w.clone(), g_b.clone()
        for group in optimizer.param_groups:
            group["lr"] = lr / 2 ** (t - 1)  # as train_step sets it from the schedule: halved every step
        optimizer.step()
        after[f"weights after step {t}"] = weights.detach().clone()
        after[f"biases after step {t}"] = biases.detach().clone()
    return after


def adam_by_mistake(params, grads, lr, betas, eps, decay, uncorrected=False, m_only=False, eps_inside=False,
                    coupled=False, swapped=False, no_decay=False, v_only=False, fixed_lr=False) -> dict:
    """Adam with a usual mistake: no bias correction (or on m only), eps inside the root, the decay
    added to the gradient or left out, the betas swapped."""
    b1, b2 = betas[::-1] if swapped else betas
    ps = [p.double().clone() for p in params]
    ms, vs, after = [torch.zeros_like(p) for p in ps], [torch.zeros_like(p) for p in ps], {}
    for t, gs in enumerate(grads, 1):
        lr_t = lr if fixed_lr else lr / 2 ** (t - 1)
        for i, (name, g) in enumerate(zip(("weights", "biases"), gs)):
            wd, g = decay if i == 0 and not no_decay else 0.0, g.double()
            g = g + wd * ps[i] if coupled else g
            ms[i], vs[i] = b1 * ms[i] + (1 - b1) * g, b2 * vs[i] + (1 - b2) * g * g
            ps[i] = ps[i] * (1 - lr_t * wd) if not coupled else ps[i]
            m_hat = ms[i] if uncorrected or v_only else ms[i] / (1 - b1 ** t)
            v_hat = vs[i] if uncorrected or m_only else vs[i] / (1 - b2 ** t)
            ps[i] = ps[i] - lr_t * m_hat / ((v_hat + eps).sqrt() if eps_inside else v_hat.sqrt() + eps)
            after[f"{name} after step {t}"] = ps[i]
    return after


def adam_cases() -> list[Case]:
    cases = []
    for seed, (steps, lr, betas, eps, decay, scale) in enumerate([
            (1, 0.01, (0.9, 0.999), 1e-8, 0.0, 1.0),  # Adam's first step
            (3, 0.01, (0.8, 0.99), 1e-8, 0.0, 1.0), (3, 0.01, (0.9, 0.999), 1e-8, 0.1, 1.0),  # AdamW's decay
            (2, 0.001, (0.9, 0.999), 1e-3, 0.0, 1e-4)]):  # gradients near 0: where eps stands matters
        g = seeded(seed)
        params = [torch.randn(3, 4, generator=g), torch.randn(5, generator=g)]
        grads = [[torch.randn(3, 4, generator=g) * scale, torch.randn(5, generator=g) * scale] for _ in range(steps)]
        torch_kind = torch.optim.AdamW if decay else torch.optim.Adam  # PyTorch's, the reference
        a = (params, grads, lr, betas, eps, decay)
        how = {"no_bias_correction": dict(uncorrected=True), "correction_m_only": dict(m_only=True),
               "correction_v_only": dict(v_only=True),
               "eps_inside": dict(eps_inside=True), "decay_coupled": dict(coupled=True), "betas_swapped": dict(swapped=True),
               "no_decay": dict(no_decay=True), "group_lr": dict(fixed_lr=True)}
        shown = (f"Adam([{{'params': [randn(3, 4)], 'weight_decay': {decay}}}, {{'params': [randn(5)]}}], lr={lr}, "
                 f"betas={betas}, eps={eps}): {steps} step{'s' * (steps > 1)}, lr halved after each, gradients randn x {scale} "
                 f"(seed {seed})")
        mistakes = {hint: (lambda a=a, h=h: adam_by_mistake(*a, **h)) for hint, h in how.items()}
        cases.append(Case(shown, lambda a=a: adam_run(Adam, *a), adam_run(torch_kind, *a),
                          mistakes, lambda answer: answer, error_hints={ZeroDivisionError: "t_not_counted"}))
    return cases


def chosen_by_mistake(logits, sampling, seed, times=False, too_few=False, unscaled=False, no_top_k=False,
                      unsorted=False, no_greedy=False) -> dict:
    """choose_next with a usual mistake: the temperature multiplied, top-p keeping one too few,
    u not scaled by the kept mass, top-k ignored, the rank taken for the id, greedy ignored."""
    probs = torch.softmax(logits * sampling.temperature if times else logits / sampling.temperature, dim=-1)
    sorted_p, order = probs.sort(descending=True)
    cumulative = sorted_p.cumsum(0)
    kept = len(probs) if sampling.top_k == 0 or no_top_k else min(sampling.top_k, len(probs))
    if sampling.top_p < 1.0:
        kept = min(kept, int((cumulative < sampling.top_p).sum()) + (0 if too_few else 1))
    if sampling.greedy and not no_greedy:
        return {"id": int(order[0]), "kept": 1, "probs": probs, "order": order, "cumulative": cumulative, "u": None}
    u = float(torch.rand((), generator=seeded(seed)))
    target = u if unscaled else u * float(cumulative[kept - 1])
    rank = min(int(torch.searchsorted(cumulative[:kept], torch.tensor(target), right=True)), kept - 1)
    return {"id": rank if unsorted else int(order[rank]), "kept": kept, "probs": probs, "order": order,
            "cumulative": cumulative, "u": u}


def chosen_by_hand(logits: torch.Tensor, sampling, seed: int) -> dict:
    """p = F.softmax(logits / tau); the kept candidates counted one by one; the first whose
    cumulative probability exceeds u x the kept mass."""
    probs = F.softmax(logits / sampling.temperature, dim=-1)
    sorted_p, order = torch.sort(probs, descending=True)
    cumulative = torch.cumsum(sorted_p, dim=0)
    kept = len(probs) if sampling.top_k == 0 else min(sampling.top_k, len(probs))
    if sampling.top_p < 1.0:
        reach = next((n for n, c in enumerate(cumulative.tolist(), 1) if c >= sampling.top_p), len(probs))
        kept = min(kept, reach)
    steps = {"probs": probs, "order": order, "cumulative": cumulative}  # compared in the order they are computed
    if sampling.greedy:
        return {**steps, "kept": 1, "u": None, "id": int(order[0])}
    u = float(torch.rand((), generator=seeded(seed)))  # the one draw the student makes with the generator
    mass = float(cumulative[kept - 1])
    rank = next((r for r in range(kept) if float(cumulative[r]) > u * mass), kept - 1)
    return {**steps, "kept": kept, "u": u, "id": int(order[rank])}


def choice_parts(answer) -> dict:
    try:
        return {"id": int(answer.id), "kept": int(answer.kept), "probs": answer.probs, "order": answer.order,
                "cumulative": answer.cumulative, "u": None if answer.u is None else float(answer.u)}
    except (AttributeError, TypeError, ValueError, RuntimeError):
        raise WrongAnswer((f"a Choice (section 15) with id, probs, order, cumulative, kept and u; it returned "
                           f"{type(answer).__name__}", f"un Choice (sección 15) con id, probs, order, cumulative, "
                           f"kept y u; devolvió {type(answer).__name__}"))


def choose_next_cases() -> list[Case]:
    settings = [(10, 1.0, 0, 1.0, False), (10, 1.0, 0, 1.0, False), (10, 1.0, 0, 1.0, False), (10, 0.5, 0, 1.0, False),
                (10, 2.0, 0, 1.0, False), (10, 1.0, 1, 1.0, False), (10, 1.0, 4, 1.0, False), (10, 1.0, 0, 0.01, False),
                (10, 1.0, 0, 0.9, False), (10, 0.8, 5, 0.6, False), (10, 1.0, 0, 1.0, True), (1, 1.0, 0, 1.0, False),
                (12, 1.5, 3, 1.0, False), (12, 1.0, 0, 0.5, False)]
    how = {"temperature_times": dict(times=True), "top_p_too_few": dict(too_few=True), "u_unscaled": dict(unscaled=True),
           "top_k_ignored": dict(no_top_k=True), "rank_for_id": dict(unsorted=True), "greedy_ignored": dict(no_greedy=True)}
    cases = []
    for seed, (V, temperature, top_k, top_p, greedy) in enumerate(settings):
        logits, sampling = torch.randn(V, generator=seeded(100 + seed)) * 2, Sampling(temperature, top_k, top_p, greedy)
        a = (logits, sampling, seed)
        cases.append(Case(f"choose_next(torch.randn({V}) * 2, Sampling(temperature={temperature}, top_k={top_k}, "
                          f"top_p={top_p}, greedy={greedy}), torch.Generator().manual_seed({seed}))",
                          lambda a=a: choose_next(a[0].clone(), a[1], seeded(a[2])), chosen_by_hand(*a),
                          {hint: (lambda a=a, h=h: chosen_by_mistake(*a, **h)) for hint, h in how.items()},
                          choice_parts))
    return cases


# %% [markdown]
# The exercises, in reading order, each with what to compute and its shapes in English and in
# Spanish, then the words of the checks and the hints of the usual mistakes.

# %%
EXERCISES = [
    Exercise("CharTokenizer.encode", 2, 1, 5, {
        "en": ("the id of every character of `text`, in order (self.ids maps a character to its id); a character "
               "the tokenizer does not know raises UnknownCharacterError, naming it",
               "text, a str of n characters -> a list of n ints"),
        "es": ("el id de cada carácter de `text`, en orden (self.ids da el id de cada carácter); un carácter que "
               "el tokenizador no conoce lanza UnknownCharacterError, nombrándolo",
               "text, un str de n caracteres -> una lista de n enteros")}, encode_cases),
    Exercise("merge_pair", 3, 2, 10, {
        "en": ("a new list where every `pair` (a, then b right after it), read left to right, becomes the one id "
               "`new`; the two ids of a merged pair are used up, so 1 1 1 with (1, 1) gives new 1",
               "ids, a list of n ints -> a list of at most n ints"),
        "es": ("una lista nueva en la que cada `pair` (a, y b justo después), leyendo de izquierda a derecha, se "
               "convierte en el id `new`; los dos ids de un par unido se gastan: 1 1 1 con (1, 1) da new 1",
               "ids, una lista de n enteros -> una lista de como mucho n enteros")}, merge_cases),
    Exercise("encode_lines", 4, 2, 15, {
        "en": ("for each line the tokens ⏎ + line + ⏎, cut to context + 1; input = tokens[:-1] and target = "
               "tokens[1:] (teacher forcing), padded into tensors: inputs with ⏎, targets with IGNORE; lengths: "
               "each line's real targets; n_chars: the characters its targets stand for",
               "lines, N strings -> LineSplit(inputs (N, L), targets (N, L), lengths (N,), n_chars), L = the "
               "longest length"),
        "es": ("para cada línea los tokens ⏎ + línea + ⏎, cortados a context + 1; entrada = tokens[:-1] y "
               "objetivo = tokens[1:] (teacher forcing), rellenados en tensores: las entradas con ⏎, los objetivos "
               "con IGNORE; lengths: los objetivos reales de cada línea; n_chars: los caracteres que representan",
               "lines, N textos -> LineSplit(inputs (N, L), targets (N, L), lengths (N,), n_chars), L = la "
               "longitud mayor")}, encode_lines_cases),
    Exercise("ScaledEmbedding.forward", 5, 1, 5, {
        "en": ("each id's row of the table (nn.Embedding's own lookup: super().forward(idx)), times sqrt(C)",
               "idx (B, T) ids -> (B, T, C)"),
        "es": ("la fila de la tabla de cada id (la búsqueda de nn.Embedding: super().forward(idx)), por sqrt(C)",
               "idx (B, T) ids -> (B, T, C)")}, embedding_cases),
    Exercise("sinusoidal_positional_encoding", 6, 2, 15, {
        "en": ("PE[pos, 2i] = sin(pos / 10000^(2i/C)) and PE[pos, 2i+1] = cos of the same angle, for the "
               "positions 0 ... T-1; C may be odd", "seq_len T, d_model C -> a (T, C) float tensor"),
        "es": ("PE[pos, 2i] = sin(pos / 10000^(2i/C)) y PE[pos, 2i+1] = cos del mismo ángulo, para las "
               "posiciones 0 ... T-1; C puede ser impar", "seq_len T, d_model C -> un tensor (T, C) de floats")},
        positional_cases),
    Exercise("causal_mask", 7, 1, 5, {
        "en": ("booleans, True where query position t may attend to key position s: s <= t",
               "T -> a (T, T) tensor of torch.bool"),
        "es": ("booleanos, True donde la posición t (la consulta) puede atender a la posición s (la clave): s <= t",
               "T -> un tensor (T, T) de torch.bool")}, causal_mask_cases),
    Exercise("attention", 7, 2, 15, {
        "en": ("scores = q k^T / sqrt(d_k), -inf where the mask is False; weights = the softmax of each row (over "
               "the keys); return (weights @ v, weights)",
               "q, k, v (B, H, T, D), mask (T, T) booleans or None -> output (B, H, T, D), weights (B, H, T, T)"),
        "es": ("scores = q k^T / sqrt(d_k), -inf donde la máscara es False; weights = el softmax de cada fila "
               "(sobre las claves); devuelve (weights @ v, weights)",
               "q, k, v (B, H, T, D), mask (T, T) booleanos o None -> output (B, H, T, D), weights (B, H, T, T)")},
        attention_cases),
    Exercise("split_heads", 7, 2, 10, {
        "en": ("the C numbers of each position cut into H heads of D = C / H (head h: columns h*D to h*D + D - 1), "
               "the heads' axis before the positions'", "x (B, T, C), n_heads H -> (B, H, T, D)"),
        "es": ("los C números de cada posición cortados en H cabezas de D = C / H (la cabeza h: columnas h*D a "
               "h*D + D - 1), el eje de las cabezas antes que el de las posiciones",
               "x (B, T, C), n_heads H -> (B, H, T, D)")}, split_heads_cases),
    Exercise("join_heads", 7, 2, 5, {
        "en": ("split_heads undone: the heads side by side again, head 0's D numbers first",
               "x (B, H, T, D) -> (B, T, H*D)"),
        "es": ("split_heads al revés: las cabezas otra vez una junto a otra, primero los D números de la cabeza 0",
               "x (B, H, T, D) -> (B, T, H*D)")}, join_heads_cases),
    Exercise("FeedForward.forward", 8, 1, 5, {
        "en": ("max(0, x W1 + b1) W2 + b2, with self.expand (W1, b1) and self.contract (W2, b2)",
               "x (B, T, C) -> hidden (B, T, F) -> (B, T, C)"),
        "es": ("max(0, x W1 + b1) W2 + b2, con self.expand (W1, b1) y self.contract (W2, b2)",
               "x (B, T, C) -> oculta (B, T, F) -> (B, T, C)")}, feed_forward_cases),
    Exercise("EncoderLayer.forward", 8, 2, 10, {
        "en": ("pre-norm: x + Dropout(attention of self.attention_norm(x)), then x + Dropout(feed-forward of "
               "self.feed_forward_norm(x)); return (x, the weights self.attention returned)",
               "x (B, T, C) -> x (B, T, C), weights (B, H, T, T) or None"),
        "es": ("pre-norm: x + Dropout(atención de self.attention_norm(x)), luego x + Dropout(feed-forward de "
               "self.feed_forward_norm(x)); devuelve (x, los pesos que devolvió self.attention)",
               "x (B, T, C) -> x (B, T, C), pesos (B, H, T, T) o None")}, encoder_layer_cases),
    Exercise("sequence_loss", 10, 2, 10, {
        "en": ("the mean of -log softmax(logits)[target] over the positions whose target is not IGNORE, as a "
               "tensor that keeps its gradient", "logits (B, T, V), targets (B, T) -> a tensor of one number"),
        "es": ("la media de -log softmax(logits)[objetivo] sobre las posiciones cuyo objetivo no es IGNORE, como "
               "un tensor que guarda su gradiente", "logits (B, T, V), targets (B, T) -> un tensor de un número")},
        loss_cases),
    Exercise("learning_rate", 11, 2, 15, {
        "en": ("warm-up = min(cfg.warmup, int(total_steps x cfg.warmup_cap)) steps of cfg.lr x (step + 1) / "
               "warm-up; then half a cosine from cfg.lr down to cfg.lr_floor x cfg.lr over the steps left, the "
               "floor kept past the end", "step, total_steps (ints), cfg -> a float"),
        "es": ("calentamiento = min(cfg.warmup, int(total_steps x cfg.warmup_cap)) pasos de cfg.lr x (step + 1) / "
               "calentamiento; luego medio coseno de cfg.lr a cfg.lr_floor x cfg.lr en los pasos que quedan, y el "
               "suelo pasado el final", "step, total_steps (enteros), cfg -> un float")}, learning_rate_cases),
    Exercise("Adam.step", 12, 3, 20, {
        "en": ("t += 1; for every parameter p of every group (gradient p.grad, averages in self.m and self.v): "
               "update m and v; with weight_decay > 0 also p *= 1 - lr x weight_decay; then p -= lr x m^ / "
               "(sqrt(v^) + eps), m^ and v^ corrected by 1 - beta^t. In place: p.mul_, m.lerp_, ...",
               "p, m, v: each parameter's own shape; returns nothing"),
        "es": ("t += 1; para cada parámetro p de cada grupo (gradiente p.grad, medias en self.m y self.v): "
               "actualiza m y v; con weight_decay > 0 también p *= 1 - lr x weight_decay; luego p -= lr x m^ / "
               "(sqrt(v^) + eps), m^ y v^ corregidos por 1 - beta^t. En su sitio: p.mul_, m.lerp_, ...",
               "p, m, v: la forma de cada parámetro; no devuelve nada")}, adam_cases),
    Exercise("choose_next", 15, 3, 25, {
        "en": ("p = softmax(logits / temperature), sorted (most likely first) and summed up; keep top_k (0: all) "
               "and the fewest whose p reach top_p; greedy: the first, kept 1, u None; else u = torch.rand((), "
               "generator=generator) and the first kept one whose cumulative p exceeds u x the kept mass",
               "logits (V,) -> Choice(id, logits, probs (V,), order (V,), cumulative (V,), kept, u)"),
        "es": ("p = softmax(logits / temperature), ordenada (la más probable primero) y acumulada; quédate con "
               "top_k (0: todas) y con las menos que sumen top_p; greedy: la primera, kept 1, u None; si no, "
               "u = torch.rand((), generator=generator) y la primera candidata cuya p acumulada supera u x la "
               "masa que queda", "logits (V,) -> Choice(id, logits, probs (V,), order (V,), cumulative (V,), "
               "kept, u)")}, choose_next_cases),
]

WORDS = {  # key -> (English, Spanish)
    "checking": ("Checking the exercises against PyTorch (python LLM.py --check NAME checks one):",
                 "Comprobando los ejercicios contra PyTorch (python LLM.py --check NOMBRE comprueba uno):"),
    "done": ("done", "hecho"), "not_started": ("not started", "sin empezar"), "wrong": ("wrong", "mal"),
    "place": ("section {section}, level {level}, about {minutes} min",
              "sección {section}, nivel {level}, unos {minutes} min"),
    "input": ("input: {shown}", "entrada: {shown}"), "hint": ("hint: {hint}", "pista: {hint}"),
    "tally": ("{done} of {total} exercises done", "{done} de {total} ejercicios hechos"),
    "should_be": ("{name} should be {want}, is {got}", "{name} debería ser {want}, es {got}"),
    "not_number": ("{name} should be a number, is a {got}", "{name} debería ser un número, es un {got}"),
    "length": ("{name} should have {want} entries, has {got}: {value}",
               "{name} debería tener {want} elementos, tiene {got}: {value}"),
    "not_tensor": ("{name} should be a tensor, is a {got}", "{name} debería ser un tensor, es un {got}"),
    "shape": ("{name} should have the shape {want}, has {got}", "{name} debería tener la forma {want}, tiene {got}"),
    "dtype": ("{name} should hold {want} values, holds {got}", "{name} debería tener valores {want}, tiene {got}"),
    "too_long": ("ran for more than {seconds} s and was stopped", "tardó más de {seconds} s y se detuvo"),
    "raised": ("raised {error}: {text} ({where})", "lanzó {error}: {text} ({where})"),
    "should_raise": ("should raise {error}, returned {got}", "debería lanzar {error}, devolvió {got}"),
    "returned_none": ("returned None", "devolvió None"),
    "odd_answer": ("returned a {kind}, which cannot be compared ({error})",
                   "devolvió un {kind}, que no se puede comparar ({error})"),
    "form": ("should return {form}", "debería devolver {form}"),
    "unknown_exercise": ("no exercise is called {name!r}; the exercises: {known}",
                         "ningún ejercicio se llama {name!r}; los ejercicios: {known}"),
    "unfinished": ("this workbook trains once its exercises pass their checks: {n} do not yet, {name} (section "
                   "{section}, {status}) first; python LLM.py --check says what each needs",
                   "este cuaderno entrena cuando sus ejercicios pasan sus comprobaciones: {n} aún no, primero "
                   "{name} (sección {section}, {status}); python LLM.py --check dice qué necesita cada uno"),
    "yours": ("your code: the {n} functions you wrote run in this training, each passed its check: {names}",
              "tu código: las {n} funciones que escribiste se ejecutan en este entrenamiento, y cada una pasó "
              "su comprobación: {names}"),
    "wrote": ("wrote {path}: the book with {n} functions for you to write, and {data} beside it",
              "escrito {path}: el libro con {n} funciones para que las escribas, y {data} a su lado"),
    "list": ("the exercises, in reading order:", "los ejercicios, en orden de lectura:"),
    "start": ("next: cd {folder} && python LLM.py --check, then write the first one and check again",
              "ahora: cd {folder} && python LLM.py --check; luego escribe el primero y comprueba otra vez"),
    "already": ("{path} exists: a workbook is never written over (it may hold a student's work); choose another "
                "folder, or move that file away first",
                "{path} ya existe: un cuaderno nunca se sobrescribe (puede tener el trabajo de un alumno); elige "
                "otra carpeta, o aparta antes ese archivo"),
    "is_book": ("{path} is this book itself: choose another folder for the workbook",
                "{path} es este mismo libro: elige otra carpeta para el cuaderno"),
    "from_workbook": ("this file is a workbook already: make workbooks from the book, the project's LLM.py",
                      "este archivo ya es un cuaderno: los cuadernos se hacen desde el libro, el LLM.py del proyecto"),
    "no_file": ("--workbook copies this file, and a notebook has none: run python LLM.py --workbook DIR",
                "--workbook copia este archivo, y un cuaderno de Jupyter no lo tiene: python LLM.py --workbook DIR"),
    "turn": ("YOUR TURN: exercise {number} of {total}, level {level}, about {minutes} minutes.",
             "TE TOCA: ejercicio {number} de {total}, nivel {level}, unos {minutes} minutos."),
    "compute": ("Compute: {what}.", "Calcula: {what}."), "shapes": ("Shapes: {shapes}.", "Formas: {shapes}."),
    "look": ("Look at: section {section}, its prose and its formula, above.",
             "Mira: la sección {section}, su explicación y su fórmula, más arriba."),
    "then": ("Then check it: python LLM.py --check {name}", "Luego compruébalo: python LLM.py --check {name}"),
    "stub": ("{name}: your turn (exercise {number}, section {section})",
             "{name}: te toca (ejercicio {number}, sección {section})"),
}

HINTS = {  # a usual mistake -> what to do instead (English, Spanish)
    "ids_from_one": ("ids start at 0: the first character of self.chars has the id 0",
                     "los ids empiezan en 0: el primer carácter de self.chars tiene el id 0"),
    "ord": ("an id is the character's place in the vocabulary (self.ids[c]), not its Unicode number ord(c)",
            "un id es el lugar del carácter en el vocabulario (self.ids[c]), no su número Unicode ord(c)"),
    "chars": ("return the ids (ints), not the characters", "devuelve los ids (enteros), no los caracteres"),
    "unknown_char": ("a character outside the vocabulary raises UnknownCharacterError, naming it: not a KeyError, "
                     "not nothing", "un carácter fuera del vocabulario lanza UnknownCharacterError, nombrándolo: "
                     "ni KeyError ni nada"),
    "overlap": ("overlapping pairs: left to right, a merged pair's two ids are used up, so 1 1 1 with (1, 1) gives "
                "new 1, not new new", "pares solapados: de izquierda a derecha, los dos ids de un par unido se "
                "gastan, así que 1 1 1 con (1, 1) da new 1, no new new"),
    "skip_both": ("after a merge, step past both ids of the pair (i += 2), not one",
                  "después de unir, salta los dos ids del par (i += 2), no uno"),
    "last_dropped": ("the last id stays when it is not part of a pair: look at every position",
                     "el último id se queda cuando no forma un par: mira todas las posiciones"),
    "pair_order": ("the pair is ordered: (a, b) merges a followed by b, never b followed by a",
                   "el par tiene orden: (a, b) une a seguido de b, nunca b seguido de a"),
    "not_shifted": ("the targets are the tokens one step later: input = tokens[:-1], target = tokens[1:]",
                    "los objetivos son los tokens un paso después: entrada = tokens[:-1], objetivo = tokens[1:]"),
    "pad_target": ("pad the targets with IGNORE (-100), which the loss skips, not with ⏎",
                   "rellena los objetivos con IGNORE (-100), que la pérdida salta, no con ⏎"),
    "cut_context": ("cut each sequence to context + 1 tokens: its input and its target are then context long",
                    "corta cada secuencia a context + 1 tokens: su entrada y su objetivo miden entonces context"),
    "no_opening": ("every line starts with ⏎ too: the sequence is ⏎ + line + ⏎",
                   "cada línea empieza también con ⏎: la secuencia es ⏎ + línea + ⏎"),
    "no_closing": ("every line ends with ⏎ too: the model must learn where a proverb ends",
                   "cada línea termina también con ⏎: el modelo debe aprender dónde acaba un refrán"),
    "lengths": ("a line's length counts its real targets: len(tokens) - 1",
                "la longitud de una línea cuenta sus objetivos reales: len(tokens) - 1"),
    "no_scale": ("multiply the rows by sqrt(C): the table's numbers are about 1/sqrt(C) in size",
                 "multiplica las filas por sqrt(C): los números de la tabla miden más o menos 1/sqrt(C)"),
    "scale_c": ("the scale is sqrt(C), not C", "la escala es sqrt(C), no C"),
    "divided": ("multiply by sqrt(C), do not divide", "multiplica por sqrt(C), no dividas"),
    "sin_cos": ("sin and cos are swapped: the even dimensions 2i take the sine, the odd ones 2i+1 the cosine",
                "sin y cos están cambiados: las dimensiones pares 2i llevan el seno, las impares 2i+1 el coseno"),
    "exponent_i": ("the exponent is 2i / C, 2i being the pair's even dimension, not i / C",
                   "el exponente es 2i / C, siendo 2i la dimensión par del par, no i / C"),
    "exponent_j": ("both dimensions of a pair share one angle: the exponent is 2i / C for 2i and for 2i+1",
                   "las dos dimensiones de un par comparten ángulo: el exponente es 2i / C para 2i y para 2i+1"),
    "from_one": ("positions start at 0", "las posiciones empiezan en 0"),
    "halves": ("interleave them: sines in the even dimensions, cosines in the odd ones, not all the sines first",
               "intercálalos: senos en las dimensiones pares, cosenos en las impares, no todos los senos primero"),
    "base": ("the base is 10000", "la base es 10000"),
    "device_ignored": ("make the mask on the device asked for: torch.ones(..., device=device)",
                       "crea la máscara en el dispositivo pedido: torch.ones(..., device=device)"),
    "transposed": ("True where s <= t: row t is the query, column s the key (the lower triangle, tril)",
                   "True donde s <= t: la fila t es la consulta, la columna s la clave (el triángulo de abajo, tril)"),
    "inverted": ("True means 'may attend': the future (s > t) is False",
                 "True significa 'puede atender': el futuro (s > t) es False"),
    "no_diagonal": ("a position may attend to itself: the diagonal is True",
                    "una posición puede atenderse a sí misma: la diagonal es True"),
    "one_ahead": ("the mask is one step off: position t sees s <= t, not s <= t + 1",
                  "la máscara está desplazada un paso: la posición t ve s <= t, no s <= t + 1"),
    "d_k": ("divide the scores by sqrt(d_k), not by d_k", "divide los scores por sqrt(d_k), no por d_k"),
    "no_scaling": ("divide the scores by sqrt(d_k)", "divide los scores por sqrt(d_k)"),
    "times": ("divide by sqrt(d_k), do not multiply", "divide por sqrt(d_k), no multipliques"),
    "axis": ("softmax over the keys, the last axis (dim=-1), so that each query's row adds up to 1",
             "softmax sobre las claves, el último eje (dim=-1), para que la fila de cada consulta sume 1"),
    "mask_inverted": ("-inf where the mask is False (the future), not where it is True",
                      "-inf donde la máscara es False (el futuro), no donde es True"),
    "mask_after": ("mask the scores before the softmax (-inf), not the weights after it: each row must still add up to 1",
                   "enmascara los scores antes del softmax (-inf), no los pesos después: cada fila debe sumar 1"),
    "mask_ignored": ("apply the mask: -inf where it is False, before the softmax",
                     "aplica la máscara: -inf donde es False, antes del softmax"),
    "no_transpose": ("view it as (B, T, H, D), then transpose(1, 2): reshaping straight to (B, H, T, D) mixes "
                     "positions and heads", "míralo como (B, T, H, D) y luego transpose(1, 2): pasar directo a "
                     "(B, H, T, D) mezcla posiciones y cabezas"),
    "interleaved": ("head h takes D consecutive columns (h*D to h*D + D - 1), not every H-th column",
                    "la cabeza h toma D columnas seguidas (h*D a h*D + D - 1), no una de cada H"),
    "join_no_transpose": ("transpose(1, 2) back to (B, T, H, D) before joining: a straight reshape mixes positions "
                          "and heads", "transpose(1, 2) de vuelta a (B, T, H, D) antes de juntar: un reshape "
                          "directo mezcla posiciones y cabezas"),
    "join_interleaved": ("the heads go side by side in blocks: head 0's D numbers, then head 1's",
                         "las cabezas van una junto a otra en bloques: los D números de la cabeza 0, luego la 1"),
    "no_relu": ("apply ReLU between the two layers: max(0, x W1 + b1)", "aplica ReLU entre las dos capas: max(0, x W1 + b1)"),
    "relu_after": ("ReLU goes on the hidden layer only, not on the output",
                   "la ReLU va solo en la capa oculta, no en la salida"),
    "gelu": ("this model uses ReLU, as the paper does, not GELU", "este modelo usa ReLU, como el artículo, no GELU"),
    "post_norm": ("pre-norm: normalize the block's input, x + block(norm(x)), not the sum after it",
                  "pre-norm: normaliza la entrada del bloque, x + bloque(norm(x)), no la suma de después"),
    "no_residual": ("add each block's output to its input: x = x + ...", "suma la salida de cada bloque a su entrada: x = x + ..."),
    "no_residual_attention": ("add the attention's output to its input: x = x + Dropout(attention(...))",
                              "suma la salida de la atención a su entrada: x = x + Dropout(atención(...))"),
    "no_residual_ffn": ("add the feed-forward's output to its input: x = x + Dropout(feed_forward(...))",
                        "suma la salida del feed-forward a su entrada: x = x + Dropout(feed_forward(...))"),
    "no_dropout": ("drop out each block's output before adding it: x + self.dropout(block(norm(x)))",
                   "aplica el dropout a la salida de cada bloque antes de sumarla: x + self.dropout(bloque(norm(x)))"),
    "norms_swapped": ("self.attention_norm goes before the attention, self.feed_forward_norm before the feed-forward",
                      "self.attention_norm va antes de la atención, self.feed_forward_norm antes del feed-forward"),
    "one_norm": ("each block has a LayerNorm of its own: self.feed_forward_norm before the feed-forward",
                 "cada bloque tiene su propia LayerNorm: self.feed_forward_norm antes del feed-forward"),
    "residual_from_input": ("the second residual adds to the x that already holds the attention's output",
                            "el segundo residual se suma a la x que ya lleva la salida de la atención"),
    "no_ffn_norm": ("normalize before the feed-forward too, with self.feed_forward_norm",
                    "normaliza también antes del feed-forward, con self.feed_forward_norm"),
    "padding_averaged": ("average over the real targets only: the padding (IGNORE) counts neither in the sum nor in "
                         "how many", "promedia solo sobre los objetivos reales: el relleno (IGNORE) no cuenta ni en "
                         "la suma ni en cuántos son"),
    "loss_sum": ("the mean, not the sum", "la media, no la suma"),
    "loss_bits": ("in nats: the natural logarithm, no division by ln 2",
                  "en nats: el logaritmo natural, sin dividir por ln 2"),
    "shifted_again": ("the targets are shifted already (section 4): logits[:, t] goes with targets[:, t]",
                      "los objetivos ya están desplazados (sección 4): logits[:, t] va con targets[:, t]"),
    "mean_of_rows": ("one mean over every real target of the batch, not the mean of each row's mean",
                     "una sola media sobre todos los objetivos reales del lote, no la media de las medias por fila"),
    "warmup_from_zero": ("at warm-up step 0 the rate is lr / warmup, not 0: (step + 1) / warmup",
                         "en el paso 0 del calentamiento la tasa es lr / warmup, no 0: (step + 1) / warmup"),
    "warmup_zero": ("with no warm-up (0 steps) the cosine starts at step 0: never divide by the warm-up then",
                    "sin calentamiento (0 pasos) el coseno empieza en el paso 0: entonces no dividas por él"),
    "no_cap": ("the warm-up lasts at most warmup_cap of all steps: min(cfg.warmup, int(total_steps * "
               "cfg.warmup_cap))", "el calentamiento dura como mucho warmup_cap de todos los pasos: "
               "min(cfg.warmup, int(total_steps * cfg.warmup_cap))"),
    "no_floor": ("the cosine goes down to lr_floor x lr, not to 0", "el coseno baja hasta lr_floor x lr, no hasta 0"),
    "over_total": ("the cosine counts the steps after the warm-up: (step - warmup) / (total_steps - warmup)",
                   "el coseno cuenta los pasos tras el calentamiento: (step - warmup) / (total_steps - warmup)"),
    "no_bias_correction": ("correct the bias: m / (1 - beta1^t) and v / (1 - beta2^t), as m and v start at 0",
                           "corrige el sesgo: m / (1 - beta1^t) y v / (1 - beta2^t), porque m y v empiezan en 0"),
    "correction_m_only": ("correct v too: v / (1 - beta2^t)", "corrige también v: v / (1 - beta2^t)"),
    "correction_v_only": ("correct m too: m / (1 - beta1^t)", "corrige también m: m / (1 - beta1^t)"),
    "t_not_counted": ("count the step first (self.t += 1): the first step has t = 1, and 1 - beta^0 is 0",
                      "cuenta el paso primero (self.t += 1): el primer paso tiene t = 1, y 1 - beta^0 es 0"),
    "group_lr": ("use each group's own rate, group['lr']: train_step sets it from the schedule before every step",
                 "usa la tasa de cada grupo, group['lr']: train_step la pone según el calendario antes de cada paso"),
    "eps_inside": ("eps goes after the square root: sqrt(v^) + eps", "eps va después de la raíz: sqrt(v^) + eps"),
    "decay_coupled": ("AdamW's decay is decoupled: p *= 1 - lr x weight_decay, never added to the gradient",
                      "el decaimiento de AdamW va aparte: p *= 1 - lr x weight_decay, nunca sumado al gradiente"),
    "no_decay": ("with weight_decay > 0 (AdamW) also pull p towards 0: p *= 1 - lr x weight_decay",
                 "con weight_decay > 0 (AdamW) acerca también p a 0: p *= 1 - lr x weight_decay"),
    "betas_swapped": ("beta1 (0.9) averages the gradient, beta2 (0.999) its square",
                      "beta1 (0.9) promedia el gradiente, beta2 (0.999) su cuadrado"),
    "temperature_times": ("divide the logits by the temperature, do not multiply",
                          "divide los logits por la temperatura, no multipliques"),
    "top_p_too_few": ("top-p keeps the fewest candidates whose probabilities reach top_p: one more than those below it",
                      "top-p se queda con las menos candidatas cuyas probabilidades llegan a top_p: una más que las "
                      "que quedan por debajo"),
    "u_unscaled": ("scale u by the kept mass (the cumulative p of the last candidate kept) before comparing",
                   "escala u por la masa que queda (la p acumulada de la última candidata) antes de comparar"),
    "top_k_ignored": ("keep at most top_k candidates (0 means all)", "quédate con top_k candidatas como mucho (0: todas)"),
    "rank_for_id": ("the id is order[rank], the character at that rank, not the rank itself",
                    "el id es order[rank], el carácter en ese puesto, no el puesto"),
    "greedy_ignored": ("greedy takes the most likely: kept 1, u None, nothing drawn",
                       "greedy toma la más probable: kept 1, u None, sin sortear nada"),
    "no_return": ("the function returns None: is its `return` missing?", "la función devuelve None: ¿falta su `return`?"),
    "endless": ("a loop that never ends: does every pass of the loop move on?",
                "un bucle que no termina: ¿avanza cada vuelta del bucle?"),
}


# %% [markdown]
# The workbook: the book's own text with the chosen bodies replaced, found by Python's parser.

# %%
def part_one_functions(source: str, banner: int) -> dict:
    """Part I's functions and methods by name ('attention', 'Adam.step'): their parsed nodes."""
    found = {}
    for node in ast.parse(source).body:
        if node.lineno > banner:
            break
        if isinstance(node, ast.FunctionDef):
            found[node.name] = node
        elif isinstance(node, ast.ClassDef):
            found.update({f"{node.name}.{item.name}": item for item in node.body if isinstance(item, ast.FunctionDef)})
    return found


def stub_lines(exercise: Exercise, lang: str, indent: str) -> list[str]:
    """The 'your turn' comment (what, shapes, where to look) and the line that raises."""
    import textwrap
    number = EXERCISES.index(exercise) + 1
    what, shapes = exercise.task[lang]
    said = [speak("turn", lang, number=number, total=len(EXERCISES), level=exercise.level, minutes=exercise.minutes),
            speak("compute", lang, what=what), speak("shapes", lang, shapes=shapes),
            speak("look", lang, section=exercise.section), speak("then", lang, name=exercise.name)]
    lines = [line for text in said for line in textwrap.wrap(text, 94 - len(indent), break_on_hyphens=False,
                                                                break_long_words=False)]
    stub = f'"{speak("stub", lang, name=exercise.name, number=number, section=exercise.section)}"'
    raising = [f"{indent}raise NotImplementedError({stub})"]
    if len(raising[0]) > 99:  # the projector's width: the message on a line of its own
        raising = [f"{indent}raise NotImplementedError(", f"{indent}    {stub})"]
    return [f"{indent}# {line}" for line in lines] + raising


def workbook_text(source: str, chosen: list[Exercise], lang: str) -> str:
    """The book with the chosen bodies taken out, its exercises named in STUDENT_EXERCISES, and
    Part I's last cell waiting for them."""
    lines = source.split("\n")
    banner = next(i for i, line in enumerate(lines) if line.startswith("# # ") and "Part II" in line)
    nodes = part_one_functions(source, banner)
    for exercise in sorted(chosen, key=lambda e: -nodes[e.name].lineno):  # from the bottom: line numbers hold
        node = nodes[exercise.name]
        first = node.body[0]
        documented = isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) \
            and isinstance(first.value.value, str)
        start = first.end_lineno if documented else first.lineno - 1  # 0-based: the first line taken out
        indent = re.match(r"\s*", lines[node.body[-1].lineno - 1]).group()
        lines[start:node.end_lineno] = stub_lines(exercise, lang, indent)
    text = "\n".join(lines)
    names = tuple(e.name for e in chosen)
    text = re.sub(r"^STUDENT_EXERCISES: tuple = \(\)", f"STUDENT_EXERCISES: tuple = {names!r}", text, 1, re.M)
    text = re.sub(r'^WORKBOOK_LANG = ""', f'WORKBOOK_LANG = "{lang}"', text, 1, re.M)
    story = "    story_model, story_data = train_and_write(replace(Config(), epochs=1))\n"
    waiting = ("    try:\n    " + story + "    except NotImplementedError as exercise_left:  # an exercise to write "
               "first\n        print(exercise_left)\n")
    return text.replace(story, waiting, 1)


def write_workbook(folder: str, names, lang: str | None, log=print):
    """--workbook DIR: DIR/LLM.py (the book with the exercises blank) and the proverbs beside it;
    a file already there is never written over."""
    lang = language(lang)
    here = globals().get("__file__")
    if here is None:
        raise UserError(speak("no_file", lang))
    if STUDENT_EXERCISES:
        raise UserError(speak("from_workbook", lang))
    chosen, target = pick_exercises(names, lang), Path(folder) / "LLM.py"
    if target.exists() or target.is_symlink():
        same = same_file(target, Path(here))
        raise UserError(speak("is_book" if same else "already", lang, path=show_path(target)))
    text = workbook_text(Path(here).read_text(encoding="utf-8"), chosen, lang)
    prepare_output_dir(folder)
    write_file(target, lambda file: file.write(text.encode("utf-8")))
    data = Path(find_default_data(RunConfig(), False).data)
    beside = Path(folder) / data.name
    if data.is_file() and not beside.exists():
        write_file(beside, lambda file: file.write(data.read_bytes()))
    log(speak("wrote", lang, path=show_path(target), n=len(chosen), data=show_path(beside)))
    log(speak("list", lang))
    for e in chosen:
        place = speak("place", lang, section=e.section, level=e.level, minutes=e.minutes)
        log(f"  {EXERCISES.index(e) + 1:>2}. {e.name:<31} {place}")
    log(speak("start", lang, folder=show_path(folder)))


def practise(args, argv: list[str]) -> int:
    """--workbook DIR [--exercises NAMES] or --check [NAMES]; they take no settings."""
    settings = sorted(typed_settings(argv)[1])
    if settings:
        raise UserError(f"--workbook and --check take no settings ({', '.join(flag_of(s) for s in settings)}): "
                        f"leave them out")
    if args.workbook is None and args.exercises is not None:
        raise UserError("--exercises chooses the exercises of --workbook DIR (python LLM.py --check NAMES checks "
                        "some)")
    if args.workbook is not None:
        write_workbook(args.workbook, [args.exercises or ""], args.lang)
        return 0
    return check_exercises(args.check, args.lang)


# %%
if __name__ == "__main__" and in_notebook():  # a notebook: every exercise checked (a workbook's: yours)
    check_exercises()


# %% [markdown]
# ## The run
#
# `python LLM.py` starts here. In a notebook this cell trains the classroom run with the
# default settings and shows its pictures below.

# %%
if __name__ == "__main__":
    exit_code = main()
    if not in_notebook():
        sys.exit(exit_code)
