"""HAProxy -> three nginx + Gunicorn nodes -> sample app, through the front door and on the hosts.

The tests run on the load balancer only (testinfra_hosts); they reach the app nodes through
testinfra.get_host. They run in file order: the later ones stop nodes and deploy new releases.
"""

import json
import os
import shlex
import signal
import subprocess
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from types import SimpleNamespace

import pytest
import requests
import testinfra

from flaskstack_checks import (
    PROJECT_DIR, Poller, break_sample_app, copy_sample_app, docker_gateway, enqueue_job, firewall_off, run_playbook,
    wait_for_job,
)

testinfra_hosts = ["ansible://flaskstack-lb"]

FRONT_DOOR = "http://127.0.0.1:18084"
LB = "flaskstack-lb"
NODES = ["flaskstack-node1", "flaskstack-node2", "flaskstack-node3"]
DB = "flaskstack-db"
# molecule.yml's fixed addresses on the cluster network, and its molecule-only passwords.
DB_ADDRESS = "172.30.84.20"
NODE_ADDRESSES = {"flaskstack-node1": "172.30.84.11", "flaskstack-node2": "172.30.84.12", "flaskstack-node3": "172.30.84.13"}
DATABASE_PASSWORD = "molecule-only-database-password"
REDIS_PASSWORD = "molecule-only-redis-password"
APP = "sample_app"
CONFIG = "/etc/haproxy/haproxy.cfg"
PLAYBOOK = str(PROJECT_DIR / "playbooks" / "haproxy_cluster.yml")
DEPLOY = str(PROJECT_DIR / "playbooks" / "deploy.yml")
LOCK = "/var/lib/flaskstack/deploy.lock"
# The scenario's settings: checks every second, down after 3 failures, up after 2 passes; 1000 requests per 10 s.
CHECK_WINDOW = 3 * 1.0
RATE_LIMIT = 1000
# Seconds between a poller's requests: 50 per second stay below the rate limit.
POLL_INTERVAL = 0.02
# Requests a poller sends at most during a deploy: 10 minutes at that rate.
MAX_POLLED = 30_000
# HAProxy's runtime API (root only), in a script run on the load balancer: ask() sends one
# command, app_servers() gives the "show stat" rows of the app's backend servers.
RUNTIME_API = """
import csv, json, socket
def ask(command):
    api = socket.socket(socket.AF_UNIX)
    api.connect("/run/haproxy/admin.sock")
    api.sendall(command.encode() + b"\\n")
    return b"".join(iter(lambda: api.recv(65536), b"")).decode()
def app_servers():
    return [row for row in csv.DictReader(ask("show stat").lstrip("# ").splitlines())
            if row["pxname"] == "app" and row["svname"] not in ("FRONTEND", "BACKEND")]
"""
# The status of each server of the app's backend.
SERVER_STATUS_SCRIPT = RUNTIME_API + """
print(json.dumps({row["svname"]: row["status"] for row in app_servers()}))
"""
# Its process-wide connection limit and each app server's.
LIMITS_SCRIPT = RUNTIME_API + """
info = dict(line.split(": ", 1) for line in ask("show info").splitlines() if ": " in line)
print(json.dumps({"maxconn": info["Maxconn"], "servers": {row["svname"]: row["slim"] for row in app_servers()}}))
"""


def node(name):
    """A testinfra host for an app node."""
    return testinfra.get_host(f"ansible://{name}?ansible_inventory={os.environ['MOLECULE_INVENTORY_FILE']}")


def server_status(host):
    """{server name: status} of the app's backend, as HAProxy reports it (UP, DOWN, MAINT, DRAIN...)."""
    return json.loads(host.check_output(f"python3 -c {shlex.quote(SERVER_STATUS_SCRIPT)}"))


def wait_for_status(host, server, wanted, seconds):
    """Wait until ``server`` reports exactly ``wanted`` (not "UP 2/3" on its way); returns the seconds it took, or None."""
    started = time.monotonic()
    while time.monotonic() - started < seconds:
        if server_status(host)[server] == wanted:
            return time.monotonic() - started
        time.sleep(0.2)
    return None


def polling_the_front_door():
    """A poller of /healthz for the length of a deploy: 50 requests per second, for at most 10 minutes."""
    return Poller(FRONT_DOOR + "/healthz", max_seconds=600, max_requests=MAX_POLLED, interval=POLL_INTERVAL)


def assert_no_failed_request(poller):
    """The poller ran the whole deploy (it did not stop at its bound) and saw no failure."""
    assert 100 < poller.total < MAX_POLLED, f"{poller.total} requests: the poller stopped before the deploy ended"
    assert poller.failures == [], f"{len(poller.failures)} of {poller.total} failed: {poller.failures[:5]}"


def version_on(name):
    """The version that node ``name``'s own nginx serves (str), or "" while it answers no JSON."""
    body = on_node(name, "/healthz")[1]
    return body["version"] if body else ""


