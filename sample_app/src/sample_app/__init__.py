"""A small Flask application that reports what it sees, for deployment tests.

Every route is there to let a test, or an operator, check a property of the
stack in front of it: ``/`` renders a template with a static stylesheet,
``/healthz`` reports liveness and the deployed version, ``/whoami`` reports the
request as the application sees it after the proxies, ``/session`` counts a client's visits in
its signed session cookie (good on every host that shares the secret key). ``sample_app.jobs`` adds a job
queue with its worker, scheduled job, migration and build step.
"""

import os
import pwd
import socket
from importlib import metadata

from flask import Flask, jsonify, render_template, request, session


def installed_version() -> str:
    """Return the version this application reports.

    ``SAMPLE_APP_VERSION`` in the environment wins, so an operator can label a
    build; otherwise the installed distribution's metadata is used, and
    ``"0+unknown"`` when the package runs from a source tree without metadata.

    :returns: a version string, never empty.
    """
    from_env = os.environ.get("SAMPLE_APP_VERSION")
    if from_env:
        return from_env
    try:
        return metadata.version("flaskstack-sample-app")
    except metadata.PackageNotFoundError:
        return "0+unknown"


def wsgi_server(environ) -> str:
    """Name the WSGI server that called the application, from the keys it puts in the environ.

    :param dict environ: the request's WSGI environ.
    :returns: ``mod_wsgi/<version>``, ``uWSGI/<version>``, else ``SERVER_SOFTWARE`` (for
        example ``gunicorn/23.0.0``), or ``""`` when the server names itself nowhere.
    """
    if "mod_wsgi.version" in environ:
        return "mod_wsgi/" + ".".join(str(part) for part in environ["mod_wsgi.version"])
    if "uwsgi.version" in environ:
        version = environ["uwsgi.version"]
        return "uWSGI/" + (version.decode() if isinstance(version, bytes) else str(version))
    return environ.get("SERVER_SOFTWARE", "")


def create_app(test_config: "dict | None" = None) -> Flask:
    """Build the Flask application (the factory behind ``sample_app:create_app()``).

    Configuration comes from environment variables prefixed ``FLASK_`` (for
    example ``FLASK_SECRET_KEY``), then from ``test_config`` when given.

    :param test_config: mapping merged into ``app.config`` last, for tests.
    :returns: the configured application.
    """
    app = Flask(__name__, instance_relative_config=True)
    app.config.from_mapping(
        SECRET_KEY="dev-only-not-secret",
        APP_VERSION=installed_version(),
        JOBS_DATABASE=os.path.join("instance", "jobs.sqlite3"),
        # The names PaaS and the flaskstack.deploy roles give them; unset means SQLite and no Redis.
        DATABASE_URL=os.environ.get("DATABASE_URL"),
        REDIS_URL=os.environ.get("REDIS_URL"),
    )
    app.config.from_prefixed_env()
    if test_config:
        app.config.update(test_config)

    @app.get("/")
    def index():
        return render_template("index.html", version=app.config["APP_VERSION"])

    @app.get("/healthz")
    def healthz():
        return jsonify(status="ok", version=app.config["APP_VERSION"])

    @app.get("/whoami")
    def whoami():
        return jsonify(
            remote_addr=request.remote_addr,
            scheme=request.scheme,
            host=request.host,
            script_root=request.script_root,
            url_root=request.url_root,
            index_url=request.host_url.rstrip("/") + request.script_root + "/",
            hostname=socket.gethostname(),
            pid=os.getpid(),
            user=pwd.getpwuid(os.geteuid()).pw_name,
            cwd=os.getcwd(),
            auth_type=request.authorization.type if request.authorization else None,
            wsgi_server=wsgi_server(request.environ),
            server_software=request.environ.get("SERVER_SOFTWARE", ""),
        )

    @app.get("/session")
    def visits():
        """Count this client's visits in its session cookie, which only the app's SECRET_KEY signs."""
        session["visits"] = session.get("visits", 0) + 1
        return jsonify(visits=session["visits"], hostname=socket.gethostname())

    from sample_app import jobs

    app.register_blueprint(jobs.blueprint)
    app.cli.add_command(jobs.cli)
    return app
