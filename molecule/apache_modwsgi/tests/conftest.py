"""Make the shared scenario helpers importable, and their failed asserts explained."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
# The shared helpers live outside this directory: pytest explains their failed asserts only if told.
pytest.register_assert_rewrite("flaskstack_checks", "tls_checks")
