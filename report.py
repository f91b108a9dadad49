"""Tables and figures of a sweep, as the paper prints them.

    python report.py multirun/a2_iterations/generated                 # writes into that folder
    python report.py multirun/t4_rd_mvtec/rd_mvtec --out reports/t4    # elsewhere
    python report.py multirun/t5_btad/btad --metrics image_auroc image_ap pixel_auroc
    python report.py multirun/t4_rd_mvtec/rd_mvtec --average dataset.train_seed dataset.test_seed

Writes table.md (rows: categories, groups, mean; columns: the swept values; cells: metrics in
percent), table.csv (the same numbers, one line per row x column x metric) and PNG figures
(see gpuksvd.sweeps), and prints the Markdown table. A preset may set report.metrics and
report.average in its config; --metrics and --average override them (--average with no key
averages nothing).
"""
import argparse
import sys

from gpuksvd.evaluation import METRIC_NAMES
from gpuksvd.sweeps import write_report


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("folder", help="the sweep's folder, e.g. multirun/a2_iterations/generated")
    parser.add_argument("--out", help="output folder (default: the sweep's folder)")
    parser.add_argument("--metrics", nargs="+", choices=METRIC_NAMES,
                        help="metrics in each cell (default: the preset's report.metrics, "
                             "else image_auroc pixel_auroc)")
    parser.add_argument("--average", nargs="*", metavar="KEY",
                        help="swept keys to average over within a column (default: the preset's report.average)")
    parser.add_argument("--no-figures", action="store_true", help="write the tables only")
    parser.add_argument("--error", choices=["relative", "mse"], default="relative",
                        help="training error drawn in the figures: relative (‖X − ΓD‖/‖X‖ per location, default) "
                             "or mse (the paper's mean squared error, ‖X − ΓD‖² / (N·C))")
    args = parser.parse_args(argv)
    written = write_report(args.folder, args.out, metrics=args.metrics, average=args.average,
                           figures=not args.no_figures, error=args.error)
    print(written["table.md"].read_text())
    for name, path in written.items():
        print(f"wrote {path}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
