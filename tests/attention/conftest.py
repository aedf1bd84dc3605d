"""Puts this folder on sys.path, so that the tests in its subfolders can import the shared `attention_cases` (pytest's
default import mode adds only each test file's own folder)."""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
