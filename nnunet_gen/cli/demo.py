"""``nnunet-gen demo``: the embedded main job (see :mod:`nnunet_gen.demo`)."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_demo(args) -> None:
    from nnunet_gen.demo import run_demo
    run_demo(Path(args.workdir), args.seed, args.folds)


def register(sub: argparse._SubParsersAction, render: argparse._SubParsersAction) -> None:
    s = sub.add_parser("demo", help="shifted-centre phantom: nnU-Net default vs naive rescaling vs GBA, Dice + figures")
    s.add_argument("--workdir", default="demo_output")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--folds", type=int, nargs="+", default=[0],
                   help="folds per arm (0 1 2 3 4: leaderboard-style 5-fold ensemble, five times the time)")
    s.set_defaults(func=cmd_demo)
