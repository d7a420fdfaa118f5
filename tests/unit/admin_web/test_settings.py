"""Where the admin page may listen, and what protects it off loopback."""

from __future__ import annotations

from pathlib import Path

import pytest

from admin_web.settings import SettingsError, load_settings


def test_the_default_is_loopback_port_9440_without_tls() -> None:
    s = load_settings({})
    assert (s.host, s.port, s.tls, s.token, s.url) == ("127.0.0.1", 9440, False, None,
                                                       "http://127.0.0.1:9440/")
    assert s.admin_socket == "/run/dockvols/admin.sock"


@pytest.mark.parametrize("listen", ["127.0.0.2:9000", "[::1]:9440", "localhost:8080"])
def test_any_loopback_address_needs_no_protection(listen: str) -> None:
    assert load_settings({}, listen=listen).port in (9000, 9440, 8080)


@pytest.mark.parametrize("listen", ["0.0.0.0:9440", "192.0.2.10:9440", "[::]:9440",
                                    "admin.example.com:9440"])
def test_another_address_without_tls_is_refused_naming_what_to_set(listen: str) -> None:
    with pytest.raises(SettingsError, match="not a loopback address.*DOCKVOLS_WEB_TLS_CERT"):
        load_settings({}, listen=listen)


def test_tls_alone_is_not_enough_off_loopback(tmp_path: Path) -> None:
    env = {"DOCKVOLS_WEB_TLS_CERT": "c.pem", "DOCKVOLS_WEB_TLS_KEY": "k.pem"}
    with pytest.raises(SettingsError, match="DOCKVOLS_WEB_CLIENT_CA.*DOCKVOLS_WEB_TOKEN_FILE"):
        load_settings(env, listen="0.0.0.0:9440")


def test_tls_with_client_certificates_or_a_token_may_listen_anywhere(tmp_path: Path) -> None:
    tls = {"DOCKVOLS_WEB_TLS_CERT": "c.pem", "DOCKVOLS_WEB_TLS_KEY": "k.pem"}
    s = load_settings({**tls, "DOCKVOLS_WEB_CLIENT_CA": "ca.pem"}, listen="0.0.0.0:9440")
    assert s.tls and s.client_ca == "ca.pem" and s.url == "https://0.0.0.0:9440/"
    token = tmp_path / "token"
    token.write_text("0123456789abcdef0123\n")
    s = load_settings({**tls, "DOCKVOLS_WEB_TOKEN_FILE": str(token)}, listen="0.0.0.0:9440")
    assert s.token == "0123456789abcdef0123"


def test_a_short_or_unreadable_token_and_half_tls_settings_are_refused(tmp_path: Path) -> None:
    short = tmp_path / "short"
    short.write_text("abc")
    with pytest.raises(SettingsError, match="3 characters; use at least 16"):
        load_settings({"DOCKVOLS_WEB_TOKEN_FILE": str(short)})
    with pytest.raises(SettingsError, match="cannot read DOCKVOLS_WEB_TOKEN_FILE"):
        load_settings({"DOCKVOLS_WEB_TOKEN_FILE": str(tmp_path / "missing")})
    with pytest.raises(SettingsError, match="both DOCKVOLS_WEB_TLS_CERT and"):
        load_settings({"DOCKVOLS_WEB_TLS_CERT": "c.pem"})
    with pytest.raises(SettingsError, match="CLIENT_CA needs TLS"):
        load_settings({"DOCKVOLS_WEB_CLIENT_CA": "ca.pem"})


@pytest.mark.parametrize("listen", ["9440", "host:", ":9440", "host:99999", "host:http"])
def test_a_malformed_listen_address_is_refused_with_the_accepted_form(listen: str) -> None:
    with pytest.raises(SettingsError, match="use HOST:PORT"):
        load_settings({}, listen=listen)