def release_phase_runs():
    """{node: how many times the release phase (molecule.yml's pre-activation command) ran on it}."""
    return {name: subprocess.run(
        ["docker", "exec", name, "sh", "-c", f"cat /srv/{APP}/shared/instance/release-phase.log 2>/dev/null"],
        stdout=subprocess.PIPE, text=True, check=False,
    ).stdout.count("\n") for name in NODES}


def node_versions():
    """{node: the version its own nginx serves}, asked on each node."""
    return {name: version_on(name) for name in NODES}


def on_node(name, path):
    """GET ``path`` from node ``name``'s own nginx, around the load balancer: (HTTP status, the JSON body or None)."""
    answer = subprocess.run(
        ["docker", "exec", name, "curl", "-s", "-w", "\\n%{http_code}", "-H", "Host: localhost", f"http://127.0.0.1{path}"],
        stdout=subprocess.PIPE, text=True, check=False,
    ).stdout
    body, _, status = answer.rpartition("\n")
    try:
        return int(status or 0), json.loads(body)
    except ValueError:
        return int(status or 0), None


def assert_every_node_reads_the_job(job_id):
    """Each node, asked directly, finds the job the load balancer took in."""
    answers = {name: on_node(name, f"/jobs/{job_id}") for name in NODES}
    assert all(status == 200 and body["id"] == job_id for status, body in answers.values()), answers


def migrations_of(version):
    """The release-phase migrations of ``version`` recorded in the shared database, with the node each ran on."""
    return [row for row in requests.get(FRONT_DOOR + "/migrations", timeout=5).json() if row["version"] == version]


def data_service_pids():
    """{process name: pid of its oldest process} on the database host: PostgreSQL's postmaster, and Redis."""
    return {name: node(DB).check_output(f"pgrep -o -x {name}") for name in ("postgres", "redis-server")}


# How PostgreSQL on the database host answers a client that asks for TLS (SSLRequest) and then,
# inside TLS, to log in as the app's role into its database: pg_hba.conf decides before any password
# is asked. Prints the type of the server's first message (R: it asks for the password; E: an
# error) and its text.
HBA_PROBE_SCRIPT = """
import socket, ssl, struct, sys
server = socket.create_connection((sys.argv[1], 5432), timeout=5)
server.sendall(struct.pack("!II", 8, 80877103))
assert server.recv(1) == b"S", "the server refused TLS"
tls = ssl.create_default_context()
tls.check_hostname, tls.verify_mode = False, ssl.CERT_NONE
server = tls.wrap_socket(server)
body = struct.pack("!I", 196608) + b"user\\0sample_app\\0database\\0sample_app\\0\\0"
server.sendall(struct.pack("!I", len(body) + 4) + body)
answer = server.recv(4096)
print(answer[:1].decode(), answer[5:].decode(errors="replace"))
"""


def test_every_node_is_up_and_answers_in_turn(host):
    assert set(server_status(host).values()) == {"UP"}
    hostnames = [requests.get(FRONT_DOOR + "/whoami", timeout=5).json()["hostname"] for _ in range(12)]
    assert set(hostnames) == set(NODES)
    # roundrobin: each node answers a third of the requests.
    assert all(hostnames.count(name) == 4 for name in NODES), hostnames


def test_release_phase_ran_once_in_the_converge_on_the_first_node(host):
    # The converge built the first release: its pre-activation command ran on one node only.
    assert release_phase_runs() == {"flaskstack-node1": 1, "flaskstack-node2": 0, "flaskstack-node3": 0}


def test_scheduled_job_runs_on_the_first_node_only(host):
    """molecule.yml's timer names no hosts: flask_app_timer_host, the first app node, runs it."""
    timers = {name: node(name).file(f"/etc/systemd/system/{APP}-tick.timer").exists for name in NODES}
    assert timers == {"flaskstack-node1": True, "flaskstack-node2": False, "flaskstack-node3": False}
    assert node(NODES[0]).service(f"{APP}-tick.timer").is_running
    # The runs, as the shared database recorded them (read through the load balancer).
    ticks = requests.get(FRONT_DOOR + "/ticks", timeout=5).json()
    assert ticks and {tick["hostname"] for tick in ticks} == {NODES[0]}, ticks
    for name in NODES[1:]:
        job_log = node(name).run(f"journalctl --no-pager -o cat -u {APP}-tick.service").stdout.strip()
        assert job_log in ("", "-- No entries --"), f"{name} ran the job: {job_log[:300]}"


def test_data_written_through_the_load_balancer_is_read_back_through_every_node_and_done_by_a_worker(host):
    job_id = enqueue_job(FRONT_DOOR)
    assert_every_node_reads_the_job(job_id)
    job = wait_for_job(FRONT_DOOR, job_id)
    assert job["state"] == "done" and job["version"] == "1.0.0", job
    # And through the load balancer, round robin: each node answers one of three requests.
    assert {requests.get(f"{FRONT_DOOR}/jobs/{job_id}", timeout=5).json()["state"] for _ in NODES} == {"done"}


