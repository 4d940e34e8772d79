"""Apache httpd -> mod_wsgi daemon processes -> sample app under /hip, through the front door and on the host.

Every test takes the host fixture so that pytest keeps them in file order: the tests at
the end redeploy, roll back and restart the app.
"""

import json
import socket
import time
import uuid

import requests

from flaskstack_checks import (
    PROJECT_DIR, Poller, assert_broken_release_is_refused_in_process, assert_release_broken_behind_the_server_is_rolled_back,
    copy_sample_app, docker_gateway, on_debian_13_in_the_default_matrix, requests_outcomes_while_held, run_playbook,
    seconds_a_slow_client_is_kept, statuses_of_a_burst,
)

PORT = 18083
PREFIX = "/hip"
CONTAINER = "flaskstack-apache-modwsgi"
APP = "sample_app"
SITE_FILE = f"/etc/apache2/sites-available/{APP}.conf"
ACCESS_LOG = f"/var/log/apache2/{APP}.access.log"
PLAYBOOK = str(PROJECT_DIR / "playbooks" / "apache_modwsgi.yml")
# The vhost's default: WSGIDaemonProcess processes=2.
DAEMON_PROCESSES = 2


def url(path):
    """The front-door URL of an app path, under the prefix."""
    return f"http://127.0.0.1:{PORT}{PREFIX}{path}"


def apache_pid(host):
    """Pid of Apache's parent process, as systemd reports it (int, 0 when none)."""
    output = host.run("systemctl show -p MainPID --value apache2.service").stdout.strip()
    return int(output) if output.isdigit() else 0


def children(host, parent):
    """Children of ``parent`` as {pid: (user, args)}."""
    lines = host.run(f"ps --ppid {parent} -o pid=,user:32=,args=").stdout.splitlines()
    return {int(pid): (user, args) for pid, user, args in (line.split(None, 2) for line in lines)}


def daemon_processes(host):
    """The app's mod_wsgi daemon processes (display-name %{GROUP}) as {pid: user}."""
    return {pid: user for pid, (user, args) in children(host, apache_pid(host)).items() if args.startswith(f"(wsgi:{APP})")}


def apache_workers(host):
    """Apache's own worker processes, which serve the connections, as {pid: user}."""
    return {pid: user for pid, (user, args) in children(host, apache_pid(host)).items() if args.startswith("/usr/sbin/apache2")}


def live_state(host):
    """What a refused run must leave untouched: the vhost, the current and previous releases, Apache's parent."""
    previous = host.file(f"/srv/{APP}/previous")
    return {
        "site": host.file(SITE_FILE).sha256sum,
        "current": host.file(f"/srv/{APP}/current").linked_to,
        "previous": previous.linked_to if previous.exists else None,
        "apache": apache_pid(host),
    }


def logged_handler(host, marker):
    """The handler (last field) of the access log line whose request carries ``marker``."""
    line = next(line for line in host.file(ACCESS_LOG).content_string.splitlines() if marker in line)
    return line.rsplit(" ", 1)[1]


def test_pages_and_static_files_answer_under_the_prefix(host):
    page = requests.get(url(f"/?probe={(page_marker := uuid.uuid4().hex)}"), timeout=5)
    assert page.status_code == 200 and "Hello from the flaskstack sample app" in page.text
    # BREACH: the app's answers are not compressed (requests asks for gzip), files from disk are.
    assert "Content-Encoding" not in page.headers
    assert f'href="{PREFIX}/static/style.css"' in page.text
    assert logged_handler(host, page_marker) == "wsgi-script"
    stylesheet = requests.get(url(f"/static/style.css?probe={(static_marker := uuid.uuid4().hex)}"), timeout=5)
    assert stylesheet.status_code == 200
    assert stylesheet.text == host.file(f"/srv/{APP}/current/app/src/{APP}/static/style.css").content_string
    assert stylesheet.headers["Cache-Control"] == "no-cache" and stylesheet.headers["ETag"]
    assert stylesheet.headers["X-Content-Type-Options"] == "nosniff"
    assert stylesheet.headers["Referrer-Policy"] == "strict-origin-when-cross-origin"
    assert stylesheet.headers["Content-Encoding"] == "gzip"
    # Served by Apache from disk: no handler, the daemon processes never saw it.
    assert logged_handler(host, static_marker) == "-"


