"""Speed of the query attacks on a foreign TorchScript judge, as bench/query_engine.py measures it on the digits
CNN: an attack's wall time divided by the bare judge's time for the same number of rows at batch 256. The judge is
loaded as `target=torchscript` loads it (`TorchScriptJudge`: checked against the data, behind its input contract)
and served as the Oracle serves it (channels-last where it convolves and its function stays the same), so the
ratio is the overhead of gavel's batched attack loop, the Oracle and the client over the queries themselves. On a
judge whose forward costs more than the digits CNN's, that overhead weighs less, but a batch that is not full costs
more per row: Square asks one row per example still in play, so with fewer than 256 examples its batches never fill, and
they shrink as examples fall; the ratio counts that too. Default judge: the Fashion-MNIST ResNet-18 that
bench/fashion_resnet.py trains, on correctly classified examples of Fashion-MNIST's test set.
Printed, never asserted.

    python bench/foreign_judge.py [--model bench/results/fashion_resnet18.pt] [--root /usr/share/datasets/fashion-mnist]
        [--n-examples 100] [--budget 1000] [--threads 1] [--smoke]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch
from fashion_resnet import OUT, ROOT, resnet18, save_traced, smoke_pools
from fixtures import add_smoke_flag
from query_engine import bare_seconds, print_gavel_ratios

from gavel.targets.data.base import DIGIT_NAMES
from gavel.targets.datasets import Dataset, Pool
from gavel.targets.judges.torchscript import TorchScriptJudge
from gavel.targets.training import predict_labels


def load_served(path: Path, data: Dataset) -> torch.nn.Module:
    """The TorchScript judge at `path` as `target=torchscript` gives it to the Oracle (its memory layout chosen)."""
    return TorchScriptJudge(path=str(path)).prepare(data, "cpu").model


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, default=OUT, help="a TorchScript judge taking 1x28x28 inputs in [0, 1]")
    parser.add_argument("--root", default=ROOT, help="Fashion-MNIST's four IDX files or torchvision's folder")
    parser.add_argument("--n-examples", type=int, default=100)
    parser.add_argument("--budget", type=int, default=1000)
    parser.add_argument("--threads", type=int, default=1)
    add_smoke_flag(parser, "an untrained ResNet-18 on digits resized to 28x28, 4 examples, budget 20")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="gavel-bench-smoke-") as tmp:
        if args.smoke:
            args.n_examples, args.budget = 4, 20
            torch.manual_seed(0)
            _, _, x_eval, y_eval = smoke_pools()
            pool = Pool(x_eval, y_eval)
            data = Dataset("digits resized to 28x28 (smoke)", pool, pool, judge=None, class_names=DIGIT_NAMES)
            args.model = Path(tmp) / "resnet18.pt"
            save_traced(resnet18(0.5, 0.5), x_eval, args.model)
        else:
            from gavel.targets.data.fashion_mnist import FashionMNIST

            data = FashionMNIST(root=args.root).load()
        judge = load_served(args.model, data)
    with torch.no_grad():
        right = predict_labels(judge, data.eval.x) == data.eval.y
    x, y = data.eval.x[right][: args.n_examples], data.eval.y[right][: args.n_examples]
    batches = 1 if args.smoke else 8
    batch = bare_seconds(judge, x, 256 * batches) / batches
    parameters = sum(parameter.numel() for parameter in judge.parameters())
    print(
        f"query attacks on {len(x)} {data.name} examples, budget {args.budget}, {torch.get_num_threads()} torch "
        f"thread(s), judge {args.model.name} ({parameters / 1e6:.1f} M parameters, clean accuracy {right.mean():.3f}, "
        f"{batch * 1e3:.1f} ms per batch of 256): attack time / bare judge time for the same rows at batch 256"
    )
    print_gavel_ratios(judge, data, x, y, args.budget)


if __name__ == "__main__":
    main()
