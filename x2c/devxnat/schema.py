"""The data-type description the server publishes: a small XML schema and the search elements.

xnatpy builds its object model from ``/xapi/schemas/xnat`` at connect time, so the schema must
describe, with XNAT's type names and base classes, every type x2c uses: projects, subjects,
experiments (subject assessors, image and MR sessions), scans (image and MR scans) and resources
(catalogs). It is written for this server and is far smaller than XNAT's own ``xnat.xsd``.
"""

from __future__ import annotations

XNAT_NS = "http://nrg.wustl.edu/xnat"

SCHEMA_NAMES = ["xnat"]

# The element types the server knows: (element name, singular, plural, category).
ELEMENTS: tuple[tuple[str, str, str, str], ...] = (
    ("xnat:projectData", "Project", "Projects", "Project"),
    ("xnat:subjectData", "Subject", "Subjects", "Subject"),
    ("xnat:mrSessionData", "MR Session", "MR Sessions", "Experiment"),
    ("xnat:mrScanData", "MR Scan", "MR Scans", "Scan"),
    ("xnat:petSessionData", "PET Session", "PET Sessions", "Experiment"),
    ("xnat:ctSessionData", "CT Session", "CT Sessions", "Experiment"),
)

# Search fields per element (FIELD_ID values are upper case as in XNAT, which also keeps them
# from shadowing the lower-case properties of xnatpy's generated classes).
FIELDS: dict[str, tuple[tuple[str, str, str], ...]] = {
    "xnat:projectData": (
        ("ID", "ID", "string"),
        ("NAME", "Name", "string"),
        ("SECONDARY_ID", "Running Title", "string"),
        ("DESCRIPTION", "Description", "string"),
    ),
    "xnat:subjectData": (
        ("SUBJECT_ID", "Subject", "string"),
        ("SUBJECT_LABEL", "Subject Label", "string"),
        ("PROJECT", "Project", "string"),
        ("INSERT_DATE", "Inserted", "string"),
    ),
    "xnat:mrSessionData": (
        ("SESSION_ID", "MR ID", "string"),
        ("LABEL", "MR Label", "string"),
        ("SUBJECT_ID", "Subject", "string"),
        ("PROJECT", "Project", "string"),
        ("DATE", "Date", "date"),
        ("INSERT_DATE", "Inserted", "string"),
        ("LAST_MODIFIED", "Last Modified", "string"),
    ),
    "xnat:petSessionData": (
        ("SESSION_ID", "PET ID", "string"),
        ("LABEL", "PET Label", "string"),
        ("SUBJECT_ID", "Subject", "string"),
        ("PROJECT", "Project", "string"),
        ("DATE", "Date", "date"),
        ("INSERT_DATE", "Inserted", "string"),
        ("LAST_MODIFIED", "Last Modified", "string"),
    ),
    "xnat:ctSessionData": (
        ("SESSION_ID", "CT ID", "string"),
        ("LABEL", "CT Label", "string"),
        ("SUBJECT_ID", "Subject", "string"),
        ("PROJECT", "Project", "string"),
        ("DATE", "Date", "date"),
        ("INSERT_DATE", "Inserted", "string"),
        ("LAST_MODIFIED", "Last Modified", "string"),
    ),
    "xnat:mrScanData": (
        ("ID", "Scan", "string"),
        ("TYPE", "Type", "string"),
        ("SERIES_DESCRIPTION", "Series Description", "string"),
        ("IMAGE_SESSION_ID", "Image Session", "string"),
    ),
}


def _listing(outer: str, inner: str, type_: str) -> str:
    return f"""
        <xs:element name="{outer}" minOccurs="0">
          <xs:complexType>
            <xs:sequence>
              <xs:element name="{inner}" type="{type_}" minOccurs="0" maxOccurs="unbounded"/>
            </xs:sequence>
          </xs:complexType>
        </xs:element>"""


def _attrs(*names: str) -> str:
    return "".join(f'\n      <xs:attribute name="{n}" type="xs:string"/>' for n in names)


def _elems(*pairs: tuple[str, str]) -> str:
    return "".join(f'\n        <xs:element name="{n}" type="{t}" minOccurs="0"/>' for n, t in pairs)


def _extension(name: str, base: str) -> str:
    return f"""  <xs:complexType name="{name}">
    <xs:complexContent>
      <xs:extension base="xnat:{base}"/>
    </xs:complexContent>
  </xs:complexType>"""


