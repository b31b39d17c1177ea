"""What the test files share: `import LLM` from anywhere, one tiny configuration, one tiny run,
and the check that bad input fails the way a user should see."""
import atexit
import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

import LLM  # noqa: E402

# The tests train on the first 600 proverbs of refranes.txt (a copy in a temporary folder): a
# tiny run then takes a few seconds, whatever the size of the shipped corpus.
PROVERBS = Path(tempfile.mkdtemp(prefix="llm-tests-")) / "proverbs_600.txt"
PROVERBS.write_text("\n".join((ROOT / "refranes.txt").read_text(encoding="utf-8").split("\n")[:600]) + "\n",
                    encoding="utf-8")
atexit.register(shutil.rmtree, PROVERBS.parent, True)

# The one tiny configuration of the tests: the classroom model's shape, made small enough that a
# whole run takes a few seconds. TINY_ARGV is the same on the command line, with those proverbs.
TINY = dict(d_model=16, n_heads=2, n_layers=2, d_ff=32, context=24, dropout=0.0, seed=0, snapshot=0, batch_size=64)
TINY_ARGV = ["--d-model", "16", "--heads", "2", "--layers", "2", "--d-ff", "32", "--snapshot", "0",
             "--batch-size", "64", "--max-chars", "20", "--data", str(PROVERBS), "--prompts", "No hay"]
# The shared run: 3 epochs, a picture every epoch, two prompts (one from nothing).
TINY_RUN = TINY_ARGV + ["--epochs", "3", "--snapshot", "1", "--prompts", "", "No hay"]


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """Where LLM_NO_SKIPS=1 (CI sets it), a test that would skip fails instead, with its reason: a
    missing browser, compiler or notebook tool cannot hide a failure there. The one exception is a
    test marked beside_the_project: it reads raw material outside the project (the corpus's
    source), which no install brings, so a clean clone skips it even there."""
    outcome = yield
    report = outcome.get_result()
    allowed = item.get_closest_marker("beside_the_project") is not None
    if report.skipped and not allowed and not hasattr(report, "wasxfail") and os.environ.get("LLM_NO_SKIPS") == "1":
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        report.outcome, report.longrepr = "failed", f"skipped where LLM_NO_SKIPS=1 forbids it: {reason}"


def pytest_configure(config):
    """Tests marked slow (a minute of compiling, say) run only when asked for: `pytest -m slow`
    (CI runs them after the README's test command); `pytest tests` alone leaves them out."""
    config.addinivalue_line("markers", "slow: a long test, left out unless -m slow is given")
    config.addinivalue_line("markers", "beside_the_project: reads a file outside the project; may skip where LLM_NO_SKIPS=1")
    if not config.option.markexpr:
        config.option.markexpr = "not slow"


def tiny_config(**changes) -> "LLM.Config":
    return LLM.RunConfig(**{**TINY, **changes})


def tokenizer_of(lines: list[str]) -> "LLM.CharTokenizer":
    """Section 2's tokenizer for the characters of some lines."""
    return LLM.CharTokenizer("".join(lines))


def tiny_model(vocab_size=11, **changes) -> "LLM.TransformerLM":
    torch.manual_seed(0)
    return LLM.build_model(vocab_size, tiny_config(**changes)).eval()  # --without and --code applied


def kept_by_definition(logits: torch.Tensor, temperature=1.0, top_k=0, top_p=1.0, greedy=False) -> torch.Tensor:
    """What the draw picks from, written from section 15's definition and nothing of LLM.py:
    p = softmax(logits / temperature) in float64; the candidates most likely first; top-k keeps
    the first k; top-p keeps the fewest whose probabilities add up to top_p; the kept ones
    rescaled to add up to 1, the rest 0. Greedy: 1 on the most likely."""
    p = torch.softmax(logits.double() / temperature, dim=-1)
    order = sorted(range(len(p)), key=lambda i: (-float(p[i]), i))
    if greedy:
        order = order[:1]
    if top_k:
        order = order[:top_k]
    if top_p < 1:
        total, fewest = 0.0, []
        for i in order:
            fewest.append(i)
            total += float(p[i])
            if total >= top_p:
                break
        order = fewest
    kept = torch.zeros_like(p)
    kept[order] = p[order] / p[order].sum()
    return kept


def one_line_error(capsys, argv, *expected, main=None):
    """Run LLM.main(argv) (or another copy's `main`) and check it failed the way a user should see:
    exit code 2 and a single line `error: ...` on stderr that contains every expected piece of text."""
    code = (main or LLM.main)(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for word in expected:
        assert word in err, err
    return err


def run_into(tmp_path_factory, name, argv):
    """Run LLM.main(argv) into a fresh folder (for module-scoped fixtures); returns the folder."""
    out = tmp_path_factory.mktemp(name)
    assert LLM.main(list(argv) + ["--out", str(out)]) == 0
    return out


@pytest.fixture(scope="session")
def tiny_run(tmp_path_factory):
    """The output folder of one tiny run of the whole program (TINY_RUN), shared by every test
    that reads outputs or a trained checkpoint. Tests that write there remove what they wrote."""
    return run_into(tmp_path_factory, "run", TINY_RUN)


# The same run with word pieces (section 3): 120 tokens, the 600 proverbs' characters and merges.
BPE_RUN = TINY_RUN + ["--tokenizer", "bpe", "--vocab-size", "120"]


@pytest.fixture(scope="session")
def bpe_run(tmp_path_factory):
    """The output folder of the tiny run with word pieces (BPE_RUN), shared like tiny_run."""
    return run_into(tmp_path_factory, "bpe", BPE_RUN)


@pytest.fixture
def trained(tiny_run):
    """The checkpoint of the shared tiny run (3 epochs on the proverbs)."""
    return tiny_run / "model.pt"


@pytest.fixture
def trained_copy(tiny_run, tmp_path):
    """A copy of that checkpoint in a folder of this test's own, tmp/outputs/model.pt, for tests
    that write beside it."""
    out = tmp_path / "outputs"
    out.mkdir()
    shutil.copy(tiny_run / "model.pt", out / "model.pt")
    return out / "model.pt"
