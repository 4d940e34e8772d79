"""Bytecode cache for the Python code Ansible sends to a test host (test images only).

Python writes no bytecode for modules imported from a zip file, and Ansible sends each task's
module to the host as a zip of the module and its module_utils: every task recompiles the same
sources, about 70 ms of the 330 ms a ``stat`` module took in a Debian 13 test container
(measured 2026-12-01 with ``python3 -X importtime``). This hook keeps the code objects compiled
from a zip under ``CACHE``, keyed by a SHA-256 of the source, so a task loads them instead.
What runs is the same: the same source gives the same code object, and its file name is set to
the zip the task sent. A ``.pth`` file imports this module when the system Python starts; the
app's virtualenvs never see it. It is on only while the directory ``ROOT`` exists
(``playbooks/sandbox_up.yml`` removes it where ``sandbox_ansible_bytecode_cache`` is false,
as ``make bench`` does, so that its timings are a real server's). Any failure to read or write
the cache falls back to Python's own compilation.
"""

import hashlib
import marshal
import os
import sys
import zipimport

import _imp

ROOT = "/var/cache/ansible-bytecode"
CACHE = os.path.join(ROOT, sys.implementation.cache_tag)
_compile_source = zipimport._compile_source  # pylint: disable=protected-access


def _cached_compile_source(pathname, source):
    """Return the code object of ``source`` (bytes) for ``pathname`` (str), from the cache when it holds it.

    :raises SyntaxError: as ``compile()`` does, for source that does not compile.
    """
    cached_path = os.path.join(CACHE, hashlib.sha256(source).hexdigest())
    try:
        with open(cached_path, "rb") as cached:
            code = marshal.load(cached)
    except (OSError, EOFError, ValueError, TypeError):
        code = _compile_source(pathname, source)
        try:
            os.makedirs(CACHE, mode=0o755, exist_ok=True)
            partial = f"{cached_path}.{os.getpid()}"
            with open(partial, "wb") as new:
                marshal.dump(code, new)
            os.replace(partial, cached_path)
        except OSError:
            pass
        return code
    _imp._fix_co_filename(code, pathname)  # pylint: disable=protected-access
    return code


if os.path.isdir(ROOT):
    zipimport._compile_source = _cached_compile_source  # pylint: disable=protected-access