def test_a_session_goes_on_whichever_node_answers(host):
    """Every node signs with the same secret key: the visit count in the cookie survives the round robin."""
    client = requests.Session()
    visits = [client.get(FRONT_DOOR + "/session", timeout=5).json() for _ in range(6)]
    assert [visit["visits"] for visit in visits] == [1, 2, 3, 4, 5, 6]
    assert {visit["hostname"] for visit in visits} == set(NODES)


def test_database_host_takes_only_the_app_nodes_with_their_password_and_redis_only_its_password(host):
    # Over TLS, as the app's role: from the load balancer, which is not an app node, no answer
    # (the firewall) and, without the firewall, refused by pg_hba.conf before any password; from
    # an app node, asked for the password.
    probe = f"python3 -c {shlex.quote(HBA_PROBE_SCRIPT)} {DB_ADDRESS}"
    dropped = host.run(probe)
    assert dropped.rc != 0 and "TimeoutError" in dropped.stderr, dropped.stdout + dropped.stderr
    with firewall_off(node(DB)):
        refused = host.run(probe)
    assert refused.stdout.startswith("E ") and (
        'no pg_hba.conf entry for host "172.30.84.10", user "sample_app", database "sample_app", SSL encryption'
    ) in refused.stdout, refused.stdout + refused.stderr
    asked = node(NODES[1]).run(probe)
    assert asked.stdout.startswith("R "), asked.stdout + asked.stderr
    # From an app node: its password opens the app's database over TLS, a wrong one does not.
    connect = (f"/srv/{APP}/current/venv/bin/python -c 'import sys, psycopg; "
               f"print(psycopg.connect(sys.argv[1]).execute(\"SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()\").fetchone()[0])'")
    right = node(NODES[1]).run(f"{connect} postgresql://{APP}:{DATABASE_PASSWORD}@{DB}/{APP}")
    assert right.stdout.strip() == "True", right.stderr
    wrong = node(NODES[1]).run(f"{connect} postgresql://{APP}:not-the-password-at-all@{DB}/{APP}")
    assert wrong.rc != 0 and "password authentication failed" in wrong.stderr, wrong.stderr
    # Not without TLS, even with the right password.
    plain = node(NODES[1]).run(f"{connect} postgresql://{APP}:{DATABASE_PASSWORD}@{DB}/{APP}?sslmode=disable")
    assert plain.rc != 0 and "no pg_hba.conf entry" in plain.stderr and "no encryption" in plain.stderr, plain.stderr
    # Not another database, even with the right password.
    other = node(NODES[1]).run(f"{connect} postgresql://{APP}:{DATABASE_PASSWORD}@{DB}/postgres")
    assert other.rc != 0 and "no pg_hba.conf entry" in other.stderr, other.stderr
    # Redis on its private address: nothing without the password.
    assert (redis_ping(), redis_ping(REDIS_PASSWORD)) == ("NOAUTH", "PONG")


# An HTTP request with spoofed forwarded headers, from one host to another's nginx: its status
# line, or the exception that ended it (TimeoutError: dropped).
SPOOFED_REQUEST_SCRIPT = """
import socket, sys
try:
    client = socket.create_connection((sys.argv[1], 80), timeout=3)
    client.sendall(b"GET /whoami HTTP/1.1\\r\\nHost: app.flaskstack.test\\r\\nX-Forwarded-For: 203.0.113.66\\r\\n"
                   b"X-Forwarded-Proto: https\\r\\nConnection: close\\r\\n\\r\\n")
    print(client.recv(4096).decode(errors="replace").splitlines()[0])
except OSError as error:
    print(type(error).__name__)
"""


def rules_of(name):
    """The accept rules of the host's firewall table, as nft lists them."""
    table = node(name).check_output("nft list table inet flaskstack")
    assert "policy drop;" in table, table
    return [line.strip() for line in table.splitlines() if line.strip().endswith("accept")]


def test_firewall_lets_only_the_load_balancer_reach_a_node_and_nginx_refuses_everyone_else(host):
    print({name: len(rules_of(name)) for name in (LB, NODES[0], DB)})
    assert {"tcp dport 22 accept", "tcp dport 80 accept", "tcp dport 443 accept"} <= set(rules_of(LB)), rules_of(LB)
    assert "ip saddr 172.30.84.10 tcp dport 80 accept" in rules_of(NODES[0]), rules_of(NODES[0])
    assert "tcp dport 22 accept" in rules_of(NODES[0]), rules_of(NODES[0])
    spoof = f"python3 -c {shlex.quote(SPOOFED_REQUEST_SCRIPT)} {NODE_ADDRESSES[NODES[0]]}"
    # The database host is on the cluster network but is no load balancer: dropped.
    assert node(DB).check_output(spoof) == "TimeoutError"
    # nginx on the node listens on loopback and its private address only, and without the
    # firewall refuses every client but the load balancer: the spoofed headers never reach the app.
    listening = {line.split()[3] for line in node(NODES[0]).check_output("ss -Hltn").splitlines()
                 if line.split()[3].endswith(":80")}
    assert listening == {"127.0.0.1:80", f"{NODE_ADDRESSES[NODES[0]]}:80"}, listening
    with firewall_off(node(NODES[0])):
        assert node(DB).check_output(spoof) == "HTTP/1.1 403 Forbidden"
        assert host.check_output(spoof) == "HTTP/1.1 200 OK"
    # Through the load balancer all still works, with the firewall back.
    assert host.check_output(spoof) == "HTTP/1.1 200 OK"
    assert requests.get(FRONT_DOOR + "/healthz", timeout=5).status_code == 200


