"""load_xnat_config reads a pyxnat .cfg, XNAT_* variables from a mapping, and a netrc file."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from x2c.errors import ConfigError
from x2c.xnat import load_xnat_config

SECRET = "s3cr$t'pw"


def test_pyxnat_cfg_file(tmp_path: Path) -> None:
    cfg = tmp_path / "xnat.cfg"
    cfg.write_text(
        json.dumps({"server": "https://x.org", "user": "u", "password": SECRET, "verify": False})
    )
    config = load_xnat_config(cfg, env={"XNAT_HOST": "https://other", "XNAT_USER": "v"})
    assert (config.url, config.user, config.verify) == ("https://x.org", "u", False)
    assert config.password.get_secret_value() == SECRET
    assert SECRET not in repr(config)


def test_environment_mapping(tmp_path: Path) -> None:
    env = {"XNAT_HOST": "http://127.0.0.1:8080", "XNAT_USER": "admin", "XNAT_PASS": SECRET}
    config = load_xnat_config(env=env, netrc_path=tmp_path / "none", retries=1)
    assert (config.url, config.user, config.retries) == ("http://127.0.0.1:8080", "admin", 1)
    assert config.password.get_secret_value() == SECRET


def test_netrc_by_host_of_the_url(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(
        "machine elsewhere login nope password nope\n"
        f"machine xnat.example.org login alice password {SECRET.replace(chr(39), '')}\n"
    )
    netrc.chmod(0o600)
    config = load_xnat_config(
        env={"XNAT_HOST": "https://xnat.example.org:8443/xnat"}, netrc_path=netrc
    )
    assert config.user == "alice"
    assert config.password.get_secret_value() == SECRET.replace("'", "")


def test_missing_pieces_say_where_to_put_them(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no XNAT server given.*XNAT_HOST"):
        load_xnat_config(env={}, netrc_path=tmp_path / "none")
    with pytest.raises(ConfigError, match=r"no XNAT password for https://x\.org.*netrc"):
        load_xnat_config(
            env={"XNAT_HOST": "https://x.org", "XNAT_USER": "u"}, netrc_path=tmp_path / "none"
        )
    with pytest.raises(ConfigError, match="cannot read XNAT config file"):
        load_xnat_config(tmp_path / "absent.cfg", env={})
    bad = tmp_path / "bad.cfg"
    bad.write_text("{not json")
    with pytest.raises(ConfigError, match="is not JSON"):
        load_xnat_config(bad, env={})


def test_a_broken_netrc_never_echoes_its_contents(tmp_path: Path) -> None:
    netrc = tmp_path / "netrc"
    netrc.write_text(f"machine x.org login u password {SECRET} bogus\n")
    with pytest.raises(ConfigError) as info:
        load_xnat_config(env={"XNAT_HOST": "https://x.org"}, netrc_path=netrc)
    assert SECRET not in str(info.value) and "netrc" in str(info.value)


def test_credentials_in_the_url_stay_out_of_messages(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_xnat_config(env={"XNAT_HOST": f"https://u:{SECRET}@x.org"}, netrc_path=tmp_path / "n")
    assert SECRET not in str(info.value)
