"""Write one generated section of docs/benchmarks.md, between its markers (replaced in place when present,
appended under ``heading`` otherwise). Shared by the benchmark scripts that keep a section there."""
from __future__ import annotations

import os


def update_section(begin: str, end: str, heading: str, script: str, note: str, table: str) -> None:
    path = os.path.join(os.path.dirname(__file__), "..", "docs", "benchmarks.md")
    with open(path) as f:
        text = f.read()
    block = f"{begin}\n{note}\n\n{table}\n{end}"
    if begin in text:
        text = text[:text.index(begin)] + block + text[text.index(end) + len(end):]
    else:
        text += f"\n## {heading}\n\n`python scripts/{script} --update-docs` regenerates this section.\n\n{block}\n"
    with open(path, "w") as f:
        f.write(text)
