"""The topology playbooks' own plays, where they run on the controller alone (no host is reached)."""

import os
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

# A cluster whose inventory sets nothing but its groups: every setting is a role default.
BARE_CLUSTER = """\
all:
  vars:
    ansible_connection: local
  children:
    haproxy_cluster_lb:
      hosts:
        lb1.example.com:
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
    run = subprocess.run(
        ["ansible-playbook", "--check", "-i", str(inventory), str(ROOT / "playbooks" / "release_phase.yml")],
        cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, check=False,
        env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_NOCOLOR="1"),
    )
    assert run.returncode == 0, run.stdout[-3000:]
    # The phase marked itself done on the load balancer, for the plays that switch nodes.
    done = run.stdout.split("TASK [Note on the load balancer that the run has no release phase]")[1].split("TASK [")[0]
    assert "ok: [app1.example.com -> lb1.example.com]" in done, done
