#!/usr/bin/env python3
"""Controller CPU of one playbook under two Python interpreters, run after run; rerun at will.

Ansible's controller (the ``ansible-playbook`` process and the worker it forks for every task and
host) is the largest CPU consumer of ``make test``, so the interpreter it runs on matters. This
runs ``benchmarks/controller_tasks.yml`` (module tasks, ``set_fact`` and templating, against
localhost) with each venv's ``ansible-playbook`` in turn, ``--rounds`` times, and prints the user +
system CPU seconds of each run (the process and everything it forked) and each venv's median, and
the ratio of the medians. Alternating the venvs within one run keeps the comparison fair on a noisy
machine; compare ratios, not seconds.

Usage: ``python benchmarks/controller_python.py VENV_A VENV_B [--rounds N]``, each VENV a virtualenv
with the same ``requirements-dev.txt`` installed, for example ``.venv`` (``make venv``) and one made by
another interpreter (``make venv VENV=/tmp/other PYTHON=/path/to/python3``).
"""

import argparse
import os
import resource
import statistics
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PLAYBOOK = ROOT / "benchmarks" / "controller_tasks.yml"


def cpu_seconds_of_run(venv):
    """Run the playbook with ``venv``'s ansible-playbook; the CPU it and its children used.

    :param pathlib.Path venv: a virtualenv with ansible-core installed.
    :returns float: user + system CPU seconds of the run and every process it waited for.
    :raises subprocess.CalledProcessError: when the playbook fails.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    subprocess.run(
        [str(venv / "bin" / "ansible-playbook"), "-i", "localhost,", str(PLAYBOOK),
         "-e", f"ansible_python_interpreter={venv / 'bin' / 'python'}"],
        cwd=ROOT, check=True, stdout=subprocess.DEVNULL, env=dict(os.environ, ANSIBLE_CONFIG=str(ROOT / "ansible.cfg")),
    )
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def main():
    """Print each run's CPU seconds, each venv's median and the ratio of the medians (B / A)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("venvs", nargs=2, type=Path, metavar="VENV", help="two virtualenvs with ansible-core")
    parser.add_argument("--rounds", type=int, default=3, help="runs of each venv, alternating")
    args = parser.parse_args()
    seconds = {venv: [] for venv in args.venvs}
    for _ in range(args.rounds):
        for venv in args.venvs:
            seconds[venv].append(cpu_seconds_of_run(venv.resolve()))
            print(f"{venv}: {seconds[venv][-1]:.2f} CPU-s", flush=True)
    medians = {venv: statistics.median(runs) for venv, runs in seconds.items()}
    first, second = args.venvs
    for venv in args.venvs:
        python = (venv / "pyvenv.cfg").read_text(encoding="utf-8").split("home = ")[1].split()[0]
        print(f"{venv} (Python from {python}): median {medians[venv]:.2f} CPU-s of {args.rounds} runs")
    print(f"ratio {second} / {first}: {medians[second] / medians[first]:.2f}")


if __name__ == "__main__":
    main()
