"""Real servers: topologies deployed over SSH as a normal user with passwordless sudo.

The hosts are containers of ``flaskstack/<release>-ssh`` (scripts/test-image/Dockerfile.ssh):
an SSH server published on 127.0.0.1, and the user ``admin`` with a 0700 home directory and
passwordless sudo, as Debian's cloud images are reached. Ansible runs as a new user runs it:
the collection built with ``ansible-galaxy collection build`` and installed from its tarball
into a fresh home directory, from an empty working directory, with no ansible.cfg and no
``ANSIBLE_*`` variable (so no pipelining), with host key checking on (the hosts' keys in a
known_hosts file).
The app is not ours: one module installed from requirements.txt, whose ``/`` redirects to its
login page. One host runs ``nginx_gunicorn``, one ``apache_modwsgi``, and two more
``haproxy_cluster`` (a load balancer and one app node, on a network of their own), all from
``flaskstack.deploy.site`` with the app's settings left at their defaults: the health gate and
HAProxy's check both get the redirect of ``/``.

The steps build on each other, in this order: deploy (with a release-phase command and a
secret that must not be printed); re-run (``changed=0``, with pipelining turned on, the other
supported setting), and ``--check`` on the up-to-date hosts (``changed=0``); ``--check --diff``
with a new version of the app (it names the release it would build and changes nothing on the
hosts; ``deploy.yml`` refuses check mode); the code-only redeploy,
with ``flaskstack.deploy.deploy`` (the rolling deploy) for the cluster (the release check mode
named goes live); ``flaskstack.deploy.rollback``; and a converge whose
HAProxy check cannot pass, which must fail with HAProxy's view of the node.

``FLASKSTACK_FIELD_CONNECTIONS=ssh,docker`` runs the same steps a second time over
``docker exec`` as root (the connection of the Molecule scenarios), to compare their timings;
``make test`` runs ``ssh``, on Debian 13 (``make test-all``: 13 and 12; ``MOLECULE_DISTRO``
picks one).
"""

import difflib
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import pytest
import requests

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "molecule" / "resources" / "tests"))
from flaskstack_checks import CAP_SYS_ADMIN, confinement  # noqa: E402

# Debian 13 in `make test`; 13 and 12 in `make test-all`; MOLECULE_DISTRO picks one.
RELEASES = ([os.environ["MOLECULE_DISTRO"]] if os.environ.get("MOLECULE_DISTRO")
            else ["debian13", "debian12"] if os.environ.get("FLASKSTACK_TEST_MATRIX") == "full" else ["debian13"])
CONNECTIONS = os.environ.get("FLASKSTACK_FIELD_CONNECTIONS", "ssh").split(",")
APP = "fieldapp"
# Each host: its group, the published ports of its front door (None: reached through the load
# balancer only) and SSH server, and the prefix the topology mounts the app at.
HOSTS = {
    "flaskstack-field-web1": {"group": "nginx_gunicorn", "http": 18180, "ssh": 12221, "prefix": ""},
    "flaskstack-field-web2": {"group": "apache_modwsgi", "http": 18181, "ssh": 12222, "prefix": "/hip"},
    "flaskstack-field-lb": {"group": "haproxy_cluster_lb", "http": 18182, "ssh": 12223, "prefix": "",
                            "address": "172.30.182.10"},
    "flaskstack-field-node1": {"group": "haproxy_cluster_nodes", "http": None, "ssh": 12224, "prefix": "",
                               "address": "172.30.182.11"},
}
# The hosts where the app runs, and those with a front door of their own.
APP_HOSTS = [host for host, spec in HOSTS.items() if spec["group"] != "haproxy_cluster_lb"]
FRONT_DOORS = [host for host, spec in HOSTS.items() if spec["http"]]
CLUSTER = "flaskstack-field-cluster"
# The unit of each host's web server, which the roles sandbox with a drop-in.
FRONT_DOOR_UNITS = {"flaskstack-field-web1": "nginx.service", "flaskstack-field-web2": "apache2.service",
                    "flaskstack-field-lb": "haproxy.service", "flaskstack-field-node1": "nginx.service"}
