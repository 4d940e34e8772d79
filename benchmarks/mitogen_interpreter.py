#!/usr/bin/env python3
"""CPU of an idempotent converge under Mitogen, with the hosts' Python named and discovered; rerun at will.

On a ``docker`` connection Mitogen runs Ansible's interpreter discovery again before every module
(``ansible_mitogen/transport_config.py``, ``rediscover_python``). ``make test`` names Debian's
``/usr/bin/python3`` instead (``flaskstack_checks.mitogen_environment``). This brings up the
sandbox host of ``inventories/sandbox`` (``make demo``'s), converges ``nginx_gunicorn`` on it once,
then re-runs that converge ``--rounds`` times each way, alternating: with
``ANSIBLE_PYTHON_INTERPRETER`` set and without it. It prints each run's wall seconds and CPU
seconds (the controller: ``ansible-playbook`` and everything it forked; the container: its
cgroup's usage), each way's medians and the ratios of the medians. Compare ratios, not seconds:
the machine is noisy.

Usage: ``python benchmarks/mitogen_interpreter.py [--rounds N] [--keep]`` (``make setup`` first; without
``--keep`` it removes the sandbox container at the end, a ``make demo``'s too).
"""

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "molecule" / "resources" / "tests"))
from flaskstack_checks import mitogen_environment  # noqa: E402

from cpu_by_group import cgroup_cpu_seconds  # noqa: E402  (benchmarks/, this script's own directory)

SANDBOX = ROOT / "inventories" / "sandbox" / "hosts.yml"
HOST = "flaskstack-sandbox-web1"


def container_cgroup(container):
    """The cgroup directory that holds the CPU usage of a running container (pathlib.Path).

    :param str container: a running container's name.
    :raises subprocess.CalledProcessError: when docker inspect does not know the container.
    :raises FileNotFoundError: when no cgroup directory of the container is found (v1 cpuacct or v2).
    """
    container_id = subprocess.run(["docker", "inspect", "-f", "{{.Id}}", container], capture_output=True,
                                  text=True, check=True).stdout.strip()
    for directory in Path("/sys/fs/cgroup").glob(f"**/*{container_id}*"):
        if (directory / "cpu.stat").exists() or (directory / "cpuacct.usage").exists():
            return directory
    raise FileNotFoundError(f"no cgroup with the CPU usage of {container} under /sys/fs/cgroup")


def converge(inventory, env, cgroup):
    """Run playbooks/nginx_gunicorn.yml on the sandbox; returns (wall s, controller CPU s, container CPU s).

    The controller's CPU is ansible-playbook's and its children's (getrusage); the container's is
    its cgroup's (the work dockerd and containerd do for each docker exec counts in neither).

    :param pathlib.Path inventory: the sandbox inventory with Mitogen's connection name (``docker``).
    :param dict env: the environment of ansible-playbook.
    :param pathlib.Path cgroup: the sandbox container's cgroup, from :func:`container_cgroup`.
    :raises subprocess.CalledProcessError: when the playbook fails.
    """
    container_before = cgroup_cpu_seconds(cgroup)
    before, started = resource.getrusage(resource.RUSAGE_CHILDREN), time.monotonic()
    subprocess.run(["ansible-playbook", "-i", str(inventory), "playbooks/nginx_gunicorn.yml"], cwd=ROOT, env=env,
                   check=True, stdout=subprocess.DEVNULL)
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    controller = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return time.monotonic() - started, controller, cgroup_cpu_seconds(cgroup) - container_before


def main():
    """Print each run's figures, each way's medians and the ratios named / discovered."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3, help="idempotent runs each way, alternating")
    parser.add_argument("--keep", action="store_true", help="leave the sandbox container running")
    args = parser.parse_args()
    base = dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg"), ANSIBLE_DEPRECATION_WARNINGS="False")
    named = dict(base, **mitogen_environment())
    discovered = {key: value for key, value in named.items() if key != "ANSIBLE_PYTHON_INTERPRETER"}
    # Mitogen knows the connection by its short name; the sandbox's group_vars come along.
    workdir = ROOT / ".ansible" / "bench-mitogen-interpreter"
    (workdir / "group_vars").mkdir(parents=True, exist_ok=True)
    inventory = workdir / "hosts.yml"
    inventory.write_text(SANDBOX.read_text(encoding="utf-8").replace("community.docker.docker", "docker"),
                         encoding="utf-8")
    for group_vars in (SANDBOX.parent / "group_vars").iterdir():
        (workdir / "group_vars" / group_vars.name).write_text(group_vars.read_text(encoding="utf-8"), encoding="utf-8")

    subprocess.run(["ansible-playbook", "-i", str(SANDBOX), "playbooks/sandbox_up.yml"], cwd=ROOT, env=base,
                   check=True, stdout=subprocess.DEVNULL)
    try:
        cgroup = container_cgroup(HOST)
        converge(inventory, named, cgroup)
        runs = {"named": [], "discovered": []}
        for _ in range(args.rounds):
            for way, env in (("discovered", discovered), ("named", named)):
                runs[way].append(converge(inventory, env, cgroup))
                wall, controller, container = runs[way][-1]
                print(f"{way:10} wall {wall:5.1f} s, CPU controller {controller:5.2f} s + container {container:5.2f} s",
                      flush=True)
        medians = {way: [statistics.median(column) for column in zip(*figures)] for way, figures in runs.items()}
        for way, (wall, controller, container) in medians.items():
            print(f"{way:10} medians of {args.rounds}: wall {wall:.1f} s, CPU {controller:.2f} + {container:.2f}"
                  f" = {controller + container:.2f} s")
        (wall_n, ctl_n, box_n), (wall_d, ctl_d, box_d) = medians["named"], medians["discovered"]
        print(f"ratio named / discovered: wall {wall_n / wall_d:.2f}, CPU {(ctl_n + box_n) / (ctl_d + box_d):.2f}")
    finally:
        if not args.keep:
            subprocess.run(["ansible-playbook", "-i", str(SANDBOX), "playbooks/sandbox_down.yml"], cwd=ROOT, env=base,
                           check=False, stdout=subprocess.DEVNULL)


if __name__ == "__main__":
    main()
