"""``pydamon demo`` (placeholder until the simulated address space lands)."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="monitor a workload and show what DAMON sees")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    print("pydamon demo: not implemented yet")
    return 1
