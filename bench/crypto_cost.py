"""The price of cryptographic hiding: a judge's inference proved in zero knowledge (ezkl, a Halo2 SNARK) and run
under homomorphic encryption (TenSEAL, CKKS), per query, next to the plain torch forward pass.

For each model (the digits MLP and the digits CNN, gavel's own architectures on 8x8 digits, and a LeNet-sized
28x28 CNN on Fashion-MNIST) and each activation (ReLU, x^2, none), the same network is trained for a few epochs and:
- ezkl: ONNX export, settings, calibration, circuit, a locally generated SRS, key generation, then per query a
  witness, a proof and its verification: times, key and proof sizes, peak memory, the circuit's rows;
- CKKS: keys, then per query encryption, encrypted inference and decryption: times, key and ciphertext sizes, peak
  memory. ReLU is not a polynomial: CKKS computes only additions and multiplications, so no ReLU row runs under it.
Both: the verdict's agreement and the largest logit error against torch (same weights, same activation), and the
ratio to the plain forward pass (batch 1). Each cryptographic step runs in a child process of its own: its peak
resident memory is that process's (VmHWM), torch not loaded. Beside them: the price of a non-linear element over a
multiply-accumulate (the "~200x" claim), and what serving a rate-limited attacker's budget would cost under proof,
in CPU-hours. docs/crypto-cost.md has the figures.

Printed, never asserted. Needs the optional extra: pip install -e '.[crypto]'. Threads: GAVEL_THREADS, else 2 (torch,
TenSEAL and ezkl's rayon pool alike).
    python bench/crypto_cost.py [--models digits_mlp,digits_cnn,lenet] [--methods ezkl,ckks] [--out results.json]
        [--fashion-root /usr/share/datasets/fashion-mnist] [--proofs N] [--he-queries N] [--agree N] [--smoke]
    python bench/crypto_cost.py --show results.json   # a saved run's tables again
"""

from __future__ import annotations

import argparse
import copy
import functools
import importlib.util
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

import numpy as np

CRYPTO_PACKAGES = ("ezkl", "tenseal")
ACTIVATIONS = ("relu", "square", "identity")
LINEAR_MODULES = ("Conv2d", "Linear", "AvgPool2d", "AdaptiveAvgPool2d", "Flatten")
ACTIVATION_MODULES = ("ReLU", "Square", "Identity")
CKKS_SECURE_BITS = ((8192, 218), (16384, 438), (32768, 881))
"""Ring degree and the largest coefficient modulus (bits) at 128-bit security (SEAL's table, HE standard)."""
CKKS_OUTER_BITS, CKKS_SCALE_BITS = 60, (30, 40)
"""The first prime (what the result keeps) and the key-switching prime: 60 bits; a prime of 30 to 40 bits per level,
the scale 2^bits (the largest the ring allows: the precision)."""
STEPS = ("setup", "prove", "verify")
"""ezkl's steps, each in a child process of its own."""
BUDGETS = (10, 100, 1000)
DEMO_EXAMPLES = 200
"""The headline demo's evaluation examples (`make demo`, README.md)."""
SRS_NOTE = (
    "note: the SRS (ezkl's KZG parameters) is generated on this machine by ezkl.gen_srs: parameters made locally are "
    "for measurement only, since whoever makes them knows the trapdoor and could forge proofs; a deployment takes a "
    "public ceremony's (ezkl.get_srs, which downloads them)"
)
CKKS_RELU = "ReLU is not computable under CKKS (additions and multiplications only)"


def missing_packages() -> list[str]:
    return [name for name in CRYPTO_PACKAGES if importlib.util.find_spec(name) is None]


def threads() -> int:
    return int(os.environ.get("GAVEL_THREADS", "2"))


# --------------------------------------------------------------------------------------------------- the networks


@functools.cache
def square_class():
    """x * x as a module (built on first use, so that the child processes never import torch)."""
    from torch import nn

    class Square(nn.Module):
        """x^2: the polynomial activation CKKS evaluates (one multiplication, one level)."""

        def forward(self, x):
            return x * x

    return Square


def activation(name: str):
    from torch import nn

    return {"relu": nn.ReLU, "square": square_class(), "identity": nn.Identity}[name]()


def with_activation(net, name: str, *, max_pool: bool = False):
    """`net` (an nn.Sequential, as gavel's architectures build it) with each ReLU replaced by the activation `name`,
    and each max-pool by an average pool of the same size unless `max_pool` (max is not a polynomial: so that the
    three activations' rows differ in the activation only)."""
    from torch import nn

    layers = []
    for module in net:
        if isinstance(module, nn.ReLU):
            module = activation(name)
        elif isinstance(module, nn.MaxPool2d) and not max_pool:
            module = nn.AvgPool2d(module.kernel_size, module.stride)
        layers.append(module)
    return nn.Sequential(*layers)


