#!/usr/bin/env python3
"""What a polling client costs the deploy it watches: code-only redeploys of nginx_gunicorn by poll rate.

The scenarios' tests poll the front door during every deploy, rollback and restart
(``flaskstack_checks.Poller``). On a 2-core machine the client and the requests it makes the
server answer take CPU from the deploy itself. This times, in one run and in turns, code-only
redeploys unpolled, polled back to back, and polled at fixed rates; compare the ratios, not the
seconds (these machines are noisy).

Usage: ``python benchmarks/poll_cost.py [--rounds N]``. Needs the venv, a Docker engine and the
test images (``make setup``); MOLECULE_DISTRO picks the Debian release (debian13 by default).
"""

import argparse
import sys
import tempfile
from pathlib import Path

from topologies import INVENTORY, TOPOLOGIES, playbook

from flaskstack_checks import Poller, copy_sample_app

# (label, seconds between the starts of two requests; None = no poller, 0 = back to back)
RATES = (("unpolled", None), ("back to back", 0.0), ("100 requests/s", 0.01), ("50 requests/s", 0.02))


def main():
    """Converge nginx_gunicorn, time the redeploys under each rate in turns and print them; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=2, help="redeploys under each rate")
    options = parser.parse_args()
    topology = TOPOLOGIES[0]
    workdir = Path(tempfile.mkdtemp(prefix="flaskstack-poll-cost-"))
    inventory = workdir / "hosts.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    limit = ("--limit", topology.host)
    playbook(inventory, "sandbox_down.yml", *limit)
    playbook(inventory, "sandbox_up.yml", *limit)
    try:
        playbook(inventory, f"{topology.name}.yml", *limit)
        patch = 0
        for round_number in range(1, options.rounds + 1):
            for label, interval in RATES:
                patch += 1
                source = copy_sample_app(workdir / f"app-{patch}", f"1.0.{patch}")
                redeploy = ("-e", f"flask_app_source_path={source}")
                if interval is None:
                    seconds, _, _ = playbook(inventory, f"{topology.name}.yml", *limit, *redeploy)
                    polled = ""
                else:
                    with Poller(topology.front_door, interval=interval) as poller:
                        seconds, _, _ = playbook(inventory, f"{topology.name}.yml", *limit, *redeploy)
                    polled = (f", {len(poller.failures)} failed of {poller.total} ({poller.total / seconds:.0f}/s)"
                              f" {sorted(set(poller.failures))[:3] if poller.failures else ''}")
                print(f"round {round_number}  {label:<16} {seconds:6.1f} s{polled}", flush=True)
    finally:
        playbook(inventory, "sandbox_down.yml", *limit, check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
