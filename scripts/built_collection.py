"""Build the collection into the layout that ansible-test and antsibull-docs read, and prepare ansible-test.

Both tools check what users install, the built tarball, not the checkout: ansible-test sanity runs
only inside ``ansible_collections/<namespace>/<name>``, and the tarball leaves out what
galaxy.yml's ``build_ignore`` lists.

ansible-test runs each single-version sanity test in a virtualenv of its own, which it creates and
fills from the package index on first use, bootstrapping pip with a script it downloads from its own
file host (which CI machines cannot reach, ../shared/ENVIRONMENT.md). This script, run by
``make setup``, puts the stand-in scripts/ansible_test_get_pip.py where ansible-test looks for that
script and creates the virtualenvs, so that ``make test`` runs the sanity tests without a download.

Usage: python scripts/built_collection.py (what ``make setup`` runs: it primes ansible-test)
"""

import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import types
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
GET_PIP_STAND_IN = ROOT / "scripts" / "ansible_test_get_pip.py"
PYTHON_VERSION = f"{sys.version_info.major}.{sys.version_info.minor}"


def build_into(directory):
    """Build the collection and unpack it under ``directory``; the tarball stays in ``directory``.

    :param directory: a ``pathlib.Path`` to an empty or missing directory (created).
    :returns: the ``pathlib.Path`` of the unpacked collection,
        ``directory/ansible_collections/<namespace>/<name>``.
    :raises subprocess.CalledProcessError: when ``ansible-galaxy collection build`` fails.
    """
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    collection = directory / "ansible_collections" / galaxy["namespace"] / galaxy["name"]
    collection.mkdir(parents=True)
    subprocess.run(
        ["ansible-galaxy", "collection", "build", "--force", "--output-path", str(directory), str(ROOT)],
        check=True, stdout=subprocess.DEVNULL,
    )
    tarball = directory / f"{galaxy['namespace']}-{galaxy['name']}-{galaxy['version']}.tar.gz"
    with tarfile.open(tarball) as archive:
        # The tarball was built just above from this checkout. Python 3.11.4 added extraction
        # filters; Debian 12's Python is 3.11.2 (the Makefile's choice of interpreter).
        archive.extractall(collection, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return collection


def collections_path(collection):
    """ANSIBLE_COLLECTIONS_PATH that finds the unpacked collection first, then the controller's own.

    :param collection: the ``pathlib.Path`` that :func:`build_into` returned.
    :returns: a str: the unpacked collection's root, then this Python's import path (where the
        ``ansible`` package keeps the collections it bundles, the dependencies among them).
    """
    return os.pathsep.join([str(collection.parents[2]), *sys.path])


def install_get_pip_stand_in():
    """Copy the get-pip stand-in to the path ansible-test reads before it tries to download the script.

    :returns: the ``pathlib.Path`` written, ``~/.ansible/test/cache/get_pip_<pip version>.py``.
    :raises ImportError: when the installed ansible-test no longer has ``get_venv_packages``
        (an internal function: a newer ansible-core that moved it needs this script updated).
    """
    from ansible_test._internal.python_requirements import get_venv_packages  # pylint: disable=import-outside-toplevel

    pip_version = get_venv_packages(types.SimpleNamespace(version=PYTHON_VERSION))["pip"]
    target = Path.home() / ".ansible" / "test" / "cache" / f"get_pip_{pip_version.replace('.', '_')}.py"
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(GET_PIP_STAND_IN, target)
    return target


def sanity_command(*options):
    """Return the ansible-test sanity command line for the controller's Python.

    :param options: further ansible-test options (strings), for example ``--prime-venvs``.
    :returns: a list of strings, to run in the unpacked collection's directory.
    """
    return ["ansible-test", "sanity", "--color", "no", "--python", PYTHON_VERSION, *options]


def main():
    """Install the get-pip stand-in and create ansible-test's sanity virtualenvs; return ansible-test's status."""
    install_get_pip_stand_in()
    with tempfile.TemporaryDirectory() as scratch:
        collection = build_into(Path(scratch))
        return subprocess.run(sanity_command("--prime-venvs"), cwd=collection, check=False).returncode


if __name__ == "__main__":
    sys.exit(main())