def test_a_client_that_never_finishes_its_headers_is_cut_off_after_the_header_timeout(host):
    # mod_reqtimeout closes it after the role's header timeout (10 s; it would allow up to 20 s to a
    # client sending 500 bytes a second), with a 408 or nothing.
    waited, answer = seconds_a_slow_client_is_kept(PORT, "localhost")
    print(f"a client that never finished its headers was cut off after {waited:.1f} s, answered {answer[:12]!r}")
    assert 9 <= waited < 20 and (answer == b"" or answer.startswith(b"HTTP/1.1 408")), (waited, answer[:200])


def test_a_client_past_the_request_rate_gets_429_while_others_are_served(host):
    # From the host itself (127.0.0.1): 200 requests to the app within 10 s (mod_qos); past them,
    # the client gets 429 for everything until the 10 s are over. Files from disk do not count.
    # The poller comes from Docker's gateway (apache_modwsgi_limit_exempt in the scenario).
    # Debian 12's mod_qos does not load: no limit there, and the run warns.
    limited = host.system_info.release.split(".")[0] != "12"
    static = statuses_of_a_burst(host, 80, f"{PREFIX}/static/style.css", "localhost", 210)
    with Poller(url("/healthz")) as poller:
        statuses = statuses_of_a_burst(host, 80, f"{PREFIX}/healthz", "localhost", 260)
        blocked = statuses_of_a_burst(host, 80, f"{PREFIX}/static/style.css", "localhost", 1)
    print(f"210 static files, then 260 app requests back to back from one client: {static}, {statuses}; "
          f"then a static file: {blocked}; the poller meanwhile: {poller.total} requests")
    assert static == {200: 210}
    if limited:
        assert statuses.get(200, 0) in range(190, 202) and statuses.get(429, 0) >= 55, statuses
        assert blocked == {429: 1}
    else:
        assert statuses == {200: 260} and blocked == {200: 1}, statuses
    assert poller.total > 0 and poller.failures == [], poller.failures[:5]
    # The block ends with its 10 s (the deploys of the tests below probe from 127.0.0.1 too): the
    # client is asked with static files, which do not count, until one is served (mod_qos's window
    # is not aligned with the burst's start: 10 s after it the block was seen still on once).
    deadline = time.monotonic() + 20
    while statuses_of_a_burst(host, 80, f"{PREFIX}/static/style.css", "localhost", 1) != {200: 1}:
        assert time.monotonic() < deadline, "still blocked 20 s after the burst"
        time.sleep(1)
    assert statuses_of_a_burst(host, 80, f"{PREFIX}/healthz", "localhost", 1) == {200: 1}


def test_a_client_past_the_connection_limit_is_cut_off(host):
    # The scenario allows 5 connections per client; each of these holds a request in progress.
    # mod_qos closes the ones past the limit without an answer (its 429 is for requests).
    outcomes = requests_outcomes_while_held(host, 80, f"{PREFIX}/healthz", "localhost", 10)
    print(f"10 requests held at once by one client: {outcomes}")
    if host.system_info.release.split(".")[0] != "12":
        assert outcomes == {"held": 5, "closed": 5}, outcomes
    else:
        assert outcomes == {"held": 10}, outcomes


def test_paths_outside_the_prefix_and_unknown_hosts_get_404(host):
    for path in ("/", "/static/style.css", "/hipster"):
        response = requests.get(f"http://127.0.0.1:{PORT}{path}", timeout=5)
        assert response.status_code == 404, path
    assert requests.get(url("/whoami"), headers={"Host": "unknown.example"}, timeout=5).status_code == 404


def test_whoami_reports_the_prefix_mod_wsgi_and_the_real_client(host):
    response = requests.get(url("/whoami"), timeout=5, headers={
        "X-Forwarded-For": "203.0.113.66", "X-Forwarded-Proto": "https", "Authorization": "Bearer token",
    })
    body = response.json()
    # WSGIPassAuthorization: the app gets the credentials, as under Gunicorn and uWSGI.
    assert body["auth_type"] == "bearer"
    assert body["script_root"] == PREFIX
    assert body["url_root"] == url("/")
    assert body["wsgi_server"].startswith("mod_wsgi/"), body
    assert body["remote_addr"] == docker_gateway(CONTAINER), "a spoofed X-Forwarded-For reached the app"
    assert body["scheme"] == "http", "a spoofed X-Forwarded-Proto reached the app"
    # ServerTokens Prod: no version or OS, in the header or in the app's environ.
    assert response.headers["Server"] == "Apache" and body["server_software"] == "Apache"


