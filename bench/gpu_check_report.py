"""The one table that ends bench/gpu_check.sh: op checks passed/failed per op and type with their
CUDA times (from dgemma_cuda_opcheck's opcheck.txt, and those of the opt-in products in OUT's
<variant>-<op>/ folders, marked [variant]), the model tests of tests/test_cuda.py (JUnit
XML) and the memcheck verdict. Exit 1 when anything failed, was skipped on the GPU, or is missing."""

from __future__ import annotations

import sys
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path


def op_rows(path: Path):
    """(op, type, result, cuda ms) per line of the op check's table."""
    lines = path.read_text().splitlines()[1:] if path.exists() else []
    for line in lines:
        op, typ, _shape, result, _err, _tol, ms = line.split()
        yield op, typ, result, float(ms)


def main(out: Path) -> int:
    bad = 0
    print((out / "run.txt").read_text().strip() if (out / "run.txt").exists() else "run: unknown")
    groups = defaultdict(lambda: [0, 0, 0.0])
    # The main op check, then the opt-in products' (gpu_check.sh's <variant>-<op>/ folders), their
    # types marked with the variant.
    tables = [(out / "opcheck.txt", "")] + [(d / "opcheck.txt", f" [{d.name.split('-')[0]}]")
                                            for d in sorted(out.iterdir()) if d.is_dir() and (d / "opcheck.txt").exists()]
    for table, mark in tables:
        for op, typ, result, ms in op_rows(table):
            g = groups[(op, typ + mark)]
            g[0 if result == "pass" else 1] += 1
            g[2] = max(g[2], ms)
    print(f"\n{'op':<12} {'type':<21} {'passed':>6} {'failed':>6} {'max cuda ms':>12}")
    for (op, typ), (ok, fail, ms) in groups.items():
        print(f"{op:<12} {typ:<21} {ok:>6} {fail:>6} {ms:>12.3f}")
        bad += fail
    if not groups:
        print("(no op check results)")
        bad += 1
    xml = out / "test_cuda.xml"
    if xml.exists():
        suite = ET.parse(xml).getroot()
        suite = suite if suite.tag == "testsuite" else suite.find("testsuite")
        counts = {k: int(suite.get(k, 0)) for k in ("tests", "failures", "errors", "skipped")}
        print(f"\nmodel tests (tests/test_cuda.py): {counts['tests']} run, {counts['failures'] + counts['errors']} failed, "
              f"{counts['skipped']} skipped")
        for case in suite.iter("testcase"):
            for kind in ("failure", "error"):
                if case.find(kind) is not None:
                    print(f"  FAILED {case.get('name')}")
        bad += counts["failures"] + counts["errors"] + counts["skipped"]  # on the GPU nothing may skip
    else:
        print("\nmodel tests: no results")
        bad += 1
    memcheck = (out / "memcheck.log").read_text() if (out / "memcheck.log").exists() else "not found"
    verdict = "clean" if "ERROR SUMMARY: 0 errors" in memcheck else ("not run" if "not found" in memcheck else "ERRORS")
    print(f"compute-sanitizer memcheck: {verdict}")
    bad += verdict == "ERRORS"
    print("ALL PASSED" if bad == 0 else f"{bad} FAILED (details: {out}/failures.txt, test_cuda.log, memcheck.log)")
    return 0 if bad == 0 else 1


if __name__ == "__main__":
    sys.exit(main(Path(sys.argv[1])))
