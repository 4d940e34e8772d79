"""Every Molecule scenario as one test per Debian release, so a failing one shows in pytest's summary.

``make test`` runs every scenario on Debian 13 (trixie, the current stable) and, on Debian 12
(bookworm) as well, the nginx_gunicorn spine and apache_modwsgi (whose mod_wsgi and Python differ
between the releases); ``make test-all``
(``FLASKSTACK_TEST_MATRIX=full``) runs every scenario on both. ``molecule test`` runs destroy,
create, converge, idempotence, verify and destroy; the full log goes to
.ansible/molecule-<scenario>-<release>.log and its end into the failure message.
"""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(path.parent.name for path in (ROOT / "molecule").glob("*/molecule.yml"))
RELEASES = ["debian13", "debian12"]
# The scenarios that also run on the older release in the default matrix: the spine, and
# apache_modwsgi, whose mod_wsgi and Python differ there (4.9 with 3.11 against 5.0 with 3.13).
# haproxy_cluster (HAProxy 2.6 against 3.0) takes 10 minutes a release: it runs on Debian 12 in
# `make test-all` only, to keep `make test` within CI's hour.
BOTH_RELEASES = {"nginx_gunicorn", "apache_modwsgi"}


def matrix():
    """The (scenario, release) pairs to run: all of them with FLASKSTACK_TEST_MATRIX=full."""
    full = os.environ.get("FLASKSTACK_TEST_MATRIX") == "full"
    return [
        (scenario, release) for scenario in SCENARIOS for release in RELEASES
        if full or release == RELEASES[0] or scenario in BOTH_RELEASES
    ]


@pytest.mark.parametrize(("scenario", "release"), matrix())
def test_molecule_scenario(scenario, release):
    log = ROOT / ".ansible" / f"molecule-{scenario}-{release}.log"
    log.parent.mkdir(exist_ok=True)
    env = dict(os.environ, MOLECULE_DISTRO=release)
    env.pop("MOLECULE_IMAGE", None)
    with log.open("w", encoding="utf-8") as output:
        run = subprocess.run(
            ["molecule", "test", "-s", scenario], cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT,
            timeout=40 * 60, check=False,
        )
    tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-150:])
    assert run.returncode == 0, f"molecule test -s {scenario} on {release} failed; end of {log}:\n{tail}"
