"""Connecting: the login is checked in one request, every way of failing gives one clear line
(naming server and user, never the password), and transient failures are retried on a real
socket through a fault-injecting proxy."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.fixtures.xnat_server import free_port
from tests.x2c.xnat.conftest import Requests, xnat_config
from tests.x2c.xnat.faultproxy import Fault, FaultProxy
from x2c.errors import XnatAuthError, XnatError, XnatNotFoundError, XnatTransientError
from x2c.xnat import connect, list_experiments


def test_connect_checks_the_login_in_one_request(
    xnat_server: Any, server_requests: Requests
) -> None:
    with connect(xnat_config(xnat_server)) as session:
        assert session.requests_sent == 1
    assert server_requests.counts() == {"GET /data/JSESSION": 1}


def test_wrong_password_fails_at_connect_naming_server_and_user(xnat_server: Any) -> None:
    wrong = "Wr0ng-$(pw)'"
    with pytest.raises(XnatAuthError) as info:
        connect(xnat_config(xnat_server, password=wrong))
    message = str(info.value)
    assert xnat_server.url in message and repr(xnat_server.user) in message
    assert "password" in message and wrong not in message and xnat_server.password not in message
    assert "\n" not in message and info.value.status == 401


def test_unknown_user_fails_like_a_wrong_password(xnat_server: Any) -> None:
    with pytest.raises(XnatAuthError, match="'nobody'"):
        connect(xnat_config(xnat_server, user="nobody"))


def test_unknown_host_says_check_the_host_name(xnat_server: Any) -> None:
    with pytest.raises(XnatError, match="cannot resolve the host") as info:
        connect(xnat_config(xnat_server, url="http://no-such-host.invalid:8080"))
    assert not isinstance(info.value, XnatTransientError)


def test_refused_connection_is_transient_and_retried(xnat_server: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(XnatTransientError, match="connection refused") as info:
        connect(xnat_config(xnat_server, url=url, retries=2))
    assert url in str(info.value) and xnat_server.user in str(info.value)


def test_tls_failure_says_what_to_set(xnat_server: Any) -> None:
    # https:// against the plain-HTTP server: the handshake fails as a TLS error.
    url = xnat_server.url.replace("http://", "https://")
    with pytest.raises(XnatError, match=r"TLS handshake.*scheme and port.*verify") as info:
        connect(xnat_config(xnat_server, url=url))
    assert not isinstance(info.value, XnatTransientError)


def test_a_url_without_xnat_behind_it(xnat_server: Any) -> None:
    with pytest.raises(XnatNotFoundError, match=r"no XNAT REST API.*context path"):
        connect(xnat_config(xnat_server, url=xnat_server.url + "/not-xnat"))


def test_5xx_and_resets_are_retried_then_succeed(xnat_server: Any) -> None:
    with FaultProxy(xnat_server.url).running() as proxy:
        session = connect(xnat_config(xnat_server, url=proxy.url, retries=3))
        project = "DEMO"
        proxy.add(Fault(r"GET /data/projects/[^/]+/experiments", times=1, status=503))
        proxy.add(Fault(r"GET /data/projects/[^/]+/experiments", times=1, reset=True))
        proxy.add(Fault(r"GET /data/projects/[^/]+/experiments", times=1, status=502))
        experiments = list_experiments(session, project)
        assert experiments
        assert proxy.count(r"GET /data/projects/[^/]+/experiments") == 4
        assert all(f.times == 0 for f in proxy.faults)
        session.close()


def test_retries_are_capped_and_end_transient(xnat_server: Any) -> None:
    with FaultProxy(xnat_server.url).running() as proxy:
        session = connect(xnat_config(xnat_server, url=proxy.url, retries=2))
        proxy.add(Fault(r"GET /data/projects/[^/]+/experiments", times=10, status=503))
        with pytest.raises(XnatTransientError, match=r"503.*retry later") as info:
            list_experiments(session, "P")
        assert info.value.status == 503
        assert proxy.count(r"GET /data/projects/[^/]+/experiments") == 3
        # one retry budget per request, and the error says what it cost
        assert re.search(r"gave up after 3 attempts in \d+ s \(xnat.retries", str(info.value))
        session.close()


def test_4xx_is_never_retried(xnat_server: Any) -> None:
    with FaultProxy(xnat_server.url).running() as proxy:
        session = connect(xnat_config(xnat_server, url=proxy.url, retries=3))
        proxy.add(Fault(r"GET /data/projects/[^/]+/experiments", times=5, status=400))
        with pytest.raises(XnatError) as info:
            list_experiments(session, "P")
        assert info.value.status == 400
        assert proxy.count(r"GET /data/projects/[^/]+/experiments") == 1
        session.close()


def test_connect_retries_a_reset_login(xnat_server: Any) -> None:
    with FaultProxy(xnat_server.url).running() as proxy:
        proxy.add(Fault(r"GET /data/JSESSION", times=1, reset=True))
        with connect(xnat_config(xnat_server, url=proxy.url, retries=1)) as session:
            assert session.requests_sent == 2


def test_config_file_and_env_mapping_reach_the_server(xnat_server: Any, tmp_path: Any) -> None:
    import json

    from x2c.xnat import load_xnat_config

    cfg = tmp_path / "xnat.cfg"
    cfg.write_text(
        json.dumps(
            {"server": xnat_server.url, "user": xnat_server.user, "password": xnat_server.password}
        )
    )
    with connect(load_xnat_config(cfg, env={})) as session:
        assert session.requests_sent == 1
    env = {
        "XNAT_HOST": xnat_server.url,
        "XNAT_USER": xnat_server.user,
        "XNAT_PASS": xnat_server.password,
    }
    with connect(load_xnat_config(env=env, netrc_path=tmp_path / "none")) as session:
        assert session.url == xnat_server.url
    netrc = tmp_path / "netrc"
    netrc.write_text(
        f"machine 127.0.0.1 login {xnat_server.user} password {xnat_server.password}\n"
    )
    netrc.chmod(0o600)
    with connect(load_xnat_config(env={"XNAT_HOST": xnat_server.url}, netrc_path=netrc)) as session:
        assert session.config.user == xnat_server.user


def test_a_timeout_is_retried(xnat_server: Any) -> None:
    with FaultProxy(xnat_server.url).running() as proxy:
        session = connect(xnat_config(xnat_server, url=proxy.url, timeout=0.3, retries=2))
        proxy.add(Fault(r"GET /data/projects/[^/]+/experiments", times=1, delay_s=1.0))
        assert list_experiments(session, "DEMO")
        assert proxy.count(r"GET /data/projects/[^/]+/experiments") == 2
        proxy.add(Fault(r"GET /data/projects/[^/]+/experiments", times=3, delay_s=1.0))
        with pytest.raises(XnatTransientError, match="timed out"):
            list_experiments(session, "DEMO")
        session.close()


def test_one_session_serves_parallel_streams(xnat_server: Any, server_requests: Requests) -> None:
    from concurrent.futures import ThreadPoolExecutor

    from x2c.selection import InputSelection
    from x2c.xnat import XnatByteSource, select_inputs

    with connect(xnat_config(xnat_server)) as session:
        refs = [
            f
            for e in list_experiments(session, "DEMO")
            for f in select_inputs(
                session, e, InputSelection(scan_types=("T1",), resource="DICOM")
            ).files
        ]
        server_requests.reset()
        source = XnatByteSource(session)
        with ThreadPoolExecutor(max_workers=4) as pool:
            sizes = list(pool.map(lambda r: sum(len(c) for c in source.iter_bytes(r)), refs))
        assert sizes == [r.size for r in refs] and len(refs) >= 9
        downloads = {k: n for k, n in server_requests.counts().items() if "/files/" in k}
        assert sum(downloads.values()) == len(refs), server_requests.counts()


def test_many_threads_share_one_session_without_discarding_connections(
    xnat_server: Any, caplog: pytest.LogCaptureFixture
) -> None:
    """A fan-out shares one session from many threads: urllib3 must not throw connections away
    ("Connection pool is full"), which it does with requests' default pool of 10."""
    from concurrent.futures import ThreadPoolExecutor
    from threading import Barrier

    threads = 24
    barrier = Barrier(threads)
    with connect(xnat_config(xnat_server)) as s:

        def listing(_: int) -> int:
            barrier.wait(timeout=30)
            return len(list_experiments(s, "DEMO"))

        with caplog.at_level("WARNING", logger="urllib3"), ThreadPoolExecutor(threads) as pool:
            counts = list(pool.map(listing, range(threads)))
    assert counts == [3] * threads
    assert not [r for r in caplog.records if "pool is full" in r.getMessage()]