def lenet(activation_name: str, n_classes: int = 10):
    """LeNet-5 on 28x28 without padding (5x5 convolutions of 6 and 16 channels, 2x2 average pools, dense 256 -> 120
    -> 84 -> classes): the LeNet-sized 28x28 CNN."""
    from torch import nn

    return nn.Sequential(
        nn.Conv2d(1, 6, 5),
        activation(activation_name),
        nn.AvgPool2d(2),
        nn.Conv2d(6, 16, 5),
        activation(activation_name),
        nn.AvgPool2d(2),
        nn.Flatten(),
        nn.Linear(256, 120),
        activation(activation_name),
        nn.Linear(120, 84),
        activation(activation_name),
        nn.Linear(84, n_classes),
    )


def count_operations(net, input_shape: tuple[int, ...]) -> tuple[int, int]:
    """(multiply-accumulates of the convolutions and dense layers, elements through a non-linear module: an
    activation other than the identity, or a max-pool's inputs) for one input."""
    import torch
    from torch import nn

    counts = {"macs": 0, "nonlinear": 0}

    def hook(module, inputs, output):
        if isinstance(module, nn.Conv2d):
            per_output = module.in_channels // module.groups * module.kernel_size[0] * module.kernel_size[1]
            counts["macs"] += output.numel() * per_output
        elif isinstance(module, nn.Linear):
            counts["macs"] += module.in_features * module.out_features
        elif isinstance(module, nn.MaxPool2d):
            counts["nonlinear"] += inputs[0].numel()
        elif type(module).__name__ in ("ReLU", "Square"):
            counts["nonlinear"] += output.numel()

    handles = [module.register_forward_hook(hook) for module in net.modules() if module is not net]
    with torch.no_grad():
        net(torch.zeros(1, *input_shape))
    for handle in handles:
        handle.remove()
    return counts["macs"], counts["nonlinear"]


def affine_stages(net, input_shape: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray, str]]:
    """The network as the affine maps between its activations, for CKKS's vector-matrix product: each run of linear
    modules (convolutions with their padding, pools, flatten, dense) becomes one matrix [inputs x outputs] and a bias,
    read off the modules themselves (their response to each unit input), followed by the activation after it
    ("square", "identity", or "" after the last). The identity keeps its place: the linear network is evaluated
    layer by layer like the others, so that the rows differ in the squares only."""
    import torch
    from torch import nn

    stages, group, shape = [], [], tuple(input_shape)
    for module in list(net) + [None]:
        name = type(module).__name__
        if module is not None and name in LINEAR_MODULES:
            group.append(module)
            continue
        if module is not None and name not in ACTIVATION_MODULES:
            raise ValueError(f"{name} is not a polynomial: CKKS cannot evaluate it")
        if module is not None and name == "ReLU":
            raise ValueError(CKKS_RELU)
        linear = copy.deepcopy(nn.Sequential(*group)).double().eval()
        n_in = int(np.prod(shape))
        with torch.no_grad():
            bias = linear(torch.zeros(1, *shape, dtype=torch.float64))
            matrix = linear(torch.eye(n_in, dtype=torch.float64).reshape(n_in, *shape)) - bias
        stages.append((matrix.reshape(n_in, -1).numpy(), bias.reshape(-1).numpy(), name.lower() if module else ""))
        shape, group = tuple(bias.shape[1:]), []
    return stages


