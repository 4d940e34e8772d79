#!/usr/bin/env python3
"""Benchmark the topologies in throw-away containers, one per topology; rerun at will.

Measures, in one run on the same machine (compare ratios, not absolute numbers: these
machines are noisy):

* nginx_gunicorn: seconds for a fresh converge, an idempotent re-run and a code-only
  redeploy, once with each release installer (uv and pip), side by side, and with uv under
  Mitogen's linear strategy instead of Ansible's own executor;
* for every topology: failed requests of a client polling /healthz through the front door
  during a code-only redeploy, a refused broken release (it fails its in-process health
  request), an automatic rollback (a release that fails only behind the app server),
  ``playbooks/rollback.yml``, and a plain restart of the app server (the control that must
  show failures);
* for every topology: wrk requests per second to /healthz through the front door (for
  nginx_gunicorn and apache_modwsgi, over HTTPS with a self-signed certificate as well as plain
  HTTP; ``--part tls`` measures only that, for every front door, HAProxy included), and
  straight to its app server over HTTP on a loopback port where the app server is not the
  front door itself, both from inside its container; and each front door's rate against
  nginx_gunicorn's;
* apache_modwsgi: failed requests under wrk while the daemon processes reload three times by a
  touch of the WSGI script, against three graceful reloads of Apache;
* haproxy_cluster (a load balancer and three nginx + Gunicorn nodes on a network of their own):
  seconds for a fresh converge and for a rolling ``deploy.yml`` of the three nodes, failed
  requests of a polling client during that deploy, during a deploy whose release fails on the
  second node (rolled back on every node), and during the same deploy without drain (the
  control); wrk req/s through HAProxy over the three nodes, over plain HTTP and HTTPS, against
  one node's nginx reached directly, all from the load balancer's container.

Usage: ``make bench`` (or ``python benchmarks/topologies.py [--keep] [--wrk-seconds N]
[--part single|cluster|tls]``).
Needs the venv, a Docker engine and the test images (``make setup``); MOLECULE_DISTRO picks
the Debian release (debian13 by default).
"""

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "molecule" / "resources" / "tests"))

from flaskstack_checks import Poller, break_sample_app, copy_sample_app, mitogen_environment  # noqa: E402

APP = "sample_app"
# A loopback port for the app server reached directly, beside the one the topology uses.
DIRECT_PORT = 8011


@dataclass(frozen=True)
class Topology:
    """One topology in its own bench container.

    :param str name: the topology (its playbook and inventory group).
    :param int port: its front door's port on 127.0.0.1.
    :param str prefix: the URL prefix of the app ("" for the site root).
    :param str broken_behind: a Python line that fails requests only under this app server.
    :param list restart: the command that restarts the app server (the control).
    :param str direct: a shell command that starts the app server by hand with the live
        config on DIRECT_PORT (HTTP), for wrk; empty when the front door is the app server.
    :param tuple reloads: (label, command) pairs of reloads to count failed requests of under wrk.
    :param tuple tls_vars: (name, value) inventory variables that make its front door serve HTTPS
        beside plain HTTP (no redirect), for wrk over both; empty for a plain HTTP front door.
    """

    name: str
    port: int
    prefix: str
    broken_behind: str
    restart: list
    direct: str
    reloads: tuple = ()
    tls_vars: tuple = ()

    @property
    def host(self):
        """The bench container's name (str)."""
        return f"flaskstack-bench-{self.name.replace('_', '-')}"

    @property
    def front_door(self):
        """The polled URL through the front door (str)."""
        return f"http://127.0.0.1:{self.port}{self.prefix}/healthz"


