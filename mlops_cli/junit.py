"""JUnit XML reports, as Jenkins' junit step reads them: one <testsuite> with one <testcase> per check.

validate-model writes WORKDIR/reports/validate-model.xml (one case per check) and smoke-test
WORKDIR/reports/smoke-test.xml (one case per kind of request and one for the latency budget), so
they reach the build's Tests tab beside unit-test's. Files are written atomically.
"""

from __future__ import annotations

import os
import socket
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path


@dataclass(frozen=True)
class Case:
    name: str
    classname: str
    failure: str | None = None  # why it failed; None: it passed
    time_s: float = 0.0
    detail: str = ""  # shown as the case's system-out
    skipped: str | None = None  # why it did not run; None: it ran


def _clean(text: str) -> str:
    """XML 1.0 cannot carry most control characters: drop them."""
    return "".join(c for c in text if c in "\t\n\r" or ord(c) >= 32)


def write(path: Path, suite: str, cases: Iterable[Case]) -> Path:
    cases = list(cases)
    failures = sum(1 for c in cases if c.failure is not None)
    root = ET.Element(
        "testsuite",
        {
            "name": suite,
            "tests": str(len(cases)),
            "failures": str(failures),
            "errors": "0",
            "skipped": str(sum(1 for c in cases if c.skipped is not None)),
            "time": f"{sum(c.time_s for c in cases):.3f}",
            "hostname": socket.gethostname() or "localhost",
            "timestamp": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
        },
    )
    ET.SubElement(root, "properties")
    for case in cases:
        el = ET.SubElement(
            root,
            "testcase",
            {"name": _clean(case.name), "classname": _clean(case.classname), "time": f"{case.time_s:.3f}"},
        )
        if case.failure is not None:
            first = case.failure.splitlines()[0] if case.failure else "failed"
            failure = ET.SubElement(el, "failure", {"message": _clean(first[:500]), "type": "AssertionError"})
            failure.text = _clean(case.failure)
        if case.skipped is not None:
            ET.SubElement(el, "skipped", {"message": _clean(case.skipped[:500])})
        if case.detail:
            ET.SubElement(el, "system-out").text = _clean(case.detail)
    ET.SubElement(root, "system-out")
    ET.SubElement(root, "system-err")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".junit-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            ET.ElementTree(root).write(fh, encoding="utf-8", xml_declaration=True)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
