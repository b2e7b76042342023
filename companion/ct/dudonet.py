"""DuDoNet: a sinogram network and an image network joined by the Radon inversion layer.

* :class:`UNet` -- four resolution levels (widths ``c, 2c, 4c, 8c``), two 3×3 convolutions with
  LeakyReLU(0.2) per level, max-pooling down, transposed convolutions up, skip connections; with
  ``mask_pyramid=True`` the metal trace, max-pooled to every scale, is concatenated to the input of
  every encoder and decoder level below the first (so a thin trace does not vanish when down-sampled).
* :class:`MARNet` -- one configuration of the paper's ablation (Table 4.1): SE-Net
  ``Y_out = M_t ⊙ G_s(Y_LI, M_t) + (1 − M_t) ⊙ Y_LI`` (eq. 4.6, with ``G_s = Y_LI + U-Net``), the RIL
  ``X̂ = f_R(Y_out)``, IE-Net ``X_out = X_LI + G_i(X̂, X_LI)`` (eq. 4.12), or an image-only network.
* :func:`mar_loss` -- ``L = L_Gs + L_RC + L_Gi`` (eqs. 4.7, 4.11, 4.13, 4.14), mean absolute errors.
* :func:`train_mar` -- Adam (β = 0.5, 0.999), batch 8, learning rate halved every quarter of the run.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from .._validate import check_choice, check_int, check_positive
from ..train import History, Step, module_device, train_loop
from .simulate import MARData, Scanner

# name: (sinogram net, mask pyramid, image net, RC loss, image net input)
CONFIGS = {
    "image_only": dict(se=False, mask_pyramid=False, ie=True, rc=False, ie_input="x_ma"),
    "A": dict(se=True, mask_pyramid=False, ie=False, rc=False, ie_input="x_li"),
    "B": dict(se=True, mask_pyramid=True, ie=False, rc=False, ie_input="x_li"),
    "C": dict(se=False, mask_pyramid=False, ie=True, rc=False, ie_input="x_li"),
    "D": dict(se=True, mask_pyramid=False, ie=True, rc=False, ie_input="x_li"),
    "E": dict(se=True, mask_pyramid=True, ie=True, rc=False, ie_input="x_li"),
    "F": dict(se=True, mask_pyramid=False, ie=True, rc=True, ie_input="x_li"),
    "G": dict(se=True, mask_pyramid=True, ie=True, rc=True, ie_input="x_li"),
}


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1), nn.LeakyReLU(0.2),
                         nn.Conv2d(cout, cout, 3, padding=1), nn.LeakyReLU(0.2))


class UNet(nn.Module):
    """U-Net ``(B, in_channels, H, W) -> (B, 1, H, W)`` with an optional mask pyramid (see module doc).

    Inputs are padded (replicate) to a multiple of 8 and cropped back, so any ``H, W ≥ 8`` works.
    """

    def __init__(self, in_channels: int, width: int = 8, mask_pyramid: bool = False) -> None:
        super().__init__()
        check_int(in_channels, "in_channels")
        check_int(width, "width")
        self.in_channels, self.mask_pyramid = in_channels, mask_pyramid
        extra = 1 if mask_pyramid else 0
        widths = [width * 2**k for k in range(4)]
        self.down = nn.ModuleList([_block(in_channels if k == 0 else widths[k - 1] + extra, widths[k]) for k in range(4)])
        self.up = nn.ModuleList([nn.ConvTranspose2d(widths[k + 1], widths[k], 2, stride=2) for k in range(3)])
        self.dec = nn.ModuleList([_block(2 * widths[k] + (extra if k > 0 else 0), widths[k]) for k in range(3)])
        self.out = nn.Conv2d(width, 1, 1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        if x.ndim != 4 or x.shape[1] != self.in_channels:
            raise ValueError(f"UNet expects (B, {self.in_channels}, H, W), got {tuple(x.shape)}")
        if self.mask_pyramid and (mask is None or mask.shape[-2:] != x.shape[-2:]):
            raise ValueError("a mask-pyramid U-Net needs the mask (B, 1, H, W) of the input's size")
        h, w = x.shape[-2:]
        ph, pw = -h % 8, -w % 8
        x = F.pad(x, (0, pw, 0, ph), mode="replicate")
        masks = []
        if self.mask_pyramid:
            m = F.pad(mask.to(x.dtype), (0, pw, 0, ph), mode="replicate")
            masks = [m]
            for _ in range(3):
                masks.append(F.max_pool2d(masks[-1], 2))
        skips = []
        for k, block in enumerate(self.down):
            if k > 0:
                x = F.max_pool2d(x, 2)
                if self.mask_pyramid:
                    x = torch.cat([x, masks[k]], 1)
            x = block(x)
            skips.append(x)
        for k in (2, 1, 0):
            x = torch.cat([self.up[k](x), skips[k]] + ([masks[k]] if self.mask_pyramid and k > 0 else []), 1)
            x = self.dec[k](x)
        return self.out(x)[..., :h, :w]


class MARNet(nn.Module):
    """One configuration of :data:`CONFIGS` ("G" is the full DuDoNet) for a given :class:`~companion.ct.simulate.Scanner`.

    ``forward(batch)`` takes a :class:`~companion.ct.simulate.MARData` and returns a dict with ``y_out`` and
    ``x_hat`` (when there is a sinogram network) and ``x_out`` (when there is an image network). The final
    image is :meth:`image`: ``x_out`` if present, else ``x_hat``.
    """

    def __init__(self, config: str, scanner: Scanner, width: int = 8) -> None:
        super().__init__()
        self.config = check_choice(config, "config", CONFIGS)
        self.opts = CONFIGS[config]
        self.scanner = scanner              # a plain object: the RIL has no weights and stays out of the state dict
        self.se = UNet(2, width, self.opts["mask_pyramid"]) if self.opts["se"] else None
        channels = 2 if self.opts["se"] else 1
        self.ie = UNet(channels, width) if self.opts["ie"] else None

    def forward(self, batch: MARData) -> dict[str, torch.Tensor]:
        out: dict[str, torch.Tensor] = {}
        if self.se is not None:
            y_li, m = batch.y_li[:, None], batch.trace[:, None].to(batch.y_li.dtype)
            g = y_li + self.se(torch.cat([y_li, m], 1), m)
            out["y_out"] = (m * g + (1 - m) * y_li)[:, 0]
            out["x_hat"] = self.scanner.reconstruct(out["y_out"])
        if self.ie is not None:
            base = getattr(batch, self.opts["ie_input"])
            inp = torch.stack([out["x_hat"], base], 1) if self.se is not None else base[:, None]
            out["x_out"] = base + self.ie(inp)[:, 0]
        return out

    @staticmethod
    def image(out: dict[str, torch.Tensor]) -> torch.Tensor:
        return out["x_out"] if "x_out" in out else out["x_hat"]


def mar_loss(net: MARNet, out: dict[str, torch.Tensor], batch: MARData) -> dict[str, torch.Tensor]:
    """The terms of eq. 4.14 that apply to ``net``'s configuration, plus their sum under ``"total"``."""
    terms = {}
    if "y_out" in out:
        terms["L_Gs"] = (out["y_out"] - batch.y_gt).abs().mean()
        if net.opts["rc"]:
            terms["L_RC"] = (out["x_hat"] - batch.x_gt).abs().mean()
    if "x_out" in out:
        terms["L_Gi"] = (out["x_out"] - batch.x_gt).abs().mean()
    terms["total"] = sum(terms.values())
    return terms