# The cluster's network, where its hosts have fixed addresses: the nodes let the load balancer's in.
CLUSTER_SUBNET = "172.30.182.0/24"
APP_SOURCE = '''"""A Flask app that is not the sample: / redirects to the login page, as many real apps do."""

import os

from flask import Flask, redirect, url_for

VERSION = "{version}"

app = Flask(__name__)


@app.get("/")
def index():
    return redirect(url_for("login"))


@app.get("/login")
def login():
    return f"fieldapp {{VERSION}} login, cwd {{os.getcwd()}}"
'''
# One xdist worker runs every step: they share the hosts of the module's fixture.
pytestmark = pytest.mark.xdist_group("real_servers")
RECAP = re.compile(r"^(\S+)\s+: ok=(\d+)\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
TIMINGS = {}


def run(argv, check_rc=True, **kwargs):
    """Run a command; with ``check_rc``, fail with its output when it fails. Returns the CompletedProcess."""
    result = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, **kwargs)
    assert result.returncode == 0 or not check_rc, f"{' '.join(map(str, argv))} failed:\n{result.stdout[-6000:]}"
    return result


def on_host(host, *argv):
    """Run a command inside a test host as root, around the connection under test; returns stdout."""
    return run(["docker", "exec", host, *argv]).stdout


def write_app(directory, version):
    """Write the app's source, reporting ``version``, into ``directory``."""
    directory.mkdir(exist_ok=True)
    (directory / "requirements.txt").write_text("Flask==3.1.3\n", encoding="utf-8")
    (directory / f"{APP}.py").write_text(APP_SOURCE.format(version=version), encoding="utf-8")


def host_state(host):
    """What check mode must leave alone on ``host``: releases, links, configs and server pids."""
    files = on_host(host, "sh", "-c", f"find /srv/{APP} /etc/nginx /etc/apache2 /etc/gunicorn /etc/haproxy "
                    "/etc/systemd/system -path '*/.uv-cache' -prune -o -printf '%p %l %s %T@\\n' 2>/dev/null | sort")
    servers = on_host(host, "systemctl", "show", "--property=Id,MainPID", "nginx.service", "apache2.service",
                      "haproxy.service", f"gunicorn-{APP}.service")
    # Gunicorn's workers and mod_wsgi's daemon processes, nginx's, Apache's and HAProxy's workers:
    # a reload replaces them.
    app_processes = run(["docker", "exec", host, "pgrep", "-u", f"{APP},www-data,haproxy"], check_rc=False).stdout
    return files.splitlines() + servers.split() + sorted(app_processes.split())


class Field:
    """The hosts, the controller's home and the way to run the installed collection against them."""

    def __init__(self, connection, release, home):
        self.connection = connection
        self.label = f"{connection} {release}"
        self.home = home
        self.workdir = home / "empty"
        self.app = home / "src" / APP
        self.inventory = home / "prod" / "hosts.yml"
        # Ansible's defaults: nothing of the checkout's settings or of this environment's.
        self.env = {"PATH": os.environ["PATH"], "HOME": str(home), "LANG": "C.UTF-8"}

    def playbook(self, step, playbook, *args, env=None, succeeds=True, hosts=tuple(HOSTS)):
        """Run an installed playbook of the collection; returns (output, {host: recap counts}).

        :param succeeds: whether the run must end well (True) or fail (False).
        :param hosts: the hosts the run must reach (its recap lists exactly these).
        """
        started = time.monotonic()
        result = subprocess.run(
            ["ansible-playbook", f"flaskstack.deploy.{playbook}", "-i", str(self.inventory), *args],
            cwd=self.workdir, env=dict(self.env, **(env or {})), text=True,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, timeout=20 * 60,
        )
        TIMINGS[(self.label, step)] = time.monotonic() - started
        print(f"field timing: {self.label} {step} {TIMINGS[(self.label, step)]:.1f} s")
        (self.home / f"{step}.log").write_text(result.stdout, encoding="utf-8")
        assert (result.returncode == 0) == succeeds, f"{step}, {self.label}:\n{result.stdout[-8000:]}"
        recap = {host: dict(zip(("ok", "changed", "unreachable", "failed"), map(int, counts)))
                 for host, *counts in RECAP.findall(result.stdout)}
        assert set(recap) == set(hosts), result.stdout[-3000:]
        return result.stdout, recap