def test_app_sees_the_client_and_the_scheme_haproxy_set(host):
    body = requests.get(
        FRONT_DOOR + "/whoami", timeout=5, headers={"X-Forwarded-For": "203.0.113.66", "X-Forwarded-Proto": "https"},
    ).json()
    assert body["remote_addr"] == docker_gateway(LB), "a spoofed X-Forwarded-For reached the app"
    assert body["scheme"] == "http", "a spoofed X-Forwarded-Proto reached the app"
    assert body["url_root"] == FRONT_DOOR + "/"


def test_only_the_front_door_listens_publicly_on_the_load_balancer(host):
    public = {line.split()[3] for line in host.run("ss -Hltn").stdout.splitlines() if not any(
        local in line.split()[3] for local in ("127.0.0.1:", "[::1]:", "127.0.0.11:", "127.0.0.53"))}
    # (ss cannot name HAProxy's processes here: they dropped privileges, and root lacks CAP_SYS_PTRACE.)
    # HTTP and, with the scenario's certificate, HTTPS (Pebble, its ACME CA, listens on loopback).
    assert public == {"0.0.0.0:80", "[::]:80", "0.0.0.0:443", "[::]:443"}, public
    socket_file = host.file("/run/haproxy/admin.sock")
    assert socket_file.is_socket and (socket_file.user, socket_file.mode) == ("root", 0o600)
    # The config may hold the stats page's password.
    assert (host.file(CONFIG).user, host.file(CONFIG).mode) == ("root", 0o600)


def test_requests_reach_the_journal_of_haproxy(host):
    marker = uuid.uuid4().hex
    assert requests.get(f"{FRONT_DOOR}/healthz?log={marker}", timeout=5).status_code == 200
    time.sleep(1)
    assert marker in host.run("journalctl --no-pager -o cat -u haproxy.service").stdout


def test_unknown_host_gets_404_from_haproxy_and_never_reaches_a_node(host):
    # The nodes refuse it (444); sent on, each refusal would be retried on the next node before a 502.
    marker = uuid.uuid4().hex
    started = time.monotonic()
    response = requests.get(f"{FRONT_DOOR}/healthz?log={marker}", headers={"Host": "unknown.invalid"}, timeout=5)
    assert response.status_code == 404 and time.monotonic() - started < 1, (response.status_code, response.text[:200])
    time.sleep(1)
    logged = [line for line in host.run("journalctl --no-pager -o cat -u haproxy.service").stdout.splitlines()
              if marker in line]
    assert len(logged) == 1 and "<NOSRV>" in logged[0] and " 404 " in logged[0], logged


def test_haproxy_runs_with_the_connection_limits_of_its_settings(host):
    limits = json.loads(host.check_output(f"python3 -c {shlex.quote(LIMITS_SCRIPT)}"))
    assert limits == {"maxconn": "2000", "servers": dict.fromkeys(NODES, "256")}, limits


def test_acme_challenge_goes_to_its_own_backend(host):
    token = uuid.uuid4().hex
    host.run(f"mkdir -p /tmp/acme/.well-known/acme-challenge && echo {token} > /tmp/acme/.well-known/acme-challenge/{token}")
    host.run("cd /tmp/acme && (python3 -m http.server --bind 127.0.0.1 8402 >/dev/null 2>&1 &) && sleep 1")
    try:
        response = requests.get(f"{FRONT_DOOR}/.well-known/acme-challenge/{token}", timeout=5)
    finally:
        host.run("pkill -f 'http.server --bind 127.0.0.1 8402'")
    assert response.status_code == 200 and response.text.strip() == token
    # The app has no such route: it would have answered 404.
    assert requests.get(f"{FRONT_DOOR}/.well-known/other", timeout=5).status_code == 404


def test_a_burst_above_the_rate_limit_gets_429_and_normal_traffic_does_not(host):
    time.sleep(11)  # the earlier tests' requests leave the 10-second window
    normal = [requests.get(FRONT_DOOR + "/healthz", timeout=5).status_code for _ in range(20)]
    assert set(normal) == {200}
    with ThreadPoolExecutor(max_workers=32) as pool:
        burst = list(pool.map(lambda _: requests.get(FRONT_DOOR + "/healthz", timeout=10).status_code, range(RATE_LIMIT + 300)))
    assert burst.count(429) >= 100, f"{burst.count(429)} of {len(burst)} got 429"
    assert set(burst) <= {200, 429}
    # http_req_rate(10s) still counts a share of the previous period: two periods clear it.
    time.sleep(21)
    assert requests.get(FRONT_DOOR + "/healthz", timeout=5).status_code == 200


