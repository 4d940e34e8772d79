"""Checks every front door passes: its unit's sandbox; HTTPS: the certificate from each source, the TLS policy, renewal, redirects.

A scenario's ``test_tls.py`` imports these tests (``from tls_checks import *``) after its other
test modules (file order) and provides the ``tls_site`` fixture, a :class:`TlsSite` that says
where the site answers. The scenario converges with a certificate from Pebble (a local ACME CA
on the container, started by ``resources/playbooks/pebble.yml``) and plain HTTP still serving
the app. The last tests change the site's TLS settings with the shipped playbook, limited to
the certificate's and the server's tags, as an operator changing only the certificate would.
"""

import datetime
import http.client
import json
import shlex
import socket
import ssl
import time
import uuid
from dataclasses import dataclass

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from flaskstack_checks import (
    CAP_NET_BIND_SERVICE, CAP_SYS_ADMIN, PROJECT_DIR, Poller, confinement, docker_gateway,
    on_debian_13_in_the_default_matrix, run_playbook, systemd_exposure,
)

# The name Pebble validates (it resolves to the container itself there); every site answers it.
SITE = "app.flaskstack.test"
# The site's other name (flask_app_redirect_server_names in .config/molecule/config.yml): every
# front door redirects it to the site's first name (flask_app_server_names in each scenario), and
# the certificate covers it.
OTHER_NAME = "www.app.flaskstack.test"
FIRST_NAME = "localhost"
HSTS = "max-age=63072000"

__all__ = [
    "TlsSite",
    "own_ca",
    "test_front_door_runs_sandboxed_by_the_roles_drop_in",
    "test_acme_certificate_from_pebble_verifies_for_the_site",
    "test_key_is_readable_by_root_only",
    "test_other_name_redirects_to_the_site_with_its_path_and_query_and_the_certificate_covers_it",
    "test_renewal_timer_runs_with_the_acme_ca_bundle",
    "test_tls_1_0_and_1_1_are_refused_1_2_and_1_3_accepted",
    "test_http2_is_offered",
    "test_whoami_over_https_reports_https_and_the_real_client",
    "test_forced_renewal_reloads_the_server_with_no_failed_request",
    "test_http_redirects_to_https_except_the_acme_challenge",
    "test_certificate_from_files_is_served",
    "test_key_that_does_not_match_is_refused_and_the_old_certificate_keeps_serving",
    "test_self_signed_source_replaces_a_certificate_from_elsewhere",
]


@dataclass(frozen=True)
class TlsSite:
    """Where a scenario's site answers, for the HTTPS checks.

    :param str container: the container's name.
    :param int http_port: the front door's plain HTTP port on 127.0.0.1.
    :param int https_port: its HTTPS port on 127.0.0.1.
    :param str playbook: the topology's playbook file name in playbooks/.
    :param str server_role: the front door's role, whose tag the certificate-only runs add.
    :param str service: the server's systemd unit, whose main process a reload keeps.
    :param str prefix: the app's URL prefix ("" for the site root).
    :param str certificate: the certificate's name (tls_certificate_name).
    :param int acme_standalone_port: the port of certbot's standalone server, where the front door
        routes the ACME challenge; 0 when it serves certbot's webroot itself.
    :param bool checks_files_source: whether to run the files source's tests here. They check the
        tls_certificate role, the same before every server: one scenario runs them.
    :param str modwsgi_error_log: for Apache with mod_wsgi, the vhost's error log, where mod_wsgi
        records the requests that a graceful reload leaves without a daemon socket (see
        :func:`modwsgi_socket_window_failures`); empty for other servers.
    :param str limit: the hosts the certificate-only runs reach (``--limit``), for a topology whose
        front door is one host of several; empty for every host of the playbook.
    """

    container: str
    http_port: int
    https_port: int
    playbook: str
    server_role: str
    service: str
    prefix: str = ""
    certificate: str = "sample_app"
    acme_standalone_port: int = 0
    checks_files_source: bool = False
    modwsgi_error_log: str = ""
    limit: str = ""

    @property
    def tls_dir(self):
        """Directory of the certificate files the server reads (str)."""
        return f"/etc/flaskstack/tls/{self.certificate}"

    @property
    def http(self):
        """Plain HTTP base URL (str)."""
        return f"http://127.0.0.1:{self.http_port}"

    @property
    def https(self):
        """HTTPS base URL of the app, by a name the test side resolves; the certificate need not cover it (str)."""
        return f"https://localhost:{self.https_port}{self.prefix}"

    def run(self, *args):
        """Run the topology's playbook on the certificate's and the server's tasks only (and hosts, if limited)."""
        limit = ("--limit", self.limit) if self.limit else ()
        return run_playbook(
            str(PROJECT_DIR / "playbooks" / self.playbook), *args, *limit, "--tags", f"tls_certificate,{self.server_role}")


