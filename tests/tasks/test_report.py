"""What the artifacts show: the summary renders as written (markdown in reasons and log tails
is not read as markup), and the table keeps each reason to one short line."""

from __future__ import annotations

import html

from markdown_it import MarkdownIt

from tasks.report import _row, code_block, counts, history_key, md_text, summary_markdown
from x2c.reconcile import DONE, FAILED, IN_FLIGHT, SKIPPED, Row

LOG = """\
Traceback (most recent call last):
  File "<frozen runpy>", line 198, in _run_module_as_main
  File "/opt/x/__init__.py", line 3, in main
```
not a fence: **bold**?
x2c: step 1 (python3) failed"""


def result(label: str, state: str, **kw: str) -> Row:
    return Row(
        project="P",
        experiment=f"E_{label}",
        label=label,
        pipeline="demo",
        host="hpc",
        state=state,
        **kw,
    )


def render(markdown: str) -> str:
    return str(MarkdownIt("commonmark").render(markdown))


def test_summary_shows_reasons_and_log_tails_as_written() -> None:
    results = [
        result("S001_MR1", DONE, xnat_uri="http://x/data/experiments/E1/resources/STATS"),
        result(
            "S002_MR1",
            FAILED,
            job_id="42",
            reason="no file matches *.nii or *.nii.gz in <frozen runpy>; see [job.log]",
            log_tail=LOG,
        ),
        result("S003_MR1", SKIPPED, reason="skipped: no scan of type T1_MPRAGE_*"),
    ]
    page = render(summary_markdown("demo for P", results))

    assert "<em>" not in page and "<strong>" not in page and "<a href" in page
    assert "<h3>P/S002_MR1 (job 42 on hpc)</h3>" in page
    reason = "no file matches *.nii or *.nii.gz in <frozen runpy>; see [job.log]"
    assert f"<p>{html.escape(reason, quote=False)}</p>" in page
    assert "skipped: no scan of type T1_MPRAGE_*" in html.unescape(page)
    # the whole log tail, backticks included, in ONE code block
    assert page.count("<pre><code>") == 1
    block = page.split("<pre><code>", 1)[1].split("</code></pre>", 1)[0]
    assert html.unescape(block) == LOG + "\n"
    assert '<a href="http://x/data/experiments/E1/resources/STATS">' in page


def test_markdown_helpers() -> None:
    assert md_text("S001_MR1 in  two\nlines") == "S001_MR1 in two lines"
    assert md_text("__init__ *x* <b>") == r"\_\_init\_\_ \*x\* \<b\>"
    assert code_block("a ```` b") == ["`````", "a ```` b", "`````"]
    assert code_block("plain") == ["```", "plain", "```"]


def test_table_reason_is_one_short_line() -> None:
    long_reason = "demo for P/S002_MR1: job 42 on hpc ended FAILED (exit 1):\n" + "x" * 300
    row = _row(result("S002_MR1", FAILED, reason=long_reason))
    assert "\n" not in row["reason"] and len(row["reason"]) == 120
    assert row["reason"].startswith("demo for P/S002_MR1: job 42 on hpc ended FAILED (exit 1): x")
    assert row["reason"].endswith("\u2026")
    assert _row(result("S1", DONE, reason="job 7 completed"))["reason"] == "job 7 completed"


def test_counts_and_history_keys() -> None:
    rows = [result("S1", DONE), result("S2", IN_FLIGHT), result("S3", FAILED)]
    assert counts(rows) == "1 done, 1 in flight, 0 pending, 0 skipped, 1 failed"
    assert history_key(result("S1_MR1", DONE)) == "x2c-p-s1-mr1-demo"
