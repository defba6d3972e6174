"""``nnunet-gen demo``: the embedded main job (see :mod:`nnunet_gen.demo`)."""
from __future__ import annotations

import argparse
from pathlib import Path


def cmd_demo(args) -> None:
    from nnunet_gen.demo import run_demo
    run_demo(Path(args.workdir), args.seed, args.folds)


def register(sub: argparse._SubParsersAction, render: argparse._SubParsersAction) -> None:
    s = sub.add_parser("demo", help="phantom -> naive render -> train baseline vs NaiveRescale -> Dice table")
    s.add_argument("--workdir", default="demo_output")
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--folds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    s.set_defaults(func=cmd_demo)
