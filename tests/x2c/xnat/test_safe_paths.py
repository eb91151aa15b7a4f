"""Hostile labels cannot escape the job's inputs/ directory nor break a URL."""

from __future__ import annotations

import pytest

from x2c.errors import XnatError
from x2c.xnat import path_of, safe_relpath, safe_segment

HOSTILE = ["../../etc", "a b", "$(rm -rf ~)", "it's", '"q"', "/abs", "..", ".", "-rf", "é", "a/b"]


@pytest.mark.parametrize("label", HOSTILE)
def test_safe_segment_is_one_plain_segment(label: str) -> None:
    seg = safe_segment(label)
    assert seg and "/" not in seg and seg not in (".", "..")
    assert not seg.startswith((".", "-"))
    assert all(c.isalnum() or c in "._+-" for c in seg)


def test_safe_relpath_keeps_depth_but_not_escapes() -> None:
    assert safe_relpath("sub dir/file.nii.gz") == "sub_dir/file.nii.gz"
    assert ".." not in safe_relpath("../../x").split("/")


def test_path_of_quotes_every_segment() -> None:
    assert (
        path_of("data", "projects", "a b/../c", "x$(y)")
        == "/data/projects/a%20b%2F..%2Fc/x%24%28y%29"
    )
    with pytest.raises(XnatError):
        path_of("data", "..")
