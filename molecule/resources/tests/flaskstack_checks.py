"""Helpers shared by the scenarios' testinfra tests: a polling client, playbook runs.

Tests speak to the stack through its front door (a port published on 127.0.0.1), the
way a user's browser would, and re-run the shipped playbooks the way an operator would.
"""

import contextlib
import http.client
import importlib.util
import json
import os
import re
import shlex
import shutil
import socket
import ssl
import subprocess
import threading
import time
import urllib.parse
from pathlib import Path

import pytest
import requests

PROJECT_DIR = Path(os.environ.get("MOLECULE_PROJECT_DIRECTORY", Path(__file__).resolve().parents[3]))


def mitogen_environment():
    """The ANSIBLE_* variables that run ansible-playbook under Mitogen's linear strategy (dict of str).

    Mitogen takes over the connections it knows by their short names (``docker``, ``ssh``,
    ``local``), not ``community.docker.docker``: the inventory names ``docker``.

    The hosts' Python is named (Debian's ``/usr/bin/python3``, on 12 and 13): on a ``docker``
    connection Mitogen runs Ansible's interpreter discovery again before every module
    (``ansible_mitogen/transport_config.py``, ``rediscover_python``), where Ansible's own executor
    runs it once per host and run. Named, an idempotent nginx_gunicorn converge of the sandbox took
    12.1 CPU-seconds (controller and container) against 14.0, and 11.5-12.5 s against 13.7-14.4 s
    (three alternating rounds each, ``benchmarks/mitogen_interpreter.py``, 2026-12-03). The
    implicit localhost keeps the controller's own interpreter (Ansible sets it as a host variable,
    which wins over this setting).

    :raises ModuleNotFoundError: when mitogen is not installed (requirements-dev.txt pins it).
    """
    spec = importlib.util.find_spec("ansible_mitogen")
    if spec is None:
        raise ModuleNotFoundError("mitogen is not installed: pip install -r requirements-dev.txt")
    (package,) = spec.submodule_search_locations
    return {"ANSIBLE_STRATEGY_PLUGINS": os.path.join(package, "plugins", "strategy"),
            "ANSIBLE_STRATEGY": "mitogen_linear", "ANSIBLE_PYTHON_INTERPRETER": "/usr/bin/python3"}


