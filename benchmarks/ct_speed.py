"""Speed of the companion's parallel-beam Radon transform and FBP against scikit-image.

A batch of 32 images of 128 × 128 pixels, 180 views over [0, π): the companion projects and
reconstructs the whole batch with one sparse product each; scikit-image does it image by image.
Also checks adjointness ⟨Ax, y⟩ = ⟨x, Aᵀy⟩ (to 1e-5 relative) and that both libraries agree.

    make bench                                   # or: python benchmarks/ct_speed.py [--batch 32 --size 128 --views 180]

Run it with COMPANION_THREADS=1 on a shared machine (torch's thread pool slows down when oversubscribed).
"""
from __future__ import annotations

import argparse
import sys
import time

import numpy as np
import torch
from skimage.transform import iradon, radon

from companion import set_threads
from companion.ct import ParallelBeam, uniform_angles
from companion.ct.phantoms import random_body_phantoms


def best_of(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--views", type=int, default=180)
    parser.add_argument("--target", type=float, default=10.0, help="required speed-up per image")
    args = parser.parse_args(argv)
    threads = set_threads()
    water, bone = random_body_phantoms(args.batch, args.size, torch.Generator().manual_seed(0))
    x = (water + 1.4 * bone).float()
    theta_deg = np.arange(args.views) * 180.0 / args.views
    start = time.perf_counter()
    op = ParallelBeam(args.size, uniform_angles(args.views))
    build = time.perf_counter() - start
    adjoint = op.adjointness_error()

    sino = op.A(x)
    t_radon = best_of(lambda: op.A(x)) / args.batch
    t_fbp = best_of(lambda: op.fbp(sino)) / args.batch
    xs = x.double().numpy()
    sk_sino = np.stack([radon(img, theta_deg, circle=True) for img in xs[:4]])
    t_sk_radon = best_of(lambda: [radon(img, theta_deg, circle=True) for img in xs[:4]], 2) / 4
    t_sk_fbp = best_of(lambda: [iradon(s, theta_deg, circle=True) for s in sk_sino], 2) / 4
    radon_err = float(np.linalg.norm(sino[:4].numpy() - sk_sino) / np.linalg.norm(sk_sino))

    print(f"geometry: {args.batch} images of {args.size}², {args.views} views; torch threads: {threads}; "
          f"matrix: {op.nnz / 1e6:.1f} M non-zeros, built in {build:.1f} s")
    print(f"{'':8}{'companion':>12}{'scikit-image':>15}{'speed-up':>10}   (ms per image)")
    rows = [("radon", t_radon, t_sk_radon), ("fbp", t_fbp, t_sk_fbp)]
    for name, ours, ref in rows:
        print(f"{name:8}{1e3 * ours:12.2f}{1e3 * ref:15.2f}{ref / ours:9.1f}×")
    print(f"adjointness error |<Ax,y> - <x,A^T y>| / (|Ax||y|) = {adjoint:.1e}; radon vs scikit-image: {radon_err:.1e} relative")
    ok = adjoint < 1e-5 and all(ref / ours >= args.target for _, ours, ref in rows)
    print("OK" if ok else f"FAILED: need adjointness < 1e-5 and a speed-up >= {args.target}×")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
