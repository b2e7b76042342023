"""The GPU path: every chapter places its models and data with ``companion.device()``.

CI has no GPU, so each path runs here on the device that ``companion.device()`` is patched to return: the
CPU, and CUDA as well where there is one. On the CPU moving to the device is a no-op, so a run that places
everything with ``.to(device)`` must give the plain CPU run's numbers bit for bit. That the operators of
the CT chapter really move is checked on the ``meta`` device (no numbers, only placement).
"""
from __future__ import annotations

import re

import jupytext
import pytest
import torch

import companion
from companion.ct.datasets import training_set
from companion.ct.dudonet import MARNet, mar_outputs, train_mar
from companion.ct.simulate import Scanner
from companion.clustering.features import embed
from companion.data import load_mnist
from companion.defenses.defense_gan import latent_recovery_error, train_inverter
from companion.gan import Discriminator, Encoder, Generator, sample, sample_quality, train_gan
from companion.inverse import gaussian_cs
from companion.nets import SmallCNN
from companion.recon import ReconNet, train_reconstruction, worst_case_error
from companion.regression import chapters
from companion.train import fit, module_device

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
# the companion's networks; a chapter that builds one must put it on `dev` in the same line
MODELS = ("SmallCNN", "CAMNet", "ImageNetCAM", "Generator", "Discriminator", "Encoder", "ReconNet",
          "PerturbationNet", "MARNet")


@pytest.fixture(params=DEVICES)
def dev(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> torch.device:
    """``companion.device()`` as a chapter calls it, patched to return each device in turn."""
    monkeypatch.setattr(companion, "device", lambda: torch.device(request.param))
    return companion.device()


def _tensors(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every tensor a module and its submodules hold: parameters, buffers and plain tensor attributes."""
    out = {}
    for prefix, m in module.named_modules():
        for key, value in vars(m).items():
            if isinstance(value, torch.Tensor):
                out[f"{prefix}.{key}"] = value
        out |= {f"{prefix}.{k}": t for k, t in m.named_buffers(recurse=False)}
        out |= {f"{prefix}.{k}": t for k, t in m.named_parameters(recurse=False)}
    return out


@pytest.mark.parametrize("name", sorted(chapters()))
def test_every_chapter_places_its_models_with_companion_device(name: str) -> None:
    code = [c.source for c in jupytext.read(chapters()[name]).cells if c.cell_type == "code"]
    lines = [line for cell in code for line in cell.splitlines()]
    assert "dev = companion.device()" in lines, f"{name}: set `dev = companion.device()` once, after the seeds"
    built = rf"(?<![\w.])({'|'.join(MODELS)})\("
    loose = [line.strip() for line in lines if not line.lstrip().startswith(("from ", "import ", "#"))
             and len(re.findall(built, line)) > line.count(".to(dev)")]
    assert not loose, f"{name}: models built without `.to(dev)`:\n  " + "\n  ".join(loose)
    calls = "\n".join(code)
    for call in re.findall(r"open_set_mnist\([^)]*\)", calls):
        assert "device=dev" in call, f"{name}: {call} trains its CNN without device=dev"


def test_scanner_to_moves_every_tensor_of_its_operators() -> None:
    scanner = Scanner(16)
    before = _tensors(scanner.fan) | _tensors(scanner.ril)
    assert {"._w", "._wt", ".grid", "parallel._w", "parallel._wt", "parallel.angles"} <= set(before)
    assert scanner.to("meta") is scanner
    for part in (scanner.fan, scanner.ril):
        placed = {k: t.device.type for k, t in _tensors(part).items()}
        assert set(placed.values()) == {"meta"}, placed
    # the physics tables stay with the simulation, on the CPU
    assert scanner.energies.device.type == scanner.weights.device.type == "cpu"


def test_sparse_operator_to_its_own_device_changes_nothing() -> None:
    scanner = Scanner(16)
    fan, w = scanner.fan, scanner.fan._w
    assert fan.to("cpu") is fan and fan._w is w
    fan.double()     # dtype conversions leave the float32 matrices alone: A casts them per input
    assert fan._w is w and fan._w.dtype == torch.float32


def test_ct_networks_train_and_reconstruct_on_the_device(dev: torch.device) -> None:
    def run(device: torch.device | None) -> tuple[dict[str, torch.Tensor], list[float]]:
        scanner = Scanner(32) if device is None else Scanner(32).to(device)
        data = training_set(scanner, 8, seed=0, n_implants=4)         # simulated on the CPU
        torch.manual_seed(0)
        net = MARNet("G", scanner, width=2)
        net = net if device is None else net.to(device)
        hist = train_mar(net, data, steps=2, batch_size=4, progress=False)
        return mar_outputs(net, data), hist.loss

    out, loss = run(dev)
    assert {t.device.type for t in out.values()} == {"cpu"}, "outputs come back to the data's device"
    if dev.type == "cpu":
        plain, plain_loss = run(None)
        assert loss == plain_loss and all(torch.equal(out[k], plain[k]) for k in plain)


def test_gan_inverter_and_classifier_run_on_the_device(dev: torch.device) -> None:
    x, y = load_mnist("train")
    x, y = x[:128].to(dev), y[:128].to(dev)
    torch.manual_seed(0)
    G, D, inv, D_inv = Generator(8, 4).to(dev), Discriminator(4).to(dev), Encoder(8, 4).to(dev), Discriminator(4).to(dev)
    train_gan(G, D, x, iterations=3, batch_size=32, progress=False)
    train_inverter(G, inv, D_inv, iterations=2, batch_size=16, progress=False)
    clf = SmallCNN(width=4, hidden=16).to(dev)
    hist = fit(clf, x, y, epochs=1, batch_size=64, val=(x, y), progress=False)
    assert 0 <= hist.val_accuracy[0] <= 1
    samples = sample(G, 10, generator=torch.Generator().manual_seed(0))
    assert samples.device == module_device(G) == x.device
    assert 0 < sample_quality(clf, samples.cpu())["confidence"] <= 1          # inputs follow the classifier
    z = torch.randn(5, 8, generator=torch.Generator().manual_seed(1))          # drawn on the CPU, as chapters do
    assert latent_recovery_error(G, inv, z).device == x.device
    features = embed(clf, x.cpu())                                            # back to NumPy from any device
    assert features.shape == (128, 16) and features.dtype == "float64"


def test_reconstruction_trains_and_is_attacked_on_the_device(dev: torch.device) -> None:
    x = load_mnist("test")[0][:32].to(dev)
    op = gaussian_cs(64, (1, 28, 28), seed=0).to(dev)
    torch.manual_seed(0)
    net = ReconNet(op, channels=4, depth=2).to(dev)
    hist = train_reconstruction(net, op, x, scheme="minmax", epochs=1, batch_size=16, progress=False)
    err = worst_case_error(net, op, x, 0.5, steps=2)
    assert err.device == x.device and torch.isfinite(err).all() and len(hist.loss) == 1