def get(host, path, **kwargs):
    """A request to the app through the host's front door, as a browser sends it."""
    spec = HOSTS[host]
    return requests.get(f"http://127.0.0.1:{spec['http']}{spec['prefix']}{path}", headers={"Host": "localhost"},
                        timeout=10, allow_redirects=False, **kwargs)


def assert_serves(version):
    """Every front door redirects / to the login page, which shows ``version``."""
    for host in FRONT_DOORS:
        spec = HOSTS[host]
        root = get(host, "/")
        assert root.status_code == 302, (host, root.status_code, root.text[:300])
        assert root.headers["Location"].endswith(f"{spec['prefix']}/login"), root.headers
        login = get(host, "/login")
        assert login.status_code == 200, (host, login.status_code, login.text[:300])
        # The app runs in its release's project directory, through the current link.
        assert login.text.startswith(f"fieldapp {version} login, cwd /srv/{APP}/"), (host, login.text)


def sandbox(playbook, env):
    """Create or remove the test hosts with the checkout's sandbox playbooks."""
    run(["ansible-playbook", "-i", str(env["FLASKSTACK_FIELD_SANDBOX"]), f"playbooks/{playbook}"],
        cwd=ROOT, env=env)


@pytest.fixture(scope="module", params=[(connection, release) for release in RELEASES for connection in CONNECTIONS],
                ids="-".join)
def field(request, tmp_path_factory):
    """Hosts of ``release`` deployed to by the installed collection over ``connection`` (ssh or docker)."""
    connection, release = request.param
    home = tmp_path_factory.mktemp(f"field-{connection}-{release}")
    field = Field(connection, release, home)
    field.workdir.mkdir()
    field.app.parent.mkdir(parents=True)
    write_app(field.app, "1")

    sandbox_inventory = home / "sandbox.yml"
    sandbox_inventory.write_text(
        "all:\n  vars:\n    ansible_connection: community.docker.docker\n  hosts:\n"
        + "".join(f"    {host}:\n      sandbox_ssh_port: {spec['ssh']}\n"
                  + (f"      sandbox_http_port: {spec['http']}\n" if spec["http"] else "")
                  + (f"      sandbox_network: {CLUSTER}\n      sandbox_network_subnet: {CLUSTER_SUBNET}\n"
                     f"      sandbox_ipv4_address: {spec['address']}\n" if "address" in spec else "")
                  for host, spec in HOSTS.items()), encoding="utf-8")
    sandbox_env = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"),
                       MOLECULE_IMAGE=f"flaskstack/{release}-ssh:latest",
                       FLASKSTACK_FIELD_SANDBOX=str(sandbox_inventory))
    sandbox("sandbox_down.yml", sandbox_env)
    try:
        sandbox("sandbox_up.yml", sandbox_env)
        # The collection as users get it: built, then installed from the tarball into ~/.ansible.
        dist = home / "dist"
        run(["ansible-galaxy", "collection", "build", "--output-path", str(dist), str(ROOT)], env=field.env)
        run(["ansible-galaxy", "collection", "install", "--offline", *map(str, dist.glob("*.tar.gz"))],
            env=field.env, cwd=field.workdir)

        if connection == "ssh":
            ssh = home / ".ssh"
            ssh.mkdir(mode=0o700)
            run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh / "id_ed25519")])
            public_key = (ssh / "id_ed25519.pub").read_text(encoding="utf-8")
            known_hosts = []
            for host, spec in HOSTS.items():
                run(["docker", "exec", "-i", host, "sh", "-c",
                     "umask 077 && cat > /home/admin/.ssh/authorized_keys && chown admin: /home/admin/.ssh/authorized_keys"],
                    input=public_key)
                known_hosts.append(run(["ssh-keyscan", "-p", str(spec["ssh"]), "-t", "ed25519", "127.0.0.1"]).stdout)
            (ssh / "known_hosts").write_text("".join(known_hosts), encoding="utf-8")
            # ssh reads the home of the passwd entry, not $HOME: the key and known_hosts are named.
            connection_vars = lambda spec: (
                f"ansible_host: 127.0.0.1, ansible_port: {spec['ssh']}, ansible_user: admin, "
                f"ansible_ssh_private_key_file: {ssh / 'id_ed25519'}, "
                f"ansible_ssh_common_args: '-o UserKnownHostsFile={ssh / 'known_hosts'}'")
        else:
            connection_vars = lambda spec: "ansible_connection: community.docker.docker"

        # The cluster's private addresses, as an inventory gives them.
        cluster_vars = lambda spec: (
            f", haproxy_cluster_{'lb' if spec['group'] == 'haproxy_cluster_lb' else 'node'}_address: {spec['address']}"
            if "address" in spec else "")
        field.inventory.parent.mkdir()
        field.inventory.write_text(
            "all:\n  vars:\n"
            f"    flask_app_name: {APP}\n"
            f"    flask_app_source_path: {field.app}\n"
            f"    flask_app_wsgi_app: '{APP}:app'\n"
            "    flask_app_server_names: [localhost]\n"
            # A release-phase command as the app user (like flask db upgrade), and a secret.
            f"    flask_app_pre_activate_commands: ['flask --app {APP}:app routes']\n"
            "    flask_app_secret_environment: {FLASK_SECRET_KEY: field-test-only}\n"
            "  children:\n"
            + "".join(f"    {spec['group']}:\n      hosts:\n        {host}: {{{connection_vars(spec)}{cluster_vars(spec)}}}\n"
                      for host, spec in HOSTS.items())
            + "    haproxy_cluster:\n      children: {haproxy_cluster_lb: {}, haproxy_cluster_nodes: {}}\n",
            encoding="utf-8")
        yield field
    finally:
        sandbox("sandbox_down.yml", sandbox_env)