class Poller:
    """Request one URL in a thread, 100 times a second by default, and count what fails.

    Used as a context manager around a deploy or a restart. It stops by itself after
    ``max_seconds`` or ``max_requests``, whichever comes first.

    Why 100 a second and not back to back: a back-to-back client took the CPU of the deploy it
    watched (an nginx_gunicorn redeploy on a 2-core machine, the means of two rounds: 69 s unpolled,
    106 s polled back to back at about 165 requests/s, 80 s at 100/s; ``benchmarks/poll_cost.py``,
    2026-11-30), and its rate depended on what the machine had left. A fixed rate samples every
    10 ms on every machine.

    Why 65 s before an unanswered request counts as failed: the stack decides what fails. Every
    front door gives up on its app server after 60 s (nginx's proxy and uwsgi read timeouts,
    HAProxy's ``timeout server``, Apache's ``Timeout``) and answers 502 or 504, and uWSGI's harakiri
    and mod_wsgi's queue timeout end a stuck request sooner, with an error status too; a refused,
    reset or non-2xx request fails at once. A graceful reload leaves the requests waiting in the
    socket's queue while the new workers import the app (Gunicorn stops its old workers as soon as
    it has forked the new ones), and on a 2-core CI machine running three scenarios the wait is
    long: with a 15-s client limit, one request in 5,438 (nginx_gunicorn, 2026-12-03; the slowest
    served 9.0 s) and three in uWSGI scenarios (one in 6,572, one in 3,111) went unanswered that
    long, in two of the day's five runs of ``make test``. How slow the slowest served request was is in ``slowest``.

    Why ``http.client`` and not requests: the scenarios run two at a time on two cores, so the
    poller's own CPU slows the deploy it watches. requests builds a session and reads the proxy
    settings for every call; one new-connection GET cost its caller 0.70 ms of CPU against 0.20 ms
    with ``http.client`` (1,000 requests each to a local server, 2026-12-02). No proxy is ever used:
    the front door is on this machine.

    :param str url: the URL to poll, through the front door.
    :param float timeout: seconds each request may take before it counts as failed.
    :param float max_seconds: hard limit on the polling time, in seconds.
    :param int max_requests: hard limit on the number of requests.
    :param float interval: seconds between the start of one request and the next (0 = back to
        back), which bounds the rate, for example below a rate limit; 0.01 s by default.
    :param verify: for an HTTPS URL: True (the system's CAs), False (no verification) or a CA bundle's path.
    :param str method: the HTTP method, GET by default (POST for a URL that writes, such as /jobs).
    """

    def __init__(self, url, timeout=65.0, max_seconds=600.0, max_requests=200_000, interval=0.01, verify=True, method="GET"):
        self.url = url
        self._url = urllib.parse.urlsplit(url)
        self._path = (self._url.path or "/") + (f"?{self._url.query}" if self._url.query else "")
        self.method = method
        # One TLS context for every request (loading the CAs costs more than a request), as verify says.
        self._tls = None
        if self._url.scheme == "https":
            self._tls = ssl.create_default_context(cafile=verify if isinstance(verify, str) else None)
            if verify is False:
                self._tls.check_hostname, self._tls.verify_mode = False, ssl.CERT_NONE
        self.interval = interval
        self.timeout = timeout
        self.max_seconds = max_seconds
        self.max_requests = max_requests
        self.ok = 0
        self.slowest = 0.0
        self.failures = []
        self.bodies = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        deadline = time.monotonic() + self.max_seconds
        while not self._stop.is_set() and time.monotonic() < deadline:
            if self.ok + len(self.failures) >= self.max_requests:
                break
            started = time.monotonic()
            self._request()
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))

    def _connection(self):
        """A new connection to the URL's host (http.client.HTTPConnection or HTTPSConnection)."""
        if self._tls is None:
            return http.client.HTTPConnection(self._url.hostname, self._url.port, timeout=self.timeout)
        return http.client.HTTPSConnection(self._url.hostname, self._url.port, timeout=self.timeout, context=self._tls)

    def _request(self):
        # A new connection per request: connection refusals must show too.
        connection = self._connection()
        started = time.monotonic()
        try:
            connection.request(self.method, self._path, headers={"Connection": "close"})
            response = connection.getresponse()
            elapsed = time.monotonic() - started
            payload = response.read()
        except (OSError, http.client.HTTPException) as error:
            self.failures.append(repr(error))
            return
        finally:
            connection.close()
        if response.status not in (200, 202):
            self.failures.append(f"HTTP {response.status}")
            return
        try:
            body = json.loads(payload) if "json" in (response.getheader("Content-Type") or "") else None
        except ValueError:
            self.failures.append(f"HTTP {response.status} with a body that is not JSON: {payload[:100]!r}")
            return
        self.ok += 1
        self.slowest = max(self.slowest, elapsed)
        if not self.bodies or self.bodies[-1] != body:
            self.bodies.append(body)

    @property
    def total(self):
        """Number of requests sent so far (int)."""
        return self.ok + len(self.failures)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc_info):
        self._stop.set()
        self._thread.join()
        return False


# The tests marked with this exercise logic that does not depend on the Debian release (the
# controller's checks, flask_app's release paths, the certificate sources and the redirect):
# `make test` runs them on Debian 13 only, `make test-all` (FLASKSTACK_TEST_MATRIX=full) on both.
# A Debian 12 run still proves what the release changes: its packages, Python, server versions and
# their config checks, in the converge and the tests not marked.
on_debian_13_in_the_default_matrix = pytest.mark.skipif(
    os.environ.get("MOLECULE_DISTRO", "debian13") != "debian13" and os.environ.get("FLASKSTACK_TEST_MATRIX") != "full",
    reason="release-independent; runs on Debian 13, and on every release with FLASKSTACK_TEST_MATRIX=full",
)


def enqueue_job(base_url, seconds=0.0):
    """Enqueue a job of the sample app's queue through the front door (``POST /jobs``).

    :param str base_url: the app's URL at the front door, prefix included, without a trailing slash.
    :param float seconds: how long the job runs once a worker takes it.
    :returns: the job's id (str).
    :raises AssertionError: when the front door does not answer 202.
    """
    response = requests.post(f"{base_url}/jobs?seconds={seconds}", timeout=5)
    assert response.status_code == 202, response.text
    return response.json()["id"]


def wait_for_job(base_url, job_id, state="done", seconds=30.0):
    """Ask for a job through the front door until it reaches ``state`` or ``seconds`` have passed.

    :param str base_url: as for :func:`enqueue_job`.
    :returns: the job's last report (dict), in ``state`` or not: the caller asserts.
    """
    deadline = time.monotonic() + seconds
    while True:
        job = requests.get(f"{base_url}/jobs/{job_id}", timeout=5).json()
        if job["state"] == state or time.monotonic() > deadline:
            return job
        time.sleep(0.2)


