"""HTTPS terminated by HAProxy over the app nodes: the checks every front door passes (tls_checks).

They run after test_haproxy_cluster.py (file order): the last ones change the certificate.
"""

import pytest

from tls_checks import *  # noqa: F401,F403  (the shared tests, collected here)
from tls_checks import TlsSite

# The load balancer terminates TLS; the nodes serve plain HTTP behind it.
testinfra_hosts = ["ansible://flaskstack-lb"]


@pytest.fixture(scope="module")
def tls_site():
    # No app on the load balancer: the certificate takes the server's name. The certificate-only
    # runs reach the load balancer alone, as an operator changing its certificate would run them:
    # the nodes have nothing to do in them (on the bench cluster 16.5 s instead of 28.3 s).
    return TlsSite(
        container="flaskstack-lb", http_port=18084, https_port=18484,
        playbook="haproxy_cluster.yml", server_role="haproxy", service="haproxy", certificate="haproxy",
        acme_standalone_port=8402, limit="flaskstack-lb",
    )
