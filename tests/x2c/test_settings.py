"""The settings file: validated once, errors that name the file, the line and the field."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from x2c.errors import ConfigError
from x2c.settings import demo_settings, load_settings, parse_settings, xnat_config

DATA = Path(__file__).resolve().parents[1] / "data" / "settings"

MINIMAL = """\
xnat:
  url: http://127.0.0.1:8080
  user: admin
hosts:
  local:
    workdir: /tmp/x2c
"""


def test_a_complete_file_loads_with_paths_resolved() -> None:
    s = load_settings(DATA / "x2c.yaml")
    assert s.source == str(DATA / "x2c.yaml")
    assert s.xnat.secret_block == "xnat-password"
    cluster = s.host("cluster")
    assert cluster.name == "cluster" and cluster.ssh == "hpc-login"
    assert cluster.ssh_config == DATA / "ssh" / "config"
    assert cluster.scheduler.kind == "slurm" and cluster.scheduler.extra_args == ("--qos=normal",)
    assert s.host("local").path_prepend == ("/opt/venv/bin",)
    assert s.pipelines == ("freesurfer6-hippocampal", "demo", str(DATA / "failing.yaml"))
    assert s.pipeline("failing").version == "1"
    assert s.pipeline("demo").resource == "DEMO_STATS"
    assert [(p.project, p.pipeline, p.host) for p in s.projects] == [
        ("ADNI", "freesurfer6-hippocampal", "cluster"),
        ("DEMO", "demo", "local"),
    ]
    assert s.limits.xnat_transfers == 3
    assert s.state_dir == DATA / "state" and s.keep_workdir is True


def test_a_file_is_loaded_once_per_process_until_it_changes(tmp_path: Path) -> None:
    path = tmp_path / "x2c.yaml"
    path.write_text(MINIMAL)
    first = load_settings(path)
    assert load_settings(path) is first, "read and validated once"
    path.write_text(MINIMAL.replace("/tmp/x2c", "/tmp/x2c-edited"))
    edited = load_settings(path)
    assert edited.host("local").workdir == "/tmp/x2c-edited" and load_settings(path) is edited
    path.write_text(MINIMAL + "keep_workdir: [\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(path)
    path.unlink()
    with pytest.raises(ConfigError, match="cannot read settings file"):
        load_settings(path)


def test_defaults_and_home() -> None:
    s = parse_settings(MINIMAL + "state_dir: ~/x2c-state\n", home=Path("/home/u"))
    assert s.state_dir == Path("/home/u/x2c-state")
    assert s.pipelines == () and s.pipeline("demo").name == "demo"  # shipped ones by default
    assert s.limits.xnat_transfers == 4 and s.keep_workdir is False
    with pytest.raises(ConfigError, match="starts with ~ but no HOME was given"):
        parse_settings(MINIMAL + "state_dir: ~/x2c-state\n")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (
            "    scheduler:\n      kind: slurmm\n",
            "x2c.yaml:8: hosts.local.scheduler.kind: must be one of 'local', 'slurm'",
        ),
        ("    wrokdir: /x\n", "x2c.yaml:7: hosts.local.wrokdir: is not a known field"),
        ("    max_in_flight: 0\n", "x2c.yaml:7: hosts.local.max_in_flight: Input should be"),
        ("limits: {xnat_transfers: lots}\n", "x2c.yaml:7: limits.xnat_transfers: Input should"),
        (
            "projects:\n  - {project: P, pipeline: demo, host: nowhere}\n",
            "x2c.yaml:8: projects.0.host: unknown host 'nowhere'; configured: local",
        ),
        (
            "projects:\n  - project: P\n    pipeline: nosuch\n    host: local\n",
            "x2c.yaml:9: projects.0.pipeline: unknown pipeline 'nosuch'; choose one of",
        ),
        ("pipelines: [demo, nosuch]\n", "x2c.yaml:7: pipelines.1: no shipped pipeline"),
        ("pipelines: [missing.yaml]\n", "x2c.yaml:7: pipelines.0: pipeline file"),
        ("projects:\n  - {project: P}\n", "x2c.yaml:8: projects.0.pipeline: is required"),
        ("state_dir: [1, 2\n", "x2c.yaml:8: not valid YAML"),
        ("    ssh: login\n", None),
    ],
)
def test_errors_name_the_file_the_line_and_the_field(extra: str, message: str | None) -> None:
    if message is None:  # the control: the same file with a harmless line loads
        assert parse_settings(MINIMAL + extra).host("local").ssh == "login"
        return
    with pytest.raises(ConfigError) as info:
        parse_settings(MINIMAL + extra, source="x2c.yaml", base_dir=Path("/nonexistent"))
    assert str(info.value).startswith(message), str(info.value)


def test_a_relative_workdir_is_refused_with_its_line() -> None:
    text = MINIMAL.replace("/tmp/x2c", "scratch/x2c")
    with pytest.raises(ConfigError, match=r"^x2c.yaml:6: hosts.local.workdir: 'scratch/x2c' must"):
        parse_settings(text, source="x2c.yaml")


def test_a_missing_host_workdir_points_at_the_host() -> None:
    text = "xnat: {url: http://x.org, user: u}\nhosts:\n  a:\n    ssh: login\n"
    with pytest.raises(ConfigError, match=r"^x2c.yaml:4: hosts.a.workdir: is required"):
        parse_settings(text, source="x2c.yaml")


def test_the_password_has_no_place_in_the_file() -> None:
    text = MINIMAL.replace("  user: admin\n", "  user: admin\n  password: hunter2-secret\n")
    with pytest.raises(ConfigError) as info:
        parse_settings(text, source="x2c.yaml")
    assert str(info.value).startswith("x2c.yaml:4: xnat.password: is not a known field")
    assert "hunter2-secret" not in str(info.value)


def test_xnat_needs_one_source() -> None:
    text = "xnat:\n  user: u\nhosts:\n  l: {workdir: /w}\n"
    with pytest.raises(ConfigError, match=r"^x2c.yaml:2: xnat: give either config"):
        parse_settings(text, source="x2c.yaml")
    with pytest.raises(ConfigError, match="url needs a user"):
        parse_settings("xnat: {url: http://a.org}\nhosts: {l: {workdir: /w}}\n")


def test_xnat_config_from_env_netrc_cfg_or_a_resolved_secret(tmp_path: Path) -> None:
    s = parse_settings(MINIMAL)
    cfg = xnat_config(s, env={"XNAT_PASS": "from-env"})
    assert (cfg.url, cfg.user, cfg.password.get_secret_value()) == (
        "http://127.0.0.1:8080",
        "admin",
        "from-env",
    )
    netrc = tmp_path / "netrc"
    netrc.write_text("machine 127.0.0.1 login admin password from-netrc\n")
    netrc.chmod(0o600)
    assert xnat_config(s, env={}, netrc_path=netrc).password.get_secret_value() == "from-netrc"
    with pytest.raises(ConfigError, match="no XNAT password"):
        xnat_config(s, env={}, netrc_path=tmp_path / "none")

    cfg_file = tmp_path / "xnat.cfg"
    cfg_file.write_text(json.dumps({"server": "http://h:1", "user": "r", "password": "cfg-pw"}))
    via_cfg = parse_settings(f"xnat: {{config: {cfg_file}}}\nhosts: {{l: {{workdir: /w}}}}\n")
    assert xnat_config(via_cfg, env={}).password.get_secret_value() == "cfg-pw"

    block = parse_settings(MINIMAL.replace("  user: admin\n", "  user: admin\n  secret_block: b\n"))
    with pytest.raises(ConfigError, match="secret_block 'b' holds the password"):
        xnat_config(block, env={})
    given = xnat_config(block, env={}, password=SecretStr("from-block"))
    assert given.password.get_secret_value() == "from-block"


def test_demo_settings(tmp_path: Path) -> None:
    s = demo_settings(
        xnat_url="http://127.0.0.1:1",
        xnat_user="admin",
        workdir=str(tmp_path / "work"),
        state_dir=tmp_path / "state",
        runtime="none",
        path_prepend=["/venv/bin"],
    )
    host = s.host("local")
    assert host.ssh is None and host.scheduler.kind == "local"
    assert host.container_runtime == "none" and host.path_prepend == ("/venv/bin",)
    assert s.pipeline("demo").name == "demo"
    assert [(p.project, p.pipeline, p.host) for p in s.projects] == [("DEMO", "demo", "local")]
    with pytest.raises(ConfigError, match="no host called 'cluster'; configured: local"):
        s.host("cluster")
    bare = demo_settings(
        xnat_url="http://h:1", xnat_user="u", workdir="/w", state_dir=tmp_path, runtime="none"
    )
    assert bare.host("local").path_prepend == (str(Path(sys.executable).parent),)
    podman = demo_settings(
        xnat_url="http://h:1", xnat_user="u", workdir="/w", state_dir=tmp_path, runtime="podman"
    )
    assert podman.host("local").path_prepend == ()