def test_a_stopped_node_is_marked_down_within_the_check_window_and_clients_see_no_error(host):
    node2 = node("flaskstack-node2")
    units = f"gunicorn-{APP}.socket gunicorn-{APP}.service"
    with Poller(FRONT_DOOR + "/healthz", max_seconds=60, interval=POLL_INTERVAL) as poller:
        assert node2.run(f"systemctl stop {units}").rc == 0
        took_down = wait_for_status(host, "flaskstack-node2", "DOWN", CHECK_WINDOW + 5)
        assert node2.run(f"systemctl start {units}").rc == 0
        took_up = wait_for_status(host, "flaskstack-node2", "UP", 10)
    # The window, plus one check in flight and the time of a status query through testinfra.
    assert took_down is not None and took_down <= CHECK_WINDOW + 3, f"marked DOWN after {took_down} s"
    assert took_up is not None, "the restarted node did not come back UP"
    assert poller.total > 50 and poller.failures == [], f"{len(poller.failures)} of {poller.total} failed"


def test_a_killed_app_server_comes_back_by_itself(host):
    node3 = node("flaskstack-node3")
    killed = node3.check_output(f"systemctl show -p MainPID --value gunicorn-{APP}.service")
    assert node3.run(f"kill -KILL {killed}").rc == 0
    # A request that HAProxy sends to node3 before its checks fail waits in the app server's socket
    # (systemd keeps it listening) until Gunicorn is back: a second of RestartSec plus its start,
    # which once took over 5 s in CI on two busy cores. It must not fail: it may wait up to 15 s.
    with Poller(FRONT_DOOR + "/healthz", timeout=15, max_seconds=30, interval=POLL_INTERVAL) as poller:
        time.sleep(2)
        took_up = wait_for_status(host, "flaskstack-node3", "UP", 15)
    assert took_up is not None and set(server_status(host).values()) == {"UP"}
    assert node3.check_output(f"systemctl show -p MainPID --value gunicorn-{APP}.service") not in ("0", killed)
    assert poller.failures == [], f"{len(poller.failures)} of {poller.total} failed"


def test_config_haproxy_rejects_never_replaces_the_live_one(host):
    config, master = host.file(CONFIG).sha256sum, host.check_output("systemctl show -p MainPID --value haproxy.service")
    # A name that does not resolve: haproxy -c refuses the config (the port is fine for certbot).
    run = run_playbook(PLAYBOOK, "--limit", LB, "-e", "haproxy_acme_server=acme.invalid:8402")
    assert run.returncode != 0 and "failed to validate" in run.stdout, run.stdout[-2000:]
    assert host.file(CONFIG).sha256sum == config
    assert host.check_output("systemctl show -p MainPID --value haproxy.service") == master
    assert requests.get(FRONT_DOOR + "/healthz", timeout=5).status_code == 200


def stats_page_status(credentials=None):
    """What the load balancer's stats page (127.0.0.1:8404, inside its container) answers: "200", "401"... or "refused"."""
    script = (
        "import base64, sys, urllib.error, urllib.request\n"
        "request = urllib.request.Request('http://127.0.0.1:8404/')\n"
        "if credentials := sys.stdin.read():\n"
        "    request.add_header('Authorization', 'Basic ' + base64.b64encode(credentials.encode()).decode())\n"
        "try:\n"
        "    print(urllib.request.urlopen(request, timeout=5).status)\n"
        "except urllib.error.HTTPError as error:\n"
        "    print(error.code)\n"
        "except urllib.error.URLError as error:\n"
        "    print('refused' if isinstance(error.reason, ConnectionRefusedError) else repr(error.reason))\n"
    )
    # The credentials go in on stdin: no password on a command line, in the test either.
    answer = subprocess.run(["docker", "exec", "-i", LB, "python3", "-c", script], input=credentials or "",
                            capture_output=True, text=True, check=True)
    return answer.stdout.strip()


def config_write_changed(run):
    """Whether a run's "Write the HAProxy config" task reported changed (bool)."""
    task = run.stdout.split("TASK [flaskstack.deploy.haproxy : Write the HAProxy config]")
    return len(task) == 2 and "changed: [flaskstack-lb]" in task[1].split("TASK [")[0]


