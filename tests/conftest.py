"""Make `import LLM` work from the tests, wherever pytest is started from; helpers the test files share."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def one_line_error(capsys, argv, *expected):
    """Run LLM.main(argv) and check it failed the way a user should see: exit code 2 and a
    single line `error: ...` on stderr that contains every expected piece of text."""
    import LLM
    code = LLM.main(argv)
    err = capsys.readouterr().err
    assert code == 2, err
    assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
    for word in expected:
        assert word in err, err
    return err


def run_into(tmp_path_factory, name, argv):
    """Run LLM.main(argv) into a fresh folder (for module-scoped fixtures); returns the folder."""
    import LLM
    out = tmp_path_factory.mktemp(name)
    assert LLM.main(list(argv) + ["--out", str(out)]) == 0
    return out
