"""companion.gan (DCGAN parts, training, sample quality) and companion.pretrained (shipped weights)."""
from __future__ import annotations

import json
import shutil

import pytest
import torch
from torch import nn

from companion import pretrained
from companion.gan import (Discriminator, Encoder, Generator, feature_frechet_distance, nearest_neighbour_distance, sample,
                           sample_quality, train_gan)


def test_shapes_and_ranges() -> None:
    G, D, E = Generator(latent_dim=8, width=4).eval(), Discriminator(width=4), Encoder(latent_dim=8, width=4)
    x = G(torch.randn(5, 8)).detach()
    assert x.shape == (5, 1, 28, 28) and float(x.min()) >= 0 and float(x.max()) <= 1
    assert D(x).shape == (5,) and E(x).shape == (5, 8)
    assert sample(G, 7, generator=torch.Generator().manual_seed(0)).shape == (7, 1, 28, 28)


@pytest.mark.parametrize(("call", "error"), [
    (lambda: Generator(latent_dim=8)(torch.randn(3, 9)), ValueError),
    (lambda: Discriminator()(torch.rand(2, 1, 32, 32)), ValueError),
    (lambda: Encoder()(torch.rand(2, 3, 28, 28)), ValueError),
    (lambda: Generator(latent_dim=0), ValueError),
    (lambda: Generator(width=2.5), TypeError),
])
def test_bad_input_is_rejected(call, error) -> None:
    with pytest.raises(error):
        call()


def test_train_gan_records_losses_and_leaves_eval_mode() -> None:
    torch.manual_seed(0)
    G, D = Generator(latent_dim=8, width=4), Discriminator(width=4)
    x = torch.rand(40, 1, 28, 28)
    before = [p.clone() for p in G.parameters()]
    hist = train_gan(G, D, x, iterations=5, batch_size=16, progress=False)
    assert len(hist.d_loss) == len(hist.g_loss) == 5 and not G.training and not D.training
    assert any(not torch.equal(a, b) for a, b in zip(before, G.parameters()))
    with pytest.raises(ValueError):
        train_gan(G, D, x, iterations=1, real_label=0.2, progress=False)
    with pytest.raises(ValueError):
        train_gan(G, D, x * 2, iterations=1, progress=False)


class _Fixed(nn.Module):
    """A 'classifier' whose logits are given per image (the first pixel selects the row)."""

    def __init__(self, logits: torch.Tensor) -> None:
        super().__init__()
        self.logits = logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits[: len(x)]


def test_sample_quality_measures() -> None:
    sure = torch.full((10, 10), -50.0)
    sure[torch.arange(10), torch.arange(10)] = 50.0  # every class once, with certainty
    q = sample_quality(_Fixed(sure), torch.rand(10, 1, 28, 28))
    assert q["confidence"] == pytest.approx(1.0) and q["confident_share"] == 1.0
    assert q["class_entropy"] == pytest.approx(torch.log2(torch.tensor(10.0)).item())
    q = sample_quality(_Fixed(torch.zeros(10, 10)), torch.rand(10, 1, 28, 28))  # uniform softmax, all argmax 0
    assert q["confidence"] == pytest.approx(0.1) and q["class_entropy"] == pytest.approx(0.0)


def test_feature_frechet_and_nearest_neighbour() -> None:
    g = torch.Generator().manual_seed(0)
    a = torch.randn(4000, 3, generator=g)
    assert feature_frechet_distance(a, a) == pytest.approx(0.0, abs=1e-6)
    shift = torch.tensor([2.0, 0.0, 0.0])
    assert feature_frechet_distance(a, a + shift) == pytest.approx(4.0, rel=1e-3)
    with pytest.raises(ValueError):
        feature_frechet_distance(a, torch.randn(10, 4))
    x = torch.rand(6, 1, 28, 28)
    assert torch.allclose(nearest_neighbour_distance(x[:3], x), torch.zeros(3))


# --------------------------------------------------------------------------- shipped weights
@pytest.mark.parametrize("name", sorted(pretrained.REGISTRY))
def test_shipped_weights_load_and_match_the_code_configuration_and_sources(name: str) -> None:
    config, _, _, sources = pretrained.REGISTRY[name]
    meta = pretrained.metadata(name)
    assert meta["config_hash"] == pretrained.config_hash(config), f"{name}: rebuild with `make weights`"
    assert meta["config"] == json.loads(json.dumps(config))
    assert meta.get("source_hash") == pretrained.source_hash(sources), f"{name}: rebuild with `make weights`"
    modules = pretrained.load(name)
    assert all(not m.training for m in modules.values())


