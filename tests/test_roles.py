"""Static checks of the roles: argument specs agree with defaults, READMEs are current."""

import re
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
        if "default" in spec or "{{" not in str(defaults[name]):
            assert spec.get("default") == defaults[name], f"{name}: spec default differs from defaults/main.yml"
        else:
            # Computed from other variables: antsibull-docs refuses a template as a boolean's default,
            # so the description says what it is.
            assert "Default" in str(spec.get("description")), f"{name}: a computed default must be described"
        assert spec.get("type"), f"{name} has no type"
        assert spec.get("description"), f"{name} has no description"
        assert name.startswith(role + "_"), f"{name} does not start with the role name"


@pytest.mark.parametrize("role", ROLES)
def test_assert_entry_point_validates_like_main(role):
    entry_points = role_docs.load_entry_points(ROOT / "roles" / role)
    assert entry_points["assert"] == entry_points["main"]


@pytest.mark.parametrize("role", ROLES)
def test_readme_variable_table_is_current(role):
    role_dir = ROOT / "roles" / role
    assert (role_dir / "README.md").read_text(encoding="utf-8") == role_docs.rendered_readme(role_dir), (
        "run scripts/role_docs.py"
    )


def role_calls(node):
    """Yield (role, entry point) for every import_role and include_role in a parsed task file or playbook."""
    if isinstance(node, list):
        for item in node:
            yield from role_calls(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            if key in ("ansible.builtin.import_role", "ansible.builtin.include_role"):
                yield value["name"].removeprefix("flaskstack.deploy."), value.get("tasks_from", "main")
            else:
                yield from role_calls(value)


def test_every_entry_point_the_playbooks_and_roles_call_has_an_argument_spec():
    """antsibull-docs documents entry points from their specs, and Ansible validates only those that have one."""
    files = sorted((ROOT / "playbooks").glob("*.yml")) + sorted((ROOT / "roles").glob("*/*/*.yml"))
    calls = {call for path in files for call in role_calls(yaml.safe_load(path.read_text(encoding="utf-8")))}
    assert ("flask_app", "rollback") in calls, "the walk finds the calls"
    for role, entry_point in sorted(calls):
        entry = role_docs.load_entry_points(ROOT / "roles" / role).get(entry_point)
        assert entry, f"{role} has no argument spec for its entry point {entry_point}"
        assert entry.get("short_description") and entry.get("description"), f"{role} {entry_point}: undocumented"


def test_galaxy_dependencies_are_the_collections_the_shipped_content_calls():
    """A module or filter of a collection missing from galaxy.yml fails only on a user's controller."""
    galaxy = yaml.safe_load((ROOT / "galaxy.yml").read_text(encoding="utf-8"))
    shipped = [path for path in (ROOT / "roles").rglob("*") if path.is_file()]
    shipped += [path for path in (ROOT / "playbooks").rglob("*.yml") if not path.name.startswith("sandbox_")]
    fqcn = re.compile(r"\b([a-z_]+\.[a-z_]+)\.[a-z_0-9]+\b")
    called = {match for path in shipped for match in fqcn.findall(path.read_text(encoding="utf-8"))}
    collections = {name for name in called if name.split(".")[0] in ("community", "ansible")} - {"ansible.builtin"}
    assert "community.postgresql" in collections, "the walk finds the postgresql role's modules"
    assert collections == set(galaxy["dependencies"])
