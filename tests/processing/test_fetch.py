"""processing.fetch against real servers on a public-looking address of the test's own and on loopback.

The addresses: tests/remote_sources.py (192.88.99.x on a veth interface is "public" to the policy, loopback is
the internal service). Names resolve through the fetch's resolver, a function like socket.getaddrinfo: the
tests give one that answers for names under `.test`.
"""

from __future__ import annotations

import io
import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from processing.fetch import FetchError, FetchPolicy, FetchStopped, fetch, spooled
from processing.sources import SourceNotAllowed
from tests.remote_sources import Answer, closed_port

BODY = bytes(range(256)) * 4096  # 1 MiB


def resolver_of(names: dict[str, list[str]], calls: list[str] | None = None):
    """A getaddrinfo that knows `names` only (each calls appended to `calls`)."""

    def resolve(host: str, port: int, *args, **kwargs):
        if calls is not None:
            calls.append(host)
        if host not in names:
            raise socket.gaierror(socket.EAI_NONAME, "Name or service not known")
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in names[host]]

    return resolve


def fetched(url: str, policy: FetchPolicy) -> bytes:
    out = io.BytesIO()
    fetch(url, out, policy)
    return out.getvalue()


def test_a_public_source_and_a_redirect_chain_on_it_are_fetched(public_address, serve):
    public = serve(public_address, {"/v.mp4": Answer(body=BODY)})
    public.redirect("/a", "/b")
    public.redirect("/b", public.url("/v.mp4"), status=301)
    assert fetched(public.url("/v.mp4"), FetchPolicy()) == BODY
    assert fetched(public.url("/a"), FetchPolicy(max_redirects=2)) == BODY
    assert public.requests == ["/v.mp4", "/a", "/b", "/v.mp4"]


def test_a_redirect_to_loopback_is_refused_and_nothing_reaches_loopback(public_address, serve):
    internal = serve("127.0.0.1", {"/secret": Answer(body=BODY)})
    public = serve(public_address)
    for path, target in [("/plain", internal.url("/secret")), ("/short", f"http://127.1:{internal.port}/secret"),
                         ("/named", f"http://localhost:{internal.port}/secret"),
                         ("/v6", f"http://[::1]:{internal.port}/secret"),
                         ("/file", "file:///etc/passwd")]:
        public.redirect(path, target)
        with pytest.raises(FetchError) as refused:
            fetched(public.url(path), FetchPolicy())
        assert refused.value.code == "source_not_allowed", path
    assert internal.requests == []


def test_a_redirect_off_the_allowed_hosts_is_refused(public_address, serve):
    public = serve(public_address, {"/v.mp4": Answer(body=BODY)})
    public.redirect("/away", "http://elsewhere.test/v.mp4")
    policy = FetchPolicy(allowed_hosts=(public_address,),
                         resolver=resolver_of({"elsewhere.test": [public_address]}))
    with pytest.raises(FetchError) as refused:
        fetched(public.url("/away"), policy)
    assert refused.value.code == "source_not_allowed"
    assert public.requests == ["/away"]


def test_the_first_url_keeps_the_apis_reasons(public_address):
    with pytest.raises(SourceNotAllowed) as private:
        fetched("http://cams.test/v.mp4", FetchPolicy(resolver=resolver_of({"cams.test": ["10.1.2.3"]})))
    assert private.value.reason == "private"
    with pytest.raises(SourceNotAllowed) as unknown:
        fetched("http://nowhere.test/v.mp4", FetchPolicy(resolver=resolver_of({})))
    assert unknown.value.reason == "unresolvable"


def test_a_name_is_resolved_once_per_hop_and_the_checked_address_is_the_one_connected(public_address, serve):
    # A rebinding resolver: public for the check, loopback for any later lookup. FFmpeg resolved twice; the
    # fetch resolves once and connects to what it checked.
    internal = serve("127.0.0.1", {"/v.mp4": Answer(body=b"internal")})
    public = serve(public_address, {"/v.mp4": Answer(body=BODY)})
    calls: list[str] = []
    answers = iter([[public_address], ["127.0.0.1"], ["127.0.0.1"]])

    def rebinding(host, port, *args, **kwargs):
        calls.append(host)
        return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", (address, port)) for address in next(answers)]

    assert fetched(f"http://cams.test:{public.port}/v.mp4", FetchPolicy(resolver=rebinding)) == BODY
    assert calls == ["cams.test"]
    assert public.hosts == [f"cams.test:{public.port}"]  # the name, not the address, in the Host header
    assert internal.requests == []


def test_a_name_with_one_private_address_among_public_ones_is_refused(public_address, serve):
    internal = serve("127.0.0.1", {"/v.mp4": Answer(body=BODY)})
    policy = FetchPolicy(resolver=resolver_of({"cams.test": [public_address, "127.0.0.1"]}))
    with pytest.raises(SourceNotAllowed) as refused:
        fetched(f"http://cams.test:{internal.port}/v.mp4", policy)
    assert refused.value.reason == "private"
    assert internal.requests == []