UWSGI_INI = f"/etc/uwsgi-flaskstack/{APP}.ini"
# The live ini with HTTP on DIRECT_PORT instead of its own listener, run by hand.
UWSGI_DIRECT = (
    f"sed -e '/^socket = /d; /^chown-socket/d; /^chmod-socket/d; /^http-socket = /d' {UWSGI_INI} > /root/bench.ini"
    f" && echo 'http-socket = 127.0.0.1:{DIRECT_PORT}' >> /root/bench.ini"
    f" && /srv/{APP}/current/venv/bin/python /srv/{APP}/current/venv/bin/uwsgi --ini /root/bench.ini"
    " --daemonize /dev/null --pidfile /root/bench.pid"
)
GUNICORN_DIRECT = (
    f"runuser -u {APP} -- /srv/{APP}/current/venv/bin/python -m gunicorn --config /etc/gunicorn/{APP}.conf.py"
    f" --bind 127.0.0.1:{DIRECT_PORT} --pid /tmp/bench.pid --daemon --control-socket /tmp/bench.ctl"
    f" --access-logfile /dev/null --chdir /srv/{APP}/current/app && sleep 1 && cp /tmp/bench.pid /root/bench.pid"
)
TOPOLOGIES = [
    Topology("nginx_gunicorn", 18090, "", "if 'gunicorn.socket' in request.environ: raise RuntimeError('broken')",
             ["systemctl", "restart", f"gunicorn-{APP}.socket", f"gunicorn-{APP}.service"], GUNICORN_DIRECT,
             tls_vars=(("tls_certificate_source", "selfsigned"), ("nginx_proxy_http_redirect", "false"))),
    Topology("nginx_uwsgi", 18091, "", "if 'uwsgi.version' in request.environ: raise RuntimeError('broken')",
             ["systemctl", "restart", f"uwsgi-{APP}.service"], UWSGI_DIRECT),
    Topology("uwsgi_supervisord", 18092, "/app", "if 'uwsgi.version' in request.environ: raise RuntimeError('broken')",
             ["supervisorctl", "restart", f"uwsgi-{APP}"], UWSGI_DIRECT),
    Topology("apache_modwsgi", 18093, "/hip", "if 'mod_wsgi.version' in request.environ: raise RuntimeError('broken')",
             ["systemctl", "restart", "apache2"], "",
             (("touch of the WSGI script", ["touch", f"/srv/{APP}/current/app/flaskstack_wsgi.py"]),
              ("apache2ctl graceful", ["apache2ctl", "graceful"])),
             tls_vars=(("tls_certificate_source", "selfsigned"), ("apache_modwsgi_http_redirect", "false"))),
]

CLUSTER_LB = "flaskstack-bench-lb"
CLUSTER_NODES = [f"flaskstack-bench-node{number}" for number in (1, 2, 3)]
CLUSTER_FRONT_DOOR = "http://127.0.0.1:18094/healthz"
# No rate limit: wrk and the poller come from one address.
# The connection by its short name, as in INVENTORY below.
CLUSTER_INVENTORY = f"""---
all:
  vars:
    ansible_connection: docker
    sandbox_ansible_bytecode_cache: false
    sandbox_network: flaskstack-bench-cluster
    sandbox_network_subnet: 172.30.94.0/24
    flask_app_server_names: [localhost, 127.0.0.1]
    flask_app_health_path: /healthz
    haproxy_check_interval: 1000
    haproxy_rate_limit: 0
  children:
    haproxy_cluster_lb:
      hosts:
        {CLUSTER_LB}:
          sandbox_http_port: 18094
          sandbox_ipv4_address: 172.30.94.10
          haproxy_cluster_lb_address: 172.30.94.10
          tls_certificate_source: selfsigned
          haproxy_http_redirect: false
    haproxy_cluster_nodes:
      hosts:
{"".join(f"        {name}:{chr(10)}          sandbox_ipv4_address: 172.30.94.{11 + index}{chr(10)}"
        f"          haproxy_cluster_node_address: 172.30.94.{11 + index}{chr(10)}" for index, name in enumerate(CLUSTER_NODES))}"""

# Docker's short connection name (community.docker.docker under Ansible's own executor), which
# Mitogen takes over for the runs under its strategy.
# No per-client limits: wrk and the poller come from one address.
INVENTORY = "---\nall:\n  vars:\n    ansible_connection: docker\n" \
    "    sandbox_ansible_bytecode_cache: false\n    flask_app_server_names: [localhost, 127.0.0.1]\n" \
    "    nginx_proxy_limit_req_rate: 0\n    nginx_proxy_limit_conn: 0\n" \
    "    apache_modwsgi_rate_limit: 0\n    apache_modwsgi_limit_conn: 0\n  children:\n" + "".join(
        f"    {topology.name}:\n      hosts:\n        {topology.host}:\n          sandbox_http_port: {topology.port}\n"
        + "".join(f"          {name}: {value}\n" for name, value in topology.tls_vars)
        for topology in TOPOLOGIES)