def ckks_parameters(depth: int) -> tuple[int, list[int]]:
    """The smallest ring degree at 128-bit security with room for `depth` multiplications at a scale of at least
    2^30, and its primes: a level's prime as large as that ring allows, up to 40 bits."""
    low, high = CKKS_SCALE_BITS
    for degree, limit in CKKS_SECURE_BITS:
        scale = min(high, (limit - 2 * CKKS_OUTER_BITS) // depth)
        if scale >= low:
            return degree, [CKKS_OUTER_BITS] + [scale] * depth + [CKKS_OUTER_BITS]
    raise ValueError(f"a depth of {depth} needs more than {CKKS_SECURE_BITS[-1][1]} bits of modulus")


def train(net, x: np.ndarray, y: np.ndarray, *, epochs: int, seed: int, lr: float = 1e-3, batch: int = 64) -> None:
    """Adam on cross-entropy; gradients clipped at norm 1 (a stack of squares is steep early on)."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    optimiser = torch.optim.Adam(net.parameters(), lr=lr)
    xs, ys = torch.from_numpy(x), torch.from_numpy(y)
    net.train()
    for _ in range(epochs):
        for index in torch.randperm(len(ys), generator=generator).split(batch):
            optimiser.zero_grad()
            loss = torch.nn.functional.cross_entropy(net(xs[index]), ys[index])
            loss.backward()
            torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
            optimiser.step()
    net.eval()


def logits(net, x: np.ndarray) -> np.ndarray:
    import torch

    with torch.no_grad():
        return net(torch.from_numpy(x)).numpy().astype(np.float64)


def forward_seconds(net, x: np.ndarray, repeats: int = 200) -> float:
    """The plain forward pass of one query (batch 1): the median over `repeats`, after a warm-up."""
    import torch

    one = torch.from_numpy(x[:1])
    times = []
    with torch.no_grad():
        for _ in range(20):
            net(one)
        for _ in range(repeats):
            start = time.perf_counter()
            net(one)
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def agreement(reference: np.ndarray, measured: np.ndarray) -> tuple[int, float]:
    """(queries whose verdict, the arg-max, is torch's; the largest absolute logit difference)."""
    reference, measured = np.asarray(reference, dtype=np.float64), np.asarray(measured, dtype=np.float64)
    return int((reference.argmax(1) == measured.argmax(1)).sum()), float(np.abs(reference - measured).max())


# ---------------------------------------------------------------------------------------- the child processes


def peak_rss_mb() -> float:
    """This process's peak resident memory (MiB): Linux's VmHWM, which starts afresh at exec (ru_maxrss carries
    the parent's peak into a child); ru_maxrss elsewhere."""
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # kilobytes on Linux, bytes on macOS: a bound


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def ezkl_setup(work: Path, srs_dir: str) -> dict:
    """Settings (input public, output public, weights fixed in the circuit: the verifying key commits to them),
    calibration on a few images, the circuit, the SRS for its size (made once per size), the keys."""
    import ezkl

    result, started = {}, time.perf_counter()
    run_args = ezkl.PyRunArgs()
    run_args.input_visibility, run_args.output_visibility, run_args.param_visibility = "public", "public", "fixed"
    ezkl.gen_settings(str(work / "model.onnx"), str(work / "settings.json"), py_run_args=run_args)
    ezkl.calibrate_settings(
        str(work / "calibration.json"), str(work / "model.onnx"), str(work / "settings.json"), "resources"
    )
    ezkl.compile_circuit(str(work / "model.onnx"), str(work / "circuit.ezkl"), str(work / "settings.json"))
    result["circuit_s"] = time.perf_counter() - started
    settings = json.loads((work / "settings.json").read_text())
    logrows = settings["run_args"]["logrows"]
    srs = Path(srs_dir) / f"kzg{logrows}.srs"
    result["srs_s"] = None
    if not srs.exists():
        started = time.perf_counter()
        ezkl.gen_srs(str(srs), logrows)
        result["srs_s"] = time.perf_counter() - started
    started = time.perf_counter()
    ezkl.setup(str(work / "circuit.ezkl"), str(work / "vk.key"), str(work / "pk.key"), str(srs))
    result["setup_s"] = time.perf_counter() - started
    run_args = settings["run_args"]
    result.update(
        logrows=logrows,
        rows=settings["num_rows"],
        input_scale=run_args["input_scale"],
        param_scale=run_args["param_scale"],
        srs=str(srs),
        pk_bytes=(work / "pk.key").stat().st_size,
        vk_bytes=(work / "vk.key").stat().st_size,
    )
    return result


def ezkl_prove(work: Path, srs: str, n_inputs: int, n_proofs: int) -> dict:
    """A witness (the circuit's own forward pass) for each input, a proof for the first `n_proofs`."""
    import ezkl

    outputs, witness_s, prove_s, prove_cpu_s = [], [], [], []
    for i in range(n_inputs):
        witness = work / f"witness{i}.json"
        started = time.perf_counter()
        ezkl.gen_witness(str(work / f"input{i}.json"), str(work / "circuit.ezkl"), str(witness))
        witness_s.append(time.perf_counter() - started)
        rescaled = json.loads(witness.read_text())["pretty_elements"]["rescaled_outputs"][0]
        outputs.append([float(value) for value in rescaled])
        if i < n_proofs:
            started, cpu = time.perf_counter(), cpu_seconds()
            proof = str(work / f"proof{i}.json")
            ezkl.prove(str(witness), str(work / "circuit.ezkl"), str(work / "pk.key"), proof, srs)
            prove_s.append(time.perf_counter() - started)
            prove_cpu_s.append(cpu_seconds() - cpu)
    proof = json.loads((work / "proof0.json").read_text())
    return dict(
        outputs=outputs,
        witness_s=statistics.median(witness_s),
        prove_s=statistics.median(prove_s),
        prove_cpu_s=statistics.median(prove_cpu_s),
        proof_bytes=len(proof["proof"]),
        proof_file_bytes=(work / "proof0.json").stat().st_size,
    )


def ezkl_verify(work: Path, srs: str, n_proofs: int) -> dict:
    import ezkl

    verify_s, verified = [], 0
    for i in range(n_proofs):
        started = time.perf_counter()
        proof = str(work / f"proof{i}.json")
        verified += bool(ezkl.verify(proof, str(work / "settings.json"), str(work / "vk.key"), srs))
        verify_s.append(time.perf_counter() - started)
    return dict(verify_s=statistics.median(verify_s), verified=verified)


def with_bias_row(matrix: np.ndarray, bias: np.ndarray, *, last: bool) -> list[list[float]]:
    """The affine map x -> x A + b as one matrix product on [x, 1]: the bias as the matrix's last row, and (but for
    the last stage) a column that carries the 1 on (1 squared is 1). Adding the bias as a plain vector after
    TenSEAL's product spoils the next product (its replicated layout does not hold for the sum), measured here at
    0.23 on logits of about 6."""
    augmented = np.vstack([matrix, bias[None, :]])
    if not last:
        one = np.zeros((len(augmented), 1))
        one[-1] = 1.0
        augmented = np.hstack([augmented, one])
    return augmented.tolist()


def ckks_run(work: Path, n_threads: int) -> dict:
    """Keys, then per query: encryption (the client), the encrypted inference (the server: a vector-matrix product
    per stage, a square after it where the network has one), decryption (the client)."""
    import tenseal as ts

    stored = np.load(work / "stages.npz")
    queries = stored["queries"]
    n_stages = int(stored["n_stages"])
    stages = [
        (with_bias_row(stored[f"matrix{i}"], stored[f"bias{i}"], last=i == n_stages - 1), str(stored[f"activation{i}"]))
        for i in range(n_stages)
    ]
    depth = len(stages) + sum(act == "square" for _, act in stages)
    degree, bits = ckks_parameters(depth)
    started = time.perf_counter()
    context = ts.context(ts.SCHEME_TYPE.CKKS, degree, coeff_mod_bit_sizes=bits, n_threads=n_threads)
    context.global_scale = 2 ** bits[1]
    context.generate_galois_keys()
    context.generate_relin_keys()
    keygen_s = time.perf_counter() - started
    public = context.serialize(save_public_key=True, save_secret_key=False, save_galois_keys=True, save_relin_keys=True)
    times = {"encrypt_s": [], "infer_s": [], "decrypt_s": [], "products_s": [], "squares_s": [], "infer_cpu_s": []}
    outputs, sizes = [], {}
    for x in queries:
        started = time.perf_counter()
        encrypted = ts.ckks_vector(context, x.reshape(-1).tolist() + [1.0])
        times["encrypt_s"].append(time.perf_counter() - started)
        sizes["ciphertext_in_bytes"] = len(encrypted.serialize())
        products, squares, cpu = 0.0, 0.0, cpu_seconds()
        for matrix, act in stages:
            started = time.perf_counter()
            encrypted = encrypted.mm(matrix)
            products += time.perf_counter() - started
            if act == "square":
                started = time.perf_counter()
                encrypted.square_()
                squares += time.perf_counter() - started
        times["infer_s"].append(products + squares)
        times["infer_cpu_s"].append(cpu_seconds() - cpu)
        times["products_s"].append(products)
        times["squares_s"].append(squares)
        sizes["ciphertext_out_bytes"] = len(encrypted.serialize())
        started = time.perf_counter()
        outputs.append(encrypted.decrypt())
        times["decrypt_s"].append(time.perf_counter() - started)
    return dict(
        outputs=outputs,
        degree=degree,
        primes=bits,
        depth=depth,
        keygen_s=keygen_s,
        public_context_bytes=len(public),
        **sizes,
        **{key: statistics.median(values) for key, values in times.items()},
    )


def worker(stage: str, work: Path, arguments: dict) -> None:
    """One cryptographic step in this (child) process; its figures and peak memory to `work`/`stage`.json."""
    baseline = peak_rss_mb()
    steps = {"ezkl_setup": ezkl_setup, "ezkl_prove": ezkl_prove, "ezkl_verify": ezkl_verify, "ckks": ckks_run}
    result = steps[stage](work, **arguments)
    result.update(peak_rss_mb=peak_rss_mb(), baseline_rss_mb=baseline)
    (work / f"{stage}.json").write_text(json.dumps(result))


def in_child(stage: str, work: Path, **arguments) -> dict:
    """`worker(stage, ...)` in a fresh Python (torch not loaded); its output to a log, shown if it fails."""
    environment = dict(os.environ, RAYON_NUM_THREADS=str(threads()), OMP_NUM_THREADS=str(threads()))
    log = work / f"{stage}.log"
    with log.open("w") as out:
        code = subprocess.call(
            [sys.executable, __file__, "--worker", stage, str(work), json.dumps(arguments)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=environment,
        )
    if code != 0:
        raise RuntimeError(f"{stage} failed (exit {code}):\n{log.read_text()[-3000:]}")
    return json.loads((work / f"{stage}.json").read_text())


# ------------------------------------------------------------------------------------------------ the benchmark


@dataclass
class Case:
    """A model: how its network is built for an activation, its data, and how much of each method it gets."""

    name: str
    data: str
    build: Callable[[str], object]
    """The network (untrained) for an activation's name."""
    x_train: np.ndarray
    y_train: np.ndarray
    x_eval: np.ndarray
    y_eval: np.ndarray
    epochs: int
    proofs: int
    he_queries: int
    activations: tuple[str, ...] = ACTIVATIONS
    extra_ezkl: dict = field(default_factory=dict)
    """More ezkl rows: label -> builder (gavel's network exactly as it builds it)."""


def digits_cases(smoke: bool, args) -> list[Case]:
    from gavel.targets.architectures.cnn import SmallCNN
    from gavel.targets.architectures.mlp import MLP
    from gavel.targets.data.digits import Digits

    data = Digits().load()
    pools = dict(x_train=data.judge.x, y_train=data.judge.y, x_eval=data.eval.x, y_eval=data.eval.y)
    shape, classes = data.input_shape, data.n_classes
    if smoke:
        mlp = MLP(hidden=(32,))
        return [
            Case(
                "digits_mlp",
                "digits",
                lambda act: with_activation(mlp.build(shape, classes), act),
                epochs=10,
                proofs=1,
                he_queries=1,
                activations=("square",),
                **pools,
            ),
        ]
    mlp, cnn = MLP(hidden=(256, 256)), SmallCNN(width=args.cnn_width)
    return [
        Case(
            "digits_mlp",
            "digits",
            lambda act: with_activation(mlp.build(shape, classes), act),
            epochs=60,
            proofs=2,
            he_queries=2,
            **pools,
        ),
        Case(
            "digits_cnn",
            "digits",
            lambda act: with_activation(cnn.build(shape, classes), act),
            epochs=60,
            proofs=2,
            he_queries=2,
            **pools,
            extra_ezkl={"relu+maxpool": lambda: with_activation(cnn.build(shape, classes), "relu", max_pool=True)},
        ),
    ]


def fashion_case(root: Path | None) -> tuple[Case, str]:
    """LeNet on Fashion-MNIST's files where they are (trained on 12,000 images); random weights and uniform random
    inputs otherwise (enough for the costs; the accuracy then means nothing)."""
    if root is not None and root.is_dir():
        from gavel.targets.data.fashion_mnist import FashionMNIST
        from gavel.targets.data.torchvision_set import PoolLimits

        data = FashionMNIST(root=str(root), limit=PoolLimits(judge=12000, attacker=1, eval=500)).load()
        pools = dict(x_train=data.judge.x, y_train=data.judge.y, x_eval=data.eval.x, y_eval=data.eval.y)
        case = Case("lenet_28x28", "fashion_mnist", lenet, epochs=3, proofs=1, he_queries=1, **pools)
        return case, f"Fashion-MNIST from {root}: trained 3 epochs on 12,000 images"
    rng = np.random.default_rng(0)
    x, y = rng.random((64, 1, 28, 28), dtype=np.float32), rng.integers(0, 10, 64)
    case = Case(
        "lenet_28x28",
        "random",
        lenet,
        x_train=x[:0],
        y_train=y[:0],
        x_eval=x,
        y_eval=y,
        epochs=0,
        proofs=1,
        he_queries=1,
    )
    return case, "no Fashion-MNIST files: random weights, uniform random inputs (costs only; accuracy means nothing)"


def ezkl_row(net, x: np.ndarray, reference: np.ndarray, work: Path, srs_dir: Path, n_proofs: int) -> dict:
    import torch

    work.mkdir(parents=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            torch.from_numpy(x[:1]),
            str(work / "model.onnx"),
            input_names=["input"],
            output_names=["output"],
            opset_version=17,
            dynamo=False,
        )
    calibration = x[: min(len(x), 8)]
    (work / "calibration.json").write_text(json.dumps({"input_data": [calibration.reshape(-1).tolist()]}))
    for i, one in enumerate(x):
        (work / f"input{i}.json").write_text(json.dumps({"input_data": [one.reshape(-1).tolist()]}))
    setup = in_child("ezkl_setup", work, srs_dir=str(srs_dir))
    prove = in_child("ezkl_prove", work, srs=setup["srs"], n_inputs=len(x), n_proofs=n_proofs)
    verify = in_child("ezkl_verify", work, srs=setup["srs"], n_proofs=n_proofs)
    agree, error = agreement(reference, prove.pop("outputs"))
    for big in ("pk.key", "circuit.ezkl"):
        (work / big).unlink()
    peaks = {f"{name}_peak_rss_mb": step.pop("peak_rss_mb") for name, step in zip(STEPS, (setup, prove, verify))}
    baselines = [step.pop("baseline_rss_mb") for step in (setup, prove, verify)]
    return {
        **setup,
        **prove,
        **verify,
        **peaks,
        "agree": agree,
        "n_agree": len(x),
        "max_logit_error": error,
        "peak_rss_mb": max(peaks.values()),
        "baseline_rss_mb": max(baselines),
        "query_s": prove["prove_s"],
    }


def ckks_row(net, x: np.ndarray, reference: np.ndarray, work: Path) -> dict:
    work.mkdir(parents=True)
    stages = affine_stages(net, x.shape[1:])
    arrays = {"n_stages": len(stages), "queries": x.astype(np.float64)}
    for i, (matrix, bias, act) in enumerate(stages):
        arrays.update({f"matrix{i}": matrix, f"bias{i}": bias, f"activation{i}": act})
    np.savez(work / "stages.npz", **arrays)
    result = in_child("ckks", work, n_threads=threads())
    agree, error = agreement(reference, result.pop("outputs"))
    (work / "stages.npz").unlink()
    query_s = result["encrypt_s"] + result["infer_s"] + result["decrypt_s"]
    return dict(result, agree=agree, n_agree=len(x), max_logit_error=error, query_s=query_s, stages=len(stages))


def run_case(case: Case, methods: list[str], args, root: Path, srs_dir: Path, seed: int = 0) -> list[dict]:
    import torch

    rows = []
    builders = {act: functools.partial(case.build, act) for act in case.activations}
    if "ezkl" in methods:
        builders.update(case.extra_ezkl)
    for label, build in builders.items():
        torch.manual_seed(seed)
        net = build()
        if case.epochs:
            train(net, case.x_train, case.y_train, epochs=case.epochs, seed=seed)
        net.eval()
        accuracy = float((logits(net, case.x_eval).argmax(1) == case.y_eval).mean())
        macs, nonlinear = count_operations(net, case.x_eval.shape[1:])
        base = dict(
            model=case.name,
            data=case.data,
            activation=label,
            accuracy=accuracy,
            macs=macs,
            nonlinear=nonlinear,
            forward_s=forward_seconds(net, case.x_eval),
            threads=threads(),
        )
        for method in methods:
            if method == "ckks" and label not in ACTIVATIONS:
                continue
            row = dict(base, method=method)
            if method == "ckks" and label == "relu":
                rows.append(dict(row, skipped=CKKS_RELU))
                continue
            n = args.agree if method == "ezkl" else (args.he_queries or case.he_queries)
            x = case.x_eval[:n]
            work = root / f"{case.name}-{label}-{method}"
            print(f"  {case.name} {label} {method} ...", flush=True)
            if method == "ezkl":
                row.update(ezkl_row(net, x, logits(net, x), work, srs_dir, args.proofs or case.proofs))
            else:
                row.update(ckks_row(net, x, logits(net, x), work))
            row["ratio_to_forward"] = row["query_s"] / row["forward_s"]
            rows.append(row)
    return rows


# ------------------------------------------------------------------------------------------------ the printing


def human_bytes(n: float | None) -> str:
    if n is None:
        return "-"
    for unit, size in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{n:.0f} B"


def seconds(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:.3g}" if value >= 1e-3 else f"{value:.2e}"


def table(headers: list[str], lines: list[list[str]]) -> str:
    widths = [max(len(headers[i]), *(len(line[i]) for line in lines)) for i in range(len(headers))]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)), "  ".join("-" * w for w in widths)]
    out += ["  ".join(cell.ljust(w) for cell, w in zip(line, widths)) for line in lines]
    return "\n".join(out)


