"""The user's own data (`data=image_folder`, `data=npz`): one source for each pool, named by the user.

- `data.eval` (required): the evaluation examples;
- `data.attacker`: the attacker's own data (a surrogate's training set, a patch's); without it only the attacks
  that need none run;
- `data.operator`: the operator's held-out data, split in two by `data.split_seed`: one half sets a detector's
  threshold and trains its encoder, the other is the honest traffic its false positives are counted on;
- `data.judge_train`: the judge's training data, where the user has it: a judge that gavel trains needs it, and so
  does `surrogate.knowledge=leaked`. Without `data.operator`, the operator calibrates on it.

Images are resized to the judge's input (a foreign judge declares it, `target.input_shape`; else `data.size`, or
the images' own size when they all share one), or, with `data.resize=false`, must already have it. The classes, in
label order, are `data.classes` where given, else what the data names (the sorted class folders, an npz's `classes`
array), else 0..max label. Each pool is shuffled by `data.split_seed` (`data.shuffle`), so that the first
`n_examples` evaluation examples mix the classes.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, Literal, Sequence

import numpy as np

from gavel.targets.data.base import DataSource, Shares, SplitSeed, contributor_shares, with_contributors
from gavel.targets.datasets import Dataset, Pool, resize
from gavel.targets.errors import SourceError
from gavel.targets.params import BadValue, PositiveInt

POOL_KEYS = ("eval", "attacker", "operator", "judge_train")


@dataclass(frozen=True)
class Examples:
    """One pool as read from its source, before it is made one shape: each image [C, H, W] in [0, 1] (sizes may
    differ), its label, and where it came from (for messages)."""

    images: list[np.ndarray]
    labels: np.ndarray
    origins: list[str]


class UserData(DataSource):
    option: ClassVar[str]
    """The `data=` option, for messages."""

    def __init__(
        self,
        *,
        eval: str | None = None,
        attacker: str | None = None,
        operator: str | None = None,
        judge_train: str | None = None,
        classes: Sequence[str] | None = None,
        resize: bool = True,
        size: Sequence[PositiveInt] | None = None,
        channels: Literal[1, 3] | None = None,
        shuffle: bool = True,
        split_seed: SplitSeed = 0,
        contributors: PositiveInt = 1,
        shares: Shares | None = None,
    ) -> None:
        if eval is None:
            raise BadValue("eval", None, self.what, why=f"data={self.option} needs the evaluation examples")
        if size is not None and len(size) != 2:
            raise BadValue("size", list(size), "[height, width] or null")
        if classes is not None and len(set(classes)) != len(classes):
            raise BadValue("classes", list(classes), "distinct class names", why="a name twice")
        self.paths = {"eval": eval, "attacker": attacker, "operator": operator, "judge_train": judge_train}
        self.classes = None if classes is None else tuple(str(name) for name in classes)
        self.resize = bool(resize)
        self.size = None if size is None else tuple(int(s) for s in size)
        self.channels = channels
        self.shuffle = bool(shuffle)
        self.split_seed = int(split_seed)
        self.contributors = int(contributors)
        self.shares = contributor_shares(self.contributors, shares)

    what: ClassVar[str] = "a path"
    """What each pool's key names, for messages."""

    @property
    def names_judge_training_data(self) -> bool:
        return self.paths["judge_train"] is not None

    @abstractmethod
    def read(self, key: str, path: Path) -> tuple[Examples, tuple[str, ...] | None]:
        """The pool `data.<key>` at `path`, and the class names the source itself gives: its labels index them, or,
        where it gives none (None), are the class indices themselves."""

    def load(self, input_shape: tuple[int, int, int] | None = None) -> Dataset:
        given = {key: Path(raw).expanduser() for key, raw in self.paths.items() if raw is not None}
        for key, path in given.items():  # every path checked before any is read
            if not path.exists():
                raise SourceError(f"data.{key}={self.paths[key]}: no such file or folder; allowed: {self.what}")
        read: dict[str, Examples] = {}
        named: dict[str, tuple[str, ...] | None] = {}
        for key, path in given.items():
            read[key], named[key] = self.read(key, path)
        class_names = self._class_names(read, named)
        shape = self._shape(read, input_shape)
        rng = np.random.default_rng(self.split_seed)
        pools = {}
        for key in POOL_KEYS:
            if key in read:
                pools[key] = self._pool(read[key], shape, rng)
        empty = Pool(np.zeros((0, *shape), dtype=np.float32), np.zeros(0, dtype=np.int64))
        operator, honest = pools.get("judge_train"), None
        if "operator" in pools:
            operator, honest = _halves(pools["operator"], np.random.default_rng(self.split_seed))
        dataset = Dataset(
            self.option,
            eval=pools["eval"],
            attacker=pools.get("attacker", empty),
            judge=pools.get("judge_train"),
            class_names=class_names,
            operator=operator,
            honest=honest,
        )
        return with_contributors(dataset, self.contributors, self.split_seed, self.shares)

    def _class_names(self, read: dict[str, Examples], named: dict[str, tuple[str, ...] | None]) -> tuple[str, ...]:
        """The classes in label order; every pool's labels mapped onto it (in place of `read`)."""
        sources = {key: names for key, names in named.items() if names is not None}
        if self.classes is not None:
            names = self.classes
        elif sources:
            names = tuple(sorted(set().union(*sources.values())))
        else:
            top = max(int(examples.labels.max(initial=-1)) for examples in read.values())
            names = tuple(str(label) for label in range(top + 1))
        index = {name: k for k, name in enumerate(names)}
        for key, examples in read.items():
            own = named.get(key)
            if own is None:
                bad = (examples.labels < 0) | (examples.labels >= len(names))
                if bad.any():
                    where = examples.origins[int(np.flatnonzero(bad)[0])]
                    raise SourceError(
                        f"data.{key}={self.paths[key]}: label {int(examples.labels[bad][0])} in {where}; "
                        f"allowed: 0 to {len(names) - 1} ({len(names)} classes)"
                    )
                continue
            unknown = sorted(set(own) - set(index))
            if unknown:
                raise SourceError(
                    f"data.{key}={self.paths[key]}: class {unknown[0]!r} is not in data.classes; "
                    f"allowed: {', '.join(names)}"
                )
            mapping = np.array([index[name] for name in own], dtype=np.int64)
            read[key] = Examples(examples.images, mapping[examples.labels], examples.origins)
        return names

    def _shape(self, read: dict[str, Examples], input_shape: tuple[int, int, int] | None) -> tuple[int, int, int]:
        """[channels, height, width] of every pool: the judge's input, else `data.size`, else the images' own."""
        images = [
            (image, origin) for examples in read.values() for image, origin in zip(examples.images, examples.origins)
        ]
        sizes: dict[tuple[int, int], str] = {}
        for image, origin in images:
            sizes.setdefault(image.shape[1:], origin)
        if input_shape is not None:
            shape = tuple(int(d) for d in input_shape)
        else:
            channels = self.channels or (3 if any(image.shape[0] == 3 for image, _ in images) else 1)
            if self.size is not None:
                shape = (channels, *self.size)
            elif len(sizes) > 1:
                (first, a), (second, b) = list(sizes.items())[:2]
                mixed = f"the images differ in size ({first[0]}x{first[1]} in {a}, {second[0]}x{second[1]} in {b})"
                if not self.resize:
                    raise SourceError(
                        f"data.resize=false: {mixed}; allowed: images of one size, or data.resize=true with "
                        "data.size=[height, width]"
                    )
                raise SourceError(
                    f"data.size=None: {mixed} and no judge input says which to use; allowed: data.size=[height, width]"
                )
            else:
                shape = (channels, *next(iter(sizes)))
        if not self.resize:
            for (height, width), origin in sizes.items():
                if (height, width) != shape[1:]:
                    raise SourceError(
                        f"data.resize=false: {origin} is {height}x{width}, not the {shape[1]}x{shape[2]} the judge "
                        "takes; allowed: data.resize=true, or images of that size"
                    )
        return shape

    def _pool(self, examples: Examples, shape: tuple[int, int, int], rng: np.random.Generator) -> Pool:
        x = np.empty((len(examples.images), *shape), dtype=np.float32)
        for i, image in enumerate(examples.images):
            x[i] = image if image.shape == shape else resize(image[None], shape)[0]
        y = examples.labels.astype(np.int64)
        if self.shuffle:
            order = rng.permutation(len(y))
            x, y = x[order], y[order]
        return Pool(np.ascontiguousarray(x), y)


def _halves(pool: Pool, rng: np.random.Generator) -> tuple[Pool, Pool]:
    """The operator's held-out data in two: the half that calibrates, the half honest traffic is drawn from."""
    order = rng.permutation(len(pool))
    cut = (len(pool) + 1) // 2
    first, second = np.sort(order[:cut]), np.sort(order[cut:])
    return Pool(pool.x[first], pool.y[first]), Pool(pool.x[second], pool.y[second])