def playbook(inventory, name, *args, check=True, profile=False, mitogen=False):
    """Run one of playbooks/ against the bench inventory.

    :param bool check: raise when the playbook fails.
    :param bool profile: time every task (Ansible's profile_tasks callback; its table ends the output).
    :param bool mitogen: run under Mitogen's linear strategy instead of Ansible's own executor.
    :returns: (seconds taken as float, the run's combined output as str, its exit code as int).
    :raises RuntimeError: when the playbook fails and ``check`` is true.
    """
    env = dict(os.environ)
    if profile:
        env.update(ANSIBLE_CALLBACKS_ENABLED="ansible.posix.profile_tasks", PROFILE_TASKS_TASK_OUTPUT_LIMIT="all")
    if mitogen:
        env.update(mitogen_environment())
    started = time.monotonic()
    run = subprocess.run(
        ["ansible-playbook", "-i", str(inventory), str(ROOT / "playbooks" / name), *args],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False, env=env,
    )
    seconds = time.monotonic() - started
    if check and run.returncode != 0:
        raise RuntimeError(f"{name} failed:\n{run.stdout[-3000:]}")
    return seconds, run.stdout, run.returncode


def changed_count(output):
    """Sum of changed= over the PLAY RECAP lines of a playbook run (int)."""
    return sum(int(count) for count in re.findall(r"changed=(\d+)", output))


def task_count(output):
    """Tasks a playbook run went through, over every host of its PLAY RECAP: (run, skipped) as ints.

    A task counts once per host: ``ok`` (which includes ``changed``) and ``failed`` ones ran on the
    host or the controller; ``skipped`` ones cost only their condition.
    """
    counts = {key: 0 for key in ("ok", "failed", "skipped")}
    for key, value in re.findall(r"\b(ok|failed|skipped)=(\d+)", output):
        counts[key] += int(value)
    return counts["ok"] + counts["failed"], counts["skipped"]


def slowest_tasks(output):
    """The profile_tasks table at the end of a profiled run (str; empty when the run was not profiled)."""
    lines = output.splitlines()
    rows = [line for line in lines if re.search(r" -{3,} +[\d.]+s$", line)]
    return "\n".join("    " + re.sub(r" -{3,} +", "  ", row) for row in rows)


def in_container(host, *command, check=True):
    """Run a command in a bench container; returns its stdout (str)."""
    return subprocess.run(
        ["docker", "exec", host, *command], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, check=check,
    ).stdout


def wrk_errors(output):
    """The non-2xx/socket error summary of a wrk run's output (str, "none" without errors)."""
    return ", ".join(re.findall(r"(Non-2xx or 3xx responses: \d+|Socket errors: .*)", output)) or "none"


def wrk_requests_per_second(host, url, seconds, connections, host_header=None):
    """Run wrk in a container against ``url``.

    :param str host_header: a Host header to send instead of the URL's host name.
    :returns: (requests per second as float, non-2xx/socket error summary as str).
    """
    header = ["-H", f"Host: {host_header}"] if host_header else []
    output = in_container(host, "wrk", "-t2", f"-c{connections}", f"-d{seconds}s", *header, url)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    return rate, wrk_errors(output)


def https_rows(label, host, path, seconds, connections, plain_rate):
    """wrk over HTTPS to ``https://127.0.0.1<path>`` in ``host``, against the plain HTTP rate of the same run.

    wrk keeps its connections alive: the handshakes are amortised, as for browsers.

    :param float plain_rate: req/s measured over plain HTTP on the same path.
    :returns: list of (label, value) rows: the HTTPS rate and the ratio HTTPS / plain HTTP.
    """
    secure, secure_errors = wrk_requests_per_second(host, f"https://127.0.0.1{path}", seconds, connections)
    return [
        (f"[{label}] wrk over HTTPS, keep-alive ({connections} conns)", f"{secure:.0f} req/s, errors: {secure_errors}"),
        (f"[{label}] ratio HTTPS / plain HTTP", f"{secure / plain_rate:.2f}"),
    ]


