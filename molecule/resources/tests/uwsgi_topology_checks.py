"""Checks every uWSGI topology passes, through its front door and on the host.

A scenario's test module imports these tests (``from uwsgi_topology_checks import *``) and its
conftest provides the ``stack`` fixture, a :class:`Stack` that says where the topology answers.
The tests run in the order written here: the last ones redeploy, roll back and restart the app.
"""

import json
import socket
import time
import uuid
from dataclasses import dataclass

import requests

from flaskstack_checks import (
    PROJECT_DIR, Poller, assert_broken_release_is_refused_in_process, assert_release_broken_behind_the_server_is_rolled_back,
    copy_sample_app, docker_gateway, job_done_by_the_worker, run_playbook,
)

APP = "sample_app"
SERVICE = f"uwsgi-{APP}"
INI_FILE = f"/etc/uwsgi-flaskstack/{APP}.ini"
SITE_FILE = f"/etc/nginx/sites-available/{APP}.conf"
# What uWSGI logs when a graceful reload execs the master again, here with the venv's python.
RELOAD_LINE = f"running /srv/{APP}/current/venv/bin/python"

__all__ = [
    "Stack", "master_pid",
    "test_index_links_carry_the_prefix_and_the_stylesheet_comes_from_disk",
    "test_whoami_reports_the_prefix_the_real_client_and_the_scheme",
    "test_forged_host_header_behind_an_absolute_uri_does_not_reach_the_app",
    "test_only_nginx_listens_on_a_non_loopback_address",
    "test_uwsgi_master_and_workers_run_as_the_app_user",
    "test_uwsgi_config_is_strict_and_avoids_the_known_traps",
    "test_misspelled_uwsgi_option_is_refused_and_the_live_config_stays",
    "test_killed_uwsgi_master_comes_back_by_itself",
    "test_release_that_fails_its_health_request_never_goes_live",
    "test_release_that_fails_behind_uwsgi_is_rolled_back",
    "test_redeploy_under_polling_has_no_failed_request",
    "test_rollback_playbook_returns_to_the_previous_release",
    "test_control_restart_is_seen_as_downtime",
]


@dataclass(frozen=True)
class Stack:
    """Where a uWSGI topology's scenario answers.

    :param str topology: the topology's name (its playbook and inventory group).
    :param str container: the Molecule container's name.
    :param int port: the front door's port on 127.0.0.1.
    :param str prefix: the URL prefix the app is mounted under ("" for the site root).
    :param str manager: "systemd" or "supervisord".
    :param tuple steady_processes: names of processes (PostgreSQL, Redis) that a deploy must leave running, same pid.
    """

    topology: str
    container: str
    port: int
    prefix: str
    manager: str
    steady_processes: tuple = ()

    @property
    def playbook(self):
        """Path of the topology's playbook (str)."""
        return str(PROJECT_DIR / "playbooks" / f"{self.topology}.yml")

    def url(self, path):
        """The front-door URL of an app path, prefix included (str)."""
        return f"http://127.0.0.1:{self.port}{self.prefix}{path}"


def master_pid(host, stack):
    """Return the pid of the uWSGI master as its process manager reports it (int, 0 when none)."""
    if stack.manager == "systemd":
        output = host.run(f"systemctl show -p MainPID --value {SERVICE}.service").stdout
    else:
        output = host.run(f"supervisorctl pid {SERVICE}").stdout
    return int(output.strip()) if output.strip().isdigit() else 0


def oldest_pids(host, names):
    """Return {name: pid of the oldest process of that name, 0 when none} (dict)."""
    return {name: int(host.run(f"pgrep -o -x {name}").stdout.strip() or 0) for name in names}


def uwsgi_log(host, stack):
    """Return what uWSGI has logged so far: the journal of its unit, or its supervisord log (str)."""
    if stack.manager == "systemd":
        return host.run(f"journalctl --no-pager -o cat -u {SERVICE}.service").stdout
    return host.file(f"/var/log/supervisor/{SERVICE}.log").content_string


def live_state(host):
    """What a refused run must leave untouched: the ini, the site, the current and previous releases."""
    previous = host.file(f"/srv/{APP}/previous")
    return {
        "ini": host.file(INI_FILE).sha256sum,
        "site": host.file(SITE_FILE).sha256sum,
        "current": host.file(f"/srv/{APP}/current").linked_to,
        "previous": previous.linked_to if previous.exists else None,
    }


