"""Command line: ``python -m benchmarks.robustness {build,evaluate,compare} [options]``."""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from benchmarks import robustness
from benchmarks.robustness import compare, evaluate, proxy, tfds_copy
from benchmarks.robustness.compare import REPO
from rps.errors import UserError, report


def parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.robustness",
                                     description=robustness.__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--data", type=Path, default=REPO.parent / "shared/data/rps",
                        help="dataset root; the proxy is built from its test/ (default: "
                             "%(default)s)")
    common.add_argument("--out", type=Path, default=REPO / "outputs/robustness",
                        help="proxy sets, tables and logs (default: %(default)s)")
    common.add_argument("--seed", type=int, default=0, help="the proxy sets' seed")
    commands = parser.add_subparsers(dest="command", required=True)

    build = commands.add_parser("build", parents=[common],
                                help="build the proxy sets and their contact sheets")
    build.add_argument("--sheets", type=Path, default=None,
                       help="folder for robustness-<set>.png contact sheets (default: --out)")

    scored = commands.add_parser("evaluate", parents=[common],
                                 help="score models on the test split and each proxy set")
    scored.add_argument("--run-id", action="append", default=[],
                        help="an MLflow run id (repeatable)")
    scored.add_argument("--model", action="append", default=[], type=Path,
                        help="a model.keras file or a run folder (repeatable)")
    scored.add_argument("--tracking-uri", default=None,
                        help="where run ids live (default: the store run.py writes to)")

    trained = commands.add_parser("compare", parents=[common],
                                  help="train each aug x finetune config, then score them all")
    trained.add_argument("--configs", nargs="+", default=list(compare.CONFIGS),
                         choices=compare.CONFIGS, metavar="AUG/FINETUNE",
                         help=f"a subset of {' '.join(compare.CONFIGS)} (default: all)")
    trained.add_argument("--epochs", type=int, default=None, help="trainer.epochs of each run")
    trained.add_argument("--seeds", type=int, nargs="+", default=[None], metavar="SEED",
                         help="train each config once per trainer.seed, and add rows of the "
                              "mean and the worst over them (default: the config's seed)")
    trained.add_argument("--source", choices=("folder", "tfds"), default="folder",
                         help="train on --data's folders (data=folder), or on a tfds copy of "
                              "them made offline in <out>/tfds (data=rps, the default "
                              "config's source) (default: %(default)s)")
    trained.add_argument("--experiment", default=compare.EXPERIMENT,
                         help="MLflow experiment of the runs (default: %(default)s)")
    trained.add_argument("--tracking-uri", default=None,
                         help="MLflow store (default: the store run.py writes to)")
    trained.add_argument("--rerun", action="store_true",
                         help="train every config again, even with a finished run")
    trained.add_argument("overrides", nargs="*",
                         help="more run.py overrides for every run, e.g. cache.views=4")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> None:
    args = parse(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    try:
        run(args)
    except UserError as err:
        report(err)
        raise SystemExit(2) from None


def run(args: argparse.Namespace) -> None:
    from rps.config import TrackingConfig
    from rps.tracking import store_uri

    if args.command == "build":
        for name, folder in proxy.build(args.data / "test", args.out / "proxy",
                                        args.seed).items():
            sheet = proxy.contact_sheet(folder, (args.sheets or args.out) /
                                        f"robustness-{name}.png")
            print(f"{name}: {folder} (contact sheet {sheet})")
        return
    sets = evaluate.sets(args.data, args.out, args.seed)
    uri = store_uri(TrackingConfig(uri=args.tracking_uri), REPO)
    if args.command == "evaluate":
        if not args.run_id and not args.model:
            raise UserError("nothing to evaluate: pass --run-id <MLflow run id> or --model "
                            "<model.keras or run folder>, each as often as you like.")
        models = [evaluate.from_run(r, uri) for r in args.run_id]
        models += [evaluate.from_path(p) for p in args.model]
        rows, kind_rows = [], {}
        for name, hits in evaluate.evaluate(models, sets).items():
            rows.append({"model": name, **evaluate.accuracies(hits)})
            for set_name, accuracies in evaluate.by_kind(hits, sets).items():
                kind_rows.setdefault(set_name, []).append({"model": name, **accuracies})
        stem = "evaluation"
    else:
        extra = [*([f"trainer.epochs={args.epochs}"] if args.epochs else []), *args.overrides]
        tfds_dir = (tfds_copy.prepare(args.data, args.out / "tfds")
                    if args.source == "tfds" else None)
        jobs = compare.jobs(args.configs, args.data, args.experiment, extra, args.seeds,
                            tfds_dir)
        rows, kind_rows = compare.compare(jobs, uri, args.experiment, args.out, sets,
                                          args.rerun)
        stem = "comparison"
    for set_name, table_rows in kind_rows.items():
        print(f"{set_name}, by kind:\n"
              f"{evaluate.write(table_rows, args.out, f'{stem}-{set_name}')}\n")
    print(evaluate.write(rows, args.out, stem))
    print(f"\n(also in {args.out / stem}.md and .json; by kind in {stem}-<set>.md)")
    if any(row.get("run") == "failed" for row in rows):
        raise SystemExit(1)


if __name__ == "__main__":
    main()