def test_no_secret_is_printed_in_a_play_that_sets_every_secret_and_one_that_takes_them_back(host, tmp_path):
    """Every secret of the cluster set to a new value in one run of the whole play with --diff -v:
    the stats page's password (new), the database's and Redis's passwords and the app's secret key
    (rotated); then a run with the inventory's values again (stats page off, the old passwords and
    key back). Neither output shows a secret, new or old: the second run's files no longer hold the
    new ones, but the files they replace do, and their diffs would. Each run must leave the cluster
    serving, with its data services reached with the passwords of that run.
    """
    new = {"stats": f"stats-{uuid.uuid4().hex}", "database": f"database-{uuid.uuid4().hex}",
           "redis": f"redis-{uuid.uuid4().hex}", "app": f"key-{uuid.uuid4().hex}"}
    settings = tmp_path / "secrets.json"
    settings.write_text(json.dumps({
        "haproxy_stats_enabled": True, "haproxy_stats_user": "ops", "haproxy_stats_password": new["stats"],
        "sample_app_database_password": new["database"], "sample_app_redis_password": new["redis"],
        "flask_app_secret_environment": {"FLASK_SECRET_KEY": new["app"]},
    }), encoding="utf-8")
    rotated = run_playbook(PLAYBOOK, "--diff", "-v", "-e", f"@{settings}")
    try:
        assert rotated.returncode == 0 and config_write_changed(rotated), rotated.stdout[-3000:]
        assert (stats_page_status(), stats_page_status(f"ops:{new['stats']}")) == ("401", "200")
        assert_a_job_goes_through_the_database_and_the_queue()
        assert (redis_ping(new["redis"]), redis_ping(REDIS_PASSWORD)) == ("PONG", "NOAUTH")
    finally:
        # The inventory's values again, even after a failure: the tests below deploy with them.
        back = run_playbook(PLAYBOOK, "--diff", "-v")
    assert back.returncode == 0 and config_write_changed(back), back.stdout[-3000:]
    assert "listen stats" not in host.file(CONFIG).content_string
    assert stats_page_status(f"ops:{new['stats']}") == "refused"
    assert_a_job_goes_through_the_database_and_the_queue()
    assert (redis_ping(REDIS_PASSWORD), redis_ping(new["redis"])) == ("PONG", "NOAUTH")

    secrets = [*new.values(), DATABASE_PASSWORD, REDIS_PASSWORD, "molecule-only-secret"]
    for output in (rotated.stdout, back.stdout):
        assert [secret for secret in secrets if secret in output] == []


def assert_a_job_goes_through_the_database_and_the_queue():
    """A job enqueued through the load balancer is done by a worker (PostgreSQL and Redis both reached)."""
    job = wait_for_job(FRONT_DOOR, enqueue_job(FRONT_DOOR))
    assert job["state"] == "done", job


def redis_ping(password=None):
    """What Redis answers a PING with ``password`` (None: none given) on its private address, asked on
    its host: "PONG", or the first word of its error ("NOAUTH" without a password or after a refused
    one) (str)."""
    auth = f"REDISCLI_AUTH={shlex.quote(password)} " if password is not None else ""
    answer = node(DB).run(f"{auth}redis-cli --no-auth-warning -h {DB_ADDRESS} PING")
    return answer.stdout.split()[0] if answer.stdout.split() else answer.stderr


@pytest.fixture(scope="module")
def rolling_deploy(host, tmp_path_factory):
    """One rolling deploy of 1.0.1 under a polling client that the next two tests check.

    While it holds the deploy lock, a second deploy of the same release starts, and must be
    refused without touching the fleet (the poller runs across both).
    """
    source = copy_sample_app(tmp_path_factory.mktemp("rolling") / "app", "1.0.1")
    release_phase_before = sum(release_phase_runs().values())
    job_before = enqueue_job(FRONT_DOOR)
    data_services_before = data_service_pids()
    started = time.monotonic()
    with polling_the_front_door() as poller:
        first = subprocess.Popen(
            ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], DEPLOY, "-e", f"flask_app_source_path={source}"],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=dict(os.environ, ANSIBLE_NOCOLOR="1"),
        )
        try:
            deadline = time.monotonic() + 60
            while not host.file(f"{LOCK}/holder").exists and time.monotonic() < deadline:
                time.sleep(0.5)
            second = run_playbook(DEPLOY, "-e", f"flask_app_source_path={source}")
        finally:
            output = first.communicate(timeout=900)[0]
    return SimpleNamespace(returncode=first.returncode, output=output, poller=poller, second=second,
                           seconds=time.monotonic() - started,
                           release_phase_runs=sum(release_phase_runs().values()) - release_phase_before,
                           job_before=job_before, data_services_before=data_services_before)


def test_rolling_deploy_fails_no_request_and_ends_with_every_node_on_the_new_release(host, rolling_deploy):
    assert rolling_deploy.returncode == 0, rolling_deploy.output[-3000:]
    assert_no_failed_request(rolling_deploy.poller)
    assert node_versions() == dict.fromkeys(NODES, "1.0.1")
    assert set(server_status(host).values()) == {"UP"} and not host.file(LOCK).exists
    print(f"rolling deploy of 3 nodes: {rolling_deploy.seconds:.1f} s, 0 failed of {rolling_deploy.poller.total}")


def test_second_concurrent_deploy_is_refused_while_the_first_holds_the_lock(host, rolling_deploy):
    second = rolling_deploy.second
    assert second.returncode != 0
    assert "Another deploy holds the lock" in second.stdout and " since " in second.stdout, second.stdout[-2000:]
    # It stopped at the lock: no task of it ran on an app node (the poller saw the fleet throughout).
    assert "flaskstack-node" not in second.stdout.split("Another deploy holds the lock")[1].split("PLAY RECAP")[0]


def test_release_phase_ran_once_in_the_rolling_deploy(host, rolling_deploy):
    assert rolling_deploy.returncode == 0, rolling_deploy.output[-3000:]
    assert rolling_deploy.release_phase_runs == 1, "the second, refused deploy must not run it either"
    # Its migration ran once, against the database the nodes share, on the first node.
    assert [row["hostname"] for row in migrations_of("1.0.1")] == [NODES[0]]