def reloads_under_wrk(topology, command, seconds, connections, reloads=3):
    """Run ``command`` in the container ``reloads`` times, evenly spaced, while wrk loads the front door.

    :param list command: the reload, for example ``["apache2ctl", "graceful"]``.
    :param int seconds: duration of the wrk run; the reloads fall within it.
    :returns: "N requests, <errors>" (str).
    """
    wrk = subprocess.Popen(
        ["docker", "exec", topology.host, "wrk", "-t2", f"-c{connections}", f"-d{seconds}s",
         f"http://127.0.0.1{topology.prefix}/healthz"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )
    for _ in range(reloads):
        time.sleep(seconds / (reloads + 1))
        in_container(topology.host, *command)
    output = wrk.communicate()[0]
    total = re.search(r"(\d+) requests in", output).group(1)
    return f"{total} requests, errors: {wrk_errors(output)}"


def polled(front_door, action):
    """Run ``action()`` under a polling client; returns (action's result, 'N failed of M')."""
    with Poller(front_door) as poller:
        result = action()
    return result, f"{len(poller.failures)} failed of {poller.total}"


def installer_timings(inventory, workdir, installer, profile=False, mitogen=False):
    """Fresh converge, idempotent re-run and code-only redeploy of nginx_gunicorn with one installer.

    :param bool profile: print each run's slowest tasks to stderr.
    :param bool mitogen: run the three under Mitogen's linear strategy (the rows say so).
    :returns: list of (label, value) rows: seconds and the tasks the run went through.
    """
    option = ["-e", f"flask_app_installer={installer}", "--limit", TOPOLOGIES[0].host]
    playbook(inventory, "sandbox_down.yml", "--limit", TOPOLOGIES[0].host)
    playbook(inventory, "sandbox_up.yml", "--limit", TOPOLOGIES[0].host)
    name = f"{installer}, mitogen" if mitogen else installer
    # (No space in the directory's name: it is passed as -e key=value.)
    source = copy_sample_app(workdir / f"app-{name.replace(', ', '-')}", "1.0.1")
    rows = []
    for label, extra in (("fresh converge", []), ("idempotent re-run", []),
                         ("code-only redeploy", ["-e", f"flask_app_source_path={source}"])):
        seconds, output, _ = playbook(inventory, "nginx_gunicorn.yml", *option, *extra, profile=profile, mitogen=mitogen)
        ran, skipped = task_count(output)
        rows.append((f"[{name}] {label}",
                     f"{seconds:.1f} s, {ran} tasks run + {skipped} skipped, changed={changed_count(output)}"))
        if profile:
            print(f"[{name}] {label}: slowest tasks\n{slowest_tasks(output)}", file=sys.stderr, flush=True)
    return rows


def deploy_figures(inventory, workdir, topology):
    """Redeploy, refused release, automatic rollback, rollback.yml and control under polling.

    The topology must be live on release 1.0.0 or 1.0.1. Returns a list of (label, value) rows.
    """
    def run(*args, check=True):
        return playbook(inventory, f"{topology.name}.yml", "--limit", topology.host, *args, check=check)

    rows = []
    source = copy_sample_app(workdir / f"{topology.name}-1.0.2", "1.0.2")
    (seconds, _, _), failures = polled(topology.front_door, lambda: run("-e", f"flask_app_source_path={source}"))
    rows.append(("code-only redeploy under polling", f"{seconds:.1f} s, {failures}"))

    broken = break_sample_app(copy_sample_app(workdir / f"{topology.name}-broken", "1.0.3"), "raise RuntimeError('broken')")
    (_, _, code), failures = polled(
        topology.front_door, lambda: run("-e", f"flask_app_source_path={broken}", check=False))
    rows.append(("broken release refused before the switch", f"exit {code}, {failures}"))

    behind = break_sample_app(copy_sample_app(workdir / f"{topology.name}-behind", "1.0.4"), topology.broken_behind)
    (_, _, code), failures = polled(topology.front_door, lambda: run(
        "-e", f"flask_app_source_path={behind}", "-e", "flask_app_health_timeout=3", check=False))
    rows.append(("automatic rollback of a release failing behind the app server", f"exit {code}, {failures}"))

    (seconds, _, _), failures = polled(
        topology.front_door, lambda: playbook(inventory, "rollback.yml", "--limit", topology.host))
    rows.append(("rollback.yml to the previous release", f"{seconds:.1f} s, {failures}"))

    def restart():
        in_container(topology.host, *topology.restart)
        time.sleep(2)

    _, failures = polled(topology.front_door, restart)
    rows.append(("control: restart under polling", failures))
    return [(f"[{topology.name}] {label}", value) for label, value in rows]


def throughput(topology, seconds, connections):
    """wrk through the front door and straight to the app server, in the topology's container.

    :returns: (front door req/s as float, list of (label, value) rows).
    """
    in_container(topology.host, "apt-get", "install", "-y", "-qq", "wrk")
    front, front_errors = wrk_requests_per_second(
        topology.host, f"http://127.0.0.1{topology.prefix}/healthz", seconds, connections)
    rows = [(f"[{topology.name}] wrk through the front door ({connections} conns)",
             f"{front:.0f} req/s, errors: {front_errors}")]
    if topology.tls_vars:
        rows += https_rows(topology.name, topology.host, f"{topology.prefix}/healthz", seconds, connections, front)
    for label, command in topology.reloads:
        rows.append((f"[{topology.name}] 3 x {label} under wrk",
                     reloads_under_wrk(topology, command, seconds, connections)))
    if topology.direct:
        in_container(topology.host, "sh", "-c", topology.direct)
        time.sleep(3)
        direct, direct_errors = wrk_requests_per_second(
            topology.host, f"http://127.0.0.1:{DIRECT_PORT}{topology.prefix}/healthz", seconds, connections)
        in_container(topology.host, "sh", "-c", "kill -INT $(cat /root/bench.pid)", check=False)
        rows += [
            (f"[{topology.name}] wrk straight to the app server", f"{direct:.0f} req/s, errors: {direct_errors}"),
            (f"[{topology.name}] ratio front door / direct", f"{front / direct:.2f}"),
        ]
    return front, rows


def cluster_figures(workdir, options, results):
    """The haproxy_cluster topology in its own four containers: appends (label, value) rows to ``results``.

    Converge, rolling deploys and wrk; rows are appended as they come, as in :func:`single_server_figures`.
    """
    inventory = workdir / "cluster.yml"
    inventory.write_text(CLUSTER_INVENTORY, encoding="utf-8")
    seconds, connections = options.wrk_seconds, options.connections

    def add(label, value):
        results.append((f"[haproxy_cluster] {label}", value))

    try:
        playbook(inventory, "sandbox_up.yml")
        fresh, _, _ = playbook(inventory, "haproxy_cluster.yml")
        add("fresh converge (1 load balancer, 3 nodes)", f"{fresh:.1f} s")

        source = copy_sample_app(workdir / "cluster-1.0.1", "1.0.1")
        (took, _, _), failures = polled(
            CLUSTER_FRONT_DOOR, lambda: playbook(inventory, "deploy.yml", "-e", f"flask_app_source_path={source}"))
        add("rolling deploy.yml of 3 nodes under polling", f"{took:.1f} s, {failures}")

        broken = break_sample_app(
            copy_sample_app(workdir / "cluster-broken", "1.0.2"),
            f"if __import__('socket').gethostname() == '{CLUSTER_NODES[1]}' and 'gunicorn.socket' in request.environ:"
            " raise RuntimeError('broken on node2')")
        for label, drain in (("release failing on node2, rolled back on every node", "true"),
                             ("control: the same deploy without drain", "false")):
            (took, _, code), failures = polled(CLUSTER_FRONT_DOOR, lambda drain=drain: playbook(
                inventory, "deploy.yml", "-e", f"flask_app_source_path={broken}", "-e", "flask_app_health_timeout=3",
                "-e", f"haproxy_cluster_drain={drain}", check=False))
            add(label, f"{took:.1f} s, exit {code}, {failures}")

        results += cluster_throughput(seconds, connections)
    finally:
        if not options.keep:
            playbook(inventory, "sandbox_down.yml", check=False)


def cluster_throughput(seconds, connections):
    """wrk from the load balancer's container: through HAProxy over HTTP and HTTPS, and to node1 directly.

    :returns: list of (label, value) rows.
    """
    in_container(CLUSTER_LB, "apt-get", "install", "-y", "-qq", "wrk")
    through, through_errors = wrk_requests_per_second(CLUSTER_LB, "http://127.0.0.1/healthz", seconds, connections)
    direct, direct_errors = wrk_requests_per_second(
        CLUSTER_LB, f"http://{CLUSTER_NODES[0]}/healthz", seconds, connections, host_header="localhost")
    return [
        (f"[haproxy_cluster] wrk through HAProxy over 3 nodes ({connections} conns)",
         f"{through:.0f} req/s, errors: {through_errors}"),
        *https_rows("haproxy_cluster", CLUSTER_LB, "/healthz", seconds, connections, through),
        ("[haproxy_cluster] wrk straight to node1's nginx", f"{direct:.0f} req/s, errors: {direct_errors}"),
        ("[haproxy_cluster] ratio HAProxy over 3 nodes / 1 node direct", f"{through / direct:.2f}"),
    ]


def tls_figures(workdir, options, results):
    """Every front door over plain HTTP and over HTTPS in one run: appends (label, value) rows to ``results``.

    nginx_gunicorn and apache_modwsgi in a container each, then the haproxy_cluster topology;
    only their converge and wrk, none of the deploys.
    """
    seconds, connections = options.wrk_seconds, options.connections
    inventory = workdir / "hosts.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    cluster = workdir / "cluster.yml"
    cluster.write_text(CLUSTER_INVENTORY, encoding="utf-8")
    try:
        for topology in (topology for topology in TOPOLOGIES if topology.tls_vars):
            playbook(inventory, "sandbox_up.yml", "--limit", topology.host)
            playbook(inventory, f"{topology.name}.yml", "--limit", topology.host)
            in_container(topology.host, "apt-get", "install", "-y", "-qq", "wrk")
            plain, plain_errors = wrk_requests_per_second(
                topology.host, f"http://127.0.0.1{topology.prefix}/healthz", seconds, connections)
            results.append((f"[{topology.name}] wrk through the front door ({connections} conns)",
                            f"{plain:.0f} req/s, errors: {plain_errors}"))
            results.extend(https_rows(
                topology.name, topology.host, f"{topology.prefix}/healthz", seconds, connections, plain))
        playbook(cluster, "sandbox_up.yml")
        playbook(cluster, "haproxy_cluster.yml")
        results.extend(cluster_throughput(seconds, connections))
    finally:
        if not options.keep:
            playbook(inventory, "sandbox_down.yml", check=False)
            playbook(cluster, "sandbox_down.yml", check=False)


def deploy_timings(workdir, options, results):
    """nginx_gunicorn's fresh converge, idempotent re-run and code-only redeploy with uv, the default installer.

    Under Ansible's own executor, then under Mitogen's linear strategy.

    Appends (label, value) rows to ``results``.
    """
    inventory = workdir / "hosts.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    try:
        results += installer_timings(inventory, workdir, "uv", profile=options.profile)
        results += installer_timings(inventory, workdir, "uv", profile=options.profile, mitogen=True)
    finally:
        if not options.keep:
            playbook(inventory, "sandbox_down.yml", "--limit", TOPOLOGIES[0].host, check=False)


def single_server_figures(workdir, options, results):
    """The single-server topologies, one container each: appends (label, value) rows to ``results``.

    Rows are appended as they come, so that a failure midway still prints the ones measured.
    """
    inventory = workdir / "hosts.yml"
    inventory.write_text(INVENTORY, encoding="utf-8")
    try:
        results += installer_timings(inventory, workdir, "pip")
        results += installer_timings(inventory, workdir, "uv", mitogen=True)
        # uv last: the rest of the run goes on in its container, live on 1.0.1.
        results += installer_timings(inventory, workdir, "uv")
        for topology in TOPOLOGIES[1:]:
            playbook(inventory, "sandbox_up.yml", "--limit", topology.host)
            seconds, _, _ = playbook(inventory, f"{topology.name}.yml", "--limit", topology.host)
            results.append((f"[{topology.name}] fresh converge", f"{seconds:.1f} s"))
        for topology in TOPOLOGIES:
            results += deploy_figures(inventory, workdir, topology)
        front_doors = {}
        for topology in TOPOLOGIES:
            front_doors[topology.name], rows = throughput(topology, options.wrk_seconds, options.connections)
            results += rows
        for topology in TOPOLOGIES[1:]:
            ratio = front_doors[topology.name] / front_doors[TOPOLOGIES[0].name]
            results.append((f"[{topology.name}] front door req/s / nginx_gunicorn's", f"{ratio:.2f}"))
    finally:
        if not options.keep:
            playbook(inventory, "sandbox_down.yml")


def main():
    """Run the benchmark and print a table; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--keep", action="store_true", help="leave the containers running")
    parser.add_argument("--wrk-seconds", type=int, default=10, help="duration of each wrk run")
    parser.add_argument("--connections", type=int, default=64, help="wrk connections")
    parser.add_argument("--part", choices=("all", "single", "cluster", "tls", "deploy"), default="all",
                        help="the single-server topologies, the haproxy_cluster topology, both, only"
                             " nginx_gunicorn's HTTP and HTTPS throughput, or only its deploy timings")
    parser.add_argument("--profile", action="store_true",
                        help="with the deploy timings, print each run's slowest tasks (to stderr)")
    options = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="flaskstack-bench-"))
    results = []
    try:
        if options.part in ("all", "single"):
            single_server_figures(workdir, options, results)
        if options.part in ("all", "cluster"):
            cluster_figures(workdir, options, results)
        if options.part == "tls":
            tls_figures(workdir, options, results)
        if options.part == "deploy":
            deploy_timings(workdir, options, results)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
        width = max((len(name) for name, _ in results), default=0)
        for name, value in results:
            print(f"{name:<{width}}  {value}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