def test_first_deploy_serves(field):
    output, recap = field.playbook("deploy", "site")
    for host, counts in recap.items():
        assert counts["changed"] > 0 and counts["failed"] == 0, (host, counts)
    assert "field-test-only" not in output
    if field.connection == "ssh":
        # The hosts really are reached as admin, whose home the app user cannot enter.
        for host in HOSTS:
            assert on_host(host, "stat", "-c", "%a %U", "/home/admin").split() == ["700", "admin"]
            assert "Accepted publickey for admin" in on_host(host, "journalctl", "-u", "ssh", "--no-pager")
    assert_serves("1")
    # Debian's packages start each server before the role writes its sandbox drop-in: the server
    # running now must be a new one, started under it (no new privileges, CAP_SYS_ADMIN gone).
    for host, unit in FRONT_DOOR_UNITS.items():
        pid = on_host(host, "systemctl", "show", "-p", "MainPID", "--value", unit).strip()
        no_new_privileges, bounding = confinement(on_host(host, "cat", f"/proc/{pid}/status"))
        assert no_new_privileges and not bounding & (1 << CAP_SYS_ADMIN), (host, unit, hex(bounding))


def test_firewall_keeps_ssh_open_and_refuses_a_port_that_would_lock_the_user_out(field):
    # Every host drops what it does not serve; SSH (22 on the host, whatever port it is
    # published on) stays open: the steps after this one connect again, over new connections.
    for host in HOSTS:
        table = on_host(host, "nft", "list", "table", "inet", "flaskstack")
        assert "policy drop;" in table and "tcp dport 22 accept" in table, (host, table)
    if field.connection == "ssh":
        # A port the SSH server does not listen on is refused before the firewall changes.
        before = on_host("flaskstack-field-web1", "nft", "list", "table", "inet", "flaskstack")
        output, _ = field.playbook("ssh-port", "firewall", "-e", "firewall_ssh_port=2222", "--limit",
                                   "flaskstack-field-web1", succeeds=False, hosts=["flaskstack-field-web1"])
        assert "firewall_ssh_port is 2222, but this SSH connection reached the host on port 22" in output, output[-3000:]
        assert on_host("flaskstack-field-web1", "nft", "list", "table", "inet", "flaskstack") == before