def query_cpu_s(row: dict) -> float:
    """CPU seconds of one query (all threads; what serving it costs, whatever else ran on the machine): the proof,
    or the encrypted inference with encryption and decryption (one thread, milliseconds: their wall time)."""
    if row["method"] == "ezkl":
        return row["prove_cpu_s"]
    return row["infer_cpu_s"] + row["encrypt_s"] + row["decrypt_s"]


def main_table(rows: list[dict]) -> str:
    headers = [
        "model",
        "activation",
        "method",
        "acc",
        "setup s",
        "per query s",
        "CPU s",
        "verify s",
        "keys",
        "proof / ciphertext",
        "peak mem",
        "verdicts",
        "max logit err",
        "x forward",
    ]
    lines = []
    for row in rows:
        head = [row["model"], row["activation"], row["method"], f"{row['accuracy']:.3f}"]
        if "skipped" in row:
            lines.append(head + ["-"] * 10)
            continue
        if row["method"] == "ezkl":
            keys = f"pk {human_bytes(row['pk_bytes'])}, vk {human_bytes(row['vk_bytes'])}"
            carried, verify = human_bytes(row["proof_bytes"]), seconds(row["verify_s"])
        else:
            keys = f"public {human_bytes(row['public_context_bytes'])}"
            carried = f"{human_bytes(row['ciphertext_in_bytes'])} in, {human_bytes(row['ciphertext_out_bytes'])} out"
            verify = "-"
        setup = row["setup_s"] if row["method"] == "ezkl" else row["keygen_s"]
        lines.append(
            head
            + [
                seconds(setup),
                seconds(row["query_s"]),
                seconds(query_cpu_s(row)),
                verify,
                keys,
                carried,
                human_bytes(row["peak_rss_mb"] * 2**20),
                f"{row['agree']}/{row['n_agree']}",
                f"{row['max_logit_error']:.2g}",
                f"{row['ratio_to_forward']:,.0f}",
            ]
        )
    return table(headers, lines)