def test_data_from_before_the_rolling_deploy_and_after_it_is_read_back_through_every_node(host, rolling_deploy):
    assert rolling_deploy.returncode == 0, rolling_deploy.output[-3000:]
    assert_every_node_reads_the_job(rolling_deploy.job_before)
    job_after = enqueue_job(FRONT_DOOR)
    assert_every_node_reads_the_job(job_after)
    job = wait_for_job(FRONT_DOOR, job_after)
    assert job["state"] == "done" and job["version"] == "1.0.1", job
    # The deploy left PostgreSQL and Redis running as they were.
    assert data_service_pids() == rolling_deploy.data_services_before


def test_failing_release_phase_switches_no_node(host, tmp_path):
    source = copy_sample_app(tmp_path / "app", "1.0.6")
    before = release_phase_runs()
    with polling_the_front_door() as poller:
        run = run_playbook(DEPLOY, "-e", f"flask_app_source_path={source}", "-e", json.dumps(
            {"flask_app_pre_activate_commands": ["hostname >> instance/release-phase.log", "exit 3"]}))
    assert run.returncode != 0
    assert "The release phase failed on flaskstack-node1" in run.stdout, run.stdout[-3000:]
    assert "exit 3: exit status 3" in run.stdout, "the failure names the command"
    assert "The deploy stopped at flaskstack-node1" in run.stdout and "no node switched to it" in run.stdout
    after = release_phase_runs()
    assert sum(after.values()) - sum(before.values()) == 1 and after["flaskstack-node1"] == before["flaskstack-node1"] + 1
    assert node_versions() == dict.fromkeys(NODES, "1.0.1")
    assert set(server_status(host).values()) == {"UP"} and not host.file(LOCK).exists
    assert_no_failed_request(poller)
    print(f"failing release phase: 0 failed of {poller.total}")


def test_release_failing_its_build_on_one_node_switches_no_node(host, tmp_path):
    # The release is built on every node before the rollout: one that fails its in-process health
    # request on node3 alone stops the deploy before node1, built and checked first, switches.
    broken = break_sample_app(
        copy_sample_app(tmp_path / "app", "1.0.7"),
        "if __import__('socket').gethostname() == 'flaskstack-node3' and 'gunicorn.socket' not in request.environ:"
        " raise RuntimeError('broken on node3')",
    )
    with polling_the_front_door() as poller:
        run = run_playbook(DEPLOY, "-e", f"flask_app_source_path={broken}")
    assert run.returncode != 0
    assert "The deploy stopped at flaskstack-node3" in run.stdout, run.stdout[-3000:]
    assert "It failed in the build: no node switched to it" in run.stdout, run.stdout[-3000:]
    assert node_versions() == dict.fromkeys(NODES, "1.0.1")
    assert set(server_status(host).values()) == {"UP"} and not host.file(LOCK).exists
    assert_no_failed_request(poller)


def release_broken_on_node2(workdir):
    """A release 1.0.2 that fails every request under Gunicorn on node2 only: the in-process check passes."""
    return break_sample_app(
        copy_sample_app(workdir / "app", "1.0.2"),
        "if __import__('socket').gethostname() == 'flaskstack-node2' and 'gunicorn.socket' in request.environ:"
        " raise RuntimeError('broken on node2')",
    )


def test_release_failing_on_the_second_node_is_rolled_back_on_every_node(host, tmp_path):
    broken = release_broken_on_node2(tmp_path)
    with polling_the_front_door() as poller:
        run = run_playbook(DEPLOY, "-e", f"flask_app_source_path={broken}", "-e", "flask_app_health_timeout=3")
    assert run.returncode != 0
    assert "The deploy stopped at flaskstack-node2: release" in run.stdout, run.stdout[-3000:]
    assert "failed after the switch" in run.stdout and "the nodes updated before it went back too" in run.stdout
    # node1 had 1.0.2 and went back; node2 rolled itself back; node3 never got it.
    assert node_versions() == dict.fromkeys(NODES, "1.0.1")
    assert_no_failed_request(poller)
    assert set(server_status(host).values()) == {"UP"} and not host.file(LOCK).exists


def test_control_without_drain_the_broken_release_reaches_clients(host, tmp_path):
    # The same deploy as above with the nodes left in rotation: the seconds in which node2's release
    # is live before its gate rolls it back now show, so the 0 failures above are the drain's doing.
    broken = release_broken_on_node2(tmp_path)
    with polling_the_front_door() as poller:
        run = run_playbook(DEPLOY, "-e", f"flask_app_source_path={broken}", "-e", "flask_app_health_timeout=3",
                           "-e", "haproxy_cluster_drain=false")
    assert run.returncode != 0 and "The deploy stopped at flaskstack-node2" in run.stdout, run.stdout[-3000:]
    assert "HTTP 500" in poller.failures, f"no failed request of {poller.total}: {poller.failures[:5]}"
    print(f"control, deploy without drain: {len(poller.failures)} failed of {poller.total}")
    assert node_versions() == dict.fromkeys(NODES, "1.0.1")
    assert set(server_status(host).values()) == {"UP"} and not host.file(LOCK).exists


