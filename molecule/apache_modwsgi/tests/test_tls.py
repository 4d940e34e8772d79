"""HTTPS on Apache with mod_wsgi: the checks every front door passes (tls_checks).

They run after test_apache_modwsgi.py (file order): the last ones change the site's certificate.
"""

import pytest

from tls_checks import *  # noqa: F401,F403  (the shared tests, collected here)
from tls_checks import TlsSite


@pytest.fixture(scope="module")
def tls_site():
    return TlsSite(
        container="flaskstack-apache-modwsgi", http_port=18083, https_port=18483,
        playbook="apache_modwsgi.yml", server_role="apache_modwsgi", service="apache2", prefix="/hip",
        modwsgi_error_log="/var/log/apache2/sample_app.error.log",
    )
