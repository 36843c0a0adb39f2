"""``vitkit data list``: the named data sets (size, classes, cached?); ``vitkit data download NAME...``: fetch
them into ``$VITKIT_DATA`` now (e.g. before going offline)."""

from __future__ import annotations

import argparse
import json

from ..errors import UserError
from .common import add_command, add_json, add_no_progress


def register(sub: argparse._SubParsersAction) -> None:
    p = add_command(sub, "data", help="list or download the named data sets (cifar10, pets, ...)",
                    description="list: the named data sets (--data NAME, data.train=NAME) with their download size, "
                                "classes, splits and whether they are cached. download NAME...: fetch them now from "
                                "their official URLs (or VITKIT_DATA_URL), verified against the published "
                                "checksums, into VITKIT_DATA (default ~/.cache/vitkit/data). VITKIT_OFFLINE=1: "
                                "nothing is downloaded.",
                    examples=["vitkit data list", "vitkit data download cifar10 pets",
                              "vitkit data download mnist --force --json"])
    p.add_argument("action", choices=("list", "download"), help="list the named data sets, or download some")
    p.add_argument("names", nargs="*", metavar="NAME", help="data sets to download (vitkit data list names them)")
    p.add_argument("--force", action="store_true", help="download again even when cached (and unpack again)")
    add_no_progress(p)
    add_json(p, what="one row per data set")
    p.set_defaults(func=run)


def _row(name: str) -> dict:
    from ..data.fetch import dataset_dir, is_cached
    from ..data.named import DATASETS

    d = DATASETS[name]
    return {"name": name, "title": d.title, "classes": d.num_classes, "splits": d.splits, "size_mb": d.size_mb,
            "cached": is_cached(d), "path": str(dataset_dir(name)), "homepage": d.homepage, "note": d.note,
            "files": [{"name": f.name, "url": f.url, "md5": f.md5, "sha256": f.sha256, "size": f.size,
                       "checksum_from": f.source} for f in d.files]}


def run(args: argparse.Namespace) -> int:
    from ..data.fetch import data_root, ensure, mirror
    from ..data.named import DATASETS, NAMES

    if args.action == "list":
        if args.names:
            raise UserError("vitkit data list takes no names (vitkit data download NAME fetches one)")
        rows = [_row(n) for n in NAMES]
        if args.json:
            print(json.dumps(rows, indent=1))
            return 0
        print(f"{'name':<16}{'classes':>8}{'size':>10}  {'cached':<7}{'splits':<36}title")
        for r in rows:
            splits = ", ".join(f"{k} {v:,}" for k, v in r["splits"].items())
            print(f"{r['name']:<16}{r['classes']:>8}{r['size_mb']:>8.1f}MB  {'yes' if r['cached'] else '-':<7}"
                  f"{splits:<36}{r['title']}")
        print(f"Root: {data_root()} (VITKIT_DATA); server: {mirror() or 'the official URLs'} (VITKIT_DATA_URL). "
              "Use as --data NAME or data.train=NAME.")
        return 0
    if not args.names:
        raise UserError(f"vitkit data download: name at least one data set ({', '.join(NAMES)})")
    for n in args.names:
        if n not in DATASETS:
            from ..errors import unknown_name

            raise unknown_name("data set", n, NAMES, "`vitkit data list` lists them")
    rows = []
    for n in args.names:
        folder = ensure(n, progress=not args.no_progress, force=args.force)
        rows.append(_row(n))
        if not args.json:
            print(f"{n} -> {folder}")
    if args.json:
        print(json.dumps(rows, indent=1))
    return 0


def kept_on_stop(args: argparse.Namespace) -> str:
    """An interrupted download keeps its .part file (main: stop.report); an unpacking leaves nothing half-done."""
    from ..data.fetch import data_root

    return (f"the part downloaded so far is kept (a .part file under {data_root()}); the same command continues it"
            if args.action == "download" else "nothing was written")
