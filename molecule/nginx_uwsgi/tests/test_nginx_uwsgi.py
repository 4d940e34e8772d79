"""nginx -> uWSGI (uwsgi protocol, unix socket, systemd) -> sample app, with PostgreSQL and Redis on the host.

The checks every uWSGI topology passes come from uwsgi_topology_checks; this module adds what
is particular to the unix socket and to the app's data services (playbooks/data_services.yml):
its jobs are rows in PostgreSQL and ids in a Redis list, which the worker (flask_app_processes)
pops. The shared redeploy and rollback tests check that a job written before is still there.
"""

import shlex
import time

import requests

from flaskstack_checks import PROJECT_DIR, Poller, copy_sample_app, job_done_by_the_worker, run_playbook, systemd_exposure
from uwsgi_topology_checks import *  # noqa: F401,F403  (the shared tests, collected here)
from uwsgi_topology_checks import APP

# The inventory's passwords (molecule.yml).
DATABASE_PASSWORD = "molecule-only-database-password"
REDIS_PASSWORD = "molecule-only-redis-password"
QUEUE_KEY = "sample_app:jobs"
BACKUP_DIR = f"/var/backups/postgresql/{APP}"
BACKUP_UNIT = "flaskstack-postgresql-backup"
ROLLBACK = str(PROJECT_DIR / "playbooks" / "rollback.yml")


def dumps(host):
    """The database's dumps on the host, oldest first (list of file names)."""
    return sorted(host.run(f"ls {BACKUP_DIR}").stdout.split())


def psql(host, query, url=None, database=APP):
    """Run one query with psql, as the postgres superuser (peer) on ``database`` or with ``url``; return the result."""
    target = shlex.quote(url) if url else database
    return host.run(f"runuser -u postgres -- psql -X -At -v ON_ERROR_STOP=1 -d {target} -c {shlex.quote(query)}")


def redis_cli(host, *args, password=None):
    """Run redis-cli against the local Redis, with ``password`` from the environment (never argv).

    :returns: what it printed, stdout and stderr together (str).
    """
    auth = f"REDISCLI_AUTH={shlex.quote(password)} " if password else ""
    result = host.run(f"{auth}redis-cli --no-auth-warning {' '.join(shlex.quote(arg) for arg in args)}")
    return result.stdout + result.stderr


def test_uwsgi_socket_is_only_for_the_app_and_the_web_server(host):
    socket_file = host.file(f"/run/{APP}/{APP}.sock")
    assert socket_file.is_socket
    # Made by uWSGI as the app user: the group comes from the set-group-ID directory.
    assert (socket_file.user, socket_file.group, socket_file.mode) == (APP, "www-data", 0o660)
    directory = host.file(f"/run/{APP}")
    assert (directory.user, directory.group, directory.mode) == (APP, "www-data", 0o2750)
    connect = f"python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect(\"/run/{APP}/{APP}.sock\")'"
    assert host.run(f"runuser -u www-data -- {connect}").rc == 0
    assert host.run(f"runuser -u nobody -- {connect}").rc != 0


def test_units_the_collection_writes_score_at_most_2_5_in_systemd_analyze_security(host):
    ours = {unit: systemd_exposure(host, unit) for unit in [f"uwsgi-{APP}.service", f"{APP}-worker@1.service", f"{BACKUP_UNIT}.service"]}
    print(f"systemd-analyze security: {ours}")
    assert max(ours.values()) <= 2.5, ours


def test_nginx_speaks_the_uwsgi_protocol(host):
    site = host.file(f"/etc/nginx/sites-available/{APP}.conf").content_string
    assert "uwsgi_pass " in site and "proxy_pass " not in site
    # The harakiri of uWSGI ends a stuck request before nginx gives up on it.
    ini = host.file(f"/etc/uwsgi-flaskstack/{APP}.ini").content_string
    harakiri = int(next(line for line in ini.splitlines() if line.startswith("harakiri")).split("=")[1])
    read_timeout = int(next(line for line in site.splitlines() if "uwsgi_read_timeout" in line).split()[1].rstrip("s;"))
    assert harakiri < read_timeout


def test_jobs_are_rows_in_postgresql_queued_through_redis(host, stack):
    summary = requests.get(stack.url("/jobs"), timeout=5).json()
    assert (summary["database"], summary["queue"]) == ("postgresql", "redis")
    job = job_done_by_the_worker(stack.url(""))
    assert psql(host, f"SELECT state, version FROM jobs WHERE id = {int(job['id'])}").stdout.strip() == "done|1.0.0"
    # The worker popped the id: nothing is left in the list.
    assert redis_cli(host, "LLEN", QUEUE_KEY, password=REDIS_PASSWORD).strip() == "0"
    # The release phase made the tables, as the app's own login role.
    assert psql(host, "SELECT tableowner FROM pg_tables WHERE tablename = 'jobs'").stdout.strip() == APP


