"""The ansible-core versions meta/runtime.yml claims: the lowest and the newest both run the collection.

The lowest claimed minor is the controller's own (Python 3.11 caps ansible-core at 2.19): every
Molecule scenario and the real-servers test converge with it. The newest needs Python 3.12 or
later, which the CI machine (Debian 12) does not have, so it runs inside a Debian 13 test host
(Python 3.13) as that host's own controller: ansible-core installed from the package index into a
virtualenv there, the collection's dependencies copied from the controller's Ansible, the
collection installed from its built tarball, and ``nginx_gunicorn.yml`` run against the host
itself over the local connection.
"""

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
import yaml

import ansible

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import built_collection  # noqa: E402
# The newest ansible-core release when this was last checked (2026-12-02); requires_ansible stops
# before the next minor.
NEWEST_ANSIBLE_CORE = "2.21.5"
HOST = "flaskstack-newest-core"
HTTP_PORT = 18190
CONTROLLER_VENV = "/opt/ansible-core-newest"
RECAP = re.compile(r"^\S+\s+: ok=\d+\s+changed=(\d+)\s+unreachable=(\d+)\s+failed=(\d+)", re.MULTILINE)
GALAXY = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))
SHIPPED_PLAYBOOKS = sorted(path.stem for path in (ROOT / "playbooks").glob("*.yml") if not path.name.startswith("sandbox_"))
INVENTORY = f"""all:
  hosts:
    {HOST}:
      ansible_connection: local
      ansible_python_interpreter: /usr/bin/python3
  children:
    nginx_gunicorn:
      hosts:
        {HOST}:
"""
pytestmark = pytest.mark.xdist_group("ansible_core_versions")


def run(argv, **kwargs):
    """Run a command and return its output (stdout and stderr); fail the test with it when it fails."""
    result = subprocess.run(argv, text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, **kwargs)
    assert result.returncode == 0, f"{' '.join(map(str, argv))} failed:\n{result.stdout[-6000:]}"
    return result.stdout


def on_host(*argv, **kwargs):
    """Run a command as root in the test host; returns its output."""
    return run(["docker", "exec", "-i", HOST, *argv], **kwargs)


def sandbox(playbook, inventory):
    """Create or remove the test host with the checkout's sandbox playbooks."""
    run(["ansible-playbook", "-i", str(inventory), f"playbooks/{playbook}"], cwd=ROOT,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), MOLECULE_IMAGE="flaskstack/debian13-stack:latest"))


def claimed_range():
    """meta/runtime.yml's requires_ansible as (lowest, first excluded) version tuples of (major, minor)."""
    claim = yaml.safe_load((ROOT / "meta" / "runtime.yml").read_text(encoding="utf-8"))["requires_ansible"]
    match = re.fullmatch(r">=(\d+)\.(\d+)\.0,<(\d+)\.(\d+)(?:\.0)?", claim.replace(" ", ""))
    assert match, f"requires_ansible {claim!r} is not '>=X.Y.0,<X.Z'"
    lowest_major, lowest_minor, excluded_major, excluded_minor = map(int, match.groups())
    return (lowest_major, lowest_minor), (excluded_major, excluded_minor)


def minor_of(version):
    """(major, minor) of a version string such as ``2.21.5``."""
    return tuple(int(part) for part in version.split(".")[:2])


@pytest.fixture(scope="module")
def collection(tmp_path_factory):
    """The built collection, unpacked where the controller's Ansible finds it (its tarball beside)."""
    return built_collection.build_into(tmp_path_factory.mktemp("built"))