# Linux capability numbers (linux/capability.h).
CAP_NET_BIND_SERVICE, CAP_SYS_ADMIN = 10, 21


def confinement(proc_status):
    """How a running process is confined, read from its ``/proc/<pid>/status``.

    :param str proc_status: the file's text.
    :returns: whether it can gain no new privileges (bool, ``NoNewPrivs``) and its capability
        bounding set (int; bit n set when capability n is in it, ``CapBnd``).
    :rtype: tuple(bool, int)
    :raises KeyError: when the text lacks either field.
    """
    fields = dict(line.split(":", 1) for line in proc_status.splitlines())
    return fields["NoNewPrivs"].strip() == "1", int(fields["CapBnd"], 16)


def systemd_exposure(host, unit):
    """What ``systemd-analyze security`` rates a unit on the host: its overall exposure (float).

    The scale runs from 0.0 (fully sandboxed) to 10.0 (nothing restricted); systemd calls up to
    1.9 "OK" and 2.0 to 4.9 "MEDIUM" (systemd-analyze(1), "security").

    :param host: the testinfra host the unit is loaded on.
    :param str unit: the unit's full name, for example ``nginx.service``.
    :raises AssertionError: when systemd-analyze fails or prints no overall exposure level.
    """
    run = host.run(f"systemd-analyze security --no-pager {unit}")
    assert run.rc == 0, run.stderr
    match = re.search(rf"Overall exposure level for {re.escape(unit)}: ([0-9.]+)", run.stdout)
    assert match, run.stdout[-2000:]
    return float(match.group(1))


def seconds_a_slow_client_is_kept(port, host_header):
    """Open a connection to the front door, send the start of a request and never finish its headers.

    :param int port: the front door's port on 127.0.0.1.
    :param str host_header: the Host header sent, a name the site serves.
    :returns: (seconds until the server closed the connection, float; what it sent, bytes: nothing,
        or a 408 answer).
    :raises socket.timeout: when the server keeps the connection for more than 60 s.
    """
    with socket.create_connection(("127.0.0.1", port), timeout=60) as slow:
        slow.sendall(f"GET / HTTP/1.1\r\nHost: {host_header}\r\n".encode())
        started = time.monotonic()
        answer = b""
        while chunk := slow.recv(4096):
            answer += chunk
        return time.monotonic() - started, answer


# Requests back to back over keep-alive (a new connection when the server closed one): the
# count of each status, as JSON.
_BURST_SCRIPT = """
import collections, http.client, json, sys
port, path, host_header, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
statuses, connection = collections.Counter(), None
for _ in range(count):
    connection = connection or http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.request("GET", path, headers={"Host": host_header})
    answer = connection.getresponse()
    answer.read()
    statuses[answer.status] += 1
    if answer.will_close:
        connection.close()
        connection = None
print(json.dumps(statuses))
"""

# Connections that each send a request's headers and the start of its body, then wait: the
# requests are all in progress at once. Prints, as JSON, how each ended within a second: "held"
# (no answer yet), its status code, or "closed" (the server closed it without an answer).
_HELD_REQUESTS_SCRIPT = """
import collections, json, socket, sys, time
port, path, host_header, count = int(sys.argv[1]), sys.argv[2], sys.argv[3], int(sys.argv[4])
held = []
for _ in range(count):
    client = socket.create_connection(("127.0.0.1", port), timeout=5)
    try:
        client.sendall(f"POST {path} HTTP/1.1\\r\\nHost: {host_header}\\r\\nContent-Length: 1000\\r\\n\\r\\n".encode() + b"x" * 10)
    except OSError:
        pass
    held.append(client)
time.sleep(1)
outcomes = collections.Counter()
for client in held:
    client.settimeout(0.2)
    try:
        answer = client.recv(64)
        outcomes[answer.split()[1].decode() if answer.startswith(b"HTTP/") else "closed"] += 1
    except socket.timeout:
        outcomes["held"] += 1
    except OSError:
        outcomes["closed"] += 1
print(json.dumps(outcomes))
"""


