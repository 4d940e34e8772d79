"""Unit tests of the sample app, run in-process with Flask's test client."""

import os

import pytest

from sample_app import create_app, wsgi_server


@pytest.fixture()
def client():
    return create_app({"TESTING": True}).test_client()


def test_index_renders_template_linking_stylesheet(client):
    response = client.get("/")
    assert response.status_code == 200
    assert b"Hello from the flaskstack sample app" in response.data
    assert b'href="/static/style.css"' in response.data


def test_stylesheet_is_served(client):
    response = client.get("/static/style.css")
    assert response.status_code == 200
    assert b"flaskstack sample stylesheet" in response.data


def test_healthz_reports_ok_and_version(client, monkeypatch):
    assert client.get("/healthz").get_json()["status"] == "ok"
    monkeypatch.setenv("SAMPLE_APP_VERSION", "9.9.9")
    body = create_app({"TESTING": True}).test_client().get("/healthz").get_json()
    assert body == {"status": "ok", "version": "9.9.9"}


def test_whoami_reports_request_as_seen(client):
    body = client.get(
        "/whoami", base_url="https://example.test/", environ_base={"REMOTE_ADDR": "203.0.113.7"}
    ).get_json()
    assert body["remote_addr"] == "203.0.113.7"
    assert body["scheme"] == "https"
    assert body["host"] == "example.test"
    assert body["script_root"] == ""
    assert body["url_root"] == "https://example.test/"
    assert isinstance(body["pid"], int)
    assert body["hostname"]
    assert body["user"] and body["cwd"] == os.getcwd()
    assert body["auth_type"] is None
    assert client.get("/whoami", headers={"Authorization": "Bearer abc"}).get_json()["auth_type"] == "bearer"
    assert body["wsgi_server"] == ""  # the test client names no server


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({"mod_wsgi.version": (5, 0, 2), "SERVER_SOFTWARE": "Apache"}, "mod_wsgi/5.0.2"),
        ({"uwsgi.version": b"2.0.30"}, "uWSGI/2.0.30"),
        ({"SERVER_SOFTWARE": "gunicorn/23.0.0"}, "gunicorn/23.0.0"),
        ({}, ""),
    ],
)
def test_wsgi_server_names_the_server_from_its_environ_keys(environ, expected):
    assert wsgi_server(environ) == expected


def test_config_from_prefixed_environment(monkeypatch):
    monkeypatch.setenv("FLASK_SECRET_KEY", "from-env")
    assert create_app().config["SECRET_KEY"] == "from-env"


def test_job_enqueued_over_http_is_done_by_the_worker_command(tmp_path, monkeypatch):
    """The release phase creates the tables, a request enqueues, the worker does it and stops on SIGTERM."""
    import signal
    import threading

    monkeypatch.chdir(tmp_path)
    app = create_app({"TESTING": True, "JOBS_DATABASE": str(tmp_path / "jobs.sqlite3")})
    runner = app.test_cli_runner()
    assert runner.invoke(args=["jobs", "migrate"]).exit_code == 0
    client = app.test_client()
    job_id = client.post("/jobs?seconds=0.1").get_json()["id"]
    assert client.get(f"/jobs/{job_id}").get_json()["state"] == "queued"
    # The worker's SIGTERM handler stops the loop; raise it once the job is done.
    def stop_when_done():
        while client.get(f"/jobs/{job_id}").get_json()["state"] != "done":
            threading.Event().wait(0.05)
        os.kill(os.getpid(), signal.SIGTERM)
    watcher = threading.Thread(target=stop_when_done)
    previous = signal.getsignal(signal.SIGTERM)
    watcher.start()
    try:
        result = runner.invoke(args=["jobs", "work", "--poll", "0.05"])
    finally:
        signal.signal(signal.SIGTERM, previous)
        watcher.join()
    assert result.exit_code == 0, result.output
    assert f"job {job_id} done" in result.output and "stopped" in result.output
    done = client.get(f"/jobs/{job_id}").get_json()
    assert done["pid"] == os.getpid() and done["done_at"] >= done["started_at"]
    assert runner.invoke(args=["jobs", "tick"]).exit_code == 0
    assert [tick["finished_at"] is not None for tick in client.get("/ticks").get_json()] == [True]
    assert runner.invoke(args=["jobs", "build", "info.json"]).exit_code == 0
    assert runner.invoke(args=["jobs", "heads"]).output == runner.invoke(args=["jobs", "current"]).output == "1 (head)\n"
    assert (tmp_path / "info.json").read_text(encoding="utf-8").startswith('{"version": ')


def test_session_counts_visits_only_with_the_key_that_signed_it():
    client = create_app({"TESTING": True, "SECRET_KEY": "the-shared-key"}).test_client()
    assert [client.get("/session").get_json()["visits"] for _ in range(3)] == [1, 2, 3]
    cookie = client.get_cookie("session").value

    def next_visit_on_a_host_with(key):
        other = create_app({"TESTING": True, "SECRET_KEY": key}).test_client()
        other.set_cookie("session", cookie)
        return other.get("/session").get_json()["visits"]

    # Another host with the same key goes on counting; one with another key starts over.
    assert next_visit_on_a_host_with("the-shared-key") == 4
    assert next_visit_on_a_host_with("another-key") == 1
