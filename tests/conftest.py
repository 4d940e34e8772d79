"""Share the tests out among pytest-xdist workers (``make test PYTEST_WORKERS=3``, ``--dist loadgroup``).

Each Molecule scenario and the real-servers test is an xdist group that one worker runs whole.
Left to xdist, groups go to whichever worker asks next, and a worker asks for its next group
when it starts the one before (it keeps two in hand): on 2026-12-02 that put four groups on one
worker (72 min) and two on the other, which then idled for about 7 minutes. So the groups that
were collected are dealt out here, once, longest first to the least loaded worker (by
GROUP_TEST_MINUTES times the group's collected tests), and each worker's groups become one
xdist work unit (the ``@worker-N-of-M`` suffix of their test ids). The other tests come after
them, in file order, each its own unit: a worker takes the next one when fewer than two of its
tests are left, so one or two of them may wait behind its last group. Only ``--dist loadgroup``
keeps a scenario's releases apart (they use the same container names and ports).
"""

import pytest

# Minutes one test of each group took in a `make test` on three workers: its group's time
# divided by its tests in the default matrix (the scenarios: one test per release, from
# benchmarks/profile_tests.py on .ansible/molecule-*.log; the real-servers test: seven tests, the
# sum of the seconds of its steps, which it prints). A clean clone of 14efa78 (`bash .ci/run`,
# 2026-12-03), the scenarios under Mitogen, three groups at a time on two cores.
GROUP_TEST_MINUTES = {
    "nginx_gunicorn": (829 + 404) / 60 / 2,
    "haproxy_cluster": 1281 / 60,
    "real_servers": 1231 / 60 / 7,
    "apache_modwsgi": (371 + 209) / 60 / 2,
    "nginx_uwsgi": 481 / 60,
    "uwsgi_supervisord": 509 / 60,
    # Its three tests alone, 2026-12-02 (101 s).
    "ansible_core_versions": 101 / 60 / 3,
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


def deal_groups(group_minutes, workers):
    """Each group to a worker, longest first to the least loaded: {group: worker index}.

    :param dict group_minutes: group name (str) to its minutes (float).
    :param int workers: how many workers share the groups (at least 1).
    :returns: dict of group name (str) to worker index (int, 0 to ``workers`` - 1); ties go to the
        lowest index and the groups of equal minutes by name, so every worker deals the same way.
    """
    loads = [0.0] * workers
    dealt = {}
    for group, minutes in sorted(group_minutes.items(), key=lambda entry: (-entry[1], entry[0])):
        worker = loads.index(min(loads))
        loads[worker] += minutes
        dealt[group] = worker
    return dealt


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(config, items):
    """Each worker's groups, longest first, then the other tests; under xdist, one work unit per worker.

    It runs after the tests were deselected (-k, -m) and after xdist's own hook, which appends
    ``@<group>`` to the test ids (the work unit is what follows the last ``@``); ``@worker-N-of-M``
    is appended to that.
    """
    group_minutes = {}
    for item in items:
        group = xdist_group(item)
        if group in GROUP_TEST_MINUTES:
            group_minutes[group] = group_minutes.get(group, 0.0) + GROUP_TEST_MINUTES[group]
    workers = worker_count(config)
    dealt = deal_groups(group_minutes, max(workers, 1))

    def order(item):
        group = xdist_group(item)
        if group not in dealt:
            return (1, 0, 0.0, "")
        return (0, dealt[group], -group_minutes[group], group)

    items.sort(key=order)
    if workers > 1 and getattr(config.option, "loadgroup", False):
        for item in items:
            group = xdist_group(item)
            if group in dealt:
                item._nodeid = f"{item.nodeid}@worker-{dealt[group] + 1}-of-{workers}"
