"""SinGAN training budget: reconstruction RMSE and wall time against iterations per scale and threads (issue 14).

The GBA paper trains SinGAN with the SinGAN paper's 2000 iterations per scale; on this CPU that is ~24 minutes for
one 64x56 slice. This script trains SinGANs on target-modality slices with several budgets and reports, per budget,
the finest scale's reconstruction RMSE (SinGAN's own fit measure, in the [-1, 1] units it trains in), the mean over
scales and the wall time, so a faster preset can be chosen from measurements:

* ``phantomC``: the textured centre-C phantom slice (24x32x32 volume, the slice with the most tumour), min size 14;
* ``anatomy``: a 40x40 target slice of the real-anatomy benchmark (``benchmarks/anatomy``; skipped when
  ``benchmarks/anatomy/setup.sh`` has not been run), min size 14.

Writes benchmarks/output/bench_singan.{md,json,png}. Holds /tmp/nnunet_gen_cpu.lock.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_singan.py --iters 50 100 200 500 1000 --threads 1 2
"""
from __future__ import annotations

import argparse
import fcntl
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output"
LOCK = "/tmp/nnunet_gen_cpu.lock"


def training_slices(seed: int) -> dict[str, np.ndarray]:
    """The 2D target slices the budgets are measured on (see the module docstring)."""
    from nnunet_gen.convert.phantom import phantom_case
    from nnunet_gen.qc.figures import tumour_slice

    image, label = phantom_case(seed, "C", (24, 32, 32))
    slices = {"phantomC": image[tumour_slice(label)]}
    sys.path.insert(0, str(REPO / "benchmarks"))
    from anatomy.shift import TARGET, TARGET_SUBJECT, VOLUMES, load_anatomy, simulate_case
    if (VOLUMES / "itk_t1.nii.gz").is_file():
        volume, lesion = simulate_case(load_anatomy(TARGET_SUBJECT), TARGET, seed)[:2]
        slices["anatomy"] = volume[tumour_slice(lesion.astype(np.uint8))]
    return slices


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iters", type=int, nargs="+", default=[50, 100, 200, 500, 1000])
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2],
                        help="torch threads; thread counts after the first are timed at the median budget only")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    from synth.singan import SinGANConfig, train_singan
    from nnunet_gen.qc.figures import new_figure, save_png

    OUTPUT.mkdir(parents=True, exist_ok=True)
    rows = []
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        for name, image in training_slices(args.seed).items():
            runs = [(iters, args.threads[0]) for iters in args.iters]
            runs += [(sorted(args.iters)[len(args.iters) // 2], t) for t in args.threads[1:]]
            for iters, threads in runs:
                torch.set_num_threads(threads)
                config = SinGANConfig(min_size=14, max_size=max(image.shape), iterations_per_scale=iters)
                start = time.perf_counter()
                singan = train_singan(image, config, seed=args.seed, progress=False)
                seconds = time.perf_counter() - start
                rows.append({"slice": name, "shape": list(image.shape), "iters": iters, "threads": threads,
                             "scales": singan.num_scales, "seconds": round(seconds, 1),
                             "rmse_finest": round(singan.reconstruction_rmse[-1], 4),
                             "rmse_mean": round(float(np.mean(singan.reconstruction_rmse)), 4)})
                print(rows[-1], flush=True)
    lines = ["| slice | iterations per scale | threads | scales | wall time (s) | RMSE finest | RMSE mean over "
             "scales |",
             "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['slice']} {r['shape'][0]}x{r['shape'][1]} | {r['iters']} | {r['threads']} | {r['scales']} | "
              f"{r['seconds']:.1f} | {r['rmse_finest']:.4f} | {r['rmse_mean']:.4f} |" for r in rows]
    table = "\n".join(lines)
    print(table)
    (OUTPUT / "bench_singan.md").write_text(f"command: {' '.join(sys.argv)}\n\n{table}\n")
    (OUTPUT / "bench_singan.json").write_text(json.dumps({"command": " ".join(sys.argv), "rows": rows}, indent=1))
    figure = new_figure(5.0, 3.5)
    axes = figure.add_subplot(1, 1, 1)
    for name in dict.fromkeys(r["slice"] for r in rows):
        points = [(r["iters"], r["rmse_finest"]) for r in rows
                  if r["slice"] == name and r["threads"] == args.threads[0]]
        axes.plot(*zip(*points), marker="o", label=name)
    axes.set_xscale("log")
    axes.set_xlabel("iterations per scale")
    axes.set_ylabel("reconstruction RMSE, finest scale")
    axes.legend()
    save_png(figure, OUTPUT / "bench_singan.png")


if __name__ == "__main__":
    main()