def detail_tables(rows: list[dict]) -> str:
    ezkl = [r for r in rows if r["method"] == "ezkl"]
    ckks = [r for r in rows if r["method"] == "ckks" and "skipped" not in r]
    parts = []
    if ezkl:
        parts.append(
            table(
                [
                    "model",
                    "activation",
                    "MACs",
                    "non-linear",
                    "rows",
                    "logrows",
                    "scale",
                    "circuit s",
                    "srs s",
                    "witness s",
                    "prove CPU s",
                    "setup peak",
                    "prove peak",
                    "verified",
                ],
                [
                    [
                        r["model"],
                        r["activation"],
                        f"{r['macs']:,}",
                        f"{r['nonlinear']:,}",
                        f"{r['rows']:,}",
                        str(r["logrows"]),
                        f"{r['input_scale']}/{r['param_scale']}",
                        seconds(r["circuit_s"]),
                        seconds(r["srs_s"]),
                        seconds(r["witness_s"]),
                        seconds(r["prove_cpu_s"]),
                        human_bytes(r["setup_peak_rss_mb"] * 2**20),
                        human_bytes(r["prove_peak_rss_mb"] * 2**20),
                        str(r["verified"]),
                    ]
                    for r in ezkl
                ],
            )
        )
    if ckks:
        parts.append(
            table(
                [
                    "model",
                    "activation",
                    "stages",
                    "depth",
                    "ring",
                    "primes (bits)",
                    "encrypt s",
                    "inference s",
                    "inference CPU s",
                    "of which products",
                    "of which squares",
                    "decrypt s",
                ],
                [
                    [
                        r["model"],
                        r["activation"],
                        str(r["stages"]),
                        str(r["depth"]),
                        str(r["degree"]),
                        "+".join(map(str, r["primes"])),
                        seconds(r["encrypt_s"]),
                        seconds(r["infer_s"]),
                        seconds(r["infer_cpu_s"]),
                        seconds(r["products_s"]),
                        seconds(r["squares_s"]),
                        seconds(r["decrypt_s"]),
                    ]
                    for r in ckks
                ],
            )
        )
    return "\n\n".join(parts)