def handshake(port, server_name=SITE, cafile=None, version=None, alpn=None):
    """Open one TLS connection to the front door and return what it negotiated.

    :param int port: the HTTPS port on 127.0.0.1.
    :param str server_name: SNI and, with ``cafile``, the name the certificate must match; None sends no SNI.
    :param str cafile: PEM file of the CA to verify against; None accepts any certificate.
    :param ssl.TLSVersion version: the only protocol version offered; None offers the client's defaults.
    :param list alpn: ALPN protocols offered.
    :returns: the server's certificate, the protocol version and the ALPN protocol.
    :rtype: tuple(cryptography.x509.Certificate, str, str)
    :raises ssl.SSLError: when the handshake or the verification fails.
    """
    context = ssl.create_default_context(cafile=cafile) if cafile else ssl._create_unverified_context()
    if version:
        context.minimum_version = context.maximum_version = version
        # Let this client offer the old versions, so that only the server can refuse them.
        context.set_ciphers("DEFAULT:@SECLEVEL=0")
    if alpn:
        context.set_alpn_protocols(alpn)
    with socket.create_connection(("127.0.0.1", port), timeout=5) as raw:
        with context.wrap_socket(raw, server_hostname=server_name) as tls:
            der = tls.getpeercert(binary_form=True)
            return x509.load_der_x509_certificate(der), tls.version(), tls.selected_alpn_protocol()


def served_serial(port):
    """Serial number (int) of the certificate served for the site on ``port``."""
    return handshake(port)[0].serial_number


def pebble_root(host, tmp_path):
    """Write the root that Pebble issues from (new at each Pebble start) to a file; return its path."""
    pem = host.check_output(
        "python3 -c \"import ssl, urllib.request; print(urllib.request.urlopen('https://localhost:15000/roots/0',"
        " context=ssl.create_default_context(cafile='/etc/pebble-test/api-ca.pem')).read().decode())\""
    )
    path = tmp_path / "pebble-root.pem"
    path.write_text(pem + "\n", encoding="utf-8")
    return str(path)


def make_certificate(common_name, names, issuer_key=None, issuer_name=None, ca=False):
    """Make an ECDSA P-256 key and a certificate valid for 30 days, as a user's files would hold.

    :param str common_name: the subject's CN.
    :param list names: DNS names of its subjectAltName (none when empty).
    :param issuer_key: the issuer's private key; None signs with the new key (self-signed).
    :param issuer_name: the issuer's x509.Name, with ``issuer_key``.
    :param bool ca: whether it is a CA certificate.
    :returns: (cryptography.x509.Certificate, private key).
    """
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder().subject_name(subject).issuer_name(issuer_name or subject)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5)).not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if names:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(n) for n in names]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256()), key


def pem(obj):
    """PEM text (str) of a certificate or of a private key (PKCS#8, unencrypted)."""
    if isinstance(obj, x509.Certificate):
        return obj.public_bytes(serialization.Encoding.PEM).decode()
    return obj.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()).decode()