def test_database_and_redis_take_only_their_password_and_listen_on_loopback(host):
    right = f"postgresql://{APP}:{DATABASE_PASSWORD}@localhost/{APP}"
    assert psql(host, "SELECT current_user", url=right).stdout.strip() == APP
    wrong = psql(host, "SELECT 1", url=f"postgresql://{APP}:not-the-password@localhost/{APP}")
    assert wrong.rc != 0 and "password authentication failed" in wrong.stderr
    # Another database's owner cannot connect to the app's database (CONNECT revoked from PUBLIC).
    assert psql(host, "CREATE ROLE intruder LOGIN PASSWORD 'intruder-password-123'").rc == 0
    try:
        intruder = psql(host, "SELECT 1", url=f"postgresql://intruder:intruder-password-123@localhost/{APP}")
        assert intruder.rc != 0 and "permission denied" in intruder.stderr
    finally:
        psql(host, "DROP ROLE intruder")
    assert "NOAUTH" in redis_cli(host, "PING")
    assert "WRONGPASS" in redis_cli(host, "PING", password="not-the-password")
    assert redis_cli(host, "PING", password=REDIS_PASSWORD).strip() == "PONG"
    assert redis_cli(host, "CONFIG", "GET", "maxmemory-policy", password=REDIS_PASSWORD).split() == [
        "maxmemory-policy", "noeviction"]
    listeners = host.run("ss -Hltn").stdout.splitlines()
    for port in (":5432", ":6379"):
        addresses = [line.split()[3] for line in listeners if line.split()[3].endswith(port)]
        assert addresses and all(address.startswith(("127.0.0.1:", "[::1]:")) for address in addresses), addresses


def test_passwords_are_in_no_command_line_and_no_world_readable_file(host):
    command_lines = host.run("ps -eww -o args=").stdout
    files = host.run(
        f"grep -rlsF -e {DATABASE_PASSWORD} -e {REDIS_PASSWORD} /etc /srv /run /var/lib/postgresql /var/lib/redis /tmp"
    ).stdout.split()
    assert DATABASE_PASSWORD not in command_lines and REDIS_PASSWORD not in command_lines
    # The app's environment file and Redis's settings hold them; PostgreSQL keeps only a SCRAM verifier.
    assert f"/srv/{APP}/shared/app.env" in files and "/etc/redis/flaskstack.conf" in files
    assert not [path for path in files if host.file(path).mode & 0o004], files


def test_app_comes_back_by_itself_after_postgresql_and_redis_restart(host, stack):
    """Measured, not assumed: what a restart of each does to requests in flight (printed), and that the app and its
    worker need no restart after it. Each poll enqueues a job: a row in PostgreSQL, an id pushed to Redis."""
    version = host.run("ls /etc/postgresql").stdout.strip()
    for unit in (f"postgresql@{version}-main", "redis-server"):
        with Poller(stack.url("/jobs"), method="POST") as poller:
            time.sleep(1)
            assert host.run(f"systemctl restart {unit}").rc == 0
            time.sleep(2)
        print(f"restart of {unit}: {len(poller.failures)} of {poller.total} enqueues failed {sorted(set(poller.failures))}")
        assert poller.ok > 0 and requests.post(stack.url("/jobs"), timeout=5).status_code == 202
    # The worker lost its connections: it does jobs again, the ones enqueued above included.
    assert job_done_by_the_worker(stack.url(""))["state"] == "done"
    summary = requests.get(stack.url("/jobs"), timeout=5).json()
    print(f"jobs after both restarts: {summary['states']}")


