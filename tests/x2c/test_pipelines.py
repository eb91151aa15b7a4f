"""Pipelines as data: the shipped files load, and every loading error names the file and field."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from x2c.errors import PipelineError
from x2c.pipelines import builtin_pipeline, builtin_pipelines, load_pipeline, parse_pipeline

DEMO_YAML = """\
name: mini
version: "1"
inputs: {scan_types: ["T1*"]}
image: localhost/x2c-demo:latest
command: [python3, -m, x2c.demo_pipeline, "{input}", "{outputs}"]
outputs: [stats.json]
archive: MINI
resource: MINI
"""


def test_shipped_pipelines_load() -> None:
    pipelines = builtin_pipelines()
    assert set(pipelines) == {"demo", "freesurfer6-hippocampal", "freesurfer7-hippocampal"}
    fs6 = pipelines["freesurfer6-hippocampal"]
    assert fs6.resource == "FS6_HIPPO" and fs6.archive_name == "FS6_HIPPO.zip"
    assert fs6.resume is not None and fs6.resume.resource == "FREESURFER6"
    assert "-hippocampal-subfields-T1" in fs6.command[0].argv
    assert {s.when for s in fs6.command} == {"fresh", "resume"}
    assert "*/mri/[lr]h.hippoSfVolumes*.txt" in fs6.outputs
    fs7 = pipelines["freesurfer7-hippocampal"]
    assert fs7.resource == "FS7_HIPPO"
    assert fs7.command[-1].argv[0] == "segmentHA_T1.sh"
    assert "*/mri/[lr]h.hippoSfVolumes-T1.v21.txt" in fs7.outputs
    assert fs6.environment == {"FS_LICENSE": "/opt/freesurfer-license/license.txt"}
    assert len({*pipelines.values()}) == 3  # frozen and hashable
    demo = builtin_pipeline("demo")
    assert demo.resource == "DEMO_STATS" and demo.outputs == ("mask.nii.gz", "stats.json")
    assert demo.walltime_seconds == 600


def test_unknown_builtin_lists_the_known_ones() -> None:
    with pytest.raises(PipelineError, match=r"choose one of demo, freesurfer6-hippocampal"):
        builtin_pipeline("fs8")


def test_yaml_and_toml_load_the_same(tmp_path: Path) -> None:
    yaml_file = tmp_path / "mini.yaml"
    yaml_file.write_text(DEMO_YAML)
    toml_file = tmp_path / "mini.toml"
    toml_file.write_text(
        'name = "mini"\nversion = "1"\nimage = "localhost/x2c-demo:latest"\n'
        'command = ["python3", "-m", "x2c.demo_pipeline", "{input}", "{outputs}"]\n'
        'outputs = ["stats.json"]\narchive = "MINI"\nresource = "MINI"\n'
        '[inputs]\nscan_types = ["T1*"]\n'
    )
    assert load_pipeline(yaml_file) == load_pipeline(toml_file)
    assert load_pipeline(yaml_file).command[0].when == "always"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("resource: MINI", "resource: MINI\ncpus: 0"), "cpus"),
        (("archive: MINI", "archive: '../MINI'"), "archive"),
        (('"{outputs}"]', '"{outputs}", "{password}"]'), "command.0.argv"),
        (('"{outputs}"]', '"{subject.__class__}"]'), "command.0.argv"),
        (("outputs: [stats.json]", "outputs: [../../etc/passwd]"), "outputs"),
        (("outputs: [stats.json]", "outputs: ['$(id)']"), "outputs"),
        (("outputs: [stats.json]", "outputs: []"), "outputs"),
        (("resource: MINI", "resource: MINI\nenv: {XNAT_PASSWORD: x}"), "env"),
        (("resource: MINI", "resource: MINI\nwalltime: '1 day'"), "walltime"),
        (("resource: MINI", "resource: MINI\nruntime: docker2"), "runtime"),
        (("resource: MINI", "resource: MINI\ncolour: red"), "colour"),
        (("image: localhost/x2c-demo:latest\n", ""), "image"),
        (('inputs: {scan_types: ["T1*"]}', "inputs: {scan_types: []}"), "inputs.scan_types"),
    ],
)
def test_loading_errors_name_the_file_and_field(
    tmp_path: Path, change: tuple[str, str], field: str
) -> None:
    path = tmp_path / "bad.yaml"
    assert change[0] in DEMO_YAML
    path.write_text(DEMO_YAML.replace(change[0], change[1], 1))
    with pytest.raises(PipelineError) as info:
        load_pipeline(path)
    message = str(info.value)
    assert message.startswith(f"pipeline {path}: field {field}"), message


def test_resume_placeholder_only_in_resume_steps(tmp_path: Path) -> None:
    path = tmp_path / "r.yaml"
    path.write_text(DEMO_YAML.replace('"{outputs}"]', '"{outputs}", "{resume}"]'))
    with pytest.raises(PipelineError, match=r"field command.0: .*\{resume\} may only appear"):
        load_pipeline(path)


def test_when_steps_need_a_resume_section() -> None:
    data = builtin_pipeline("demo").model_dump()
    data["command"] = [{"argv": ["true"], "when": "fresh"}]
    with pytest.raises(PipelineError, match=r"pipeline <mem>: .*need a resume: section"):
        parse_pipeline(data, "<mem>")
    data["command"] = [["not", "a", "step"]]
    with pytest.raises(PipelineError, match=r"field command.0"):
        parse_pipeline(data, "<mem>")


def test_unreadable_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(PipelineError, match=r"cannot be read"):
        load_pipeline(tmp_path / "absent.yaml")
    bad = tmp_path / "list.yaml"
    bad.write_text("- a\n- b\n")
    with pytest.raises(PipelineError, match=rf"{bad}: expected a mapping"):
        load_pipeline(bad)
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    with pytest.raises(PipelineError, match=rf"{broken}: not valid YAML/TOML"):
        load_pipeline(broken)


def test_passenv_names_variables_never_secrets() -> None:
    base = {**_mini(), "passenv": ["FS_LICENSE", "OMP_NUM_THREADS"]}
    assert parse_pipeline(base).passenv == ("FS_LICENSE", "OMP_NUM_THREADS")
    for name, why in (("XNAT_PASS", "looks like a secret"), ("A-B", "not a valid")):
        with pytest.raises(PipelineError, match=why):
            parse_pipeline({**base, "passenv": [name]})


def _mini() -> dict[str, object]:
    data = yaml.safe_load(DEMO_YAML)
    assert isinstance(data, dict)
    return data
