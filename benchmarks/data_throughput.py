"""Decode + augment throughput of the training pipeline on the Imagenette shards (not a test).

Reads ``--data`` (default: the named data set ``imagenette-160``, fetched once into ``$VITKIT_DATA``; the
README's numbers were measured on the project's 112 px JPEG WebDataset copy, ``--data
'wds:../shared/data/imagenette/train-{000000..000004}.tar?num_classes=10'``) with ``vitkit.data.build_loader`` as
training does: Inception
crop resized to 224, flip, normalisation (optionally RandAugment), and prints images/s for each worker count.
Per-worker throughput = images/s / workers (0 workers = everything in the main process).

    python benchmarks/data_throughput.py                      # 0, 1 and 2 workers, 1024 images each
    python benchmarks/data_throughput.py --workers 0 2 --images 2048 --randaugment 2 15
"""

from __future__ import annotations

import argparse
import os
import time

from tqdm import tqdm

from vitkit.data import build_loader

DEFAULT = "imagenette-160"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", "--spec", dest="spec", default=DEFAULT, help="data spec (default: %(default)s)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--images", type=int, default=1024, help="images timed per setting")
    ap.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--randaugment", type=int, nargs=2, default=None, metavar=("NUM_OPS", "MAGNITUDE"))
    ap.add_argument("--eval", action="store_true", help="time the evaluation pipeline (plain resize) instead")
    args = ap.parse_args()
    print(f"spec={args.spec} size={args.image_size} batch={args.batch_size} randaugment={args.randaugment} "
          f"{'eval' if args.eval else 'train'} cpus={os.cpu_count()}")
    for nw in args.workers:
        loader = build_loader(args.spec, train=not args.eval, image_size=args.image_size, batch_size=args.batch_size,
                              num_workers=nw, streams=max(1, nw), shuffle_buffer=500, limit=args.images + 64,
                              randaugment=tuple(args.randaugment) if args.randaugment else None)
        it = iter(loader)
        next(it)  # start-up (worker fork, shuffle-buffer fill) is not throughput
        n, t0 = 0, time.perf_counter()
        with tqdm(total=args.images, desc=f"{nw} workers", unit="img", leave=False) as bar:
            for _, y in it:
                n += len(y)
                bar.update(len(y))
                if n >= args.images:
                    break
        dt = time.perf_counter() - t0
        rate = n / dt
        per = rate / max(1, nw)
        print(f"workers={nw}: {n} images in {dt:.2f} s = {rate:.0f} images/s ({per:.0f} images/s per "
              f"{'worker' if nw else 'main process'}); skipped={loader.stats.skipped_total}")


if __name__ == "__main__":
    main()