def test_app_runs_in_daemon_processes_of_the_app_user_not_in_apache_workers(host):
    daemons, workers = daemon_processes(host), apache_workers(host)
    assert len(daemons) == DAEMON_PROCESSES and set(daemons.values()) == {APP}
    assert workers and set(workers.values()) == {"www-data"}
    seen = {}
    # Over one kept-alive connection: the scenario allows 5 connections per client address, and this
    # machine's requests all come from Docker's gateway. With twenty new connections in a row, one
    # was reset once on a loaded machine, most likely by mod_qos before Apache had counted the closed
    # ones out (not reproduced). mod_wsgi hands each request to a daemon process whatever connection
    # it came on.
    with requests.Session() as client:
        for _ in range(20):
            body = client.get(url("/whoami"), timeout=5).json()
            seen[body["pid"]] = (body["user"], body["cwd"])
    assert set(seen) <= set(daemons), f"app answered from {seen}, daemon processes are {daemons}"
    assert not set(seen) & set(workers)
    # home= (without it the daemon of a system user never starts) is the live release's project directory.
    live_project = host.file(f"/srv/{APP}/current").linked_to + "/app"
    assert set(seen.values()) == {(APP, live_project)}


def test_forged_host_header_behind_an_absolute_uri_does_not_reach_the_app(host):
    request = f"GET http://127.0.0.1{PREFIX}/whoami HTTP/1.1\r\nHost: evil.example:666\r\nConnection: close\r\n\r\n"
    with socket.create_connection(("127.0.0.1", PORT), timeout=5) as connection:
        connection.sendall(request.encode())
        answer = b"".join(iter(lambda: connection.recv(65536), b""))
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200"), head
    assert json.loads(body)["host"] == "127.0.0.1"


def test_only_apache_listens_on_a_non_loopback_address(host):
    public = [line for line in host.run("ss -Hltunp").stdout.splitlines() if not any(
        local in line.split()[4] for local in ("127.0.0.1:", "[::1]:", "127.0.0.53"))]
    assert public and all('"apache2"' in line for line in public), public


def test_apache_runs_the_event_mpm_and_hides_its_version(host):
    assert "Server MPM:     event" in host.run("apache2ctl -V").stdout
    missing = requests.get(f"http://127.0.0.1:{PORT}/nowhere", timeout=5)
    assert missing.headers["Server"] == "Apache" and "Apache/" not in missing.text
    assert not host.file("/etc/apache2/sites-enabled/000-default.conf").exists
    assert requests.request("TRACE", url("/"), timeout=5).status_code == 405


def test_venv_python_other_than_mod_wsgi_s_is_refused_before_anything_changes(host):
    before = live_state(host)
    other_python = "/usr/local/bin/python-other"
    host.run(f"printf '#!/bin/sh\\necho 3.99\\n' > {other_python} && chmod 755 {other_python}")
    try:
        run = run_playbook(PLAYBOOK, "-e", f"flask_app_python={other_python}")
    finally:
        host.run(f"rm -f {other_python}")
    assert run.returncode != 0
    assert f"but flask_app_python ({other_python}) is Python 3.99" in run.stdout, run.stdout[-2000:]
    assert "changed=0" in run.stdout
    assert live_state(host) == before


def test_broken_vhost_is_rejected_and_the_old_one_keeps_serving(host):
    before, workers = live_state(host), apache_workers(host)
    run = run_playbook(PLAYBOOK, "-e", json.dumps({"apache_modwsgi_extra_directives": ["NoSuchDirective on"]}))
    assert run.returncode != 0
    assert "Invalid command 'NoSuchDirective'" in run.stdout, run.stdout[-2000:]
    assert live_state(host) == before
    assert not host.run("ls /etc/apache2/sites-available/ | grep -v '\\.conf$'").stdout, "a backup or check file was left"
    # Not reloaded: the same workers serve.
    assert set(apache_workers(host)) & set(workers)
    assert requests.get(url("/healthz"), timeout=5).status_code == 200