def test_deploy_limited_to_nodes_without_the_load_balancer_is_refused(host, tmp_path):
    source = copy_sample_app(tmp_path / "app", "1.0.9")
    release_phase_before = release_phase_runs()
    run = run_playbook(DEPLOY, "--limit", "flaskstack-node1", "-e", f"flask_app_source_path={source}")
    assert run.returncode != 0 and "The load balancer flaskstack-lb is not in this run" in run.stdout, run.stdout[-2000:]
    assert release_phase_runs() == release_phase_before, "refused before the release phase"
    assert node_versions() == dict.fromkeys(NODES, "1.0.1")


def test_deploy_to_a_cluster_with_two_load_balancers_is_refused(host, tmp_path):
    second_lb = tmp_path / "second-lb.yml"
    second_lb.write_text("all:\n  children:\n    haproxy_cluster_lb:\n      hosts:\n        flaskstack-lb2:\n", encoding="utf-8")
    run = run_playbook(DEPLOY, "-i", str(second_lb), "-e", f"flask_app_source_path={copy_sample_app(tmp_path / 'app', '1.0.9')}")
    assert run.returncode != 0 and "the group haproxy_cluster_lb has 2 hosts" in run.stdout, run.stdout[-2000:]
    assert node_versions() == dict.fromkeys(NODES, "1.0.1") and not host.file(LOCK).exists


def test_next_deploy_finishes_one_killed_midway_once_its_lock_expires(host, tmp_path):
    source = copy_sample_app(tmp_path / "app", "1.0.4")
    killed = subprocess.Popen(
        ["ansible-playbook", "-i", os.environ["MOLECULE_INVENTORY_FILE"], DEPLOY, "-e", f"flask_app_source_path={source}"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
        env=dict(os.environ, ANSIBLE_NOCOLOR="1", PYTHONUNBUFFERED="1"),
    )
    try:
        # Killed between the switch and the enable: at node1's wait for HAProxy's checks, which runs on
        # the controller, so no module on the load balancer outlives the kill.
        for line in killed.stdout:
            if "Give HAProxy's checks time to see the server" in line:
                break
    finally:
        os.killpg(killed.pid, signal.SIGKILL)
        killed.wait()
    assert version_on("flaskstack-node1") == "1.0.4"
    # (Its checks may be in flight: "DRAIN 2/3" is drained too.)
    assert server_status(host)["flaskstack-node1"].startswith("DRAIN") and host.file(LOCK).is_directory
    assert host.run(f"touch -d '-2 hours' {LOCK}").rc == 0
    with polling_the_front_door() as poller:
        run = run_playbook(DEPLOY, "-e", f"flask_app_source_path={source}")
    assert run.returncode == 0, run.stdout[-3000:]
    assert "changed: [flaskstack-lb]" in run.stdout.split("Remove the stale deploy lock, if it is still")[1].split("TASK")[0]
    assert node_versions() == dict.fromkeys(NODES, "1.0.4")
    assert set(server_status(host).values()) == {"UP"} and not host.file(LOCK).exists
    assert host.run("find /var/lib/flaskstack/drained -type f").stdout == ""
    assert_no_failed_request(poller)


def test_release_haproxy_checks_fail_after_its_gate_passed_is_rolled_back(host, tmp_path):
    # Passes the deploy's own probes (from the node itself) but fails HAProxy's check (from the load
    # balancer): enable never sees it pass, and the node goes back to 1.0.4 while still drained.
    broken = break_sample_app(
        copy_sample_app(tmp_path / "app", "1.0.5"),
        "if __import__('socket').gethostname() == 'flaskstack-node1' and"
        " request.headers.get('X-Forwarded-For', '127.0.0.1').rsplit(',', 1)[-1].strip() != '127.0.0.1':"
        " raise RuntimeError('refuses the load balancer')",
    )
    with polling_the_front_door() as poller:
        run = run_playbook(DEPLOY, "-e", f"flask_app_source_path={broken}", "-e", "haproxy_drain_timeout=5")
    assert run.returncode != 0
    assert "The deploy stopped at flaskstack-node1" in run.stdout, run.stdout[-3000:]
    assert "Wait until HAProxy's checks pass on the server" in run.stdout.split("The deploy stopped at")[1]
    assert node_versions() == dict.fromkeys(NODES, "1.0.4")
    # The refused release is no rollback target: rollback.yml cannot bring it back.
    previous = node("flaskstack-node1").run(
        f"/srv/{APP}/previous/venv/bin/python -c \"import importlib.metadata as m; print(m.version('flaskstack-sample-app'))\"")
    assert previous.rc != 0 or previous.stdout.strip() != "1.0.5", f"{previous.stdout}\n{run.stdout[-3000:]}"
    assert set(server_status(host).values()) == {"UP"} and not host.file(LOCK).exists
    assert_no_failed_request(poller)
