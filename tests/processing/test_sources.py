"""Which URLs a job may open (processing.sources)."""

from __future__ import annotations

import pytest

from processing.sources import SourceNotAllowed, check_source_url


@pytest.mark.parametrize(
    ("url", "reason"),
    [
        ("file:///etc/passwd", "scheme"),
        ("ftp://example.com/a.mp4", "scheme"),
        ("http:///nohost", "scheme"),
        ("http://example.com:99999/a.mp4", "invalid"),
        ("http://localhost/a.mp4", "private"),
        ("http://localhost./a.mp4", "private"),
        ("http://cams.localhost/a.mp4", "private"),
        ("http://127.0.0.1/a.mp4", "private"),
        ("http://127.1/a.mp4", "private"),
        ("http://2130706433/a.mp4", "private"),
        ("http://0x7f000001/a.mp4", "private"),
        ("http://10.1.2.3/a.mp4", "private"),
        ("http://192.168.0.10/a.mp4", "private"),
        ("http://169.254.169.254/latest/meta-data", "private"),
        ("http://[::1]/a.mp4", "private"),
        ("http://[fd00::1]/a.mp4", "private"),
    ],
)
def test_refused_urls(url: str, reason: str) -> None:
    with pytest.raises(SourceNotAllowed) as refused:
        check_source_url(url, allowed_hosts=[], allow_private=False, resolve=False)
    assert refused.value.reason == reason


def test_public_literal_and_names_pass_without_resolving() -> None:
    assert check_source_url("https://8.8.8.8/a.mp4", allowed_hosts=[], allow_private=False, resolve=False) == "8.8.8.8"
    assert check_source_url("https://cams.example.com/a.mp4", allowed_hosts=[], allow_private=False,
                            resolve=False) == "cams.example.com"


def test_a_name_that_resolves_to_a_private_address_is_refused_when_resolving() -> None:
    # "localhost" is refused by name; this one goes through the resolver (the hosts file maps it to loopback).
    import socket

    name = socket.gethostname()
    try:
        resolved = {info[4][0] for info in socket.getaddrinfo(name, 80)}
    except OSError:
        pytest.skip("this machine's own name does not resolve")
    if not any(address.startswith(("127.", "10.", "192.168.", "172.")) or address == "::1" for address in resolved):
        pytest.skip(f"{name} resolves to a public address here")
    assert check_source_url(f"http://{name}/a.mp4", allowed_hosts=[], allow_private=False, resolve=False) == name
    with pytest.raises(SourceNotAllowed) as refused:
        check_source_url(f"http://{name}/a.mp4", allowed_hosts=[], allow_private=False, resolve=True)
    assert refused.value.reason == "private"


def test_allowed_hosts_and_allow_private() -> None:
    with pytest.raises(SourceNotAllowed) as refused:
        check_source_url("https://other.example/a.mp4", allowed_hosts=["cams.example"], allow_private=False,
                         resolve=False)
    assert refused.value.reason == "host"
    assert check_source_url("http://127.0.0.1:8080/a.mp4", allowed_hosts=[], allow_private=True, resolve=True)