def test_config_that_only_the_whole_apache_config_rejects_is_put_back(host):
    """The new vhost passes on its own, not beside another file of the server: the previous vhost comes back."""
    clash = "/etc/apache2/conf-enabled/zz-clash.conf"
    host.run(f"echo 'WSGIDaemonProcess flaskstack-clash' > {clash}")
    before, workers = live_state(host), apache_workers(host)
    try:
        run = run_playbook(PLAYBOOK, "-e", json.dumps({"apache_modwsgi_extra_directives": ["WSGIDaemonProcess flaskstack-clash"]}))
    finally:
        host.run(f"rm -f {clash}")
    assert run.returncode != 0
    assert "Apache rejected the new configuration, the previous files are back in place" in run.stdout, run.stdout[-2000:]
    assert "Name duplicates previous WSGI daemon definition" in run.stdout
    assert live_state(host) == before and "flaskstack-clash" not in host.file(SITE_FILE).content_string
    assert not host.run("ls /etc/apache2/sites-available/ | grep -v '\\.conf$'").stdout, "a backup was left"
    assert set(apache_workers(host)) & set(workers)
    assert requests.get(url("/healthz"), timeout=5).status_code == 200


def test_killed_daemon_process_comes_back_by_itself(host):
    killed = next(iter(daemon_processes(host)))
    assert host.run(f"kill -KILL {killed}").rc == 0
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and (killed in daemon_processes(host) or len(daemon_processes(host)) < DAEMON_PROCESSES):
        time.sleep(0.5)
    assert killed not in daemon_processes(host) and len(daemon_processes(host)) == DAEMON_PROCESSES
    assert requests.get(url("/healthz"), timeout=5).status_code == 200


@on_debian_13_in_the_default_matrix
def test_release_that_fails_its_health_request_never_goes_live(host, tmp_path):
    """It imports fine but answers 500: the in-process check refuses it before the switch."""
    assert_broken_release_is_refused_in_process(PLAYBOOK, url("/healthz"), lambda: live_state(host), tmp_path)


@on_debian_13_in_the_default_matrix
def test_release_that_fails_under_mod_wsgi_is_rolled_back(host, tmp_path):
    """It passes in-process but fails under mod_wsgi: the probe after the reload rolls it back."""
    assert_release_broken_behind_the_server_is_rolled_back(
        PLAYBOOK, url("/healthz"), lambda: live_state(host), tmp_path, "mod_wsgi.version")


def test_redeploy_under_polling_has_no_failed_request(host, tmp_path):
    """Touching the WSGI script restarts the daemon processes; Apache itself is not reloaded."""
    apache, workers, daemons = apache_pid(host), apache_workers(host), daemon_processes(host)
    with Poller(url("/healthz")) as poller:
        run = run_playbook(PLAYBOOK, "-e", f"flask_app_source_path={copy_sample_app(tmp_path / 'app', '1.0.1')}")
    assert run.returncode == 0, run.stdout[-3000:]
    assert poller.total > 50, "the poller must have run during the deploy"
    assert poller.failures == [], f"{len(poller.failures)} of {poller.total} failed: {poller.failures[:5]}"
    assert poller.bodies[0]["version"] == "1.0.0" and poller.bodies[-1] == {"status": "ok", "version": "1.0.1"}
    # No graceful reload of Apache (it replaces every worker), no restart: only the daemon processes are new.
    assert apache_pid(host) == apache and set(apache_workers(host)) & set(workers)
    assert not set(daemon_processes(host)) & set(daemons)


def test_rollback_playbook_returns_to_the_previous_release(host):
    live, previous = host.file(f"/srv/{APP}/current").linked_to, host.file(f"/srv/{APP}/previous").linked_to
    assert live != previous
    with Poller(url("/healthz")) as poller:
        run = run_playbook(str(PROJECT_DIR / "playbooks" / "rollback.yml"))
    assert run.returncode == 0, run.stdout[-3000:]
    assert poller.total > 20 and poller.failures == [], f"{len(poller.failures)} of {poller.total} failed"
    assert poller.bodies[-1] == {"status": "ok", "version": "1.0.0"}
    assert host.file(f"/srv/{APP}/current").linked_to == previous


def test_control_restart_is_seen_as_downtime(host):
    """The same poller must see a plain restart of Apache: proof the checks above can fail."""
    with Poller(url("/healthz")) as poller:
        assert host.run("systemctl restart apache2.service").rc == 0
        host.run("sleep 2")
    assert poller.failures, f"no failed request in {poller.total}: the harness cannot see downtime"
    assert requests.get(url("/healthz"), timeout=5).status_code == 200
