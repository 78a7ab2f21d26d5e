"""``python -m agnostic_cam.demo``: train (or load) the demo CNN, explain a few images with every
method, and write a PNG grid per section plus ``index.html`` to ``--out`` (default out/demo)."""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path

from agnostic_cam.demo.run import SECTIONS, run_demo


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m agnostic_cam.demo", description=__doc__)
    p.add_argument("--out", default="out/demo", help="output folder (default: out/demo)")
    p.add_argument("--images", type=int, default=6, help="how many images to explain (default: 6)")
    p.add_argument("--sections", default=",".join(SECTIONS),
                   help=f"comma-separated sections to build (default: all of {','.join(SECTIONS)})")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    t0 = time.perf_counter()
    index = run_demo(Path(a.out), n_images=a.images, sections=[s for s in a.sections.split(",") if s])
    logging.getLogger("agnostic_cam.demo").info("demo written to %s in %.1f s", index, time.perf_counter() - t0)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
