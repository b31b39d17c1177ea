"""Make `import LLM` work from the tests, wherever pytest is started from."""
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
