"""nginx -> uWSGI (http-socket on loopback, supervisord) -> sample app under /app.

The checks every uWSGI topology passes come from uwsgi_topology_checks; this module adds what
is particular to supervisord and the prefix. converge.yml also runs Gunicorn as a second
supervisord program on 127.0.0.1:8002, and the inventory declares a third (a stand-in worker)
and the sample app's worker (flask_app_processes), a fourth.
"""


import requests

from flaskstack_checks import (
    CAP_SYS_ADMIN, PROJECT_DIR, confinement, copy_sample_app, job_done_by_the_worker, run_playbook, systemd_exposure,
)
from uwsgi_topology_checks import *  # noqa: F401,F403  (the shared tests, collected here)
from uwsgi_topology_checks import APP, SERVICE

GUNICORN = f"gunicorn-{APP}"
WORKER = "sample-worker"
APP_WORKER = f"{APP}-worker-1"
CONVERGE = str(PROJECT_DIR / "molecule" / "uwsgi_supervisord" / "converge.yml")


def program_pids(host, names=(SERVICE, GUNICORN, WORKER)):
    """The pid of each of the supervisord programs ``names`` (dict of name to int)."""
    return {name: int(host.run(f"supervisorctl pid {name}").stdout) for name in names}


def test_paths_outside_the_prefix_are_not_the_app(host, stack):
    assert requests.get(f"http://127.0.0.1:{stack.port}/whoami", timeout=5).status_code == 404
    assert requests.get(f"http://127.0.0.1:{stack.port}/app", timeout=5).status_code != 404


def test_uwsgi_http_socket_listens_on_loopback_only(host):
    listeners = host.run("ss -Hltn").stdout.splitlines()
    assert [line for line in listeners if line.split()[3] == "127.0.0.1:8001"]
    assert not [line for line in listeners if line.split()[3].endswith(":8001") and "127.0.0.1" not in line]


def test_both_app_servers_run_as_supervisord_programs_with_rotated_logs(host):
    status = host.run("supervisorctl status").stdout
    assert SERVICE in status and GUNICORN in status and WORKER in status and status.count("RUNNING") == 4
    assert '"server_software":"gunicorn/' in host.run(
        "curl -s -H 'Host: localhost' http://127.0.0.1:8002/app/whoami").stdout.replace(" ", "")
    for name in (SERVICE, GUNICORN):
        config = host.file(f"/etc/supervisor/conf.d/{name}.conf").content_string
        assert f"stdout_logfile=/var/log/supervisor/{name}.log" in config
        assert "stdout_logfile_maxbytes=52428800" in config and "stdout_logfile_backups=10" in config
        assert "stopasgroup=true" in config and "killasgroup=true" in config
        assert host.file(f"/var/log/supervisor/{name}.log").size > 0


def test_every_program_runs_in_the_sandbox_of_supervisords_unit(host):
    # Debian's supervisor.service rates 9.6; with the role's drop-in 2.7 (Debian 12 and 13, by hand).
    exposure = systemd_exposure(host, "supervisor.service")
    print(f"systemd-analyze security supervisor.service: {exposure}")
    assert exposure <= 3.0
    for name in (SERVICE, GUNICORN, WORKER, APP_WORKER):
        pid = host.check_output(f"supervisorctl pid {name}")
        no_new_privileges, bounding = confinement(host.file(f"/proc/{pid}/status").content_string)
        # No new privileges, and CAP_SYS_ADMIN out of reach even for a program that became root.
        assert no_new_privileges and not bounding & (1 << CAP_SYS_ADMIN), (name, hex(bounding))


def test_a_changed_program_restarts_only_itself(host):
    """Gunicorn's program gets a longer stop wait: Gunicorn restarts, uWSGI keeps its pid.

    The same run leaves the app's worker out of flask_app_processes: its program goes. The next
    test's deploy brings it back, and checks that uWSGI keeps its pid then too.
    """
    before = program_pids(host)
    run = run_playbook(CONVERGE, "-e", "gunicorn_graceful_timeout=31", "-e", '{"flask_app_processes": []}')
    assert run.returncode == 0, run.stdout[-3000:]
    assert "stopwaitsecs=46" in host.file(f"/etc/supervisor/conf.d/{GUNICORN}.conf").content_string
    assert APP_WORKER not in host.run("supervisorctl status").stdout
    assert not host.file(f"/etc/supervisor/conf.d/{APP_WORKER}.conf").exists
    after = program_pids(host)
    assert after[GUNICORN] != before[GUNICORN]
    assert (after[SERVICE], after[WORKER]) == (before[SERVICE], before[WORKER])


def test_a_program_that_runs_the_app_restarts_with_a_new_release(host, stack, tmp_path):
    """restart_on_app_change: the worker follows the deploy; uWSGI reloads in place, Gunicorn is untouched."""
    before = program_pids(host)
    run = run_playbook(stack.playbook, "-e", f"flask_app_source_path={copy_sample_app(tmp_path / 'app', '1.0.7')}")
    assert run.returncode == 0, run.stdout[-3000:]
    after = program_pids(host)
    assert after[WORKER] != before[WORKER]
    assert (after[SERVICE], after[GUNICORN]) == (before[SERVICE], before[GUNICORN])
    assert requests.get(stack.url("/healthz"), timeout=5).json()["version"] == "1.0.7"
    # The app's worker, removed by the test before, is back with this run, on this release.
    assert job_done_by_the_worker(stack.url(""))["version"] == "1.0.7"


def test_app_worker_is_a_supervisord_program_that_does_jobs_enqueued_through_the_front_door(host, stack):
    config = host.file(f"/etc/supervisor/conf.d/{APP_WORKER}.conf").content_string
    assert f"user={APP}" in config and "stopsignal=TERM" in config and "stopwaitsecs=30" in config
    assert "stopasgroup=false" in config and "startsecs=5" in config
    assert not host.file(f"/etc/systemd/system/{APP}-worker@.service").exists
    job = job_done_by_the_worker(stack.url(""))
    assert job["pid"] == program_pids(host, [APP_WORKER])[APP_WORKER]
