"""GBA cost: (a) render throughput of one 256x256x40 case, (b) nnU-Net seconds per iteration, GBA vs baseline.

(a) ``render``: one brain-like 256x256x40 case (phantom texture) with a tumour spanning 15 axial slices, rendered by
:class:`nnunet_gen.augment.gba.GenerativeBlending` retaining 3 and 4 generators (the paper's two injection scales), and by
the naive path (``blend=False``, same code), plus the NIfTI write of one copy. The SinGAN has the architecture a
256x256 slice gets at the paper's defaults (scale factor 0.75, min size 25, max size 250: 10 scales 25..250 px,
32 -> 128 filters, 5 conv layers each) with freshly initialised weights: training it takes hours on this CPU, and
inference cost depends on the architecture and slice size only, not on the weights' values.
(b) ``trainer``: a two-centre phantom, ``nnunet-gen render gba`` (alphas 0.5/0.8/1.5 x 2 scales = 6 copies per
case, tiny SinGAN trained on a phantom slice of the patch's in-plane size), then stock ``nnUNetv2_train`` fold 0
for nnUNetTrainer (source), nnUNetTrainerGBA (rendered, offline) and nnUNetTrainerGBAOnline (source, GBA on the
fly) with the same plans and schedule, ``nnUNet_n_proc_DA=0`` (augmentation in the training process, so its cost is
not hidden by idle cores). Seconds per iteration = nnU-Net's logged epoch time / training iterations per epoch,
median over epochs after the first (the epoch time includes the epoch's few validation iterations); ratios are
taken between arms of this one run.

Holds /tmp/nnunet_gen_cpu.lock while it runs (do not wrap it in flock). Writes benchmarks/output/bench_gba.{md,json}.

    PYTHONPATH=. .venv/bin/python benchmarks/bench_gba.py [--parts render trainer] [--schedule demo] [--threads 1]
"""
from __future__ import annotations

import argparse
import fcntl
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
import torch
from timing import median_seconds

REPO = Path(__file__).resolve().parent.parent
OUTPUT = REPO / "benchmarks" / "output"
LOCK = "/tmp/nnunet_gen_cpu.lock"


def untrained_singan(slice_shape: tuple[int, int]):
    """A SinGAN with the default-config architecture for ``slice_shape`` and initial weights (see docstring)."""
    from synth.singan import ResidualGenerator, SinGAN, SinGANConfig, pyramid_shapes

    config = SinGANConfig()
    shapes = pyramid_shapes(slice_shape, config)
    generators = [ResidualGenerator(config.filters_at_scale(s), config) for s in range(len(shapes))]
    fixed_noise = torch.randn((1, 1, *shapes[0]), generator=torch.Generator().manual_seed(0))
    return SinGAN(generators, fixed_noise, [1.0] + [0.01] * (len(shapes) - 1), shapes, slice_shape, 100.0, 100.0,
                  [0.0] * len(shapes), config, seed=0)


def bench_render(repeats: int) -> list[dict]:
    from nnunet_gen.augment.gba import GenerativeBlending
    from nnunet_gen.convert.phantom import phantom_case
    from nnunet_gen.io.images import Geometry, write_image

    image, _ = phantom_case(0, "A", shape=(40, 256, 256))
    zz, yy, xx = np.indices(image.shape)
    label = ((((zz - 19.0) / 7.4) ** 2 + ((yy - 110) / 22) ** 2 + ((xx - 140) / 18) ** 2) <= 1).astype(np.uint8)
    assert int(label.any(axis=(1, 2)).sum()) == 15
    image = np.where(label == 1, image * 1.5, image).astype(np.float32)
    singan = untrained_singan((256, 256))
    rows = []
    for name, transform in (
            ("GBA, 3 generators retained", GenerativeBlending(0.5, singan.num_scales - 3, seed=1)),
            ("GBA, 4 generators retained", GenerativeBlending(0.5, singan.num_scales - 4, seed=1)),
            ("naive (blend=False, same code path)", GenerativeBlending(0.5, 0, blend=False))):
        seconds = median_seconds(lambda: transform(image, label, singan), repeats)
        rows.append({"operation": name, "seconds_per_case": seconds})
    geometry = Geometry((0.5, 0.5, 1.5), (0.0, 0.0, 0.0), (1, 0, 0, 0, 1, 0, 0, 0, 1))
    with tempfile.TemporaryDirectory() as folder:
        seconds = median_seconds(lambda: write_image(image, geometry, Path(folder) / "case_0000.nii.gz"), repeats)
    rows.append({"operation": "write one copy (.nii.gz)", "seconds_per_case": seconds})
    naive = rows[2]["seconds_per_case"]
    for row in rows:
        row["ratio_to_naive"] = row["seconds_per_case"] / naive
    rows.append({"operation": f"(SinGAN: {singan.num_scales} scales {singan.scale_shapes[0]}..{singan.scale_shapes[-1]}"
                              f", torch threads {torch.get_num_threads()})", "seconds_per_case": float("nan"),
                 "ratio_to_naive": float("nan")})
    return rows


def _epoch_seconds(log_folder: Path) -> list[float]:
    text = "\n".join(p.read_text() for p in sorted(log_folder.glob("training_log_*.txt")))
    return [float(v) for v in re.findall(r"Epoch time: ([0-9.]+) s", text)]