@pytest.mark.parametrize("name", sorted(pretrained.REGISTRY))
def test_the_hashed_sources_include_the_models_the_recipe_and_the_loop(name: str) -> None:
    config, modules_fn, build, sources = pretrained.REGISTRY[name]
    assert len(set(sources)) == len(sources)
    hashes = pretrained.source_hashes(sources)            # every name resolves to code
    assert all(len(h) == 16 for h in hashes.values())
    needed = {f"{type(m).__module__}.{type(m).__qualname__}" for m in modules_fn(config).values()}
    needed |= {f"{build.__module__}.{build.__qualname__}", "companion.train.train_loop"}
    assert needed <= set(sources), f"{name}: not hashed: {sorted(needed - set(sources))}"


@pytest.fixture
def fresh_weights(tmp_path):
    """Untrained mnist_dcgan modules saved in tmp_path by today's code (its configuration and source hashes)."""
    config, modules_fn, _, _ = pretrained.REGISTRY["mnist_dcgan"]
    pretrained.save("mnist_dcgan", modules_fn(config), config, command="test", seconds=0.0, folder=tmp_path)
    pretrained.load("mnist_dcgan", folder=tmp_path)       # accepted as long as nothing changes
    return tmp_path


def test_loading_refuses_weights_after_a_source_changed(fresh_weights, monkeypatch) -> None:
    import companion.gan

    def gan_step(*args, **kwargs):                        # same name, other code
        raise AssertionError("never called")

    monkeypatch.setattr(companion.gan, "gan_step", gan_step)
    with pytest.raises(ValueError, match="make weights") as err:
        pretrained.load("mnist_dcgan", folder=fresh_weights)
    assert "the code of companion.gan.gan_step changed" in str(err.value)
    assert "configuration" not in str(err.value)


def test_loading_refuses_weights_after_the_configuration_changed(fresh_weights, monkeypatch) -> None:
    config, *rest = pretrained.REGISTRY["mnist_dcgan"]
    changed = json.loads(json.dumps(config))
    changed["gan"]["iterations"] += 1
    monkeypatch.setitem(pretrained.REGISTRY, "mnist_dcgan", (changed, *rest))
    with pytest.raises(ValueError, match="make weights") as err:
        pretrained.load("mnist_dcgan", folder=fresh_weights)
    assert "the configuration changed (recorded" in str(err.value) and "the code of" not in str(err.value)


def test_loading_refuses_weights_without_a_source_hash(fresh_weights) -> None:
    meta = json.loads((fresh_weights / "mnist_dcgan.json").read_text())
    del meta["source_hash"]
    (fresh_weights / "mnist_dcgan.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="no source hash is recorded.*make weights"):
        pretrained.load("mnist_dcgan", folder=fresh_weights)


def test_loading_refuses_weights_of_another_configuration(tmp_path) -> None:
    for suffix in (".pt", ".json"):
        shutil.copy(pretrained.WEIGHTS_DIR / f"mnist_dcgan{suffix}", tmp_path / f"mnist_dcgan{suffix}")
    meta = json.loads((tmp_path / "mnist_dcgan.json").read_text())
    meta["config_hash"] = "0" * 16
    (tmp_path / "mnist_dcgan.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="make weights"):
        pretrained.load("mnist_dcgan", folder=tmp_path)
    with pytest.raises(FileNotFoundError):
        pretrained.load("mnist_dcgan", folder=tmp_path / "missing")
    config, _, _, sources = pretrained.REGISTRY["mnist_dcgan"]
    meta["config_hash"] = pretrained.config_hash(config)
    meta["source_hash"], meta["sources"] = pretrained.source_hash(sources), pretrained.source_hashes(sources)
    meta["sha256"] = "0" * 64                      # weights that are not the recorded ones
    (tmp_path / "mnist_dcgan.json").write_text(json.dumps(meta))
    with pytest.raises(ValueError, match="sha256"):
        pretrained.load("mnist_dcgan", folder=tmp_path)
    with pytest.raises(ValueError):
        pretrained.load("no_such_weights")


def test_shipped_generator_draws_recognisable_digits(mnist_model) -> None:
    model, x_test, _ = mnist_model
    G = pretrained.load("mnist_dcgan")["generator"]
    q = sample_quality(model, sample(G, 300, generator=torch.Generator().manual_seed(0)))
    real = sample_quality(model, x_test[:300])
    assert q["confidence"] >= 0.7 and q["class_entropy"] >= 2.7  # mostly recognised digits of most classes (max log2 10 = 3.32)
    assert q["confidence"] <= real["confidence"] + 0.05