def statuses_of_a_burst(host, port, path, host_header, count):
    """Send ``count`` GET requests back to back from the host itself (127.0.0.1) to its front door.

    :param host: the testinfra host whose front door is asked, from its own loopback address.
    :param int port: the front door's port on the host.
    :param str path: the path asked for.
    :param str host_header: the Host header, a name the site serves.
    :param int count: how many requests.
    :returns: {HTTP status (int): number of answers with it}.
    :raises AssertionError: when the script fails (a connection error, for example).
    """
    counts = json.loads(host.check_output(f"python3 -c {shlex.quote(_BURST_SCRIPT)} {port} {path} {host_header} {count}"))
    return {int(status): number for status, number in counts.items()}


def requests_outcomes_while_held(host, port, path, host_header, count):
    """Hold ``count`` requests in progress at once from the host itself, each over its own connection.

    Each sends its headers and 10 of its 1000 body bytes, then waits; the server counts it as an
    open request from then on (nginx's limit_conn counts a connection once its request headers are read).

    :param host: the testinfra host, as for :func:`statuses_of_a_burst`.
    :param int port: the front door's port on the host.
    :param str path: a path the app serves (a POST to it).
    :param str host_header: the Host header.
    :param int count: how many requests to hold.
    :returns: {outcome: number of requests}, the outcome "held" (still waiting for its body), "closed" (closed
        without an answer) or the answer's status code (str), within a second.
    :raises AssertionError: when the script fails.
    """
    return json.loads(host.check_output(f"python3 -c {shlex.quote(_HELD_REQUESTS_SCRIPT)} {port} {path} {host_header} {count}"))


def job_done_by_the_worker(base_url):
    """Enqueue a job through the front door and return its report once a worker did it.

    :param str base_url: as for :func:`enqueue_job`.
    :rtype: dict
    :raises AssertionError: when no worker did it within 30 s.
    """
    job = wait_for_job(base_url, enqueue_job(base_url))
    assert job["state"] == "done", job
    return job


def docker_gateway(container):
    """Return the address a container sees front-door clients come from (its bridge gateway).

    :param str container: the container's name.
    :rtype: str
    :raises subprocess.CalledProcessError: when docker cannot inspect the container.
    """
    return _first_network(container)["Gateway"]


def container_address(container):
    """Return the container's IPv4 address on its (first) Docker network.

    :param str container: the container's name.
    :rtype: str
    :raises subprocess.CalledProcessError: when docker cannot inspect the container.
    """
    return _first_network(container)["IPAddress"]


def _first_network(container):
    output = subprocess.run(
        ["docker", "inspect", "--format", "{{json .NetworkSettings.Networks}}", container],
        check=True, stdout=subprocess.PIPE, text=True,
    ).stdout
    return next(iter(json.loads(output).values()))


def tcp_port_answers(address, port, seconds=3.0):
    """Whether a TCP connection to ``address``:``port`` opens within ``seconds``.

    :param str address: an IPv4 address.
    :param int port: the TCP port.
    :param float seconds: how long to wait for the handshake; a firewall that drops gives no answer.
    :returns: True when it opened, False when refused or timed out.
    :rtype: bool
    """
    try:
        with socket.create_connection((address, port), timeout=seconds):
            return True
    except OSError:
        return False


@contextlib.contextmanager
def firewall_off(host):
    """Take the firewall role's table out of the host's running ruleset, and load it again after.

    :param host: the testinfra host.
    :raises AssertionError: when nft cannot delete or load the table.
    """
    host.check_output("nft delete table inet flaskstack")
    try:
        yield
    finally:
        host.check_output("nft -f /etc/nftables.d/flaskstack.nft")


def run_playbook(playbook, *args, cwd=None, env_overrides=None, timeout=900):
    """Run ansible-playbook against this scenario's inventory.

    :param str playbook: a path or a collection playbook name (``flaskstack.deploy.x``).
    :param args: further command-line arguments, for example ``"-e", "x=1"``.
    :param cwd: working directory (a directory without ansible.cfg to run as a user would).
    :param dict env_overrides: variables to set (a value of None removes the variable).
    :param int timeout: seconds before the run is killed (raises subprocess.TimeoutExpired).
    :returns: the finished process, with ``stdout`` holding stdout and stderr together.
    :rtype: subprocess.CompletedProcess
    """
    env = dict(os.environ, ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0")
    for key, value in (env_overrides or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    command = ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], playbook, *args]
    return subprocess.run(
        command, cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        text=True, timeout=timeout, check=False,
    )


