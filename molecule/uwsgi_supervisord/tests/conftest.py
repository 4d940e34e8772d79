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
    """nginx proxy_pass to uWSGI's loopback http-socket under supervisord, the app under /app."""
    return Stack(
        topology="uwsgi_supervisord", container="flaskstack-uwsgi-supervisord", port=18082, prefix="/app",
        manager="supervisord",
    )