def bench_trainer(schedule: str, workdir: Path, threads: int) -> list[dict]:
    """Phantom -> GBA render -> three trainers on fold 0, same plans (see module docstring)."""
    from nnunet_gen.cli import main as nnunet_gen
    from nnunet_gen.preprocess import is_preprocessed, plan_and_preprocess
    from nnunet_gen.run.nnunet import workdir_environment
    from nnunet_gen.training.schedules import SCHEDULES

    env = workdir_environment(workdir)
    os.environ.update({k: env[k] for k in ("nnUNet_raw", "nnUNet_preprocessed", "nnUNet_results",
                                           "nnUNet_def_n_proc")})
    singan = workdir / "singan_48.safetensors"
    if not (workdir / "nnUNet_raw" / "Dataset981_BenchGBA").is_dir():
        assert nnunet_gen(["phantom", "-d", "981", "--name", "BenchGBA", "--cases-a", "10", "--cases-b", "2",
                           "--shape", "32", "48", "48"]) == 0
    if not singan.is_file():
        assert nnunet_gen(["singan", "train", "-d", "981", "--case", "phantomB_000", "--images-folder", "imagesTs",
                           "-o", str(singan), "--min-size", "12", "--max-size", "48", "--iters", "50",
                           "--threads", str(threads)]) == 0
    if not (workdir / "nnUNet_raw" / "Dataset982_BenchGBAGBA").is_dir():
        assert nnunet_gen(["render", "gba", "-d", "981", "-o", "982", "--singan", str(singan), "--alphas", "0.5",
                           "0.8", "1.5", "--scales", "3", "4", "--threads", str(threads)]) == 0
    for dataset in (981, 982):
        name = "Dataset981_BenchGBA" if dataset == 981 else "Dataset982_BenchGBAGBA"
        if not is_preprocessed(name):
            plan_and_preprocess(dataset, num_processes=1)
    train_env = {**env, "nnUNet_n_proc_DA": "0", "nnunet_gen_SINGAN": str(singan), "OMP_NUM_THREADS": str(threads)}
    arms = (("nnUNetTrainer (source)", "981", f"nnUNetTrainer_{schedule}", "Dataset981_BenchGBA"),
            ("nnUNetTrainerGBA (offline, rendered)", "982", f"nnUNetTrainerGBA_{schedule}", "Dataset982_BenchGBAGBA"),
            ("nnUNetTrainerGBAOnline (on the fly)", "981", f"nnUNetTrainerGBAOnline_{schedule}",
             "Dataset981_BenchGBA"))
    iterations = SCHEDULES[schedule][1]
    rows = []
    for arm, dataset, trainer, name in arms:
        folder = workdir / "nnUNet_results" / name / f"{trainer}__nnUNetPlans__3d_fullres" / "fold_0"
        shutil.rmtree(folder, ignore_errors=True)  # every arm is timed in this run, from its own log only
        command = [str(Path(sys.executable).parent / "nnUNetv2_train"), dataset, "3d_fullres", "0", "-tr", trainer,
                   "-device", "cpu"]
        print("$", " ".join(command[1:]), flush=True)
        result = subprocess.run(command, env=train_env, capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"{trainer} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        epochs = _epoch_seconds(folder)
        timed = epochs[1:] if len(epochs) > 1 else epochs
        rows.append({"trainer": arm, "epochs_timed": len(timed),
                     "seconds_per_iteration": statistics.median(timed) / iterations})
    for row in rows:
        row["ratio_to_nnUNetTrainer"] = row["seconds_per_iteration"] / rows[0]["seconds_per_iteration"]
    return rows


def markdown(rows: list[dict], columns: list[str]) -> str:
    lines = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
    for row in rows:
        cells = [f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--parts", nargs="+", choices=["render", "trainer"], default=["render", "trainer"])
    parser.add_argument("--repeats", type=int, default=3, help="render timings: median over repeats")
    parser.add_argument("--schedule", default="demo", help="trainer schedule suffix (smoke, demo, 1epoch, ...)")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (render) / OMP threads (trainers)")
    parser.add_argument("--workdir", default=str(OUTPUT / "bench_gba_work"))
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    OUTPUT.mkdir(parents=True, exist_ok=True)
    results_file = OUTPUT / "bench_gba.json"
    # A run of one part keeps the other part's last results.
    results = json.loads(results_file.read_text()) if results_file.is_file() else {}
    results.update({"command": " ".join(sys.argv), "threads": args.threads})
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if "render" in args.parts:
            results["render"] = bench_render(args.repeats)
            results_file.write_text(json.dumps(results, indent=1))  # kept even if the trainer part fails
        if "trainer" in args.parts:
            workdir = Path(args.workdir).resolve()
            workdir.mkdir(parents=True, exist_ok=True)
            results["trainer"] = bench_trainer(args.schedule, workdir, args.threads)
            results["trainer_schedule"] = args.schedule
    text = []
    if "render" in results:
        text += ["## (a) GBA render, one 256x256x40 case, 15 tumour slices", "",
                 markdown(results["render"], ["operation", "seconds_per_case", "ratio_to_naive"]), ""]
    if "trainer" in results:
        text += [f"## (b) nnU-Net seconds per iteration, phantom 32x48x48, schedule _{results['trainer_schedule']}, "
                 f"nnUNet_n_proc_DA=0", "",
                 markdown(results["trainer"], ["trainer", "epochs_timed", "seconds_per_iteration",
                                               "ratio_to_nnUNetTrainer"]), ""]
    table = "\n".join(text)
    print(table)
    (OUTPUT / "bench_gba.md").write_text(table + "\n")
    results_file.write_text(json.dumps(results, indent=1))

if __name__ == "__main__":
    main()
