"""`agpt eval` and `agpt data synth`: quality on an MVTec-AD layout, and the synthetic set."""

from __future__ import annotations

import argparse
import json
from dataclasses import asdict
from pathlib import Path

from agpt.errors import UsageError
from agpt.settings import Settings


def run_eval(settings: Settings, args: argparse.Namespace) -> int:
    """Evaluate the configured profile and print the table (and JSON); exit code 0.

    Raises:
        UsageError: ``--data`` is not an MVTec-layout folder or a category is not in it.
        SettingsError: An unknown profile or an input size it cannot take.
    """
    from agpt import wiring
    from inference.evaluation.mvtec import list_categories
    from inference.evaluation.runner import evaluate, format_table

    root = Path(args.data)
    if not root.is_dir():
        msg = (f"--data {args.data}: no such directory (an MVTec-AD layout; "
               "`agpt data synth --out DIR` builds one)")
        raise UsageError(msg)
    known = list_categories(root)
    if not known:
        msg = f"--data {args.data}: no category with train/good/ in it (an MVTec-AD layout)"
        raise UsageError(msg)
    categories = args.categories.split(",") if args.categories else None
    unknown = sorted(set(categories or ()) - set(known))
    if unknown:
        msg = f"--categories: {', '.join(unknown)} not under {args.data}; known: {', '.join(known)}"
        raise UsageError(msg)
    baseline = _baseline(args.against) if args.against else None
    wiring.configure_logging("WARNING")
    wiring.configure_torch(settings)
    detector = wiring.detector(settings, image_size=args.image_size)
    report = evaluate(detector, root, shots=args.shots, categories=categories,
                      seed=args.seed)
    print(format_table(report))
    if baseline is not None:
        from inference.evaluation.comparison import compare_reports, format_comparison

        try:
            rows = compare_reports(report, baseline, seed=args.seed)
        except ValueError as exc:
            msg = f"--against {args.against}: {exc}"
            raise UsageError(msg) from exc
        print(format_comparison(rows, baseline_label=Path(args.against).name))
        report["against"] = {"report": str(args.against),
                             "categories": {r.category: asdict(r) for r in rows}}
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2))
    return 0


def _baseline(path: str) -> dict[str, object]:
    """The `--against` report, read before the (long) evaluation starts."""
    try:
        report = json.loads(Path(path).read_text())
    except OSError as exc:
        msg = f"--against {path}: cannot read it ({exc.strerror or exc})"
        raise UsageError(msg) from exc
    except ValueError as exc:
        msg = f"--against {path}: not JSON ({exc}); give a file `agpt eval --json` wrote"
        raise UsageError(msg) from exc
    if not isinstance(report, dict) or not isinstance(report.get("categories"), dict):
        msg = f"--against {path}: not an `agpt eval --json` report"
        raise UsageError(msg)
    return report


def run_data_synth(args: argparse.Namespace) -> int:
    """Write the MVTec-layout set of drawn defects; exit code 0.

    Raises:
        UsageError: The output folder holds a set already (and ``--overwrite`` is off).
    """
    from inference.evaluation.synthetic import build_textures_set

    try:
        root = build_textures_set(Path(args.out), seed=args.seed, overwrite=args.overwrite)
    except FileExistsError as exc:
        msg = f"--out {args.out} holds a data set already; add --overwrite to replace it"
        raise UsageError(msg) from exc
    except NotADirectoryError as exc:
        msg = f"--out {args.out}: not a directory ({exc})"
        raise UsageError(msg) from exc
    print(f"MVTec-layout set written to {root}")
    return 0
