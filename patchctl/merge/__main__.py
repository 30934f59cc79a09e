"""``python -m patchctl.merge ADAPTER_DIR BASE_DIR OUT_DIR``: the engine alone, without the catalog.

Used by the benchmark and by tests that kill a merge half-way; ``patchctl install`` is the
user-facing command.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from patchctl.adapter import read_adapter
from patchctl.errors import PatchctlError
from patchctl.merge import RichMergeProgress, execute_merge, plan_merge


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m patchctl.merge", description=__doc__)
    parser.add_argument("adapter", type=Path)
    parser.add_argument("base", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--force", action="store_true", help="replace OUT if it exists")
    parser.add_argument("--dry-run", action="store_true", help="print the plan as JSON and write nothing")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        plan = plan_merge(read_adapter(args.adapter), args.base)
        if args.dry_run:
            print(json.dumps(plan.summary(), indent=2))
            return 0
        progress = None if args.no_progress else RichMergeProgress()
        result = execute_merge(
            plan, args.out, force=args.force, progress=progress, provenance={"adapter": str(args.adapter)}
        )
    except PatchctlError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps(result.to_dict(), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