@pytest.fixture(scope="module")
def own_ca(tmp_path_factory):
    """A CA of the test's own, as a user's certificate files would come from: (cert, key, pem path)."""
    cert, key = make_certificate("flaskstack test files CA", [], ca=True)
    path = tmp_path_factory.mktemp("ca") / "ca.pem"
    path.write_text(pem(cert), encoding="utf-8")
    return cert, key, str(path)


def run_with_files(tls_site, tmp_path, certificate_pem, key_pem):
    """Run the playbook with the files source and the given PEM texts (from a file: no key on the command line)."""
    extra = tmp_path / "tls-files.json"
    extra.write_text(json.dumps({
        "tls_certificate_source": "files",
        "tls_certificate_content": certificate_pem,
        "tls_certificate_key_content": key_pem,
    }), encoding="utf-8")
    # --diff and -v show what a task writes, unless no_log hides it.
    return tls_site.run("-e", f"@{extra}", "--diff", "-v")


def test_front_door_runs_sandboxed_by_the_roles_drop_in(host, tls_site):
    # Each front door role's drop-in (nginx_gunicorn's scenario stands for nginx_proxy in the uWSGI
    # topologies too). Debian's own units rate 9.6 (nginx, haproxy) and 9.2 (apache2); with the
    # drop-in 2.8, 2.8 and 3.0 on Debian 12 and 13 (measured by hand on the stack images).
    exposure = systemd_exposure(host, f"{tls_site.service}.service")
    print(f"systemd-analyze security {tls_site.service}.service: {exposure}")
    assert exposure <= 3.0
    # The running server is the sandboxed one: its main process (root) has lost every capability
    # but those the drop-in keeps, and can gain none.
    pid = host.check_output(f"systemctl show -p MainPID --value {tls_site.service}.service")
    no_new_privileges, bounding = confinement(host.file(f"/proc/{pid}/status").content_string)
    assert no_new_privileges
    assert bounding & (1 << CAP_NET_BIND_SERVICE) and not bounding & (1 << CAP_SYS_ADMIN), hex(bounding)


def test_acme_certificate_from_pebble_verifies_for_the_site(host, tmp_path, tls_site):
    certificate, _, _ = handshake(tls_site.https_port, cafile=pebble_root(host, tmp_path))
    assert "Pebble Intermediate CA" in certificate.issuer.rfc4514_string()
    assert certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName) == [SITE, OTHER_NAME]  # the order tls_certificate_domains gives
    # The file the server reads is certbot's certificate, copied there by the deploy hook.
    live = host.file(f"/etc/letsencrypt/live/{tls_site.certificate}/fullchain.pem")
    assert host.file(f"{tls_site.tls_dir}/fullchain.pem").content_string == live.content_string


def status_and_location_over_https(port, server_name, host_header, target):
    """One GET over HTTPS to 127.0.0.1, with ``server_name`` as SNI, as a browser sends it for that name.

    :param int port: the HTTPS port on 127.0.0.1.
    :param str server_name: SNI.
    :param str host_header: the Host header.
    :param str target: the request's path and query.
    :returns: the answer's status (int) and Location header (str or None).
    """
    context = ssl._create_unverified_context()
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    connection.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=10),
                                          server_hostname=server_name)
    try:
        connection.request("GET", target, headers={"Host": host_header})
        answer = connection.getresponse()
        return answer.status, answer.getheader("Location")
    finally:
        connection.close()