@pytest.fixture(scope="module")
def newest_controller(tmp_path_factory, collection):
    """The Debian 13 test host with the newest ansible-core and the collection installed; yields its name."""
    home = tmp_path_factory.mktemp("newest-core")
    inventory = home / "sandbox.yml"
    inventory.write_text(f"all:\n  vars:\n    ansible_connection: community.docker.docker\n  hosts:\n"
                         f"    {HOST}:\n      sandbox_http_port: {HTTP_PORT}\n", encoding="utf-8")
    sandbox("sandbox_down.yml", inventory)
    try:
        sandbox("sandbox_up.yml", inventory)
        on_host("python3", "-m", "venv", CONTROLLER_VENV)
        on_host(f"{CONTROLLER_VENV}/bin/pip", "install", "--quiet", "--disable-pip-version-check",
                f"ansible-core=={NEWEST_ANSIBLE_CORE}")
        # The dependencies as the controller's Ansible has them (Galaxy is not reachable here).
        installed = Path(ansible.__file__).resolve().parent.parent / "ansible_collections"
        collections = "/root/.ansible/collections/ansible_collections"
        for dependency in GALAXY["dependencies"]:
            namespace, name = dependency.split(".")
            on_host("mkdir", "-p", f"{collections}/{namespace}")
            run(["docker", "cp", str(installed / namespace / name), f"{HOST}:{collections}/{namespace}/{name}"])
        tarball = next(collection.parents[2].glob("*.tar.gz"))
        run(["docker", "cp", str(tarball), f"{HOST}:/root/{tarball.name}"])
        on_host(f"{CONTROLLER_VENV}/bin/ansible-galaxy", "collection", "install", "--offline", f"/root/{tarball.name}")
        on_host("sh", "-c", "cat > /root/hosts.yml", input=INVENTORY)
        yield HOST
    finally:
        sandbox("sandbox_down.yml", inventory)


def newest_playbook(*args):
    """Run ansible-playbook of the newest ansible-core in the test host; returns (exit status, output)."""
    result = subprocess.run(["docker", "exec", "-w", "/root", HOST, f"{CONTROLLER_VENV}/bin/ansible-playbook",
                             "-i", "/root/hosts.yml", *args],
                            text=True, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, check=False, timeout=15 * 60)
    return result.returncode, result.stdout


def test_requires_ansible_admits_the_controllers_and_the_newest_ansible_core(newest_controller):
    """The claim's lower bound is what the controller runs, its upper bound the newest minor's successor."""
    lowest, excluded = claimed_range()
    from ansible.release import __version__ as controller_version  # pylint: disable=import-outside-toplevel

    assert minor_of(controller_version) == lowest, (controller_version, lowest)
    reported = on_host(f"{CONTROLLER_VENV}/bin/ansible-playbook", "--version")
    assert f"[core {NEWEST_ANSIBLE_CORE}]" in reported, reported
    assert excluded == (minor_of(NEWEST_ANSIBLE_CORE)[0], minor_of(NEWEST_ANSIBLE_CORE)[1] + 1), excluded


def test_every_shipped_playbook_passes_the_syntax_check_on_the_lowest_and_the_newest(newest_controller, collection,
                                                                                   tmp_path):
    (tmp_path / "hosts.yml").write_text(INVENTORY, encoding="utf-8")
    # The controller's own Ansible, with none of the checkout's settings.
    lowest_env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8",
                  "ANSIBLE_COLLECTIONS_PATH": built_collection.collections_path(collection)}
    for playbook in SHIPPED_PLAYBOOKS:
        run(["ansible-playbook", "--syntax-check", "-i", str(tmp_path / "hosts.yml"), f"flaskstack.deploy.{playbook}"],
            env=lowest_env, cwd=tmp_path)
    for playbook in SHIPPED_PLAYBOOKS:
        returncode, output = newest_playbook("--syntax-check", f"flaskstack.deploy.{playbook}")
        assert returncode == 0, f"{playbook} on ansible-core {NEWEST_ANSIBLE_CORE}:\n{output[-4000:]}"


def test_newest_ansible_core_converges_nginx_gunicorn_and_reruns_unchanged(newest_controller):
    returncode, output = newest_playbook("flaskstack.deploy.nginx_gunicorn")
    assert returncode == 0, output[-8000:]
    # What the newest ansible-core warns about is what the next one may break (pytest -rA shows it).
    print("\n".join(line for line in output.splitlines() if "WARNING]" in line) or "no warnings")
    (changed, unreachable, failed), = RECAP.findall(output)
    assert int(changed) > 0 and (unreachable, failed) == ("0", "0"), output[-3000:]
    health = requests.get(f"http://127.0.0.1:{HTTP_PORT}/healthz", headers={"Host": HOST}, timeout=10)
    assert health.status_code == 200 and health.json()["status"] == "ok", health.text[:300]
    whoami = requests.get(f"http://127.0.0.1:{HTTP_PORT}/whoami", headers={"Host": HOST}, timeout=10)
    assert json.loads(whoami.text)["server_software"].startswith("gunicorn/"), whoami.text[:300]

    returncode, output = newest_playbook("flaskstack.deploy.nginx_gunicorn")
    assert returncode == 0, output[-8000:]
    assert RECAP.findall(output) == [("0", "0", "0")], output[-3000:]
