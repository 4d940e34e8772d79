#!/usr/bin/env python3
"""Benchmark the nginx_gunicorn topology in a throw-away container; rerun at will.

Measures, in one run on the same machine (compare ratios, not absolute numbers: these
machines are noisy):

* seconds for a fresh converge, an idempotent re-run and a code-only redeploy;
* failed requests of a client polling /healthz through the front door during the code-only
  redeploy, and during a plain stop/start of Gunicorn (the control that must show failures);
* wrk requests per second to /healthz through nginx, and straight to a Gunicorn started
  by hand with the same config on a loopback port, both from inside the container.

Usage: ``make bench`` (or ``python benchmarks/nginx_gunicorn.py [--keep] [--wrk-seconds N]``).
Needs the venv, a Docker engine and the test image (``make setup``).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "molecule" / "resources" / "tests"))

from flaskstack_checks import Poller, copy_sample_app  # noqa: E402
HOST = "flaskstack-bench-web1"
PORT = 18090
APP = "sample_app"
DIRECT_PORT = 8001

INVENTORY = f"""---
all:
  children:
    nginx_gunicorn:
      hosts:
        {HOST}:
          sandbox_http_port: {PORT}
      vars:
        ansible_connection: community.docker.docker
        nginx_proxy_server_names: [localhost, 127.0.0.1]
        sandbox_image: "{os.environ.get('MOLECULE_IMAGE', 'flaskstack/debian12-systemd:latest')}"
"""


def playbook(inventory, name, *args):
    """Run one of playbooks/ against the bench inventory.

    :returns: (seconds taken as float, the run's combined output as str).
    :raises RuntimeError: when the playbook fails.
    """
    started = time.monotonic()
    run = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(ROOT / "playbooks" / name), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )
    seconds = time.monotonic() - started
    if run.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{run.stdout[-3000:]}")
    return seconds, run.stdout


def changed_count(output):
    """Sum of changed= over the PLAY RECAP lines of a playbook run (int)."""
    return sum(int(count) for count in re.findall(r"changed=(\d+)", output))


def in_container(*command, check=True):
    """Run a command in the bench container; returns its stdout (str)."""
    return subprocess.run(
        ["docker", "exec", HOST, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, check=check,
    ).stdout


def wrk_requests_per_second(url, seconds, connections):
    """Run wrk in the container against ``url``.

    :returns: (requests per second as float, non-2xx/socket error summary as str).
    """
    output = in_container("wrk", "-t2", f"-c{connections}", f"-d{seconds}s", url)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    errors = ", ".join(re.findall(r"(Non-2xx or 3xx responses: \d+|Socket errors: .*)", output)) or "none"
    return rate, errors


def main():
    """Run the benchmark and print a table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the container running")
    parser.add_argument("--wrk-seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="flaskstack-bench-"))
    inventory = workdir / "hosts.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    results = []
    try:
        playbook(inventory, "sandbox_down.yml")
        playbook(inventory, "sandbox_up.yml")
        seconds, _ = playbook(inventory, "nginx_gunicorn.yml")
        results.append(("fresh converge", f"{seconds:.1f} s"))
        seconds, output = playbook(inventory, "nginx_gunicorn.yml")
        results.append(("idempotent re-run", f"{seconds:.1f} s (changed={changed_count(output)})"))

        new_source = copy_sample_app(workdir / "app", "1.0.1")
        front_door = f"http://127.0.0.1:{PORT}/healthz"
        with Poller(front_door) as poller:
            seconds, _ = playbook(inventory, "nginx_gunicorn.yml", "-e", f"flask_app_source_path={new_source}")
        results.append(("code-only redeploy", f"{seconds:.1f} s"))
        results.append(("  polling client during it", f"{len(poller.failures)} failed of {poller.total}"))
        units = [f"gunicorn-{APP}.socket", f"gunicorn-{APP}.service"]
        with Poller(front_door) as poller:
            in_container("systemctl", "stop", *units)
            in_container("systemctl", "start", *units)
            time.sleep(2)
        results.append(("control: stop/start under polling", f"{len(poller.failures)} failed of {poller.total}"))

        in_container("apt-get", "install", "-y", "-qq", "wrk")
        venv_python = f"/srv/{APP}/current/venv/bin/python"
        in_container(
            "runuser", "-u", APP, "--", venv_python, "-m", "gunicorn", "--config", f"/etc/gunicorn/{APP}.conf.py",
            "--bind", f"127.0.0.1:{DIRECT_PORT}", "--pid", "/tmp/bench-gunicorn.pid", "--daemon",
            "--access-logfile", "/dev/null", "--chdir", f"/srv/{APP}/current",
        )
        time.sleep(3)
        through_nginx, nginx_errors = wrk_requests_per_second(
            "http://127.0.0.1/healthz", options.wrk_seconds, options.connections)
        direct, direct_errors = wrk_requests_per_second(
            f"http://127.0.0.1:{DIRECT_PORT}/healthz", options.wrk_seconds, options.connections)
        in_container("sh", "-c", "kill $(cat /tmp/bench-gunicorn.pid)", check=False)
        results.append((f"wrk through nginx ({options.connections} conns)", f"{through_nginx:.0f} req/s, errors: {nginx_errors}"))
        results.append((f"wrk straight to Gunicorn ({options.connections} conns)", f"{direct:.0f} req/s, errors: {direct_errors}"))
        results.append(("ratio nginx / direct", f"{through_nginx / direct:.2f}"))
    finally:
        if not options.keep:
            playbook(inventory, "sandbox_down.yml")
        shutil.rmtree(workdir, ignore_errors=True)

    width = max(len(name) for name, _ in results)
    for name, value in results:
        print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
