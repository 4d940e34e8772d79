"""Lint is part of the tests: yamllint and ansible-lint (production profile) must pass, and every Python file parse.

The built collection, what users install, must pass the checks Galaxy's importer and the best-kept
collections run: ansible-test sanity, antsibull-docs lint-collection-docs and antsibull-changelog lint.
"""

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import built_collection  # noqa: E402


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


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The built collection, unpacked where ansible-test and antsibull-docs find it."""
    return built_collection.build_into(tmp_path_factory.mktemp("built"))


def run_in(directory, command, **environment):
    """Run a command in ``directory``; return its exit status and its output (stdout and stderr)."""
    run = subprocess.run(command, cwd=directory, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         check=False, env={**os.environ, **environment})
    return run.returncode, run.stdout[-5000:]


def test_ansible_test_sanity_passes_on_the_built_collection(collection):
    """Every sanity test of the installed ansible-core, no ignore file: make setup primed its virtualenvs."""
    built_collection.install_get_pip_stand_in()
    assert not (collection / "tests" / "sanity").exists(), "no ignore file"
    returncode, output = run_in(collection, built_collection.sanity_command())
    assert returncode == 0 and 'Running sanity test "pylint"' in output, output


def test_antsibull_docs_lint_passes_on_the_built_collection(collection):
    """Every role entry point documented as the docs site would render it."""
    returncode, output = run_in(collection, ["antsibull-docs", "lint-collection-docs", "--plugin-docs", "."],
                                ANSIBLE_COLLECTIONS_PATH=built_collection.collections_path(collection))
    assert returncode == 0, output


def test_antsibull_changelog_lint_passes():
    """The changelog's fragments and its release history are well-formed."""
    returncode, output = run_in(ROOT, ["antsibull-changelog", "lint"])
    assert returncode == 0, output