def test_rerun_changes_nothing_with_pipelining_and_check_mode_agrees(field):
    _, recap = field.playbook("rerun", "site", env={"ANSIBLE_PIPELINING": "True"})
    for host, counts in recap.items():
        assert counts["changed"] == 0 and counts["failed"] == 0, (host, counts)
    output, recap = field.playbook("check-current", "site", "--check", "--diff")
    for host, counts in recap.items():
        assert counts["changed"] == 0 and counts["failed"] == 0, (host, counts)
    assert "would be built" not in output


def test_check_mode_tells_the_truth(field):
    write_app(field.app, "2")
    before = {host: host_state(host) for host in HOSTS}
    output, recap = field.playbook("check", "site", "--check", "--diff")
    for host, counts in recap.items():
        # Code only: the load balancer has nothing to change.
        assert (counts["changed"] > 0) == (host in APP_HOSTS) and counts["failed"] == 0, (host, counts)
    announced = {host: release for release, host in re.findall(
        rf"Release ([0-9a-f]{{12}}) of {APP} would be built and made live on (\S+)", output)}
    assert set(announced) == set(APP_HOSTS), output[-4000:]
    for host in APP_HOSTS:
        live = on_host(host, "readlink", f"/srv/{APP}/current").strip()
        assert Path(live).name != announced[host], (host, live)
        # The diff shows current moving to the release it names.
        assert re.search(rf'^\+\s+"src": "/srv/{APP}/releases/{announced[host]}"$', output, re.MULTILINE), output[-4000:]
    for host in HOSTS:
        after = host_state(host)
        assert after == before[host], f"check mode changed {host}:\n" + "\n".join(
            difflib.unified_diff(before[host], after, lineterm=""))
    assert_serves("1")
    field.announced = announced
    # The rolling deploy cannot be predicted (HAProxy's runtime API has no dry run): it says so.
    output, _ = field.playbook("check-rolling", "deploy", "--check", succeeds=False, hosts=["flaskstack-field-lb"])
    assert "deploy.yml cannot run in check mode" in output, output[-3000:]


def test_code_only_redeploy_makes_the_announced_release_live(field):
    # As users do: site for the single hosts, the rolling deploy.yml for the cluster.
    single = [host for host in HOSTS if not HOSTS[host]["group"].startswith("haproxy_cluster")]
    _, recap = field.playbook("redeploy", "site", "--limit", "nginx_gunicorn:apache_modwsgi", hosts=single)
    _, rolling = field.playbook("rolling", "deploy", hosts=set(HOSTS) - set(single))
    assert rolling["flaskstack-field-node1"]["changed"] > 0, rolling
    for host, counts in recap.items():
        assert counts["changed"] > 0 and counts["failed"] == 0, (host, counts)
    assert_serves("2")
    for host in APP_HOSTS:
        live = on_host(host, "readlink", f"/srv/{APP}/current").strip()
        assert Path(live).name == field.announced[host], (host, live, field.announced)


def test_rollback_serves_the_previous_release(field):
    # The load balancer has no release: rollback.yml runs on the app hosts only.
    field.playbook("rollback", "rollback", hosts=APP_HOSTS)
    assert_serves("1")


def test_converge_fails_with_haproxys_view_when_its_check_cannot_pass(field):
    # nginx on the node closes requests for a name it does not serve: HAProxy's check fails there,
    # while the node's own gate (with the app's name) passes.
    output, recap = field.playbook("unroutable", "haproxy_cluster", "-e", "haproxy_health_host=unknown.invalid",
                                   "-e", "haproxy_drain_timeout=10", succeeds=False,
                                   hosts=["flaskstack-field-lb", "flaskstack-field-node1"])
    assert recap["flaskstack-field-lb"]["failed"] == 1, recap
    assert "HAProxy does not send requests to every app server of backend app after 10 s" in output, output[-3000:]
    view = re.search(r"flaskstack-field-node1: (\S+ ?\S*) \(last check (\S+)", output)
    assert view and view.group(2) != "L7OK", output[-3000:]
    assert "Host unknown.invalid, expecting status 200-399" in output, output[-3000:]


def teardown_module():
    """Print each step's seconds per connection (pytest -rA shows it)."""
    for (label, step), seconds in sorted(TIMINGS.items()):
        print(f"field timing: {label:15} {step:13} {seconds:6.1f} s")
