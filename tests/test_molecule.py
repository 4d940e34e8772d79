"""Every Molecule scenario as one test, so a failing scenario shows in pytest's summary.

``molecule test`` runs destroy, create, converge, idempotence, verify and destroy; the full
log goes to .ansible/molecule-<scenario>.log and its end into the failure message.
"""

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCENARIOS = sorted(path.parent.name for path in (ROOT / "molecule").glob("*/molecule.yml"))


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_molecule_scenario(scenario):
    log = ROOT / ".ansible" / f"molecule-{scenario}.log"
    log.parent.mkdir(exist_ok=True)
    with log.open("w", encoding="utf-8") as output:
        run = subprocess.run(
            ["molecule", "test", "-s", scenario], cwd=ROOT, stdout=output, stderr=subprocess.STDOUT,
            timeout=40 * 60, check=False,
        )
    tail = "".join(log.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[-150:])
    assert run.returncode == 0, f"molecule test -s {scenario} failed; end of {log}:\n{tail}"
