#!/usr/bin/env python3
"""Where `make test`'s time goes: a table per Molecule scenario and release, from the logs of the last run.

tests/test_molecule.py writes each scenario's log to .ansible/molecule-<scenario>-<release>.log,
every line stamped with the seconds since the scenario started, and the verifier runs pytest with
``--durations=0``. This script reads those logs (no test runs again) and prints, per log:

* the seconds of each Molecule stage (destroy, create, converge, idempotence, verify, destroy);
* with ``--tests``, the seconds of each verify test (pytest's call + setup + teardown).

Tasks are not timed here (Molecule buffers Ansible's output, so its stamps say little about one
task): ``python benchmarks/topologies.py --part deploy --profile`` times each task of a deploy.

Usage: ``python benchmarks/profile_tests.py [--tests] [LOG ...]``.
"""

import argparse
import re
import sys
from collections import defaultdict
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAMP = re.compile(r"^\s*(\d+\.\d) (.*)$")
ANSI = re.compile(r"\x1b\[[0-9;]*m")
STAGE = re.compile(r"➜ (\w+): (Executing|Executed)")
# pytest --durations: "12.34s call     test_x.py::test_y[ansible://host]", which Molecule's output
# box wraps over several lines: they are joined before this is matched.
DURATION = re.compile(r"(\d+\.\d+)s (call|setup|teardown)\s*(\S+?::\S+?\])")
STAGES = ["destroy", "create", "converge", "idempotence", "verify"]


def stamped_lines(log):
    """Yield (seconds as float, text as str) for each stamped line of a log, colours removed.

    :param pathlib.Path log: a log written by tests/test_molecule.py.
    """
    for raw in log.read_text(encoding="utf-8", errors="replace").splitlines():
        match = STAMP.match(ANSI.sub("", raw))
        if match:
            yield float(match.group(1)), match.group(2)


def profile(log):
    """Profile one scenario log.

    :param pathlib.Path log: a log written by tests/test_molecule.py.
    :returns: a dict: ``stages`` {stage: seconds (the two destroys added up)}, ``total`` seconds,
        ``tests`` {test name: seconds}.
    """
    stages, started = defaultdict(float), {}
    tests = defaultdict(float)
    stage, last, durations = None, 0.0, None
    for seconds, text in stamped_lines(log):
        last = seconds
        stage_match = STAGE.search(text)
        if stage_match:
            name, state = stage_match.groups()
            if state == "Executing":
                started[name], stage = seconds, name
            elif name in started:
                stages[name] += seconds - started.pop(name)
                stage = None
            continue
        if stage == "verify" and "slowest durations" in text:
            durations = []
        elif stage == "verify" and durations is not None:
            durations.append(text.lstrip(" │").strip())
    for duration in DURATION.finditer("".join(durations or [])):
        test = duration.group(3).split("::")[-1].split("[")[0]
        tests[test] += float(duration.group(1))
    return {"stages": dict(stages), "total": last, "tests": dict(tests)}


def main():
    """Print the table for the given logs, or for every log of the last run; returns the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("logs", nargs="*", type=Path, help="logs to read (default: .ansible/molecule-*.log)")
    parser.add_argument("--tests", action="store_true", help="print each verify test's seconds")
    options = parser.parse_args()
    logs = options.logs or sorted((ROOT / ".ansible").glob("molecule-*.log"))
    header = f"{'scenario-release':<32}" + "".join(f"{stage:>12}" for stage in STAGES) + f"{'total':>9}"
    print(header)
    sums = defaultdict(float)
    profiles = {}
    for log in logs:
        result = profiles[log] = profile(log)
        name = log.stem.removeprefix("molecule-")
        row = [result["stages"].get(stage, 0.0) for stage in STAGES]
        for stage, seconds in zip(STAGES, row):
            sums[stage] += seconds
        sums["total"] += result["total"]
        print(f"{name:<32}" + "".join(f"{seconds:>12.0f}" for seconds in row) + f"{result['total']:>9.0f}")
    print(f"{'sum':<32}" + "".join(f"{sums[stage]:>12.0f}" for stage in STAGES) + f"{sums['total']:>9.0f}")
    for log, result in profiles.items():
        if options.tests and result["tests"]:
            print(f"\n{log.stem.removeprefix('molecule-')}: verify tests, slowest first")
            for test, seconds in sorted(result["tests"].items(), key=lambda item: -item[1]):
                print(f"  {seconds:7.1f}  {test}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
