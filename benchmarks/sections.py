"""A benchmark's own section of BENCHMARKS.md, between its markers, rewritten in place (run_all.py keeps it)."""

from __future__ import annotations

import re
from pathlib import Path


def write_section(path: Path, key: str, heading: str, text: str) -> None:
    """Put `text` between `<!-- key:start -->` and `<!-- key:end -->` in `path`; the first time, at the end under
    `heading`."""
    start, end = f"<!-- {key}:start -->", f"<!-- {key}:end -->"
    doc, block = path.read_text(), f"{start}\n{text}\n{end}"
    if start in doc:
        doc = re.sub(re.escape(start) + ".*?" + re.escape(end), lambda _: block, doc, flags=re.S)
    else:
        doc = doc.rstrip() + f"\n\n{heading}\n\n" + block + "\n"
    path.write_text(doc)
