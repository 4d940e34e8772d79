#!/usr/bin/env python3
"""Benchmark the nginx_gunicorn topology in a throw-away container; rerun at will.

Measures, in one run on the same machine (compare ratios, not absolute numbers: these
machines are noisy):

* seconds for a fresh converge, an idempotent re-run and a code-only redeploy, once with
  each release installer (uv and pip), side by side;
* failed requests of a client polling /healthz through the front door during a code-only
  redeploy, a refused broken release (it fails its in-process health request), an automatic
  rollback (a release that fails only behind Gunicorn), ``playbooks/rollback.yml``, and a
  plain stop/start of Gunicorn (the control that must show failures);
* wrk requests per second to /healthz through nginx, and straight to a Gunicorn started
  by hand with the same config on a loopback port, both from inside the container.

Usage: ``make bench`` (or ``python benchmarks/nginx_gunicorn.py [--keep] [--wrk-seconds N]``).
Needs the venv, a Docker engine and the test images (``make setup``); MOLECULE_DISTRO picks
the Debian release (debian13 by default).
"""

import argparse
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "molecule" / "resources" / "tests"))

from flaskstack_checks import Poller, break_sample_app, copy_sample_app  # noqa: E402

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
        flask_app_server_names: [localhost, 127.0.0.1]
"""


def playbook(inventory, name, *args, check=True):
    """Run one of playbooks/ against the bench inventory.

    :param bool check: raise when the playbook fails.
    :returns: (seconds taken as float, the run's combined output as str, its exit code as int).
    :raises RuntimeError: when the playbook fails and ``check`` is true.
    """
    started = time.monotonic()
    run = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(ROOT / "playbooks" / name), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
    )
    seconds = time.monotonic() - started
    if check and run.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{run.stdout[-3000:]}")
    return seconds, run.stdout, run.returncode


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


def polled(front_door, action):
    """Run ``action()`` under a polling client; returns (action's result, 'N failed of M')."""
    with Poller(front_door) as poller:
        result = action()
    return result, f"{len(poller.failures)} failed of {poller.total}"


def installer_timings(inventory, workdir, installer):
    """Fresh converge, idempotent re-run and code-only redeploy with one installer, in a new container.

    :returns: list of (label, value) rows.
    """
    option = ["-e", f"flask_app_installer={installer}"]
    playbook(inventory, "sandbox_down.yml")
    playbook(inventory, "sandbox_up.yml")
    fresh, _, _ = playbook(inventory, "nginx_gunicorn.yml", *option)
    idempotent, output, _ = playbook(inventory, "nginx_gunicorn.yml", *option)
    source = copy_sample_app(workdir / f"app-{installer}", "1.0.1")
    redeploy, _, _ = playbook(inventory, "nginx_gunicorn.yml", *option, "-e", f"flask_app_source_path={source}")
    return [
        (f"[{installer}] fresh converge", f"{fresh:.1f} s"),
        (f"[{installer}] idempotent re-run", f"{idempotent:.1f} s (changed={changed_count(output)})"),
        (f"[{installer}] code-only redeploy", f"{redeploy:.1f} s"),
    ]


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
    front_door = f"http://127.0.0.1:{PORT}/healthz"
    results = []
    try:
        results += installer_timings(inventory, workdir, "pip")
        # uv last: the rest of the run goes on in its container, live on 1.0.1.
        results += installer_timings(inventory, workdir, "uv")

        source = copy_sample_app(workdir / "app-1.0.2", "1.0.2")
        (seconds, _, _), failures = polled(
            front_door, lambda: playbook(inventory, "nginx_gunicorn.yml", "-e", f"flask_app_source_path={source}"))
        results.append(("code-only redeploy under polling", f"{seconds:.1f} s, {failures}"))

        broken = break_sample_app(copy_sample_app(workdir / "app-broken", "1.0.3"), "raise RuntimeError('broken')")
        (_, _, code), failures = polled(front_door, lambda: playbook(
            inventory, "nginx_gunicorn.yml", "-e", f"flask_app_source_path={broken}", check=False))
        results.append(("broken release refused before the switch", f"exit {code}, {failures}"))

        behind = break_sample_app(
            copy_sample_app(workdir / "app-behind", "1.0.4"),
            "if 'gunicorn.socket' in request.environ: raise RuntimeError('broken under gunicorn')")
        (_, _, code), failures = polled(front_door, lambda: playbook(
            inventory, "nginx_gunicorn.yml", "-e", f"flask_app_source_path={behind}",
            "-e", "flask_app_health_timeout=3", check=False))
        results.append(("automatic rollback of a release failing behind Gunicorn", f"exit {code}, {failures}"))

        (seconds, _, _), failures = polled(front_door, lambda: playbook(inventory, "rollback.yml"))
        results.append(("rollback.yml to the previous release", f"{seconds:.1f} s, {failures}"))

        units = [f"gunicorn-{APP}.socket", f"gunicorn-{APP}.service"]

        def stop_start():
            in_container("systemctl", "stop", *units)
            in_container("systemctl", "start", *units)
            time.sleep(2)

        _, failures = polled(front_door, stop_start)
        results.append(("control: stop/start under polling", failures))

        in_container("apt-get", "install", "-y", "-qq", "wrk")
        venv_python = f"/srv/{APP}/current/venv/bin/python"
        in_container(
            "runuser", "-u", APP, "--", venv_python, "-m", "gunicorn", "--config", f"/etc/gunicorn/{APP}.conf.py",
            "--bind", f"127.0.0.1:{DIRECT_PORT}", "--pid", "/tmp/bench-gunicorn.pid", "--daemon",
            "--control-socket", "/tmp/bench-gunicorn.ctl",
            "--access-logfile", "/dev/null", "--chdir", f"/srv/{APP}/current/app",
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
        width = max((len(name) for name, _ in results), default=0)
        for name, value in results:
            print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
