"""x2c's XNAT layer, on pyxnat: connect, list, select inputs, stream verified bytes, upload
verified results with provenance, and tell whether an experiment is done.

The only package that imports pyxnat; everything it returns is an x2c type. Every function
takes the :class:`XnatSession` from :func:`connect`; failures are x2c errors (see
:mod:`x2c.xnat.failures`, the one place they are translated).
"""

from x2c.xnat.catalog import (
    Contents,
    Experiment,
    Scan,
    XnatFile,
    experiment_contents,
    find_experiment,
    get_experiment,
    list_experiments,
    list_resource_files,
    list_scans,
)
from x2c.xnat.select import SelectedInputs, safe_relpath, safe_segment, select_inputs
from x2c.xnat.session import XnatSession, connect, load_xnat_config, path_of
from x2c.xnat.stream import XnatByteSource, XnatFileRef
from x2c.xnat.upload import (
    PROVENANCE_NAME,
    LocalFileSource,
    ResourceState,
    ResourceStatus,
    UploadedFile,
    UploadReceipt,
    archive_manifest,
    is_done,
    local_refs,
    resource_status,
    upload_archive,
    upload_directory,
    upload_files,
)

__all__ = [
    "PROVENANCE_NAME",
    "Contents",
    "Experiment",
    "LocalFileSource",
    "ResourceState",
    "ResourceStatus",
    "Scan",
    "SelectedInputs",
    "UploadReceipt",
    "UploadedFile",
    "XnatByteSource",
    "XnatFile",
    "XnatFileRef",
    "XnatSession",
    "archive_manifest",
    "connect",
    "experiment_contents",
    "find_experiment",
    "get_experiment",
    "is_done",
    "list_experiments",
    "list_resource_files",
    "list_scans",
    "load_xnat_config",
    "local_refs",
    "path_of",
    "resource_status",
    "safe_relpath",
    "safe_segment",
    "select_inputs",
    "upload_archive",
    "upload_directory",
    "upload_files",
]
