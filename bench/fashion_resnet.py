"""A larger foreign judge for gavel to audit: torchvision's ResNet-18 (its standard stem, the first convolution
taking one channel), trained on the judge's pool of gavel's own Fashion-MNIST split (so the attacker's pool stays
disjoint from its training data), saved as TorchScript. The saved module takes inputs in [0, 1] as gavel's pools
hold them and normalises inside, so `gavel run target=torchscript target.path=...` needs no mean or std.
Prints each epoch's loss and wall time, then the accuracy on the evaluation pool (Fashion-MNIST's test set), the
total wall time and where the model went.

    python bench/fashion_resnet.py [--out bench/results/fashion_resnet18.pt] [--epochs 6]
        [--root /usr/share/datasets/fashion-mnist] [--threads 2] [--smoke]

Audit it with:
    gavel run experiment=hiding_vs_ratelimit target=torchscript target.path=bench/results/fashion_resnet18.pt
        data=fashion_mnist data.root=/usr/share/datasets/fashion-mnist
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np
import torch
import torchvision
from fixtures import add_smoke_flag
from torch import nn

from gavel.targets.data.digits import digits_arrays
from gavel.targets.datasets import resize

ROOT = "/usr/share/datasets/fashion-mnist"
OUT = Path(__file__).resolve().parent / "results" / "fashion_resnet18.pt"


class Normalised(nn.Module):
    """`net` on (x - mean) / std: the judge's contract is inputs in [0, 1]."""

    def __init__(self, net: nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.net = net
        self.register_buffer("mean", torch.tensor(mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(std, dtype=torch.float32))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std)


def resnet18(mean: float, std: float) -> Normalised:
    """torchvision's ResNet-18 for 1x28x28 images: only the first convolution changes (one input channel, the
    same 7x7 stride-2 shape), so the standard stem shrinks 28x28 to 7x7 before the first block and it stays
    cheap on a CPU."""
    net = torchvision.models.resnet18(weights=None, num_classes=10)
    net.conv1 = nn.Conv2d(1, 64, kernel_size=7, stride=2, padding=3, bias=False)
    return Normalised(net, mean, std)


def save_traced(model: nn.Module, example: np.ndarray, out: Path) -> None:
    """`model` in eval mode, traced on `example` and saved as TorchScript at `out`."""
    model.eval()
    # torch 2.9+ calls TorchScript deprecated; it is still the format gavel's `target=torchscript` loads
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
    with torch.no_grad():
        traced = torch.jit.trace(model, torch.from_numpy(np.ascontiguousarray(example[:2])))
    out.parent.mkdir(parents=True, exist_ok=True)
    torch.jit.save(traced, str(out))


def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 512) -> float:
    model.eval()
    with torch.no_grad():
        labels = [model(torch.from_numpy(x[i : i + batch_size])).argmax(1) for i in range(0, len(x), batch_size)]
    return float((torch.cat(labels).numpy() == y).mean())


def train(
    model: nn.Module, x: np.ndarray, y: np.ndarray, *, epochs: int, steps: int | None = None, seed: int = 0
) -> None:
    """Adam, batches of 128, a cosine learning rate from 1e-3; `steps`: stop after that many batches (smoke)."""
    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-3, weight_decay=5e-4)
    batch_size = 128
    total = epochs * -(-len(y) // batch_size) if steps is None else steps
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, T_max=total)
    x_all, y_all = torch.from_numpy(x), torch.from_numpy(y)
    done = 0
    for epoch in range(epochs):
        model.train()
        start, losses = time.perf_counter(), []
        for batch in torch.randperm(len(y), generator=generator).split(batch_size):
            loss = nn.functional.cross_entropy(model(x_all[batch]), y_all[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()
            schedule.step()
            losses.append(loss.item())
            done += 1
            if done == total:
                break
        print(f"  epoch {epoch + 1}/{epochs}: loss {np.mean(losses):.4f}, {time.perf_counter() - start:.0f} s")
        if done == total:
            return


def smoke_pools() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The embedded digits, resized to 28x28: no Fashion-MNIST files needed."""
    x, y = digits_arrays()
    x = resize(x, (1, 28, 28))
    return x[:256], y[:256], x[256:512], y[256:512]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--root", default=ROOT, help="Fashion-MNIST's four IDX files or torchvision's folder")
    parser.add_argument(
        "--threads", type=int, default=int(os.environ.get("GAVEL_THREADS", 2)), help="default: GAVEL_THREADS, else 2"
    )
    parser.add_argument("--seed", type=int, default=0)
    add_smoke_flag(parser, "two steps on 256 digits resized to 28x28, saved to a temporary file")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    start = time.perf_counter()
    if args.smoke:
        x, y, x_eval, y_eval = smoke_pools()
        name, steps, args.epochs = "digits resized to 28x28 (smoke)", 2, 1
    else:
        from gavel.targets.data.fashion_mnist import FashionMNIST

        data = FashionMNIST(root=args.root).load()
        x, y, x_eval, y_eval = data.judge.x, data.judge.y, data.eval.x, data.eval.y
        name, steps = f"Fashion-MNIST's judge pool ({args.root})", None
    mean, std = float(x.mean()), float(x.std())
    print(
        f"ResNet-18 on {len(y)} examples of {name}, {args.epochs} epoch(s), seed {args.seed}, "
        f"{torch.get_num_threads()} torch thread(s); normalised inside by mean {mean:.4f}, std {std:.4f}"
    )
    model = resnet18(mean, std)
    train(model, x, y, epochs=args.epochs, steps=steps, seed=args.seed)
    acc = accuracy(model, x_eval, y_eval)
    with tempfile.TemporaryDirectory(prefix="gavel-bench-smoke-") as tmp:
        out = Path(tmp) / "fashion_resnet18.pt" if args.smoke else args.out
        save_traced(model, x, out)
        size = out.stat().st_size / 2**20
    print(f"accuracy on the {len(y_eval)} evaluation examples: {acc:.4f}")
    print(f"wall time {time.perf_counter() - start:.0f} s; TorchScript saved to {out} ({size:.1f} MiB)")


if __name__ == "__main__":
    main()
