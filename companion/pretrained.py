"""Small trained weights shipped with the book (the project's design notes, "Trained weights").

Each entry of :data:`REGISTRY` names a configuration (a JSON-able dict) and the function that trains
the modules from scratch with the project's own code. ``python -m companion.pretrained [NAME ...]``
(``make weights``) rebuilds the files ``companion/weights/<NAME>.pt`` (the state dicts) and
``<NAME>.json`` (the configuration, its hash, the command, the torch version, the thread count and
the training time). :func:`load` refuses a file whose recorded configuration hash differs from the
hash of the configuration in the code, so shipped weights can never silently drift from the code
that is said to have produced them.

Entries:

* ``mnist_dcgan`` -- the DCGAN of :mod:`companion.gan` trained on the embedded MNIST training split
  (4,000 images), and the data-free inverter of :func:`companion.defenses.train_inverter` for it
  (chapter "Invert and Defend"; reusable wherever a GAN prior on MNIST is needed).
* ``dudonet_small`` -- the six metal-artifact-reduction networks of the DuDoNet chapter (width 8,
  64 × 64 images), see :mod:`companion.ct.weights`.
* ``msroi_small`` -- the MS-ROI and CAM networks of the semantic compression chapter (64 × 64 cluttered
  scenes), see :mod:`companion.compression.weights`.
"""
from __future__ import annotations

import hashlib
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ._validate import check_choice
from .compression.weights import MSROI_SMALL, build_msroi_small, msroi_modules
from .ct.weights import DUDONET_SMALL, build_dudonet_small, dudonet_modules

WEIGHTS_DIR = Path(__file__).resolve().parent / "weights"

MNIST_DCGAN = {
    "data": "companion.data.load_mnist('train')",
    "latent_dim": 32,
    "width": 32,
    "gan": {"iterations": 6000, "batch_size": 64, "lr": 2e-4, "betas": [0.5, 0.999], "real_label": 0.9, "seed": 0},
    "inverter": {"iterations": 4000, "batch_size": 64, "lr": 2e-4, "betas": [0.5, 0.999], "hinge_eta": 5.0,
                 "lambda_adv": 1.0, "lambda_semantic": 100.0, "lambda_latent": 1.0, "seed": 1},
    "torch_seed": 0,
}


def config_hash(config: dict) -> str:
    """A short SHA-256 of the configuration's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def mnist_dcgan_modules(config: dict = MNIST_DCGAN) -> dict[str, nn.Module]:
    """Fresh (untrained) modules of the ``mnist_dcgan`` entry: generator, discriminator, inverter, inverter_disc."""
    from .gan import Discriminator, Encoder, Generator

    d, w = config["latent_dim"], config["width"]
    return {"generator": Generator(d, w), "discriminator": Discriminator(w), "inverter": Encoder(d, w),
            "inverter_disc": Discriminator(w)}


def build_mnist_dcgan(config: dict = MNIST_DCGAN, progress: bool = True) -> dict[str, nn.Module]:
    """Train the ``mnist_dcgan`` modules from scratch (GAN on real images, then the inverter without data)."""
    from .data import load_mnist
    from .defenses.defense_gan import train_inverter
    from .gan import train_gan

    torch.manual_seed(config["torch_seed"])
    m = mnist_dcgan_modules(config)
    x, _ = load_mnist("train")
    gan = dict(config["gan"], betas=tuple(config["gan"]["betas"]))
    train_gan(m["generator"], m["discriminator"], x, progress=progress, **gan)
    inv = dict(config["inverter"], betas=tuple(config["inverter"]["betas"]))
    train_inverter(m["generator"], m["inverter"], m["inverter_disc"], progress=progress, **inv)
    return m


REGISTRY: dict[str, tuple[dict, Callable[[dict], dict[str, nn.Module]], Callable[..., dict[str, nn.Module]]]] = {
    "mnist_dcgan": (MNIST_DCGAN, mnist_dcgan_modules, build_mnist_dcgan),
    "dudonet_small": (DUDONET_SMALL, dudonet_modules, build_dudonet_small),
    "msroi_small": (MSROI_SMALL, msroi_modules, build_msroi_small),
}


def _paths(name: str, folder: Path | None) -> tuple[Path, Path]:
    check_choice(name, "weights name", REGISTRY)
    base = folder or WEIGHTS_DIR
    return base / f"{name}.pt", base / f"{name}.json"


def save(name: str, modules: dict[str, nn.Module], config: dict, *, command: str, seconds: float,
         folder: Path | None = None) -> Path:
    """Write ``modules``' state dicts and the metadata of entry ``name``; return the ``.pt`` path."""
    pt, meta = _paths(name, folder)
    pt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: m.state_dict() for k, m in modules.items()}, pt)
    meta.write_text(json.dumps({
        "name": name, "config": config, "config_hash": config_hash(config), "command": command,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "train_seconds": round(seconds, 1),
        "sha256": hashlib.sha256(pt.read_bytes()).hexdigest(),
    }, indent=1) + "\n")
    return pt


def load(name: str, folder: Path | None = None) -> dict[str, nn.Module]:
    """The shipped modules of entry ``name`` in eval mode, after checking the configuration hash.

    Raises ``FileNotFoundError`` when the files are missing and ``ValueError`` when they were produced
    with another configuration than the code's or do not match their recorded sha256 (rebuild them with
    ``make weights``).
    """
    pt, meta_path = _paths(name, folder)
    if not pt.exists() or not meta_path.exists():
        raise FileNotFoundError(f"shipped weights {name!r} not found in {pt.parent}; build them with "
                                f"`python -m companion.pretrained {name}` (or `make weights`)")
    config, modules_fn, _ = REGISTRY[name]
    meta = json.loads(meta_path.read_text())
    if meta.get("config_hash") != config_hash(config):
        raise ValueError(f"shipped weights {name!r} were made with configuration {meta.get('config_hash')}, but the code's "
                         f"configuration hashes to {config_hash(config)}; rebuild them with `make weights`")
    recorded = meta.get("sha256")
    if recorded is not None and hashlib.sha256(pt.read_bytes()).hexdigest() != recorded:
        raise ValueError(f"{pt} does not match the sha256 recorded in {meta_path.name} (a corrupted or partial copy?); "
                         f"rebuild it with `make weights`")
    modules = modules_fn(config)
    state = torch.load(pt, map_location="cpu", weights_only=True)
    if set(state) != set(modules):
        raise ValueError(f"{pt} holds modules {sorted(state)}, expected {sorted(modules)}")
    for key, module in modules.items():
        module.load_state_dict(state[key])
        module.eval()
    return modules


def metadata(name: str, folder: Path | None = None) -> dict:
    """The metadata recorded beside the weights of entry ``name`` (command, configuration, hash, time)."""
    return json.loads(_paths(name, folder)[1].read_text())


def main(argv: list[str] | None = None) -> int:
    """Rebuild the named entries (all when none is named) with the current thread settings."""
    from .utils import set_threads

    names = (argv if argv is not None else sys.argv[1:]) or list(REGISTRY)
    set_threads()
    for name in names:
        config, _, build = REGISTRY[name]
        start = time.perf_counter()
        modules = build(config)
        seconds = time.perf_counter() - start
        path = save(name, modules, config, command=f"python -m companion.pretrained {name}", seconds=seconds)
        print(f"wrote {path} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