def test_a_migrating_release_with_new_passwords_then_a_rollback_that_needs_a_yes(host, stack, tmp_path):
    """One deploy serves two checks. Release 1.0.2 migrates the schema to revision 2 and comes with both passwords
    rotated, in a verbose run with --diff: they appear nowhere in its output and reach the app. Then going back to
    code that expects revision 1 stops and names both revisions, until the operator says yes."""
    new_database, new_redis = "rotated-database-password-2", "rotated-redis-password-22"
    source = copy_sample_app(tmp_path / "app", "1.0.2")
    jobs = source / "src" / APP / "jobs.py"
    jobs.write_text(jobs.read_text(encoding="utf-8").replace('SCHEMA_REVISION = "1"', 'SCHEMA_REVISION = "2"'), encoding="utf-8")
    deploy = run_playbook(
        stack.playbook, "-v", "--diff", "-e", f"flask_app_source_path={source}",
        "-e", f"sample_app_database_password={new_database}", "-e", f"sample_app_redis_password={new_redis}",
    )
    assert deploy.returncode == 0, deploy.stdout[-3000:]
    assert new_database not in deploy.stdout and new_redis not in deploy.stdout
    assert job_done_by_the_worker(stack.url(""))["version"] == "1.0.2"
    old = psql(host, "SELECT 1", url=f"postgresql://{APP}:{DATABASE_PASSWORD}@localhost/{APP}")
    assert old.rc != 0 and "password authentication failed" in old.stderr
    assert "WRONGPASS" in redis_cli(host, "PING", password=REDIS_PASSWORD)
    assert psql(host, "SELECT revision FROM schema_revision").stdout.strip() == "2"
    live = host.file(f"/srv/{APP}/current").linked_to
    refused = run_playbook(ROLLBACK)
    message = " ".join(refused.stdout.split())
    assert refused.returncode != 0 and "expects schema revision 1, the database is at 2" in message, refused.stdout[-3000:]
    assert host.file(f"/srv/{APP}/current").linked_to == live
    assert requests.get(stack.url("/healthz"), timeout=5).json()["version"] == "1.0.2"
    forced = run_playbook(ROLLBACK, "-e", "flask_app_rollback_ignore_schema=true")
    assert forced.returncode == 0, forced.stdout[-3000:]
    assert requests.get(stack.url("/healthz"), timeout=5).json()["version"] == "1.0.0"


def test_backup_then_damage_then_restore_brings_the_data_back(host, stack):
    assert host.run(f"systemctl is-enabled {BACKUP_UNIT}.timer").stdout.strip() == "enabled"
    job = job_done_by_the_worker(stack.url(""))
    started = time.monotonic()
    backup = run_playbook(str(PROJECT_DIR / "playbooks" / "backup.yml"))
    backup_seconds = time.monotonic() - started
    assert backup.returncode == 0, backup.stdout[-3000:]
    newest = dumps(host)[-1]
    assert newest.endswith(".pgc") and f"{BACKUP_DIR}/{newest}" in backup.stdout
    dump_file = host.file(f"{BACKUP_DIR}/{newest}")
    assert (dump_file.user, dump_file.mode) == ("postgres", 0o600) and host.file(BACKUP_DIR).mode == 0o700
    migrations = len(requests.get(stack.url("/migrations"), timeout=5).json())
    assert psql(host, "DROP TABLE jobs").rc == 0
    assert psql(host, "CREATE TABLE made_after_the_dump (id integer)").rc == 0
    assert requests.get(stack.url(f"/jobs/{job['id']}"), timeout=5).status_code == 500
    started = time.monotonic()
    restore = run_playbook(
        str(PROJECT_DIR / "playbooks" / "restore.yml"), "-e", f"postgresql_restore_database={APP}",
        "-e", f"postgresql_restore_dump={newest}", "-e", "flaskstack_restore_app_hosts=nginx_uwsgi",
    )
    restore_seconds = time.monotonic() - started
    assert restore.returncode == 0, restore.stdout[-3000:]
    print(f"backup.yml {backup_seconds:.1f} s, restore.yml {restore_seconds:.1f} s, dump {dump_file.size} bytes")
    assert requests.get(stack.url(f"/jobs/{job['id']}"), timeout=5).json() == job
    assert psql(host, "SELECT to_regclass('made_after_the_dump') IS NULL").stdout.strip() == "t", "the dump's state, no more"
    # The app's release commands (its migration) ran once, after the restore; the worker and the app write again.
    assert len(requests.get(stack.url("/migrations"), timeout=5).json()) == migrations + 1
    assert job_done_by_the_worker(stack.url(""))["state"] == "done"
    assert psql(host, f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{APP}'").stdout.strip() == "t"


def test_a_failing_backup_is_reported_and_keeps_the_previous_dump(host):
    before = dumps(host)
    # pg_dump cannot connect to a database that takes no connections: the backup fails.
    assert psql(host, f"ALTER DATABASE {APP} ALLOW_CONNECTIONS false", database="postgres").rc == 0
    try:
        backup = run_playbook(str(PROJECT_DIR / "playbooks" / "backup.yml"))
    finally:
        psql(host, f"ALTER DATABASE {APP} ALLOW_CONNECTIONS true", database="postgres")
    assert backup.returncode != 0 and f"{BACKUP_UNIT}.service" in backup.stdout
    assert host.run(f"systemctl is-failed {BACKUP_UNIT}.service").stdout.strip() == "failed"
    assert "pg_dump failed" in host.run(f"journalctl --no-pager -o cat -u {BACKUP_UNIT}.service").stdout
    assert dumps(host) == before, "a failed backup must neither add a file nor remove one"
