"""The named data sets (``--data cifar10``): every file's official URL and published checksum, in one table.

A bare name is a data spec (``cifar10``, ``data.train=pets``); the files are downloaded once into
``$VITKIT_DATA/NAME/`` (see :mod:`vitkit.data.fetch`) and read from there afterwards, also offline.

Where each checksum comes from (``DataFile.source``); none is made up here:

- ``torchvision``: the MD5 in ``torchvision/datasets/{cifar,mnist,oxford_iiit_pet,flowers102,imagenette}.py``
  (pytorch/vision). For MNIST torchvision publishes the MD5 of the four ``.gz`` files it downloads from its
  mirrors, the same files as ``https://storage.googleapis.com/cvdf-datasets/mnist/``.
- ``tfds``: the SHA-256 and size in ``tensorflow_datasets/url_checksums/NAME.txt`` (tensorflow/datasets) for the
  same URL (tfds lists the ``http://`` form of the Oxford pets URL; the file is the same).
- Both are checked where both are published. A file that has neither would get its SHA-256 recorded on first
  download (``FILE.sha256`` beside it) and compared on every later check; every file listed here has one.

Sizes: bytes from the tfds checksum files; the CIFAR python archives' sizes are not in tfds (it reads the binary
archives), so ``size`` is None there and ``DataSet.size_mb`` gives the download page's figure.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class DataFile:
    name: str  # the official file name: the mirror serves BASE/name, the cache keeps VITKIT_DATA/SET/name
    url: str  # the official URL
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None  # bytes, where published
    source: str = ""  # where the checksum(s) come from
    extract: bool = False  # an archive unpacked into VITKIT_DATA/SET/<name without .tar.gz/.tgz>/


@dataclass(frozen=True)
class DataSet:
    name: str
    title: str
    homepage: str
    files: tuple[DataFile, ...]
    num_classes: int
    splits: dict[str, int] = field(default_factory=dict)  # split -> number of images
    size_mb: float = 0.0  # download size, MB (10^6 bytes)
    loadable: bool = True  # False: a file other sources use (ReaL labels), not a data spec by itself
    note: str = ""


_TV, _TFDS = "torchvision", "tfds"
_CIFAR = "https://www.cs.toronto.edu/~kriz/"
_MNIST = "https://storage.googleapis.com/cvdf-datasets/mnist/"
_PETS = "https://www.robots.ox.ac.uk/~vgg/data/pets/data/"
_FLOWERS = "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/"
_FASTAI = "https://s3.amazonaws.com/fast-ai-imageclas/"


def _mnist(name: str, md5: str, sha256: str, size: int) -> DataFile:
    return DataFile(name, _MNIST + name, md5, sha256, size, f"MD5 {_TV}, SHA-256 and size {_TFDS}")


DATASETS: dict[str, DataSet] = {d.name: d for d in (
    DataSet("cifar10", "CIFAR-10 (python version)", "https://www.cs.toronto.edu/~kriz/cifar.html",
            (DataFile("cifar-10-python.tar.gz", _CIFAR + "cifar-10-python.tar.gz", "c58f30108f718f92721af3b95e74349a",
                      source=f"MD5 {_TV} (tfds lists only the binary archive)"),),
            10, {"train": 50000, "test": 10000}, 163.0,
            note="read from the archive itself (pickles, through vitkit's restricted unpickler); size: the page's"),
    DataSet("cifar100", "CIFAR-100 (python version)", "https://www.cs.toronto.edu/~kriz/cifar.html",
            (DataFile("cifar-100-python.tar.gz", _CIFAR + "cifar-100-python.tar.gz",
                      "eb9058c3a382ffc7106e4002c42a8d85", source=f"MD5 {_TV} (tfds lists only the binary archive)"),),
            100, {"train": 50000, "test": 10000}, 161.0, note="?labels=coarse: the 20 super-classes"),
    DataSet("mnist", "MNIST", "http://yann.lecun.com/exdb/mnist/", (
        _mnist("train-images-idx3-ubyte.gz", "f68b3c2dcbeaaa9fbdd348bbdeb94873",
               "440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609", 9912422),
        _mnist("train-labels-idx1-ubyte.gz", "d53e105ee54ea40749a09fcbcd1e9432",
               "3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c", 28881),
        _mnist("t10k-images-idx3-ubyte.gz", "9fb629c4189551a2d022fa330f9573f3",
               "8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6", 1648877),
        _mnist("t10k-labels-idx1-ubyte.gz", "ec29112dd5afa0611ce80d1b7f02629c",
               "f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6", 4542),
    ), 10, {"train": 60000, "test": 10000}, 11.6),
    DataSet("pets", "Oxford-IIIT Pet", "https://www.robots.ox.ac.uk/~vgg/data/pets/", (
        DataFile("images.tar.gz", _PETS + "images.tar.gz", "5c4f3ee8e5d25df40f4fd59a7f44e54c",
                 "67195c5e1c01f1ab5f9b6a5d22b8c27a580d896ece458917e61d459337fa318d", 791918971,
                 f"MD5 {_TV}, SHA-256 and size {_TFDS}", extract=True),
        DataFile("annotations.tar.gz", _PETS + "annotations.tar.gz", "95a8c909bbe2e81eed6a22bccdf3f68f",
                 "52425fb6de5c424942b7626b428656fcbd798db970a937df61750c0f1d358e91", 19173078,
                 f"MD5 {_TV}, SHA-256 and size {_TFDS}", extract=True),
    ), 37, {"train": 3680, "test": 3669}, 811.1, note="train = the official trainval list"),
    DataSet("flowers102", "Oxford Flowers-102", "https://www.robots.ox.ac.uk/~vgg/data/flowers/102/", (
        DataFile("102flowers.tgz", _FLOWERS + "102flowers.tgz", "52808999861908f626f3c1f4e79d11fa",
                 "2d01ecc807db462958cfe3d92f57a8c252b4abd240eb955770201e45f783b246", 344862509,
                 f"MD5 {_TV}, SHA-256 and size {_TFDS}", extract=True),
        DataFile("imagelabels.mat", _FLOWERS + "imagelabels.mat", "e0620be6f572b9609742df49c70aed4d",
                 "4903e94206bac23bf772aadf06451916df56b58fc483a62db32a97b82656651d", 502,
                 f"MD5 {_TV}, SHA-256 and size {_TFDS}"),
        DataFile("setid.mat", _FLOWERS + "setid.mat", "a5357ecc9cb78c4bef273ce3793fc85c",
                 "46b8678f91fd95d3c8f4feab80d271a6c834a1dd896fe29fd3e6ad9ce5c8dccd", 14989,
                 f"MD5 {_TV}, SHA-256 and size {_TFDS}"),
    ), 102, {"train": 1020, "val": 1020, "test": 6149}, 344.9,
        note="the official split (setid.mat); the .mat files need scipy (pip install 'vitkit[data]'); "
             "class names are the label numbers 1..102 (the files name no classes)"),
    DataSet("imagenette", "Imagenette (imagenette2, full size)", "https://github.com/fastai/imagenette", (
        DataFile("imagenette2.tgz", _FASTAI + "imagenette2.tgz", "fe2fc210e6bb7c5664d602c3cd71e612",
                 "de32de18a7d8df0114d5e2c3c14cafb9558e8f00441a73aa7953681ad02be49c", 1556914727,
                 f"MD5 {_TV}, SHA-256 and size {_TFDS}", extract=True),
    ), 10, {"train": 9469, "val": 3925}, 1556.9, note="classes are WordNet ids; test = val"),
    DataSet("imagenette-160", "Imagenette (imagenette2-160, shorter side 160 px)",
            "https://github.com/fastai/imagenette", (
        DataFile("imagenette2-160.tgz", _FASTAI + "imagenette2-160.tgz", "e793b78cc4c9e9a4ccc0c1155377a412",
                 "88daccb09b6fce93f45e6c09ddeb269cce705549e6bff322092a2a5a11489863", 98948031,
                 f"MD5 {_TV}, SHA-256 and size {_TFDS}", extract=True),
    ), 10, {"train": 9469, "val": 3925}, 98.9, note="classes are WordNet ids; test = val"),
    DataSet("imagenet-real", "ImageNet ReaL labels (real.json)", "https://github.com/google-research/reassessed-imagenet",
            (DataFile("real.json",
                      "https://raw.githubusercontent.com/google-research/reassessed-imagenet/master/real.json",
                      sha256="d83e9bff374c631aae8439eb064c7019acc56e1b3bc3f56b8380c2a710b0220b", size=388478,
                      source=f"SHA-256 and size {_TFDS} (imagenet2012_real)"),),
            1000, {"val": 50000}, 0.4, loadable=False,
            note="labels for imagenet:PATH?labels=real (the ILSVRC-2012 images are not downloadable by name)"),
)}
NAMES = tuple(DATASETS)
LOADABLE = tuple(n for n, d in DATASETS.items() if d.loadable)
