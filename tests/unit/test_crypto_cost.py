"""bench/crypto_cost.py's own arithmetic, without the crypto packages: the activation swap, the network read as the
affine maps CKKS evaluates (and the bias folded into them), the CKKS parameters, agreement, the printed figures, and
the one-line refusal without the optional extra."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from gavel.targets.architectures.cnn import SmallCNN
from gavel.targets.architectures.mlp import MLP

BENCH = Path(__file__).resolve().parents[2] / "bench" / "crypto_cost.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("crypto_cost", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # its dataclass looks itself up there
    try:
        spec.loader.exec_module(module)
        yield module
    finally:
        del sys.modules[spec.name]


def test_the_activation_is_swapped_and_max_pool_becomes_an_average(bench):
    net = SmallCNN(width=2).build((1, 8, 8), 10)
    for name, kind in (("relu", nn.ReLU), ("square", bench.square_class()), ("identity", nn.Identity)):
        swapped = bench.with_activation(net, name)
        assert sum(isinstance(m, kind) for m in swapped) == sum(isinstance(m, nn.ReLU) for m in net) == 4
        assert not any(isinstance(m, nn.MaxPool2d) for m in swapped)
        assert any(isinstance(m, nn.AvgPool2d) for m in swapped)
    assert any(isinstance(m, nn.MaxPool2d) for m in bench.with_activation(net, "relu", max_pool=True))
    x = torch.rand(3, 1, 8, 8)
    assert torch.equal(bench.square_class()()(x), x * x)


@pytest.mark.parametrize("which", ["mlp", "cnn", "lenet"])
def test_the_affine_stages_compute_the_network(bench, which):
    torch.manual_seed(0)
    if which == "lenet":
        net, shape = bench.lenet("square"), (1, 28, 28)
    else:
        shape = (1, 8, 8)
        arch = MLP(hidden=(16, 8)) if which == "mlp" else SmallCNN(width=2)
        net = bench.with_activation(arch.build(shape, 10), "square")
    net.eval()
    x = np.random.default_rng(0).random((4, *shape), dtype=np.float32)
    stages = bench.affine_stages(net, shape)
    assert [act for _, _, act in stages][-1] == ""
    assert sum(act == "square" for _, _, act in stages) == sum(isinstance(m, bench.square_class()) for m in net)
    h = x.reshape(len(x), -1).astype(np.float64)
    for matrix, bias, act in stages:
        h = h @ matrix + bias
        h = h * h if act == "square" else h
    np.testing.assert_allclose(h, bench.logits(net, x), rtol=1e-4, atol=1e-5)
    # the bias folded into one product on [x, 1], the 1 carried to the next stage
    h = np.hstack([x.reshape(len(x), -1), np.ones((len(x), 1))]).astype(np.float64)
    for i, (matrix, bias, act) in enumerate(stages):
        h = h @ np.array(bench.with_bias_row(matrix, bias, last=i == len(stages) - 1))
        h = h * h if act == "square" else h
    np.testing.assert_allclose(h, bench.logits(net, x), rtol=1e-4, atol=1e-5)


def test_relu_and_max_pool_are_refused_under_ckks(bench):
    net = SmallCNN(width=2).build((1, 8, 8), 10)
    with pytest.raises(ValueError, match="not computable under CKKS"):
        bench.affine_stages(bench.with_activation(net, "relu"), (1, 8, 8))
    with pytest.raises(ValueError, match="MaxPool2d is not a polynomial"):
        bench.affine_stages(bench.with_activation(net, "square", max_pool=True), (1, 8, 8))


def test_ckks_parameters_take_the_smallest_secure_ring(bench):
    assert bench.ckks_parameters(3) == (8192, [60, 32, 32, 32, 60])
    assert bench.ckks_parameters(5) == (16384, [60, 40, 40, 40, 40, 40, 60])
    degree, bits = bench.ckks_parameters(9)
    assert degree == 16384 and len(bits) == 11 and set(bits[1:-1]) == {35} and sum(bits) <= 438
    assert bench.ckks_parameters(20)[0] == 32768
    with pytest.raises(ValueError):
        bench.ckks_parameters(40)


def test_operations_are_counted(bench):
    net = MLP(hidden=(16,)).build((1, 8, 8), 10)
    assert bench.count_operations(net, (1, 8, 8)) == (64 * 16 + 16 * 10, 16)
    assert bench.count_operations(bench.with_activation(net, "identity"), (1, 8, 8)) == (64 * 16 + 16 * 10, 0)
    assert bench.count_operations(bench.lenet("relu"), (1, 28, 28))[1] == 6 * 24 * 24 + 16 * 8 * 8 + 120 + 84


def test_agreement_and_figures(bench):
    reference = np.array([[1.0, 2.0], [3.0, 0.0]])
    assert bench.agreement(reference, [[1.1, 2.0], [0.0, 3.5]]) == (1, 3.5)
    assert bench.human_bytes(2_300_000_000) == "2.3 GB" and bench.human_bytes(66_823) == "66.8 kB"
    assert bench.seconds(None) == "-" and bench.seconds(84.2) == "84.2"
    rows = [
        dict(model="m", method="ezkl", activation=act, rows=rows, logrows=k, prove_s=s, prove_cpu_s=s, macs=1000,
             nonlinear=n)
        for act, rows, k, s, n in (("identity", 1000, 10, 1.0, 0), ("relu", 3000, 12, 2.0, 10))
    ]  # fmt: skip
    rows.append(dict(model="m", method="ckks", activation="square", squares_s=0.01, products_s=1.0, infer_s=1.01,
                     macs=1000, nonlinear=10, degree=8192, primes=[60, 32, 60]))  # fmt: skip
    assert bench.nonlinear_price(rows) == [
        "  m ezkl relu: 200.00 rows per element / 1.00 per MAC = 200.0x; whole network 3.00x the rows (2^12 vs 2^10),"
        " 2.00x the proving CPU time",
        "  m ckks square: 1.00e-03 s per element / 1.00e-03 s per MAC = 1.00x",
    ]
    assert "1000 queries: 1.1 CPU-h" in bench.serving_cost(rows, 2)[0]


def test_without_the_extra_it_says_what_to_install(bench, monkeypatch, capsys):
    monkeypatch.setattr(bench, "missing_packages", lambda: ["ezkl"])
    monkeypatch.setattr("sys.argv", ["crypto_cost.py"])
    assert bench.main() == 2
    out = capsys.readouterr().out
    assert out.count("\n") == 1 and "pip install -e '.[crypto]'" in out
