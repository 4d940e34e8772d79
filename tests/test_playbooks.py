"""The topology playbooks' own plays, where they run on the controller alone (no host is reached)."""

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def ansible_playbook(*args):
    """Run ansible-playbook from the checkout with its ansible.cfg, output uncoloured; returns the finished process."""
    return subprocess.run(
        ["ansible-playbook", *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        check=False, env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
    )


# A cluster whose inventory sets nothing but its groups: every setting is a role default.
BARE_CLUSTER = """\
all:
  vars:
    ansible_connection: local
  children:
    haproxy_cluster_lb:
      hosts:
        lb1.example.com:
          haproxy_cluster_lb_address: 10.0.0.10
    haproxy_cluster_nodes:
      hosts:
        app1.example.com:
        app2.example.com:
"""


def test_release_phase_of_a_cluster_without_pre_activation_commands_is_done_without_running_any(tmp_path):
    """Check mode builds and runs nothing, so the phase's plays run on the controller alone.

    Its conditions once read flask_app_pre_activate_commands where no role's defaults were loaded:
    every cluster without a command in its inventory failed there, before any node was deployed.
    """
    inventory = tmp_path / "hosts.yml"
    inventory.write_text(BARE_CLUSTER, encoding="utf-8")
    run = ansible_playbook("--check", "-i", str(inventory), str(ROOT / "playbooks" / "release_phase.yml"))
    assert run.returncode == 0, run.stdout[-3000:]
    # The phase marked itself done on the load balancer, for the plays that switch nodes.
    done = run.stdout.split("TASK [Note on the load balancer that the run has no release phase]")[1].split("TASK [")[0]
    assert "ok: [app1.example.com -> lb1.example.com]" in done, done


GIT_SOURCE_PLAY = """\
- name: Identify the release of a git source
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Identify the release
      ansible.builtin.import_role:
        name: flaskstack.deploy.flask_app
        tasks_from: source
"""


def play_on_the_controller(tmp_path, play, *args):
    """Write ``play`` (YAML text) to a file and run it on localhost, connection local, with this Python.

    :returns: the finished ansible-playbook process (see :func:`ansible_playbook`).
    """
    path = tmp_path / "play.yml"
    path.write_text(play, encoding="utf-8")
    return ansible_playbook(
        "-i", "localhost,", "-c", "local", "-e", f"ansible_python_interpreter={sys.executable}", *args, str(path))


def resolve_git_ref(tmp_path, repo):
    """Run flask_app's source tasks for ``repo`` on the controller, with -vvv; returns the finished process.

    -vvv prints the module's arguments with its result (-v masks a URL's credentials in git's command only).
    """
    return play_on_the_controller(
        tmp_path, GIT_SOURCE_PLAY, "-vvv", "-e", "flask_app_source_type=git", "-e", f"flask_app_git_repo={repo}")


def test_git_url_with_a_token_is_never_printed_and_one_without_keeps_its_diagnostics(tmp_path):
    """A host under .invalid never resolves: git fails at once, and -vvv prints the task's whole result."""
    token = "tok-never-printed-7c1e"
    hidden = resolve_git_ref(tmp_path, f"https://{token}@git.invalid/app.git")
    assert hidden.returncode != 0 and "Resolve the git ref to a commit" in hidden.stdout, hidden.stdout[-3000:]
    assert token not in hidden.stdout
    assert "the output has been hidden due to the fact that" in hidden.stdout, hidden.stdout[-3000:]
    # Without credentials in it, the URL and git's command stay in the result, for diagnosis.
    shown = resolve_git_ref(tmp_path, "https://git.invalid/app.git")
    assert shown.returncode != 0 and "ls-remote https://git.invalid/app.git" in shown.stdout, shown.stdout[-3000:]


UWSGI_ASSERT_PLAY = """\
- name: Check the app and uWSGI settings
  hosts: localhost
  gather_facts: false
  tasks:
    - name: Check the app settings (and load flask_app's defaults, which uWSGI's name)
      ansible.builtin.import_role:
        name: flaskstack.deploy.flask_app
        tasks_from: assert
    - name: Check the uWSGI settings
      ansible.builtin.import_role:
        name: flaskstack.deploy.uwsgi
        tasks_from: assert
"""


def test_uwsgi_http_port_below_1024_is_refused_naming_the_variable(tmp_path):
    """uWSGI runs as the app user from the start, which cannot bind a port below 1024."""
    runs = {address: play_on_the_controller(
        tmp_path, UWSGI_ASSERT_PLAY, "-e", "uwsgi_protocol=http", "-e", f"uwsgi_http_address={address}")
        for address in ("127.0.0.1:80", "127.0.0.1:8001")}
    refused, accepted = runs["127.0.0.1:80"], runs["127.0.0.1:8001"]
    assert refused.returncode != 0 and "port from 1024 up (got 127.0.0.1:80)" in refused.stdout, refused.stdout[-3000:]
    assert accepted.returncode == 0, accepted.stdout[-3000:]
