"""nginx -> uWSGI (uwsgi protocol, unix socket, systemd) -> sample app.

The checks every uWSGI topology passes come from uwsgi_topology_checks; this module adds what
is particular to the unix socket.
"""

from uwsgi_topology_checks import *  # noqa: F401,F403  (the shared tests, collected here)
from uwsgi_topology_checks import APP


def test_uwsgi_socket_is_only_for_the_app_and_the_web_server(host):
    socket_file = host.file(f"/run/{APP}/{APP}.sock")
    assert socket_file.is_socket
    assert (socket_file.user, socket_file.group, socket_file.mode) == (APP, "www-data", 0o660)
    directory = host.file(f"/run/{APP}")
    assert (directory.user, directory.group, directory.mode) == (APP, "www-data", 0o750)
    connect = f"python3 -c 'import socket; socket.socket(socket.AF_UNIX).connect(\"/run/{APP}/{APP}.sock\")'"
    assert host.run(f"runuser -u www-data -- {connect}").rc == 0
    assert host.run(f"runuser -u nobody -- {connect}").rc != 0


def test_nginx_speaks_the_uwsgi_protocol(host):
    site = host.file(f"/etc/nginx/sites-available/{APP}.conf").content_string
    assert "uwsgi_pass " in site and "proxy_pass " not in site
    # The harakiri of uWSGI ends a stuck request before nginx gives up on it.
    ini = host.file(f"/etc/uwsgi-flaskstack/{APP}.ini").content_string
    harakiri = int(next(line for line in ini.splitlines() if line.startswith("harakiri")).split("=")[1])
    read_timeout = int(next(line for line in site.splitlines() if "uwsgi_read_timeout" in line).split()[1].rstrip("s;"))
    assert harakiri < read_timeout
