"""Run every benchmark (``benchmarks/bench_*.py``), print one table and write JSON.

    python benchmarks/run.py [--quick] [--only NAME[:PART,...] ...] [--json ...]

Each module exposes ``run(quick: bool) -> list[dict]`` with rows
``{"benchmark", "metric", "value", "unit"}``. A module whose ``run`` also takes ``parts`` runs
only those of its parts named after a colon (``--only launcher:noop``), measured as in a full
run. Figures are from one run on this machine: compare
them as ratios, not as absolutes.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import platform
import sys
import time
import traceback
from datetime import UTC, datetime
from pathlib import Path

from rich.console import Console
from rich.table import Table

HERE = Path(__file__).resolve().parent


def discover(only: list[str]) -> list[tuple[Path, list[str]]]:
    """The modules to run, each with the parts asked for (none: all of it)."""
    paths = sorted(HERE.glob("bench_*.py"))
    asked = [o.partition(":")[::2] for o in only]  # (name, "part,part" or "")
    chosen = []
    for path in paths:
        wanted = [parts for name, parts in asked if name in path.stem]
        if not only or wanted:
            whole = not only or not all(wanted)
            chosen.append((path, [] if whole else ",".join(wanted).split(",")))
    return chosen


def load(path: Path):
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    assert spec.loader is not None
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes (seconds, not minutes)")
    parser.add_argument("--only", nargs="*", default=[], help="run benchmarks whose name matches")
    parser.add_argument("--json", type=Path, default=HERE / "results" / "latest.json")
    args = parser.parse_args(argv)

    console = Console()
    rows: list[dict] = []
    failed = []
    for path, parts in discover(args.only):
        shown = f" ({', '.join(parts)})" if parts else ""
        console.print(f"[bold]running {path.stem}[/bold]{shown}{' (quick)' if args.quick else ''}")
        start = time.perf_counter()
        try:
            out = load(path).run(quick=args.quick, **({"parts": parts} if parts else {}))
        except Exception:  # a broken benchmark must not hide the others' results
            traceback.print_exc()
            failed.append(path.stem)
            continue
        for row in out:
            rows.append({**row, "module": path.stem})
        console.print(f"  done in {time.perf_counter() - start:.1f}s")

    # Optional columns: a row may carry the target it is measured against and earlier figures.
    extra = [k for k in ("target", "before", "legacy") if any(r.get(k) for r in rows)]
    table = Table("benchmark", "metric", "value", "unit", *extra, title="Balsam benchmarks")
    for r in rows:
        value = r["value"]
        shown = f"{value:,.3f}" if isinstance(value, float) else f"{value:,}"
        table.add_row(str(r["benchmark"]), str(r["metric"]), shown, str(r.get("unit", "")),
                      *(str(r.get(k, "")) for k in extra))
    console.print(table)

    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({
        "when": datetime.now(UTC).isoformat(),
        "machine": {"python": sys.version.split()[0], "platform": platform.platform()},
        "quick": args.quick,
        "rows": rows,
        "failed": failed,
    }, indent=2, default=str))
    console.print(f"wrote {args.json}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
