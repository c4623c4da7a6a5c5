"""The user's own data (`data=image_folder`, `data=npz`): one source per pool, classes from the data, images
resized to the judge's input, and every way a folder or a file can be wrong refused in one line naming the key."""

from __future__ import annotations

import numpy as np
import pytest
from helpers.image_files import as_bytes, in_folder_order, write_image_folder, write_npz
from PIL import Image

from gavel.experiments import runner
from gavel.experiments.config import compose_config
from gavel.experiments.settings import RunSettings
from gavel.experiments.validation import ConfigError
from gavel.targets.errors import SourceError

NAMES = [str(digit) for digit in range(10)]


def source(*overrides: str):
    return RunSettings.from_config(compose_config(list(overrides))).data_instance


@pytest.fixture(scope="module")
def digits_pools():
    data = source().load()
    return {"eval": data.eval, "attacker": data.attacker, "judge_train": data.judge}


@pytest.fixture(scope="module")
def same_data_twice(digits_pools, tmp_path_factory):
    """The digits' pools written as PNG folders and as .npz files of the same (8-bit) values, in the same order."""
    root = tmp_path_factory.mktemp("own-data")
    folders, files = [], []
    for key, pool in digits_pools.items():
        x, y = in_folder_order(as_bytes(pool.x).astype(np.float32) / 255, pool.y, NAMES)
        folders.append(f"data.{key}={write_image_folder(root / 'png' / key, x, y, NAMES)}")
        files.append(f"data.{key}={write_npz(root / f'{key}.npz', as_bytes(x), y)}")
    return ["data=image_folder", *folders], ["data=npz", *files]


def test_an_image_folder_of_pngs_loads_the_same_pools_as_the_arrays_it_was_written_from(same_data_twice):
    folder, arrays = (source(*overrides).load() for overrides in same_data_twice)
    assert folder.class_names == arrays.class_names == tuple(NAMES)
    for pool in ("eval", "attacker", "judge", "operator"):
        a, b = getattr(folder, pool), getattr(arrays, pool)
        np.testing.assert_array_equal(a.x, b.x)
        np.testing.assert_array_equal(a.y, b.y)
    assert folder.input_shape == (1, 8, 8) and folder.eval.x.dtype == np.float32
    assert folder.honest is None  # no operator folder: honest traffic is drawn as for the built-in sets


def test_the_pools_are_shuffled_by_split_seed_so_the_first_examples_mix_the_classes(same_data_twice):
    folder, _ = same_data_twice
    data = source(*folder).load()
    assert len(set(data.eval.y[:30].tolist())) >= 5
    again = source(*folder, "data.split_seed=1").load()
    assert not np.array_equal(again.eval.y, data.eval.y)
    assert sorted(again.eval.y.tolist()) == sorted(data.eval.y.tolist())
    unshuffled = source(*folder, "data.shuffle=false").load()
    assert (np.diff(unshuffled.eval.y) >= 0).all()  # as the folder lists them: by class


def test_the_operators_held_out_data_is_split_between_calibration_and_honest_traffic(digits_pools, tmp_path):
    pool = digits_pools["attacker"]
    data = source(
        "data=npz",
        f"data.eval={write_npz(tmp_path / 'eval.npz', as_bytes(pool.x[:20]), pool.y[:20])}",
        f"data.operator={write_npz(tmp_path / 'operator.npz', as_bytes(pool.x), pool.y)}",
    ).load()
    assert len(data.operator) + len(data.honest) == len(pool) and abs(len(data.operator) - len(data.honest)) <= 1
    both = np.concatenate([data.operator.y, data.honest.y])
    assert sorted(both.tolist()) == sorted(pool.y.tolist())  # every held-out example in exactly one half
    assert data.judge is None and len(data.attacker) == 0


