"""``pydamon convert``: rewrite a record in another format (pydamon, damo json, Parquet)."""

from __future__ import annotations

import argparse
import os
import sys

from pydamon.cli.main import EXIT_UNSUPPORTED, EXIT_USAGE, CliError

EPILOG = """\
examples:
  pydamon convert pydamon.data -o damon.data                 # for 'damo report' (json_compressed)
  pydamon convert damon.data -o from-damo.data --output_type pydamon
  pydamon convert pydamon.data -o rec.parquet --output_type parquet
      # then: duckdb -c "SELECT snapshot, sum(size_bytes) FROM 'rec.parquet' GROUP BY 1"
"""


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "convert",
        help="convert a record between pydamon, damo (json, json_compressed) and Parquet",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("input", help="a pydamon or damo record")
    p.add_argument("-o", "--out", required=True, help="output file")
    p.add_argument(
        "--output_type",
        choices=("json_compressed", "json", "pydamon", "parquet"),
        default="json_compressed",
        help="output format (default json_compressed, damo's default)",
    )
    p.add_argument("--compress", type=int, default=0, metavar="LEVEL",
                   help="zlib level for --output_type pydamon (0: none)")  # fmt: skip
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pydamon.record import (
        CorruptColumn,
        RecordError,
        export_record,
        read_record,
        write_record,
    )

    if os.path.abspath(args.input) == os.path.abspath(args.out):
        raise CliError("input and output are the same file; choose another -o", EXIT_USAGE)
    verify = False
    while True:
        try:
            rec = read_record(args.input, verify=verify)
        except RecordError as err:
            raise CliError(str(err)) from None
        for w in rec.warnings:
            print(f"pydamon convert: note: {args.input}: {w}", file=sys.stderr)
        try:
            if args.output_type == "pydamon":
                write_record(args.out, rec, compress=max(0, min(args.compress, 9)))
            else:
                export_record(rec, args.out, args.output_type)
            break
        except CorruptColumn as err:  # a mapped record's damage, found when used
            if verify:
                raise CliError(str(err)) from None
            verify = True  # again, leaving out the damaged snapshots
        except RuntimeError as err:  # a missing extra (pyarrow)
            raise CliError(str(err), EXIT_UNSUPPORTED) from None
        except MemoryError:
            raise CliError(f"out of memory writing {args.out}") from None
    print(f"{args.input} ({rec.source_format}, {rec.nr_snapshots} snapshots) -> {args.out} "
          f"({args.output_type})", file=sys.stderr)  # fmt: skip
    return 0