def mar_step(net: MARNet, opt: torch.optim.Optimizer, data: MARData,
             scheduler: torch.optim.lr_scheduler.LRScheduler | None = None) -> Step:
    """One Adam step of ``net`` on the pairs ``data[idx]`` with the loss of :func:`mar_loss` (eq. 4.14).

    Logs the total as ``loss`` and each term under its name (``L_Gs``, ``L_RC``, ``L_Gi``).
    """
    dev = module_device(net)

    def step(idx: torch.Tensor | None) -> dict[str, float]:
        batch = data[idx].to(dev)
        terms = mar_loss(net, net(batch), batch)
        opt.zero_grad(set_to_none=True)
        terms["total"].backward()
        opt.step()
        if scheduler is not None:
            scheduler.step()
        return {"loss": float(terms["total"].detach())} | {k: float(v.detach()) for k, v in terms.items() if k != "total"}

    return step


def train_mar(net: MARNet, data: MARData, steps: int, batch_size: int = 8, lr: float = 4e-4, seed: int = 0,
              progress: bool = True, desc: str | None = None) -> History:
    """Train ``net`` on ``data`` for ``steps`` Adam steps (β = (0.5, 0.999)); the rate halves every quarter.

    :func:`mar_step` in :func:`~companion.train.train_loop`: mini-batches are drawn epoch by epoch from a
    permutation seeded with ``seed``. Leaves ``net`` in eval mode; the :class:`~companion.train.History`
    holds the per-step ``loss`` and loss terms.
    """
    check_int(steps, "steps")
    check_int(batch_size, "batch_size")
    check_positive(lr, "lr")
    if not isinstance(data, MARData) or len(data) < batch_size:
        raise ValueError(f"data must be a MARData with at least batch_size={batch_size} pairs")
    params = [p for p in net.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=max(1, steps // 4), gamma=0.5)
    gen = torch.Generator().manual_seed(seed)
    return train_loop(mar_step(net, opt, data, sched), [net], generator=gen, n=len(data), batch_size=batch_size,
                      steps=steps, desc=desc or f"training {net.config}", progress=progress)


@torch.no_grad()
def mar_outputs(net: MARNet, data: MARData, batch_size: int = 64) -> dict[str, torch.Tensor]:
    """All outputs of ``net`` (eval mode; the dict of :meth:`MARNet.forward`) for all pairs of ``data``, concatenated.

    Not a classifier's labels (that is :func:`companion.metrics.predict`): the corrected sinograms and images.
    Batches run on the network's device; the outputs come back on the device of ``data`` (the CPU for simulated
    pairs), next to the targets they are compared with.
    """
    net.eval()
    dev = module_device(net)
    parts = [net(data[s: s + batch_size].to(dev)) for s in range(0, len(data), batch_size)]
    return {k: torch.cat([p[k] for p in parts]).to(data.y.device) for k in parts[0]}