def test_classes_come_from_the_data_and_may_be_named_in_label_order(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.random((12, 3, 6, 6)).astype(np.float32)
    y = np.arange(12) % 3
    folder = write_image_folder(tmp_path / "cats", x, y, ["cat", "dog", "eel"])
    assert source("data=image_folder", f"data.eval={folder}").load().class_names == ("cat", "dog", "eel")
    reordered = source("data=image_folder", f"data.eval={folder}", "data.classes=[eel,dog,cat,fox]").load()
    assert reordered.class_names == ("eel", "dog", "cat", "fox")
    assert sorted(set(reordered.eval.y.tolist())) == [0, 1, 2]  # fox has no example here, and keeps its label
    npz = write_npz(tmp_path / "named.npz", x, y, classes=np.array(["cat", "dog", "eel"]))
    assert source("data=npz", f"data.eval={npz}").load().class_names == ("cat", "dog", "eel")
    plain = write_npz(tmp_path / "plain.npz", x, y)
    assert source("data=npz", f"data.eval={plain}").load().class_names == ("0", "1", "2")


def test_images_of_any_size_are_resized_to_the_judges_input(tmp_path):
    rng = np.random.default_rng(1)
    for i, size in enumerate((8, 16, 30)):
        (tmp_path / "a").mkdir(exist_ok=True)
        pixels = (rng.random((size, size, 3)) * 255).astype(np.uint8)
        Image.fromarray(pixels).save(tmp_path / "a" / f"{i}.png")
    loaded = source("data=image_folder", f"data.eval={tmp_path}", "data.size=[12,12]").load()
    assert loaded.input_shape == (3, 12, 12) and len(loaded.eval) == 3
    grey = source("data=image_folder", f"data.eval={tmp_path}").load(input_shape=(1, 8, 8))
    assert grey.input_shape == (1, 8, 8) and 0 <= grey.eval.x.min() and grey.eval.x.max() <= 1


@pytest.mark.parametrize(
    "make, overrides, says",
    [
        (lambda p: (p / "a").mkdir(), [], "data.eval=.*: the class folder 'a' holds no image; allowed"),
        (lambda p: (p / "a" / "x.png").parent.mkdir(), [], "holds no image"),
        (lambda p: None, [], "data.eval=.*: holds no class folders; allowed"),
    ],
    ids=["an empty class folder", "a class folder with no image", "no class folder"],
)
def test_a_folder_gavel_cannot_read_is_refused_in_one_line(tmp_path, make, overrides, says):
    make(tmp_path)
    with pytest.raises(SourceError, match=says):
        source("data=image_folder", f"data.eval={tmp_path}", *overrides).load()


def test_images_of_mixed_sizes_are_refused_where_resizing_is_off_or_no_size_is_given(tmp_path):
    (tmp_path / "a").mkdir()
    Image.fromarray(np.zeros((8, 8), dtype=np.uint8)).save(tmp_path / "a" / "small.png")
    Image.fromarray(np.zeros((16, 16), dtype=np.uint8)).save(tmp_path / "a" / "large.png")
    with pytest.raises(SourceError, match=r"data.resize=false: the images differ in size \(16x16 in .*large.png"):
        source("data=image_folder", f"data.eval={tmp_path}", "data.resize=false").load()
    with pytest.raises(SourceError, match="data.size=None: the images differ in size .* allowed: data.size="):
        source("data=image_folder", f"data.eval={tmp_path}").load()
    with pytest.raises(SourceError, match="data.resize=false: .*small.png is 8x8, not the 16x16 the judge takes"):
        source("data=image_folder", f"data.eval={tmp_path}", "data.resize=false").load(input_shape=(1, 16, 16))


@pytest.mark.parametrize(
    "arrays, says",
    [
        ({"x": np.zeros((4, 1, 5, 5), np.uint8)}, "holds no array 'y'"),
        ({"x": np.full((4, 1, 5, 5), 2.0), "y": np.zeros(4, int)}, "x holds values from 2 to 2"),
        ({"x": np.zeros((4, 2, 5, 5), np.uint8), "y": np.zeros(4, int)}, r"x is \[4, 2, 5, 5\]; allowed"),
        ({"x": np.zeros((4, 1, 5, 5), np.uint8), "y": np.zeros(3, int)}, "y is int64 \\[3\\] for 4 images"),
        ({"x": np.zeros((2, 1, 5, 5), np.uint8), "y": np.array([0, 7]), "classes": np.array(["a", "b"])}, "label 7"),
    ],
    ids=["no labels", "floats past 1", "two channels", "too few labels", "a label past the classes"],
)
def test_an_npz_file_gavel_cannot_use_is_refused_in_one_line(tmp_path, arrays, says):
    path = tmp_path / "eval.npz"
    np.savez(path, **arrays)
    with pytest.raises(SourceError, match=f"data.eval={path}: .*{says}"):
        source("data=npz", f"data.eval={path}").load()


def test_an_npz_of_python_objects_is_refused_without_unpickling_it(tmp_path):
    path = tmp_path / "objects.npz"
    np.savez(path, x=np.array([object()], dtype=object), y=np.zeros(1, int))
    with pytest.raises(SourceError, match="not an .npz file of plain arrays"):
        source("data=npz", f"data.eval={path}").load()


def test_a_missing_path_and_a_missing_eval_are_refused_naming_the_key(tmp_path):
    with pytest.raises(
        SourceError,
        match=f"data.attacker={tmp_path / 'nope'}: no such file or folder; allowed: a folder of class folders",
    ):
        source("data=image_folder", f"data.eval={tmp_path}", f"data.attacker={tmp_path / 'nope'}").load()
    with pytest.raises(ConfigError, match="data.eval=None: data=npz needs the evaluation examples"):
        source("data=npz")


def test_what_the_data_lacks_is_refused_before_the_run(same_data_twice, tmp_path):
    _, arrays = same_data_twice
    eval_only = [o for o in arrays if not o.startswith(("data.attacker", "data.judge_train"))]
    refusals = [
        ([*eval_only], "data.judge_train=None: a judge gavel trains (target.arch=cnn) needs its training data"),
        (
            [*arrays[:2], *[o for o in arrays if o.startswith("data.judge_train")], "attack=transfer_pgd",
             "access=hidden_label"],
            "data.attacker=None: attack=transfer_pgd needs the attacker's own data",
        ),
    ]  # fmt: skip
    for overrides, says in refusals:
        settings = RunSettings.from_config(compose_config(overrides))
        with pytest.raises((ConfigError, SourceError), match=says.replace("(", r"\(").replace(")", r"\)")):
            runner.prepare(settings)
    with_detector = RunSettings.from_config(
        compose_config([*arrays, "attack=square", "access=hidden_probabilities", "defense=blacklight"])
    )
    data = runner.prepare(with_detector).data  # without data.operator the operator calibrates on the judge's data
    assert data.operator is data.judge and data.honest is None
    leaked = ["attack=transfer_pgd", "access=hidden_label", "surrogate.knowledge=leaked"]
    foreign = ["target=torchscript", "target.path=judge.pt"]  # checked at the boundary, before the file is read
    for overrides in ([*eval_only, *foreign], ["data=digits", *foreign]):  # what trained the user's judge?
        with pytest.raises(ConfigError, match="surrogate.knowledge=leaked: the judge's training data is not known"):
            RunSettings.from_config(compose_config([*overrides, *leaked]))
    named = RunSettings.from_config(compose_config([*arrays, *foreign, *leaked]))  # data.judge_train names it
    assert named.surrogate_instance.knowledge == "leaked" and named.data_instance.names_judge_training_data


@pytest.mark.slow
def test_an_image_folder_of_pngs_gives_the_same_numbers_as_the_arrays_it_was_written_from(same_data_twice):
    """The judge trained on each (one cache key: the same pools), then attacked through the runner."""
    common = [
        "attack=square",
        "access=hidden_probabilities",
        "access.budget=30",
        "n_examples=15",
        "target.train.epochs=5",
    ]
    folder, arrays = (
        runner.run(settings, runner.prepare(settings))
        for settings in (RunSettings.from_config(compose_config([*o, *common])) for o in same_data_twice)
    )
    assert folder == arrays and folder["n_attacked"] > 0
