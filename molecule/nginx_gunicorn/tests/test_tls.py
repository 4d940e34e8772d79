"""HTTPS on nginx in front of Gunicorn: the checks every front door passes (tls_checks).

They run after test_nginx_gunicorn.py (file order): the last ones change the site's certificate.
"""

import pytest

from tls_checks import *  # noqa: F401,F403  (the shared tests, collected here)
from tls_checks import TlsSite


@pytest.fixture(scope="module")
def tls_site():
    return TlsSite(
        container="flaskstack-nginx-gunicorn", http_port=18080, https_port=18443,
        playbook="nginx_gunicorn.yml", server_role="nginx_proxy", service="nginx",
        checks_files_source=True,
    )
