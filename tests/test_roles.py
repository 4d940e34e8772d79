"""Static checks of the roles: argument specs agree with defaults, READMEs are current."""

import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "scripts"))

import role_docs  # noqa: E402

ROLES = sorted(path.name for path in (ROOT / "roles").iterdir() if path.is_dir())


def defaults_of(role):
    return yaml.safe_load((ROOT / "roles" / role / "defaults" / "main.yml").read_text(encoding="utf-8")) or {}


@pytest.mark.parametrize("role", ROLES)
def test_argument_specs_declare_exactly_the_defaults(role):
    options = role_docs.load_options(ROOT / "roles" / role)
    defaults = defaults_of(role)
    assert list(options) == list(defaults), "same variables, same order"
    for name, spec in options.items():
        assert spec.get("default") == defaults[name], f"{name}: spec default differs from defaults/main.yml"
        assert spec.get("type"), f"{name} has no type"
        assert spec.get("description"), f"{name} has no description"
        assert name.startswith(role + "_"), f"{name} does not start with the role name"


@pytest.mark.parametrize("role", ROLES)
def test_assert_entry_point_validates_like_main(role):
    specs = yaml.safe_load((ROOT / "roles" / role / "meta" / "argument_specs.yml").read_text(encoding="utf-8"))
    assert specs["argument_specs"]["assert"] == specs["argument_specs"]["main"]


@pytest.mark.parametrize("role", ROLES)
def test_readme_variable_table_is_current(role):
    role_dir = ROOT / "roles" / role
    assert (role_dir / "README.md").read_text(encoding="utf-8") == role_docs.rendered_readme(role_dir), (
        "run scripts/role_docs.py"
    )