def nonlinear_price(rows: list[dict]) -> list[str]:
    """The claim "linear layers cheap, non-linear ones ~200x", per model: one non-linear element's price over one
    multiply-accumulate's (MAC).
    - ezkl: in circuit rows, the rows a network adds over its linear twin per non-linear element, over the linear
      twin's rows per MAC (its whole circuit: an upper bound on a MAC's price); proving time follows the circuit's
      size rounded up to a power of two, so beside it the whole networks' rows and proving times;
    - CKKS: in time, the squares' time per element over the vector-matrix products' time per MAC, in the same run;
      the squares' real price is the depth they add (every product then runs on more primes, or a larger ring), so
      beside it the whole network against its linear twin."""
    lines = []
    measured = [r for r in rows if "skipped" not in r]
    for model in dict.fromkeys(r["model"] for r in measured):
        ezkl = {r["activation"]: r for r in measured if r["model"] == model and r["method"] == "ezkl"}
        linear = ezkl.get("identity")
        for act, row in ezkl.items():
            if linear is None or not row["nonlinear"]:
                continue
            per_element = (row["rows"] - linear["rows"]) / row["nonlinear"]
            per_mac = linear["rows"] / linear["macs"]
            lines.append(
                f"  {model} ezkl {act}: {per_element:.2f} rows per element / {per_mac:.2f} per MAC = "
                f"{per_element / per_mac:.1f}x; whole network {row['rows'] / linear['rows']:.2f}x the rows "
                f"(2^{row['logrows']} vs 2^{linear['logrows']}), {row['prove_cpu_s'] / linear['prove_cpu_s']:.2f}x the "
                "proving CPU time"
            )
        ckks = {r["activation"]: r for r in measured if r["model"] == model and r["method"] == "ckks"}
        row, linear = ckks.get("square"), ckks.get("identity")
        if row is not None:
            per_element, per_mac = row["squares_s"] / row["nonlinear"], row["products_s"] / row["macs"]
            whole = (
                f"; whole network {row['infer_cpu_s'] / linear['infer_cpu_s']:.2f}x the linear one's inference CPU "
                f"time (ring "
                f"{row['degree']} with {len(row['primes'])} primes vs {linear['degree']} with {len(linear['primes'])})"
                if linear is not None
                else ""
            )
            lines.append(
                f"  {model} ckks square: {per_element:.2e} s per element / {per_mac:.2e} s per MAC = "
                f"{per_element / per_mac:.2f}x{whole}"
            )
    return lines


