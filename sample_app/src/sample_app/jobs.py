"""A job queue in the app's SQLite database, with the commands a deploy runs around the web app.

What a real app does with RQ or Celery, small enough to test a deploy with: ``POST /jobs``
enqueues a job, ``flask jobs work`` is the long-running worker that does it, ``flask jobs tick``
is a scheduled job, ``flask jobs migrate`` is the release-phase migration and ``flask jobs build``
a build step that writes into the release. Every row says which release, user and process did it.

The database is ``JOBS_DATABASE`` (``FLASK_JOBS_DATABASE`` in the environment), by default
``instance/jobs.sqlite3`` under the working directory: the release's project directory, where
``instance`` is shared data that survives releases.
"""

import json
import os
import pwd
import signal
import socket
import sqlite3
import time

import click
from flask import Blueprint, current_app, jsonify, request
from flask.cli import AppGroup

blueprint = Blueprint("jobs", __name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id INTEGER PRIMARY KEY,
    seconds REAL NOT NULL,
    state TEXT NOT NULL DEFAULT 'queued',
    enqueued_at REAL NOT NULL,
    started_at REAL,
    done_at REAL,
    version TEXT,
    pid INTEGER,
    cwd TEXT
);
CREATE TABLE IF NOT EXISTS ticks (
    id INTEGER PRIMARY KEY,
    started_at REAL NOT NULL,
    finished_at REAL,
    hostname TEXT NOT NULL,
    version TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS migrations (
    id INTEGER PRIMARY KEY,
    ran_at REAL NOT NULL,
    hostname TEXT NOT NULL,
    version TEXT NOT NULL
);
"""


def connect(app=None) -> sqlite3.Connection:
    """Open the jobs database of ``app`` (default: the current app).

    :returns: a connection in autocommit mode whose rows are ``sqlite3.Row``; it waits up to
        10 s for another process's write lock.
    :raises sqlite3.OperationalError: when the database cannot be opened or the schema is missing.
    """
    app = app or current_app
    connection = sqlite3.connect(app.config["JOBS_DATABASE"], timeout=10, isolation_level=None)
    connection.row_factory = sqlite3.Row
    return connection


@blueprint.post("/jobs")
def enqueue():
    """Enqueue a job that takes ``?seconds=`` (float, default 0) to do; answers 202 with its id."""
    seconds = float(request.args.get("seconds", "0"))
    with connect() as connection:
        cursor = connection.execute("INSERT INTO jobs (seconds, enqueued_at) VALUES (?, ?)", (seconds, time.time()))
    return jsonify(id=cursor.lastrowid), 202


@blueprint.get("/jobs/<int:job_id>")
def job(job_id):
    """Report one job: its state and, once a worker took it, the worker's release and pid."""
    row = connect().execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
    return (jsonify(dict(row)), 200) if row else (jsonify(error="no such job"), 404)


@blueprint.get("/ticks")
def ticks():
    """List the scheduled job's runs, oldest first."""
    return jsonify([dict(row) for row in connect().execute("SELECT * FROM ticks ORDER BY id")])


@blueprint.get("/migrations")
def migrations():
    """List the release-phase migrations that ran, oldest first."""
    return jsonify([dict(row) for row in connect().execute("SELECT * FROM migrations ORDER BY id")])


cli = AppGroup("jobs", help="The job queue's commands (each in the app context).")


@cli.command("migrate")
def migrate():
    """Create the tables (idempotent) and record the run: the release phase."""
    with connect() as connection:
        connection.executescript(SCHEMA)
        connection.execute(
            "INSERT INTO migrations (ran_at, hostname, version) VALUES (?, ?, ?)",
            (time.time(), socket.gethostname(), current_app.config["APP_VERSION"]),
        )


@cli.command("build")
@click.argument("path", default="build-info.json")
def build(path):
    """Write PATH (relative to the working directory) with who built the release: a build step."""
    with open(path, "w", encoding="utf-8") as info:
        json.dump({"version": current_app.config["APP_VERSION"], "user": pwd.getpwuid(os.geteuid()).pw_name}, info)


@cli.command("work")
@click.option("--poll", default=0.5, show_default=True, help="Seconds between looks at an empty queue.")
def work(poll):
    """Do queued jobs one at a time until SIGTERM, which lets the job in progress finish."""
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    version, connection = current_app.config["APP_VERSION"], connect()
    click.echo(f"worker {os.getpid()} of {version} ready in {os.getcwd()}")
    while not stopping:
        connection.execute("BEGIN IMMEDIATE")
        row = connection.execute("SELECT id, seconds FROM jobs WHERE state = 'queued' ORDER BY id LIMIT 1").fetchone()
        if row:
            connection.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, version = ?, pid = ?, cwd = ? WHERE id = ?",
                (time.time(), version, os.getpid(), os.getcwd(), row["id"]),
            )
        connection.execute("COMMIT")
        if not row:
            time.sleep(poll)
            continue
        click.echo(f"job {row['id']} started")
        deadline = time.monotonic() + row["seconds"]
        while time.monotonic() < deadline:  # a signal interrupts sleep(): sleep out the rest
            time.sleep(max(0.0, deadline - time.monotonic()))
        connection.execute("UPDATE jobs SET state = 'done', done_at = ? WHERE id = ?", (time.time(), row["id"]))
        click.echo(f"job {row['id']} done")
    click.echo(f"worker {os.getpid()} stopped")


@cli.command("tick")
@click.option("--seconds", default=0.0, show_default=True, help="How long the run takes.")
def tick(seconds):
    """Record one run of the scheduled job, which takes SECONDS."""
    with connect() as connection:
        cursor = connection.execute(
            "INSERT INTO ticks (started_at, hostname, version) VALUES (?, ?, ?)",
            (time.time(), socket.gethostname(), current_app.config["APP_VERSION"]),
        )
        time.sleep(seconds)
        connection.execute("UPDATE ticks SET finished_at = ? WHERE id = ?", (time.time(), cursor.lastrowid))