def xnat_schema() -> str:
    """The ``xnat`` schema document served at ``/xapi/schemas/xnat`` and ``/schemas/xnat/...``."""
    resources = _listing("resources", "resource", "xnat:abstractResource")
    experiments = _listing("experiments", "experiment", "xnat:subjectAssessorData")
    scans = _listing("scans", "scan", "xnat:imageScanData")
    s = "xs:string"
    project_elems = _elems(("name", s), ("description", s), ("keywords", s))
    subject_elems = _elems(("group", s), ("src", s))
    experiment_elems = _elems(
        ("date", "xs:date"), ("time", "xs:time"), ("note", s), ("acquisition_site", s)
    )
    session_elems = _elems(("modality", s), ("scanner", s))
    scan_elems = _elems(
        ("image_session_ID", s),
        ("note", s),
        ("quality", s),
        ("series_description", s),
        ("frames", "xs:integer"),
    )
    namespaces = (
        f'xmlns:xnat="{XNAT_NS}" xmlns:xdat="http://nrg.wustl.edu/xdat" '
        'xmlns:xs="http://www.w3.org/2001/XMLSchema"'
    )
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<xs:schema {namespaces} targetNamespace="{XNAT_NS}" elementFormDefault="qualified">
  <xs:element name="Project" type="xnat:projectData"/>
  <xs:element name="Subject" type="xnat:subjectData"/>
  <xs:element name="MRSession" type="xnat:mrSessionData"/>
  <xs:element name="MRScan" type="xnat:mrScanData"/>
  <xs:element name="PETSession" type="xnat:petSessionData"/>
  <xs:element name="PETScan" type="xnat:petScanData"/>
  <xs:element name="CTSession" type="xnat:ctSessionData"/>
  <xs:element name="CTScan" type="xnat:ctScanData"/>
  <xs:element name="ResourceCatalog" type="xnat:resourceCatalog"/>
  <xs:complexType name="abstractResource">
    <xs:sequence>{_elems(("note", "xs:string"))}
    </xs:sequence>
    <xs:attribute name="label" type="xs:string"/>
    <xs:attribute name="file_count" type="xs:integer"/>
    <xs:attribute name="file_size" type="xs:long"/>
  </xs:complexType>
  <xs:complexType name="resource">
    <xs:complexContent>
      <xs:extension base="xnat:abstractResource">{_attrs("URI", "format", "description", "content")}
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>
  <xs:complexType name="resourceCatalog">
    <xs:complexContent>
      <xs:extension base="xnat:resource"/>
    </xs:complexContent>
  </xs:complexType>
  <xs:complexType name="projectData">
    <xs:sequence>{project_elems}{resources}
    </xs:sequence>{_attrs("ID", "secondary_ID")}
  </xs:complexType>
  <xs:complexType name="subjectData">
    <xs:sequence>{subject_elems}{resources}{experiments}
    </xs:sequence>{_attrs("ID", "project", "label")}
  </xs:complexType>
  <xs:complexType name="experimentData">
    <xs:sequence>{experiment_elems}{resources}
    </xs:sequence>{_attrs("ID", "project", "label", "version")}
  </xs:complexType>
  <xs:complexType name="subjectAssessorData">
    <xs:complexContent>
      <xs:extension base="xnat:experimentData">
        <xs:sequence>{_elems(("subject_ID", "xs:string"))}
        </xs:sequence>
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>
  <xs:complexType name="imageSessionData">
    <xs:complexContent>
      <xs:extension base="xnat:subjectAssessorData">
        <xs:sequence>{session_elems}{scans}
        </xs:sequence>{_attrs("UID")}
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>
  <xs:complexType name="mrSessionData">
    <xs:complexContent>
      <xs:extension base="xnat:imageSessionData">
        <xs:sequence>{_elems(("fieldStrength", "xs:string"))}
        </xs:sequence>
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>
{_extension("petSessionData", "imageSessionData")}
{_extension("ctSessionData", "imageSessionData")}
  <xs:complexType name="imageScanData">
    <xs:sequence>{scan_elems}
    </xs:sequence>{_attrs("ID", "type", "UID")}
  </xs:complexType>
  <xs:complexType name="mrScanData">
    <xs:complexContent>
      <xs:extension base="xnat:imageScanData">
        <xs:sequence>{_elems(("fieldStrength", "xs:string"))}
        </xs:sequence>
      </xs:extension>
    </xs:complexContent>
  </xs:complexType>
{_extension("petScanData", "imageScanData")}
{_extension("ctScanData", "imageScanData")}
</xs:schema>
"""


def element_rows() -> list[dict[str, str]]:
    """Rows of ``/data/search/elements``: one per element type."""
    return [
        {
            "ELEMENT_NAME": name,
            "SINGULAR": singular,
            "PLURAL": plural,
            "CATEGORY": category,
            "SECURED": "true",
            "BROWSEABLE": "true",
            "COUNT": "0",
        }
        for name, singular, plural, category in ELEMENTS
    ]


def field_rows(element: str) -> list[dict[str, str]] | None:
    """Rows of ``/data/search/elements/{element}``, or None for an unknown element."""
    fields = FIELDS.get(element)
    if fields is None:
        return None
    return [
        {
            "FIELD_ID": field_id,
            "HEADER": header,
            "SUMMARY": header,
            "TYPE": type_,
            "REQUIRES_VALUE": "false",
            "DESC": header,
            "ELEMENT_NAME": element,
            "SRC": "0",
        }
        for field_id, header, type_ in fields
    ]