def serving_cost(rows: list[dict], examples: int) -> list[str]:
    """CPU-hours to prove every answer an attacker's budget buys: proving CPU seconds per query x budget x
    examples, for each model's judge as deployed (ReLU)."""
    lines = []
    for row in rows:
        if row["method"] != "ezkl" or row["activation"] not in ("relu", "relu+maxpool"):
            continue
        hours = [row["prove_cpu_s"] * budget * examples / 3600 for budget in BUDGETS]
        cells = ", ".join(f"{budget} queries: {h:,.1f} CPU-h" for budget, h in zip(BUDGETS, hours))
        lines.append(f"  {row['model']} {row['activation']} ({row['prove_cpu_s']:.1f} CPU s a proof): {cells}")
    return lines


def machine() -> str:
    cpuinfo = Path("/proc/cpuinfo")
    lines = cpuinfo.read_text().splitlines() if cpuinfo.exists() else []
    names = [line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")]
    model = names[0] if names else platform.processor()
    return f"{model}, {os.cpu_count()} cores, Python {platform.python_version()}"


def versions() -> dict:
    from importlib.metadata import version

    return {name: version(name) for name in ("torch", *CRYPTO_PACKAGES)}


def measure(args) -> list[dict]:
    models, methods = args.models.split(","), args.methods.split(",")
    cases = [case for case in digits_cases(args.smoke, args) if case.name in models]
    if "lenet" in models and not args.smoke:
        case, source = fashion_case(args.fashion_root)
        print(f"28x28 CNN: {source}")
        cases.append(case)
    rows = []
    with tempfile.TemporaryDirectory(prefix="gavel-crypto-cost-") as tmp:
        srs_dir = Path(tmp) / "srs"
        srs_dir.mkdir()
        for case in cases:
            rows += run_case(case, methods, args, Path(tmp), srs_dir)
    return rows


def report(rows: list[dict], examples: int) -> None:
    print()
    print(main_table(rows))
    print()
    print(detail_tables(rows))
    print()
    if any(r["method"] == "ckks" and "skipped" in r for r in rows):
        print(f"ckks relu rows: {CKKS_RELU}")
    price = nonlinear_price(rows)
    if price:
        print('"linear layers cheap, non-linear ones ~200x": one non-linear element over one multiply-accumulate')
        print("\n".join(price))
    serving = serving_cost(rows, examples)
    if serving:
        print(f"Serving an attacker's budget under proof ({examples} examples, each query proved):")
        print("\n".join(serving))
    cnn = [r for r in rows if r["model"] == "digits_cnn"]
    if cnn:
        from gavel.targets.architectures.cnn import SmallCNN

        demo = count_operations(SmallCNN(width=32).build((1, 8, 8), 10), (1, 8, 8))[0]
        print(f"  (the demo's judge, SmallCNN width 32, has {demo / cnn[0]['macs']:.1f}x the MACs of the CNN here)")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", default="digits_mlp,digits_cnn,lenet", help="comma-separated")
    parser.add_argument("--methods", default="ezkl,ckks", help="comma-separated: ezkl, ckks")
    parser.add_argument("--cnn-width", type=int, default=4, help="gavel's SmallCNN width for the digits CNN")
    parser.add_argument("--fashion-root", type=Path, default=Path("/usr/share/datasets/fashion-mnist"))
    parser.add_argument("--agree", type=int, default=20, help="images whose circuit output is compared with torch")
    parser.add_argument("--proofs", type=int, help="proofs per row (default: 2 on 8x8, 1 on 28x28)")
    parser.add_argument("--he-queries", type=int, help="encrypted queries per row (default: 2 on 8x8, 1 on 28x28)")
    parser.add_argument("--examples", type=int, default=DEMO_EXAMPLES, help="attacked examples for the serving cost")
    parser.add_argument("--out", type=Path, help="the rows as JSON")
    parser.add_argument("--show", type=Path, help="print the tables of a run saved with --out (measures nothing)")
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="a tiny size (the 8x8 MLP with one hidden layer of 32 and x^2, one proof, one encrypted "
        "query): proves in seconds that the bench runs (its numbers mean nothing)",
    )
    args = parser.parse_args()
    if args.show:
        saved = json.loads(args.show.read_text())
        print(f"A run saved in {args.show}: {saved['meta']}")
        report(saved["rows"], args.examples)
        return 0
    missing = missing_packages()
    if missing:
        print(f"crypto_cost: {', '.join(missing)} not installed; the optional extra: pip install -e '.[crypto]'")
        return 2
    import torch

    torch.set_num_threads(threads())
    if args.smoke:
        args.models, args.agree = "digits_mlp", 3
    started = time.perf_counter()
    print(f"The price of cryptographic hiding, per query, {threads()} threads; {machine()}; {versions()}")
    print(SRS_NOTE)
    rows = measure(args)
    report(rows, args.examples)
    wall = time.perf_counter() - started
    print(f"wall time {wall:.0f} s")
    if args.out:
        meta = dict(date=date.today().isoformat(), machine=machine(), threads=threads(), versions=versions())
        args.out.write_text(json.dumps({"meta": dict(meta, wall_s=wall, smoke=args.smoke), "rows": rows}, indent=1))
    return 0


if __name__ == "__main__":
    if len(sys.argv) > 1 and sys.argv[1] == "--worker":
        worker(sys.argv[2], Path(sys.argv[3]), json.loads(sys.argv[4]))
    else:
        sys.exit(main())