def test_other_name_redirects_to_the_site_with_its_path_and_query_and_the_certificate_covers_it(tls_site):
    certificate, _, _ = handshake(tls_site.https_port, server_name=OTHER_NAME)
    assert OTHER_NAME in certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value \
        .get_values_for_type(x509.DNSName)
    target = f"{tls_site.prefix}/some/page?q=1&next=%2Fa"
    # Plain HTTP to the site's first name over plain HTTP (the scenario has no HTTPS redirect yet),
    # HTTPS to HTTPS; the front door's own ports are 80 and 443.
    answer = requests.get(tls_site.http + target, headers={"Host": OTHER_NAME}, allow_redirects=False, timeout=5)
    assert (answer.status_code, answer.headers.get("Location")) == (308, f"http://{FIRST_NAME}{target}"), \
        answer.text[:300]
    assert status_and_location_over_https(tls_site.https_port, OTHER_NAME, OTHER_NAME, target) == (
        308, f"https://{FIRST_NAME}{target}")
    # A name the site neither serves nor redirects is still refused.
    # (nginx closes the connection, 444; Apache and HAProxy answer 404).
    try:
        unknown = requests.get(tls_site.http + target, headers={"Host": "other.flaskstack.test"},
                               allow_redirects=False, timeout=5).status_code
    except requests.ConnectionError:
        unknown = "closed"
    assert unknown in (404, "closed"), unknown


def test_key_is_readable_by_root_only(host, tls_site):
    directory = host.file(tls_site.tls_dir)
    assert (directory.user, directory.group, directory.mode) == ("root", "root", 0o700)
    key = host.file(f"{tls_site.tls_dir}/privkey.pem")
    assert (key.user, key.group, key.mode) == ("root", "root", 0o600)
    chain = host.file(f"{tls_site.tls_dir}/fullchain.pem")
    assert (chain.user, chain.mode) == ("root", 0o644)
    if tls_site.service == "haproxy":
        combined = host.file(f"{tls_site.tls_dir}/combined.pem")
        assert (combined.user, combined.group, combined.mode) == ("root", "root", 0o600)
        assert combined.content_string == chain.content_string + key.content_string


def test_renewal_timer_runs_with_the_acme_ca_bundle(host, tls_site):
    assert host.service("certbot.timer").is_enabled and host.service("certbot.timer").is_running
    environment = host.check_output("systemctl show -p Environment --value certbot.service")
    assert "REQUESTS_CA_BUNDLE=/etc/pebble-test/api-ca.pem" in environment


@pytest.mark.parametrize("server_name", [SITE, None], ids=["site", "no-sni"])
def test_tls_1_0_and_1_1_are_refused_1_2_and_1_3_accepted(host, tls_site, server_name):
    for old in (ssl.TLSVersion.TLSv1, ssl.TLSVersion.TLSv1_1):
        with pytest.raises(ssl.SSLError) as refused:
            handshake(tls_site.https_port, server_name, version=old)
        # The server's alert, not this client's refusal to offer the version.
        assert "ALERT_PROTOCOL_VERSION" in str(refused.value), refused.value
    for current, name in ((ssl.TLSVersion.TLSv1_2, "TLSv1.2"), (ssl.TLSVersion.TLSv1_3, "TLSv1.3")):
        assert handshake(tls_site.https_port, server_name, version=current)[1] == name


def test_http2_is_offered(host, tls_site):
    assert handshake(tls_site.https_port, alpn=["h2", "http/1.1"])[2] == "h2"


def test_whoami_over_https_reports_https_and_the_real_client(host, tls_site):
    response = requests.get(tls_site.https + "/whoami", timeout=5, verify=False)
    body = response.json()
    assert body["scheme"] == "https"
    assert body["url_root"] == tls_site.https + "/"
    assert body["remote_addr"] == docker_gateway(tls_site.container)
    assert response.headers["Strict-Transport-Security"] == HSTS
    # Never over plain HTTP (RFC 6797), which the scenario serves beside HTTPS until the redirect test.
    assert "Strict-Transport-Security" not in requests.get(tls_site.http + tls_site.prefix + "/healthz", timeout=5).headers
    # Static files carry it too.
    assert requests.get(tls_site.https + "/static/style.css", timeout=5, verify=False) \
        .headers["Strict-Transport-Security"] == HSTS


# mod_wsgi's message when an Apache child finds no daemon socket (ENOENT).
MODWSGI_NO_SOCKET = "No such file or directory.*Unable to connect to WSGI daemon process"