def test_index_links_carry_the_prefix_and_the_stylesheet_comes_from_disk(host, stack):
    page = requests.get(stack.url("/"), timeout=5)
    assert page.status_code == 200 and "Hello from the flaskstack sample app" in page.text
    assert f'href="{stack.prefix}/static/style.css"' in page.text
    probe = uuid.uuid4().hex
    stylesheet = requests.get(stack.url(f"/static/style.css?probe={probe}"), timeout=5)
    assert stylesheet.status_code == 200
    assert stylesheet.text == host.file(f"/srv/{APP}/current/app/src/{APP}/static/style.css").content_string
    assert stylesheet.headers["Cache-Control"] == "no-cache"
    assert probe in host.file(f"/var/log/nginx/{APP}.static.log").content_string


def test_whoami_reports_the_prefix_the_real_client_and_the_scheme(host, stack):
    body = requests.get(
        stack.url("/whoami"), timeout=5, headers={"X-Forwarded-For": "203.0.113.66", "X-Forwarded-Proto": "https"},
    ).json()
    assert body["script_root"] == stack.prefix
    assert body["url_root"] == stack.url("/")
    assert body["remote_addr"] == docker_gateway(stack.container), "a spoofed X-Forwarded-For reached the app"
    assert body["scheme"] == "http", "a spoofed X-Forwarded-Proto reached the app"


def test_forged_host_header_behind_an_absolute_uri_does_not_reach_the_app(host, stack):
    request = f"GET http://127.0.0.1{stack.prefix}/whoami HTTP/1.1\r\nHost: evil.example:666\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", stack.port), timeout=5) as connection:
        connection.sendall(request.encode())
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["host"] == "127.0.0.1"


def test_only_nginx_listens_on_a_non_loopback_address(host, stack):
    listeners = host.run("ss -Hltunp").stdout.splitlines()
    public = [line for line in listeners if not any(
        local in line.split()[4] for local in ("127.0.0.1:", "[::1]:", "127.0.0.53"))]
    assert public, "nginx should listen publicly"
    assert all('"nginx"' in line for line in public), public


def test_uwsgi_master_and_workers_run_as_the_app_user(host, stack):
    master = master_pid(host, stack)
    assert master, f"{stack.manager} reports no uWSGI master"
    workers = host.run(f"ps --ppid {master} -o user:32=,args=").stdout.splitlines()
    users = {line.split(None, 1)[0] for line in workers} | {host.run(f"ps -o user:32= -p {master}").stdout.strip()}
    cpus = int(host.run("getconf _NPROCESSORS_ONLN").stdout)
    assert len([line for line in workers if "uwsgi --ini" in line]) == 2 * cpus + 1
    assert users == {APP}
    # Started as the app user: the master never held root's rights, not even to bind its socket.
    if stack.manager == "systemd":
        assert host.run(f"systemctl show -p User --value {SERVICE}.service").stdout.strip() == APP
    else:
        assert f"user={APP}\n" in host.file(f"/etc/supervisor/conf.d/{SERVICE}.conf").content_string
    assert "uid = " not in host.file(INI_FILE).content_string


def test_uwsgi_config_is_strict_and_avoids_the_known_traps(host, stack):
    ini = host.file(INI_FILE).content_string.splitlines()
    assert "strict = true" in ini
    # Trap: pyuwsgi's reload execs the system python unless binary-path names the venv's.
    assert f"binary-path = /srv/{APP}/current/venv/bin/python" in ini
    # Trap: the misspelled py-callos-afterfork (fatal in strict mode); the right name aborts
    # workers on Python 3.13, so neither is used.
    assert not [line for line in ini if "afterfork" in line and not line.startswith(";")]
    assert "py-call-uwsgi-fork-hooks = true" in ini


def test_misspelled_uwsgi_option_is_refused_and_the_live_config_stays(host, stack):
    """The widely copied typo, passed as an extra option: strict mode refuses it before it goes live."""
    before, master = live_state(host), master_pid(host, stack)
    run = run_playbook(stack.playbook, "-e", json.dumps({"uwsgi_extra_options": {"py-callos-afterfork": True}}))
    assert run.returncode != 0
    assert "unknown config directive: py-callos-afterfork" in run.stdout
    assert live_state(host) == before
    assert master_pid(host, stack) == master
    assert requests.get(stack.url("/healthz"), timeout=5).status_code == 200


