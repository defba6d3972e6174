"""``nnunet-gen``: one command, subcommands mirroring nnU-Net's flags (-d, -c, -f, -tr, -np, -device).

Data flows one way: convert/phantom -> render -> preprocess -> (nnUNetv2_train) -> predict -> evaluate.
This package only parses arguments and calls the library; bad input ends with a one-line
``nnunet-gen: error: <case>: <problem>`` and exit code 2.
"""
from __future__ import annotations

import argparse
import sys

from nnunet_gen.cli import arh, crossmodal, data, demo, evaluate, gba, selftrain, stylegan
from nnunet_gen.errors import DataError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="nnunet-gen", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    render = sub.add_parser("render", help="pre-render synthetic cases into a new raw dataset").add_subparsers(
        dest="generator", required=True)
    for module in (data, crossmodal, gba, arh, stylegan, selftrain, evaluate, demo):
        module.register(sub, render)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        args.func(args)
    except DataError as error:
        print(f"nnunet-gen: error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
