"""Make the shared scenario helpers importable, and say where this topology answers."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "resources" / "tests"))
# The shared tests live outside this directory: pytest explains their failed asserts only if told.
pytest.register_assert_rewrite("uwsgi_topology_checks", "flaskstack_checks")

from uwsgi_topology_checks import Stack  # noqa: E402  (importable only after the path insert)


@pytest.fixture(scope="session")
def stack():
    """nginx uwsgi_pass over a unix socket to uWSGI under systemd, at the site root, with PostgreSQL and Redis."""
    return Stack(
        topology="nginx_uwsgi", container="flaskstack-nginx-uwsgi", port=18081, prefix="", manager="systemd",
        steady_processes=("postgres", "redis-server"),
    )
