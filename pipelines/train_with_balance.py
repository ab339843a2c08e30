"""Example: balance a long-tailed dataset with ``augment``, then train a classifier on the result.

    python pipelines/train_with_balance.py --out outputs/example                 # mnist_lt, default job
    python pipelines/train_with_balance.py --out outputs/example experiment=smoke   # a 1-minute try

1. ``augment.balance`` trains the generator on the train split, tops up the rare classes with
   filtered synthetic images and returns a ``DatasetDict``: ``train`` (real + synthetic rows, with
   ``is_synthetic``, ``seed``, ``confidence``, ``generator``) and the untouched ``test`` split.
2. The long-tail benchmark's classifier recipe (pipelines/long_tail_benchmark.py) trains on
   ``train`` and is scored on ``test``.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import numpy as np
import torch

if __package__ in (None, ""):  # run as a script: make the repository root importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from augment import balance  # noqa: E402
from augment.images import dataset_to_tensors, generator_mode  # noqa: E402
from pipelines.long_tail_benchmark import ClassifierRecipe, evaluate, fit_classifier, predict  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description="Balance a dataset with augment, then train a classifier on it.")
    parser.add_argument("--out", default="outputs/train_with_balance", help="the toolkit's output.dir")
    parser.add_argument("--steps", type=int, default=ClassifierRecipe.steps, help="classifier training steps")
    parser.add_argument("--seed", type=int, default=0, help="classifier seed (weights, batches, augmentation)")
    parser.add_argument("overrides", nargs="*", help="toolkit overrides, e.g. experiment=smoke targets=minority")
    return parser.parse_args(argv)


def main(argv=None) -> dict[str, float]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")

    # 1. Balance. overwrite=true: a rerun replaces the dataset but reuses the saved generator.
    balanced = balance(overrides=[f"output.dir={args.out}", "output.overwrite=true", *args.overrides])
    if "test" not in balanced:
        raise SystemExit("the balanced dataset has no test split; use a source with one and output.include_test=true")
    train, test = balanced["train"], balanced["test"]
    class_names = train.features["label"].names
    is_synthetic = np.asarray(train["is_synthetic"], dtype=bool)

    # 2. Decode every image once, at the source size and mode (the synthetic rows are stored there too).
    first = test[0]["image"]
    mode, side = generator_mode(first.mode), first.size[0]
    x_train, y_train = dataset_to_tensors(train, mode, side, "resize")  # (N, C, side, side), (N,)
    x_test, y_test = dataset_to_tensors(test, mode, side, "resize")

    # 3. Train the benchmark's recipe on real + synthetic rows and score it on the test split.
    recipe = ClassifierRecipe(steps=args.steps)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    net = fit_classifier(x_train, y_train, class_names, recipe, mode=mode, seed=args.seed, device=device)
    real_counts = np.bincount(y_train.numpy()[~is_synthetic], minlength=len(class_names))  # rare-3 by real count
    metrics = evaluate(y_test.numpy(), predict(net, x_test, recipe.eval_batch_size, device), real_counts.tolist())

    print(f"trained on {len(train)} images ({int(is_synthetic.sum())} synthetic), tested on {len(test)}")
    for name, value in metrics.items():
        print(f"{name}: {value:.4f}")
    return metrics


if __name__ == "__main__":
    main()
