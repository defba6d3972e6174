"""Translation throughput: training iterations/s and rendering slices/s of CycleGAN and CUT per preset and device.

Slices are random (speed does not depend on content). Training: ``train_translator`` for ``--iterations``; the
rate is taken between the first and the last iteration's callback (network construction and the first, slower
iteration excluded); a CycleGAN iteration reads ``batch_size`` source and ``batch_size`` target slices and updates
two generators and two discriminators, a CUT iteration one generator, its patch MLP and one discriminator.
Rendering: ``Translator.translate_slices`` of ``--render-slices`` slices (batch 8), median of 3 runs. The ``paper``
preset trains on whole ``--paper-size`` slices at batch 1 (the reference's 256 x 256); ``cpu`` on 64 x 64 crops of
``--cpu-size`` slices at batch 4. Holds /tmp/nnunet_gen_cpu.lock; writes
benchmarks/output/bench_translation_speed.{md,json}.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_translation_speed.py
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from seed_workdir import cpu_lock
from timing import median_seconds

OUTPUT = Path(__file__).resolve().parent / "output"


def measure(preset: str, method: str, size: int, args, device: str) -> dict[str, float]:
    from synth.translation import PRESETS, train_translator
    rng = np.random.default_rng(0)
    slices = rng.uniform(1.0, 100.0, (16, size, size)).astype(np.float32)
    config = replace(PRESETS[preset], method=method, iterations=args.iterations)
    stamps: list[float] = []
    translator = train_translator(slices[:8], slices[8:], config, seed=0, device=device, progress=False,
                                  callback=lambda iteration, losses: stamps.append(time.perf_counter()))
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    iterations_per_s = (len(stamps) - 1) / (stamps[-1] - stamps[0])
    render = rng.uniform(1.0, 100.0, (args.render_slices, size, size)).astype(np.float32)
    seconds = median_seconds(lambda: translator.translate_slices(render), 3)
    return {"slice_size": size, "batch_size": config.batch_size, "train_iterations_per_s": iterations_per_s,
            "train_slices_per_s": iterations_per_s * config.batch_size, "render_slices_per_s": len(render) / seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=6, help="training iterations timed per configuration")
    parser.add_argument("--render-slices", type=int, default=32)
    parser.add_argument("--cpu-size", type=int, default=64, help="slice size for the cpu preset")
    parser.add_argument("--paper-size", type=int, default=256, help="slice size for the paper preset")
    parser.add_argument("--devices", nargs="+", default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with cpu_lock():
        for device in args.devices:
            for preset, size in (("cpu", args.cpu_size), ("paper", args.paper_size)):
                for method in ("cyclegan", "cut"):
                    rows.append({"device": device, "preset": preset, "method": method,
                                 **measure(preset, method, size, args, device)})
                    print(rows[-1], flush=True)
    where = f"{platform.processor() or platform.machine()}, {args.threads} threads" + (
        f"; {torch.cuda.get_device_name()}" if "cuda" in args.devices else "")
    lines = [f"Translation throughput ({where}; {args.iterations} training iterations, {args.render_slices} rendered "
             "slices per row)", "", "| device | preset | method | slice | batch | train it/s | train slices/s | "
             "render slices/s |", "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['device']} | {r['preset']} | {r['method']} | {r['slice_size']} | {r['batch_size']} | "
              f"{r['train_iterations_per_s']:.2f} | {r['train_slices_per_s']:.2f} | {r['render_slices_per_s']:.1f} |"
              for r in rows]
    table = "\n".join(lines)
    print(table)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    (OUTPUT / "bench_translation_speed.md").write_text(table + "\n")
    (OUTPUT / "bench_translation_speed.json").write_text(json.dumps({"command": " ".join(sys.argv),
                                                                     "args": vars(args), "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