def test_every_network_failure_reads_the_same(public_address, serve):
    silent = socket.socket()  # accepts connections (the kernel does) and never answers
    silent.bind((public_address, 0))
    silent.listen()
    public = serve(public_address, {
        "/closed": Answer(close_at_once=True),
        "/error": Answer(status=500, body=b"stack trace of an internal service"),
        "/redirect-nowhere": Answer(status=302),
        "/short": Answer(body=BODY, headers={"Content-Length": str(len(BODY) + 10)}, content_length=False),
    })
    urls = [
        f"http://{public_address}:{closed_port(public_address)}/v.mp4",  # refused
        public.url("/missing"),  # 404
        public.url("/closed"),
        public.url("/error"),
        public.url("/redirect-nowhere"),
        public.url("/short"),  # fewer bytes than its Content-Length
        f"http://{public_address}:{silent.getsockname()[1]}/v.mp4",  # times out
    ]
    messages = set()
    try:
        for url in urls:
            with pytest.raises(FetchError) as failed:
                fetched(url, FetchPolicy(timeout=0.5))
            assert failed.value.code == "source_unreachable", url
            assert failed.value.params == {}
            messages.add(str(failed.value))
    finally:
        silent.close()
    assert messages == {"the source could not be fetched"}


def test_a_redirect_to_an_unresolvable_name_reads_as_unreachable(public_address, serve):
    public = serve(public_address)
    public.redirect("/gone", "http://internal-only.test/v.mp4")
    with pytest.raises(FetchError) as failed:
        fetched(public.url("/gone"), FetchPolicy(resolver=resolver_of({})))
    assert failed.value.code == "source_unreachable"


def test_redirect_loops_and_long_chains_end_with_their_own_code(public_address, serve):
    public = serve(public_address)
    public.redirect("/loop", "/loop")
    for hop in range(10):
        public.redirect(f"/hop{hop}", f"/hop{hop + 1}")
    for path in ("/loop", "/hop0"):
        with pytest.raises(FetchError) as failed:
            fetched(public.url(path), FetchPolicy(max_redirects=3))
        assert (failed.value.code, failed.value.params) == ("source_too_many_redirects", {"limit": 3})
    assert public.requests.count("/loop") == 1  # a loop is seen at once
    assert public.requests[-1] == "/hop3"  # the fourth redirect is not followed


@pytest.fixture
def spool_dir(tmp_path) -> Path:
    path = tmp_path / "spool"
    path.mkdir()
    return path


@pytest.mark.parametrize("declared", [True, False])
def test_the_size_cap_holds_with_and_without_a_content_length(public_address, serve, spool_dir, declared):
    public = serve(public_address, {"/big": Answer(body=BODY, content_length=declared)})
    policy = FetchPolicy(max_bytes=100_000, spool_dir=str(spool_dir))
    with pytest.raises(FetchError) as failed:
        with spooled(public.url("/big"), policy):
            pytest.fail("a source over the cap was spooled")
    assert (failed.value.code, failed.value.params) == ("source_too_large", {"limit": 100_000})
    assert list(spool_dir.iterdir()) == []  # the spool file is gone
    with spooled(public.url("/big"), FetchPolicy(max_bytes=len(BODY), spool_dir=str(spool_dir))) as path:
        assert path.read_bytes() == BODY
    assert list(spool_dir.iterdir()) == []


def test_a_stopped_fetch_ends_at_once_and_leaves_no_spool(public_address, serve, spool_dir):
    public = serve(public_address, {"/slow": Answer(body=BODY * 8, content_length=False)})
    received: list[int] = []
    with pytest.raises(FetchStopped):
        with spooled(public.url("/slow"), FetchPolicy(spool_dir=str(spool_dir)),
                     should_stop=lambda: len(received) >= 1, on_data=lambda: received.append(1)):
            pass
    assert len(received) == 1
    assert list(spool_dir.iterdir()) == []


def _certificate(tmp_path: Path, name: str) -> tuple[Path, Path]:
    key, cert = tmp_path / f"{name}.key", tmp_path / f"{name}.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", f"/CN={name}",
                    "-addext", f"subjectAltName=DNS:{name}", "-keyout", str(key), "-out", str(cert)],
                   check=True, capture_output=True, timeout=60)
    return key, cert


def test_https_goes_to_the_checked_address_with_the_name_checked_against_the_certificate(public_address, tmp_path):
    import http.server

    key, cert = _certificate(tmp_path, "cams.test")

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802
            self.send_response(200)
            self.send_header("Content-Length", str(len(BODY)))
            self.end_headers()
            self.wfile.write(BODY)

        def log_message(self, *args: object) -> None:
            pass

    server = http.server.ThreadingHTTPServer((public_address, 0), Handler)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        port = server.server_address[1]
        trusting = ssl.create_default_context(cafile=str(cert))
        names = {"cams.test": [public_address], "other.test": [public_address]}
        policy = FetchPolicy(resolver=resolver_of(names), ssl_context=trusting, timeout=5)
        assert fetched(f"https://cams.test:{port}/v.mp4", policy) == BODY
        # The same server under a name its certificate does not carry: refused, as a browser would.
        with pytest.raises(FetchError) as mismatch:
            fetched(f"https://other.test:{port}/v.mp4", policy)
        assert mismatch.value.code == "source_unreachable"
        # And an unknown CA (the system's store only) likewise.
        with pytest.raises(FetchError) as untrusted:
            fetched(f"https://cams.test:{port}/v.mp4", FetchPolicy(resolver=resolver_of(names), timeout=5))
        assert untrusted.value.code == "source_unreachable"
    finally:
        server.shutdown()
        server.server_close()
