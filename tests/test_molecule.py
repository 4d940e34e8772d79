"""Every Molecule scenario as one test per Debian release, so a failing one shows in pytest's summary.

``make test`` runs every scenario on Debian 13 (trixie, the current stable) and, on Debian 12
(bookworm) as well, the nginx_gunicorn spine and apache_modwsgi (whose mod_wsgi and Python differ
between the releases); ``make test-all``
(``FLASKSTACK_TEST_MATRIX=full``) runs every scenario on both. ``molecule test`` runs destroy,
create, converge, idempotence, verify and destroy; the full log goes to
.ansible/molecule-<scenario>-<release>.log, each line stamped with the seconds since the start
(``benchmarks/profile_tests.py`` makes a table of it), and its end into the failure message.

The playbooks of the scenarios (converge, idempotence and the tests' reruns) run under Mitogen's
linear strategy: the same modules with the same arguments, in one Python process kept on each
host instead of one started for every task, which took 0.67 to 0.69 of the CPU time of Ansible's
own executor on the sandbox (a fresh converge and an idempotent one, busy time from /proc/stat,
2026-12-01). Ansible's own executor, the users' default, is then tested end to end only by
tests/test_real_servers.py (three topologies over SSH as a normal user, check mode, the rolling
deploy, rollback); ``FLASKSTACK_TEST_STRATEGY=linear`` runs the scenarios under it too (README,
Development, lists what runs under Mitogen only).

Most runs start from the stack image (``flaskstack/<release>-stack``: the stacks' Debian packages
and uv already installed, so the roles' install tasks find them); the runs in BARE_IMAGE_RUNS
start from the bare systemd image and prove that the roles install everything themselves.
"""

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "molecule" / "resources" / "tests"))

from flaskstack_checks import mitogen_environment  # noqa: E402

SCENARIOS = sorted(path.parent.name for path in (ROOT / "molecule").glob("*/molecule.yml"))
RELEASES = ["debian13", "debian12"]
# The scenarios that also run on the older release in the default matrix: the spine, and
# apache_modwsgi, whose mod_wsgi and Python differ there (4.9 with 3.11 against 5.0 with 3.13).
# haproxy_cluster (HAProxy 2.6 against 3.0) takes 10 minutes a release: it runs on Debian 12 in
# `make test-all` only, to keep `make test` within CI's hour.
BOTH_RELEASES = {"nginx_gunicorn", "apache_modwsgi"}
# On the bare image, each release: nginx_gunicorn installs nginx, certbot, git, Pebble's package
# and uv; uwsgi_supervisord is the only one with supervisor. tests/test_real_servers.py installs
# nginx, Apache with mod_wsgi and HAProxy on the bare image too (its SSH variant).
BARE_IMAGE_RUNS = {("nginx_gunicorn", "debian13"), ("nginx_gunicorn", "debian12"), ("uwsgi_supervisord", "debian13")}


def matrix():
    """The (scenario, release) pairs to run: all of them with FLASKSTACK_TEST_MATRIX=full.

    ``make test`` runs them on three pytest-xdist workers (``PYTEST_WORKERS``, ``--dist loadgroup``). Each scenario is an
    xdist group: its runs on both releases go to one worker, one after the other, because they use
    the same container names and ports. tests/conftest.py deals the groups out to the workers.
    """
    full = os.environ.get("FLASKSTACK_TEST_MATRIX") == "full"
    pairs = [
        (scenario, release) for scenario in SCENARIOS for release in RELEASES
        if full or release == RELEASES[0] or scenario in BOTH_RELEASES
    ]
    return [
        pytest.param(scenario, release, marks=pytest.mark.xdist_group(scenario), id=f"{scenario}-{release}")
        for scenario, release in pairs
    ]


# A scenario that hangs is killed after this many seconds. haproxy_cluster takes 25 minutes alone on
# a quiet machine, and went past 40 beside nginx_gunicorn on a loaded one (2026-12-01): the guard
# is for hangs, not for slow machines, and CI's own limit is 90 minutes for everything.
SCENARIO_TIMEOUT = 60 * 60


def run_timestamped(command, env, output, timeout=SCENARIO_TIMEOUT):
    """Run command in the checkout, each line of its output prefixed by the seconds since its start.

    :param list command: the command and its arguments.
    :param dict env: its environment.
    :param output: a text file to write the stamped lines to.
    :param int timeout: seconds before the command is killed (the test then fails).
    :returns int: the command's exit status.
    """
    start = time.monotonic()
    with subprocess.Popen(
        command, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace",
    ) as process:
        watchdog = threading.Timer(timeout, process.kill)
        watchdog.start()
        for line in process.stdout:
            output.write(f"{time.monotonic() - start:8.1f} {line}")
        watchdog.cancel()
        return process.wait()


def strategy_environment():
    """The ANSIBLE_* variables that put the scenarios' playbooks under Mitogen's linear strategy (dict).

    Empty with FLASKSTACK_TEST_STRATEGY=linear (Ansible's own executor). Molecule hands its
    environment on to ansible-playbook and to the tests, whose reruns of the playbooks get it too.

    :raises ValueError: when FLASKSTACK_TEST_STRATEGY is neither ``mitogen`` (the default) nor ``linear``.
    """
    strategy = os.environ.get("FLASKSTACK_TEST_STRATEGY", "mitogen")
    if strategy not in ("mitogen", "linear"):
        raise ValueError(f"FLASKSTACK_TEST_STRATEGY is {strategy!r}: use mitogen (the default) or linear")
    return {} if strategy == "linear" else mitogen_environment()


@pytest.mark.parametrize(("scenario", "release"), matrix())
def test_molecule_scenario(scenario, release):
    log = ROOT / ".ansible" / f"molecule-{scenario}-{release}.log"
    log.parent.mkdir(exist_ok=True)
    variant = "systemd" if (scenario, release) in BARE_IMAGE_RUNS else "stack"
    env = dict(os.environ, MOLECULE_DISTRO=release, FLASKSTACK_IMAGE_VARIANT=variant, **strategy_environment())
    env.pop("MOLECULE_IMAGE", None)
    with log.open("w", encoding="utf-8") as output:
        returncode = run_timestamped(["molecule", "test", "-s", scenario], env, output)
    tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-150:])
    assert returncode == 0, f"molecule test -s {scenario} on {release} failed; end of {log}:\n{tail}"