def log_lines(host, path, pattern):
    """Number of lines of the file ``path`` on the host that match the extended regex ``pattern`` (int)."""
    return int(host.run(f"grep -cE {shlex.quote(pattern)} {shlex.quote(path)}").stdout.strip() or 0)


def modwsgi_socket_window_failures(host, tls_site, before):
    """Requests a graceful reload of Apache failed in mod_wsgi's socket window: new matching log lines (int).

    During a graceful restart, Apache's parent closes and unlinks each mod_wsgi daemon socket and
    binds it again after re-reading its configuration. A child that connects in between gets
    ENOENT, and mod_wsgi (5.0 in Debian, and upstream's 6.0.5: wsgi_remote.c) retries a connect
    on ECONNREFUSED and EAGAIN only, so that request gets 503 and its error log names the cause.
    Measured: 2 of 627 requests failed over 10 reloads under a back-to-back client. The
    collection cannot close that window; the README of apache_modwsgi says so.

    :param int before: the matching lines before the reload, from :func:`log_lines`.
    """
    if not tls_site.modwsgi_error_log:
        return 0
    return log_lines(host, tls_site.modwsgi_error_log, MODWSGI_NO_SOCKET) - before


def test_forced_renewal_reloads_the_server_with_no_failed_request(host, tls_site):
    socket_window_before = log_lines(host, tls_site.modwsgi_error_log, MODWSGI_NO_SOCKET) \
        if tls_site.modwsgi_error_log else 0
    before = served_serial(tls_site.https_port)
    main_pid = f"systemctl show -p MainPID --value {tls_site.service}"
    server = host.check_output(main_pid)
    # The renewal runs with the environment of certbot.service, as the timer would run it.
    environment = host.check_output("systemctl show -p Environment --value certbot.service")
    with Poller(tls_site.https + "/healthz", verify=False) as poller:
        renewal = host.run(
            f"env {environment} certbot renew --force-renewal --cert-name {tls_site.certificate} --no-random-sleep-on-renew")
    assert renewal.rc == 0, renewal.stderr
    # A reload returns once signalled; the server's new workers take over a moment later.
    deadline = time.monotonic() + 10
    while served_serial(tls_site.https_port) == before and time.monotonic() < deadline:
        time.sleep(0.2)
    assert served_serial(tls_site.https_port) != before, "the renewed certificate is served"
    assert host.check_output(main_pid) == server, "a reload, not a restart"
    assert poller.total > 20, "the poller must have run during the renewal"
    # Apache with mod_wsgi only: the requests its error log shows in mod_wsgi's socket window (503,
    # one reload: at most a few), and not one failure more, of any other kind.
    window = modwsgi_socket_window_failures(host, tls_site, socket_window_before)
    if window:
        print(f"mod_wsgi's socket window during the reload: {window} of {poller.total} requests got 503")
    assert window <= 3, f"{window} requests in mod_wsgi's socket window: more than one reload's worth"
    assert poller.failures == ["HTTP 503"] * window, \
        f"{len(poller.failures)} of {poller.total} failed: {poller.failures[:5]}, {window} of them in mod_wsgi's socket window"
    assert not host.file(f"{tls_site.tls_dir}/.fullchain.pem.previous").exists


