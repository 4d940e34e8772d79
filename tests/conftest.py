"""Share the tests out among pytest-xdist workers (``make test PYTEST_WORKERS=2``, ``--dist loadgroup``).

Each Molecule scenario and the real-servers test is an xdist group that one worker runs whole.
Left to xdist, groups go to whichever worker asks next, and a worker asks for its next group
when it starts the one before (it keeps two in hand): on 2026-12-02 that put four groups on one
worker (72 min) and two on the other, which then idled for about 7 minutes. So the groups are
dealt out here, once, longest first to the least loaded worker (by GROUP_MINUTES), and each
worker's groups become one xdist work unit (the ``@worker-N-of-M`` suffix of their test ids).
Tests outside these groups come after them, in file order, for whichever worker is free.
"""

import pytest

# Minutes each group took in the last `make test` on two workers (benchmarks/profile_tests.py on
# .ansible/molecule-*.log, a clean clone on 2026-12-02, the scenarios under Mitogen; the
# real-servers test: its steps' seconds, which it prints). Every group ran beside another one,
# on a machine whose two cores were busy.
GROUP_MINUTES = {
    "nginx_gunicorn": 41.5,
    "haproxy_cluster": 33.5,
    "real_servers": 21.8,
    "apache_modwsgi": 17.7,
    "nginx_uwsgi": 11.4,
    "uwsgi_supervisord": 9.5,
}


def xdist_group(item):
    """The name of the xdist group a test item belongs to (str), or None."""
    marker = item.get_closest_marker("xdist_group")
    if marker is None:
        return None
    return marker.kwargs.get("name", marker.args[0] if marker.args else None)


def worker_count(config):
    """How many pytest-xdist workers run the tests (int; 0 without xdist), on a worker or the controller."""
    workerinput = getattr(config, "workerinput", None)
    if workerinput is not None:
        return int(workerinput["workercount"])
    return int(getattr(config.option, "numprocesses", None) or 0)


def deal_groups(workers):
    """Each group of GROUP_MINUTES to a worker, longest first to the least loaded: {group: worker index}.

    :param int workers: how many workers share the groups (at least 1).
    :returns: dict of group name (str) to worker index (int, 0 to ``workers`` - 1); ties go to the
        lowest index, so every worker deals the same way.
    """
    loads = [0.0] * workers
    dealt = {}
    for group, minutes in sorted(GROUP_MINUTES.items(), key=lambda entry: (-entry[1], entry[0])):
        worker = loads.index(min(loads))
        loads[worker] += minutes
        dealt[group] = worker
    return dealt


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Each worker's groups, longest first, then the other tests; under xdist, one work unit per worker.

    It runs after xdist's own hook, which appends ``@<group>`` to the test ids (the work unit is
    what follows the last ``@``); ``@worker-N-of-M`` is appended to that.
    """
    workers = worker_count(config)
    dealt = deal_groups(max(workers, 1))

    def order(item):
        group = xdist_group(item)
        if group not in GROUP_MINUTES:
            return (1, 0, 0.0, "")
        return (0, dealt[group], -GROUP_MINUTES[group], group)

    items.sort(key=order)
    if workers > 1 and getattr(config.option, "loadgroup", False):
        for item in items:
            group = xdist_group(item)
            if group in dealt:
                item._nodeid = f"{item.nodeid}@worker-{dealt[group] + 1}-of-{workers}"