def test_killed_uwsgi_master_comes_back_by_itself(host, stack):
    killed = master_pid(host, stack)
    assert host.run(f"kill -KILL {killed}").rc == 0
    deadline, answered = time.monotonic() + 20, False
    while time.monotonic() < deadline and not answered:
        time.sleep(0.5)
        try:
            answered = requests.get(stack.url("/healthz"), timeout=2).status_code == 200
        except requests.RequestException:
            pass
    assert answered, f"{stack.manager} did not bring uWSGI back within 20 s"
    assert master_pid(host, stack) not in (0, killed)


def test_release_that_fails_its_health_request_never_goes_live(host, stack, tmp_path):
    """It imports fine but answers 500: the in-process check refuses it before the switch."""
    assert_broken_release_is_refused_in_process(stack.playbook, stack.url("/healthz"), lambda: live_state(host), tmp_path)


def test_release_that_fails_behind_uwsgi_is_rolled_back(host, stack, tmp_path):
    """It passes in-process but fails under uWSGI: the probes after the reload roll it back."""
    assert_release_broken_behind_the_server_is_rolled_back(
        stack.playbook, stack.url("/healthz"), lambda: live_state(host), tmp_path, "uwsgi.version")


def test_redeploy_under_polling_has_no_failed_request(host, stack, tmp_path):
    """A graceful reload, not a restart: same master pid, now running in the new release; the data stays."""
    master, reloads = master_pid(host, stack), uwsgi_log(host, stack).count(RELOAD_LINE)
    job_before, steady = job_done_by_the_worker(stack.url("")), oldest_pids(host, stack.steady_processes)
    with Poller(stack.url("/healthz")) as poller:
        run = run_playbook(stack.playbook, "-e", f"flask_app_source_path={copy_sample_app(tmp_path / 'app', '1.0.1')}")
    assert run.returncode == 0, run.stdout[-3000:]
    assert poller.total > 50, "the poller must have run during the deploy"
    assert poller.failures == [], f"{len(poller.failures)} of {poller.total} failed: {poller.failures[:5]}"
    assert poller.bodies[0]["version"] == "1.0.0" and poller.bodies[-1] == {"status": "ok", "version": "1.0.1"}
    # The master exec'd itself in place with the venv's python (binary-path), and serves the new release.
    assert master_pid(host, stack) == master
    assert uwsgi_log(host, stack).count(RELOAD_LINE) > reloads
    # Written through the front door before, read through it after; the worker runs the new release.
    assert requests.get(stack.url(f"/jobs/{job_before['id']}"), timeout=5).json() == job_before
    assert job_done_by_the_worker(stack.url(""))["version"] == "1.0.1"
    assert 0 not in steady.values() and oldest_pids(host, stack.steady_processes) == steady


def test_rollback_playbook_returns_to_the_previous_release(host, stack):
    live, previous = host.file(f"/srv/{APP}/current").linked_to, host.file(f"/srv/{APP}/previous").linked_to
    assert live != previous
    job_before = job_done_by_the_worker(stack.url(""))
    with Poller(stack.url("/healthz")) as poller:
        run = run_playbook(str(PROJECT_DIR / "playbooks" / "rollback.yml"))
    assert run.returncode == 0, run.stdout[-3000:]
    assert poller.total > 20 and poller.failures == [], f"{len(poller.failures)} of {poller.total} failed"
    assert poller.bodies[-1] == {"status": "ok", "version": "1.0.0"}
    assert host.file(f"/srv/{APP}/current").linked_to == previous
    assert requests.get(stack.url(f"/jobs/{job_before['id']}"), timeout=5).json() == job_before


def test_control_restart_is_seen_as_downtime(host, stack):
    """The same poller must see a plain restart: proof the checks above can fail."""
    restart = f"systemctl restart {SERVICE}.service" if stack.manager == "systemd" else f"supervisorctl restart {SERVICE}"
    with Poller(stack.url("/healthz")) as poller:
        assert host.run(restart).rc == 0
        host.run("sleep 2")
    assert poller.failures, f"no failed request in {poller.total}: the harness cannot see downtime"
    assert requests.get(stack.url("/healthz"), timeout=5).status_code == 200
