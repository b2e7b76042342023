"""Small plotting and table helpers used by every chapter."""
from __future__ import annotations

from collections.abc import Mapping, Sequence

import matplotlib.pyplot as plt
import torch

# Okabe-Ito: a colour-blind-safe palette for curves
PALETTE = ("#0072B2", "#D55E00", "#009E73", "#CC79A7", "#E69F00", "#56B4E9", "#F0E442", "#000000")


def show_images(images: torch.Tensor, titles: Sequence[str] | None = None, *, ncols: int = 8, size: float = 1.4,
                vmin: float = 0.0, vmax: float = 1.0, cmap: str = "gray", suptitle: str | None = None) -> plt.Figure:
    """A grid of ``(B, C, H, W)`` images on a fixed value range (grey for C = 1), one title each."""
    if images.ndim != 4:
        raise ValueError(f"images must have shape (B, C, H, W), got {tuple(images.shape)}")
    if titles is not None and len(titles) != len(images):
        raise ValueError(f"got {len(titles)} titles for {len(images)} images")
    n = len(images)
    ncols = min(ncols, n)
    nrows = -(-n // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(size * ncols, size * nrows * 1.15), squeeze=False)
    for i, ax in enumerate(axes.flat):
        ax.axis("off")
        if i >= n:
            continue
        img = images[i].detach().cpu()
        if img.shape[0] == 1:
            ax.imshow(img[0], cmap=cmap, vmin=vmin, vmax=vmax)
        else:
            ax.imshow(img.permute(1, 2, 0).clamp(vmin, vmax))
        if titles is not None:
            ax.set_title(titles[i], fontsize=8)
    if suptitle:
        fig.suptitle(suptitle)
    fig.tight_layout()
    return fig


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[object]]):
    """A Markdown table rendered by Jupyter and the book (floats shown with 3 significant digits)."""
    from IPython.display import Markdown

    def fmt(v: object) -> str:
        return f"{v:.3g}" if isinstance(v, float) else str(v)

    lines = ["| " + " | ".join(headers) + " |", "|" + " --- |" * len(headers)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in rows]
    return Markdown("\n".join(lines))


def profile_table(profiles: Mapping[str, Mapping[str, object]], current: str | None = None):
    """What changes between a chapter's profiles: one row per setting whose value differs (a Markdown table).

    ``profiles`` maps each profile name (``ci``, ``book``, ``full``) to its settings, as a chapter's
    ``PROFILES``; a setting that a profile does not define shows as "–", settings equal in all profiles
    are left out. The column of ``current``, the profile of this run, is marked "(this run)".
    """
    absent = object()
    names = list(profiles)
    keys = list(dict.fromkeys(k for settings in profiles.values() for k in settings))
    rows = []
    for key in keys:
        values = [profiles[p].get(key, absent) for p in names]
        if any(v is absent or v != values[0] for v in values):
            rows.append([f"`{key}`"] + ["–" if v is absent else f"`{v}`" for v in values])
    headers = ["setting"] + [f"{p} (this run)" if p == current else p for p in names]
    return markdown_table(headers, rows)


def live_kernel() -> bool:
    """True when a person is at the notebook: a Jupyter kernel whose front end accepts input.

    False under papermill, ``make book``/``make test`` (which set ``COMPANION_BATCH=1``), nbclient and plain
    Python. Chapters build their interactive widgets only when this is true: an ``interact`` callback that
    computes for seconds while nbclient waits for the cell's reply can hang a batch run for good (nbclient
    issue 312), and the rendered page shows the static figure anyway. Set ``COMPANION_BATCH=1`` when you run
    the notebooks with your own papermill.
    """
    import os

    if os.environ.get("COMPANION_BATCH"):
        return False
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    kernel = getattr(get_ipython(), "kernel", None)
    # a front end with a reader sends execute requests with allow_stdin=True; nbclient/papermill send False
    return kernel is not None and bool(getattr(kernel, "_allow_stdin", True))
