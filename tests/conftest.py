"""Order the tests for pytest-xdist workers (``make test PYTEST_WORKERS=2``, ``--dist loadgroup``).

Each Molecule scenario and the real-servers test is an xdist group that one worker runs whole.
A worker is handed its next group when it starts the one before (xdist keeps two in hand), so the
groups go longest first: the two workers then end close together.
"""

# Minutes each group took in the last `make test` on two workers (benchmarks/profile_tests.py on
# .ansible/molecule-*.log, a clean clone on 2026-12-01, the scenarios under Mitogen; the
# real-servers test: the time its worker spent on it, from its first test to its last). Tests
# outside these groups come after them, in file order.
GROUP_MINUTES = {
    "nginx_gunicorn": 37.9,
    "haproxy_cluster": 32.0,
    "real_servers": 15.0,
    "apache_modwsgi": 14.8,
    "nginx_uwsgi": 11.8,
    "uwsgi_supervisord": 10.0,
}


def xdist_group(item):
    """The name of the xdist group a test item belongs to (str), or None."""
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    return marker.kwargs.get("name", marker.args[0] if marker.args else None)


def pytest_collection_modifyitems(items):
    """Longest group first; the order within a group, and of the other tests, stays the files' order."""
    items.sort(key=lambda item: -GROUP_MINUTES.get(xdist_group(item), 0))
