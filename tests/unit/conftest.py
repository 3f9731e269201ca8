import sys
from pathlib import Path

# fakes.py lives beside the tests; make it importable as a plain module.
sys.path.insert(0, str(Path(__file__).parent))
