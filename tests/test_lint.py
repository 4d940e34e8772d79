"""Lint is part of the tests: yamllint and ansible-lint (production profile) must pass."""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["yamllint", "-s", "."], ["ansible-lint", "--nocolor"]], ids=["yamllint", "ansible-lint"])
def test_linter_passes(command):
    run = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    assert run.returncode == 0, run.stdout[-5000:]
