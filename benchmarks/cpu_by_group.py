#!/usr/bin/env python3
"""CPU seconds of each test group of `make test`, on the controller and in each container; run beside it.

``make test`` is CPU-bound on two cores: what it costs is CPU, not any group's wall time. This
samples, every ``--interval`` seconds while it runs: each pytest-xdist worker's CPU (its own and
that of the processes it waited for, from /proc/<pid>/stat, plus its live descendants') with
the Molecule scenario it runs, and each Docker container's CPU from its cgroup (cgroup v2
``cpu.stat`` or v1 ``cpuacct.usage``). ``--report`` sums the samples: controller CPU by worker
and scenario (``other``: the real-servers and ansible-core-versions tests, lint and unit
tests), container CPU by container name. The first use (77d9507, 2026-12-03): 1,855 CPU-s on
the controller and 1,789 in the containers, of 3,980 busy CPU-s of the machine.

Usage: ``python benchmarks/cpu_by_group.py samples.jsonl`` in one shell while ``make test`` runs alone on
the machine in another (stop it with Ctrl-C afterwards), then ``python benchmarks/cpu_by_group.py --report
samples.jsonl``. A sample takes about 0.05 CPU-s (its docker ps included).
"""

import argparse
import collections
import json
import os
import subprocess
import time
from pathlib import Path

# How pytest-xdist starts a worker (execnet's bootstrap on the worker's command line).
WORKER_COMMAND = "import sys;exec(eval(sys.stdin.readline()))"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
# Where Docker puts a container's cgroup: cgroup v2 with the systemd or cgroupfs driver, v1 (hybrid or not).
CGROUP_GLOBS = ("cpu,cpuacct/docker/*", "cpuacct/docker/*", "cpu,cpuacct/system.slice/docker-*.scope",
                "system.slice/docker-*.scope", "docker/*", "unified/docker/*", "unified/system.slice/docker-*.scope")


def process_cpu_seconds(pid):
    """User + system CPU seconds of process ``pid`` and of the children it waited for (float), or 0.0 once it is gone.

    :param str pid: a process id.
    """
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    # utime, stime, cutime, cstime (proc(5): fields 14-17), in clock ticks.
    return sum(int(value) for value in fields[11:15]) / CLOCK_TICKS


def command_line(pid):
    """The command line of process ``pid`` with its arguments joined by spaces (str; empty once it is gone)."""
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""


def molecule_scenario(pid):
    """The scenario of process ``pid`` when it is ``molecule test -s <scenario>`` (str), else ""."""
    try:
        argv = Path(f"/proc/{pid}/cmdline").read_text().split("\0")
    except OSError:
        return ""
    for index, argument in enumerate(argv[:-3]):
        if Path(argument).name == "molecule" and argv[index + 1:index + 3] == ["test", "-s"]:
            return argv[index + 3]
    return ""


def descendants(pid):
    """The ids of every live descendant of process ``pid`` (list of str), from /proc/<pid>/task/*/children."""
    found = []
    for children in Path(f"/proc/{pid}/task").glob("*/children"):
        try:
            kids = children.read_text().split()
        except OSError:
            continue
        for kid in kids:
            found += [kid, *descendants(kid)]
    return found


def cgroup_cpu_seconds(directory):
    """CPU seconds the processes of a cgroup have used so far (float): v2 cpu.stat, else v1 cpuacct.usage.

    :param pathlib.Path directory: a cgroup directory.
    :raises OSError: when it has neither file (FileNotFoundError), or is gone.
    """
    stat = (directory / "cpu.stat").read_text() if (directory / "cpu.stat").exists() else ""
    if "usage_usec" in stat:
        return int(dict(line.split() for line in stat.splitlines())["usage_usec"]) / 1e6
    return int((directory / "cpuacct.usage").read_text()) / 1e9


def container_cpu_seconds():
    """{container id (12 characters): CPU seconds so far} of every running container, from its cgroup.

    Docker's cgroup of a container is named by its 64-hex id (cgroupfs driver) or docker-<id>.scope
    (systemd driver), under the v2 hierarchy or v1's cpuacct. CGROUP_GLOBS lists v2's after v1's, so
    that on a hybrid host v2's figure is the one kept.
    """
    usage = {}
    directories = [directory for pattern in CGROUP_GLOBS for directory in Path("/sys/fs/cgroup").glob(pattern)]
    for directory in directories:
        container = directory.name.removeprefix("docker-").removesuffix(".scope")
        if len(container) != 64 or not all(character in "0123456789abcdef" for character in container):
            continue
        try:
            usage[container[:12]] = cgroup_cpu_seconds(directory)
        except OSError:
            continue
    return usage


def sample():
    """One sample: the time, each worker's CPU and scenario, each container's CPU and name (dict)."""
    workers = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or WORKER_COMMAND not in command_line(proc.name):
            continue
        # The worker before its descendants: a child it reaps between the two reads is then missed
        # for one sample (report() keeps the highest figure), never counted twice.
        cpu, scenario = process_cpu_seconds(proc.name), ""
        for kid in descendants(proc.name):
            scenario = molecule_scenario(kid) or scenario
            cpu += process_cpu_seconds(kid)
        workers[proc.name] = {"cpu": cpu, "scenario": scenario}
    names = subprocess.run(["docker", "ps", "--format", "{{.ID}} {{.Names}}"], capture_output=True, text=True,
                           check=False).stdout.split()
    return {"time": time.time(), "workers": workers, "containers": container_cpu_seconds(),
            "names": dict(zip(names[::2], names[1::2]))}


def report(samples):
    """Print controller CPU by worker and scenario, container CPU by name, and both by group.

    :param list samples: the dicts :func:`sample` wrote, in order. A worker's figure only grows;
        a dip (a process gone between two reads) is ignored and what lies above the highest figure
        so far goes to the scenario of the sample before.
    """
    controller, highest = collections.Counter(), {}
    for record in samples:
        for worker, figures in record["workers"].items():
            if worker in highest:
                seconds, scenario = highest[worker]
                controller[(worker, scenario or "other")] += max(figures["cpu"] - seconds, 0.0)
            highest[worker] = (max(figures["cpu"], highest.get(worker, (0.0, ""))[0]), figures["scenario"])
    peak, names = {}, {}
    for record in samples:
        names.update(record["names"])
        for container, seconds in record["containers"].items():
            peak[container] = max(peak.get(container, 0.0), seconds)
    containers = collections.Counter()
    for container, seconds in peak.items():
        containers[names.get(container, container)] += seconds
    print("controller CPU-s by worker and scenario (other: the tests outside Molecule)")
    for (worker, scenario), seconds in controller.most_common():
        print(f"  worker {worker:>8} {scenario:24} {seconds:7.0f}")
    print("container CPU-s by name")
    for name, seconds in containers.most_common():
        print(f"  {name:34} {seconds:7.0f}")
    print(f"controller {sum(controller.values()):.0f} CPU-s, containers {sum(containers.values()):.0f} CPU-s")


def main():
    """Sample until interrupted, or report on the samples written before."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("samples", type=Path, help="the JSON-lines file of samples")
    parser.add_argument("--report", action="store_true", help="sum the samples instead of taking them")
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between samples")
    args = parser.parse_args()
    if args.report:
        report([json.loads(line) for line in args.samples.read_text(encoding="utf-8").splitlines()])
        return
    with args.samples.open("w", encoding="utf-8") as output:
        try:
            while True:
                output.write(json.dumps(sample()) + "\n")
                output.flush()
                time.sleep(args.interval)
        except KeyboardInterrupt:
            pass


if __name__ == "__main__":
    main()