def install_built_collection(workdir):
    """Build the collection tarball and install it offline, as a user would.

    :param pathlib.Path workdir: an empty directory for the tarball and the install.
    :returns: the collections path the collection was installed into.
    :rtype: pathlib.Path
    :raises subprocess.CalledProcessError: when the build or the install fails.
    """
    collections = workdir / "collections"
    subprocess.run(
        ["ansible-galaxy", "collection", "build", "--force", "--output-path", str(workdir), str(PROJECT_DIR)],
        check=True, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    tarball = next(workdir.glob("flaskstack-deploy-*.tar.gz"))
    subprocess.run(
        ["ansible-galaxy", "collection", "install", "--offline", "--force", "-p", str(collections), str(tarball)],
        check=True, cwd=workdir, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
    )
    return collections


def copy_sample_app(destination, version):
    """Copy the sample app to ``destination`` with ``version`` in its pyproject.toml.

    :param pathlib.Path destination: directory to create.
    :param str version: the version string the deployed app will report.
    :returns: ``destination``.
    """
    shutil.copytree(
        PROJECT_DIR / "sample_app", destination,
        ignore=shutil.ignore_patterns("*.egg-info", "__pycache__", ".pytest_cache"),
    )
    pyproject = destination / "pyproject.toml"
    text = pyproject.read_text(encoding="utf-8")
    pyproject.write_text(text.replace('version = "1.0.0"', f'version = "{version}"'), encoding="utf-8")
    return destination


def break_sample_app(source, statement):
    """Make every request of a copied sample app run ``statement`` first.

    :param pathlib.Path source: a copy made by :func:`copy_sample_app`.
    :param str statement: one line of Python, run in a ``before_request`` hook (``request`` is imported).
    :returns: ``source``.
    :raises ValueError: when the sample app no longer has the route this hooks in before.
    """
    module = source / "src" / "sample_app" / "__init__.py"
    text = module.read_text(encoding="utf-8")
    anchor = '    @app.get("/")\n'
    if anchor not in text:
        raise ValueError(f"{module} has no {anchor.strip()} to hook in before")
    hook = f"    @app.before_request\n    def broken():\n        {statement}\n\n{anchor}"
    module.write_text(text.replace(anchor, hook, 1), encoding="utf-8")
    return source


def assert_broken_release_is_refused_in_process(playbook, health_url, live_state, workdir):
    """Deploy a copy of the sample app whose every request raises: the in-process health request refuses it.

    :param str playbook: the topology's playbook.
    :param str health_url: the front door's /healthz, polled during the run.
    :param live_state: a callable returning what the refused run must leave untouched.
    :param pathlib.Path workdir: an empty directory for the copy.
    :raises AssertionError: when the release went live, the run succeeded or a request failed.
    """
    before = live_state()
    broken = break_sample_app(copy_sample_app(workdir / "app", "1.0.5"), "raise RuntimeError('broken release 1.0.5')")
    with Poller(health_url) as poller:
        run = run_playbook(playbook, "-e", f"flask_app_source_path={broken}")
    assert run.returncode != 0
    assert "failed its health request" in run.stdout and "RuntimeError: broken release 1.0.5" in run.stdout
    assert live_state() == before
    assert poller.total > 20 and poller.failures == [], f"{len(poller.failures)} of {poller.total} failed"
    assert poller.bodies == [{"status": "ok", "version": "1.0.0"}]


def assert_release_broken_behind_the_server_is_rolled_back(playbook, health_url, live_state, workdir, environ_key):
    """Deploy a copy that fails only under the app server (``environ_key`` in its WSGI environ): the probes roll it back.

    :param str playbook: the topology's playbook.
    :param str health_url: the front door's /healthz.
    :param live_state: a callable returning what the rollback must restore (previous included: a
        failed release never becomes the rollback target).
    :param pathlib.Path workdir: an empty directory for the copy.
    :param str environ_key: a key only the app server puts in the environ, like ``mod_wsgi.version``.
    :raises AssertionError: when the release stayed live or the run succeeded.
    """
    before = live_state()
    broken = break_sample_app(
        copy_sample_app(workdir / "app", "1.0.6"),
        f"if {environ_key!r} in request.environ: raise RuntimeError('broken under the app server')",
    )
    run = run_playbook(playbook, "-e", f"flask_app_source_path={broken}", "-e", "flask_app_health_timeout=3")
    assert run.returncode != 0
    assert "failed after the switch" in run.stdout and "Rolled back: current points at" in run.stdout
    assert live_state() == before
    assert requests.get(health_url, timeout=5).json()["version"] == "1.0.0"
