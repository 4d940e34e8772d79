"""Lint is part of the tests: yamllint and ansible-lint (production profile) must pass, and every Python file parse."""

import ast
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("command", [["yamllint", "-s", "."], ["ansible-lint", "--nocolor"]], ids=["yamllint", "ansible-lint"])
def test_linter_passes(command):
    run = subprocess.run(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False)
    assert run.returncode == 0, run.stdout[-5000:]


def test_every_python_file_parses():
    """A scenario's test module that does not parse fails its verify only after minutes of converge: catch it here."""
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, stdout=subprocess.PIPE, text=True, check=True).stdout
    broken = []
    for name in tracked.split():
        try:
            ast.parse((ROOT / name).read_text(encoding="utf-8"), filename=name)
        except SyntaxError as error:
            broken.append(f"{name}:{error.lineno}: {error.msg}")
    assert tracked and not broken, broken