@on_debian_13_in_the_default_matrix
def test_http_redirects_to_https_except_the_acme_challenge(host, tls_site):
    redirect_on = f"{tls_site.server_role}_http_redirect=true"
    run = tls_site.run("-e", redirect_on)
    assert run.returncode == 0, run.stdout[-3000:]
    response = requests.get(tls_site.http + "/some/page?q=1&r=2", timeout=5, allow_redirects=False)
    assert response.status_code == 308
    assert response.headers["Location"] == "https://127.0.0.1/some/page?q=1&r=2"
    assert "Strict-Transport-Security" not in response.headers, "HSTS only over HTTPS"
    token = uuid.uuid4().hex
    if tls_site.acme_standalone_port:
        # certbot's standalone server listens only while it runs: a stand-in on its port answers.
        challenges = "/tmp/acme-stand-in/.well-known/acme-challenge"
        host.check_output(
            f"mkdir -p {challenges} && echo {token} > {challenges}/{token} && systemd-run --unit acme-stand-in"
            f" python3 -m http.server --bind 127.0.0.1 --directory /tmp/acme-stand-in {tls_site.acme_standalone_port}")
        time.sleep(1)
    else:
        challenges = "/var/lib/flaskstack/acme/.well-known/acme-challenge"
        host.check_output(f"mkdir -p {challenges} && echo {token} > {challenges}/{token}")
    try:
        challenge = requests.get(f"{tls_site.http}/.well-known/acme-challenge/{token}", timeout=5, allow_redirects=False)
    finally:
        if tls_site.acme_standalone_port:
            host.run("systemctl stop acme-stand-in")
    assert (challenge.status_code, challenge.text.strip()) == (200, token)


@on_debian_13_in_the_default_matrix
def test_certificate_from_files_is_served(host, tmp_path, own_ca, tls_site):
    if not tls_site.checks_files_source:
        pytest.skip("the files source is checked in the nginx_gunicorn scenario")
    ca_cert, ca_key, ca_path = own_ca
    certificate, key = make_certificate(SITE, [SITE, "localhost"], ca_key, ca_cert.subject)
    run = run_with_files(tls_site, tmp_path, pem(certificate), pem(key))
    assert run.returncode == 0, run.stdout[-3000:]
    assert pem(key).split("\n")[1] not in run.stdout, "the key is never printed"
    assert handshake(tls_site.https_port, cafile=ca_path)[0].serial_number == certificate.serial_number
    response = requests.get(tls_site.https + "/healthz", timeout=5, verify=ca_path)
    assert response.headers["Strict-Transport-Security"] == HSTS
    key_file = host.file(f"{tls_site.tls_dir}/privkey.pem")
    assert (key_file.user, key_file.mode) == ("root", 0o600)


@on_debian_13_in_the_default_matrix
def test_key_that_does_not_match_is_refused_and_the_old_certificate_keeps_serving(host, tmp_path, own_ca, tls_site):
    if not tls_site.checks_files_source:
        pytest.skip("the files source is checked in the nginx_gunicorn scenario")
    ca_cert, ca_key, _ = own_ca
    serving = served_serial(tls_site.https_port)
    files = {name: host.file(f"{tls_site.tls_dir}/{name}").sha256sum for name in ("fullchain.pem", "privkey.pem")}
    certificate, _ = make_certificate(SITE, [SITE], ca_key, ca_cert.subject)
    _, other_key = make_certificate(SITE, [SITE])
    run = run_with_files(tls_site, tmp_path, pem(certificate), pem(other_key))
    assert run.returncode != 0
    assert "the key does not match the certificate" in run.stdout
    assert "tls_certificate_key_content" in run.stdout
    assert " changed=0 " in run.stdout.replace("\n", " ")
    assert {name: host.file(f"{tls_site.tls_dir}/{name}").sha256sum for name in files} == files
    assert served_serial(tls_site.https_port) == serving


@on_debian_13_in_the_default_matrix
def test_self_signed_source_replaces_a_certificate_from_elsewhere(host, tls_site):
    run = tls_site.run("-e", "tls_certificate_source=selfsigned")
    assert run.returncode == 0, run.stdout[-3000:]
    certificate = handshake(tls_site.https_port)[0]
    assert certificate.issuer == certificate.subject
    # certbot's lineage is gone: its timer would otherwise put the ACME certificate back.
    assert not host.file(f"/etc/letsencrypt/renewal/{tls_site.certificate}.conf").exists
    assert certificate.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == SITE
    # Not a certificate browsers trust: no HSTS by default.
    assert "Strict-Transport-Security" not in requests.get(
        tls_site.https + "/healthz", timeout=5, verify=False).headers
