"""Regenerate minicaps/data/bundled/mnist-sample.npz from the original MNIST idx files.

    python examples/make_bundled_sample.py /path/to/mnist [--train 5000] [--test 1000]

Takes the first N training and first M test images (not a shuffled subset: "the first 5,000"
is easy to state and to check against the originals) and stores them with the class names.
"""
import argparse
from pathlib import Path

import numpy as np

from minicaps.data import Dataset, read_idx, save_npz
from minicaps.data.bundled import BUNDLED
from minicaps.data.idx import find_idx


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("mnist", type=Path, help="folder with the four MNIST idx files")
    ap.add_argument("--train", type=int, default=5000, help="first N training images")
    ap.add_argument("--test", type=int, default=1000, help="first N test images")
    ap.add_argument("--out", type=Path, default=BUNDLED, help="npz to write")
    args = ap.parse_args()
    arrays = {}
    for split, n in (("train", args.train), ("test", args.test)):
        x = read_idx(find_idx(args.mnist, split, "images"))[:n, None]  # (n, 1, 28, 28)
        y = read_idx(find_idx(args.mnist, split, "labels"))[:n].astype(np.int64)
        arrays[split] = (np.ascontiguousarray(x), y)
    ds = Dataset(
        name="bundled-mnist", classes=[str(d) for d in range(10)],
        train_x=arrays["train"][0], train_y=arrays["train"][1],
        test_x=arrays["test"][0], test_y=arrays["test"][1],
    )
    save_npz(args.out, ds)
    print(f"wrote {args.out} ({args.out.stat().st_size / 1e6:.2f} MB): {ds.summary()}")


if __name__ == "__main__":
    main()
