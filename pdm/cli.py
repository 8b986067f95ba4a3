"""`pdm-bench`: the steps the workflow runs, one subcommand each (the Snakemake rules call the same functions).

    pdm-bench validate --config config/default.yaml
    pdm-bench stage1   --config C --method ldm --seed 0 --out results/default/stage1/ldm/seed0
    pdm-bench train    --config C --method pdm --seed 0 --out results/default/models/pdm/seed0 [--stage1-dir ...]
    pdm-bench sample   --config C --method pdm --seed 0 --model-dir ... --out results/default/samples/pdm/seed0
    pdm-bench refstats --config C --out results/default/refstats/digits_inception.npz
    pdm-bench evaluate --config C --method pdm --seed 0 --model-dir ... --samples-dir ... --refstats ... --out m.json
    pdm-bench diagnose --config C --method pdm --seed 0 --model-dir ... --out results/default/diagnostics/pdm/seed0
    pdm-bench report   --config C --records m1.json m2.json ... --tables-dir ... --plots-dir ... [--grids ...]
    pdm-bench regress  --table results/ci/tables/main.csv --golden tests/golden/ci/main.csv --tolerances ...
    pdm-bench identity --config C --method pdm --seed 0      # the stage identities the workflow uses
    pdm-bench data prepare cifar10 --root data [--download]  # a paper dataset -> data/cifar10/ (pdm.datasets)
    pdm-bench data list [--root data]
    pdm-bench paper-tables --tables results/*/tables/main.csv [--published config/published.csv] \
                           --out results/paper/tables [--plots results/paper/plots]   # dataset x method tables
    pdm-bench plan     --config C [--probe-batch-size 8] [--probe-steps 2] [--device cpu] [--out plan.csv]
"""

from __future__ import annotations

import argparse
import sys

from pdm.config import ConfigError, load_config


def preflight(cfg) -> None:
    """Every check that can fail before any job starts (see pdm.preflight)."""
    from pdm.preflight import preflight as run_checks

    run_checks(cfg)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="pdm-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)

    def command(name, help_text, *args):
        p = sub.add_parser(name, help=help_text)
        p.add_argument("--config", required=True, help="experiment YAML (see config/default.yaml)")
        for flag, kwargs in args:
            p.add_argument(flag, **kwargs)
        return p

    method = ("--method", {"required": True})
    seed = ("--seed", {"type": int, "required": True})
    out = ("--out", {"required": True})
    command("validate", "check a config and its data without running anything")
    command("stage1", "run a method's stage 1 (LDM autoencoder, RDM database + index)", method, seed, out)
    command("train", "train one method for one seed", method, seed, out,
            ("--stage1-dir", {"default": None, "help": "stage-1 folder, for methods with a stage 1"}))
    command("sample", "generate the evaluation samples", method, seed, ("--model-dir", {"required": True}), out)
    command("refstats", "compute reference statistics of the real images", out)
    command("evaluate", "score samples and write one result record", method, seed, ("--model-dir", {"required": True}),
            ("--samples-dir", {"required": True}), ("--refstats", {"required": True}), out)
    command("report", "aggregate result records into tables and plots", ("--records", {"nargs": "+", "required": True}),
            ("--tables-dir", {"required": True}), ("--plots-dir", {"required": True}),
            ("--grids", {"nargs": "*", "default": (), "help": "samples/{method}/seed{seed}/grid.png files to copy"}),
            ("--stage1-records", {"nargs": "*", "default": ()}))
    command("diagnose", "prototype usage, assignment entropy and PCA plots of a trained PDM-family run", method, seed,
            ("--model-dir", {"required": True}), out)
    command("identity", "print the stage identities of one method and seed", method, seed)
    command("plan", "every job's predicted device-hours and peak memory, from steps measured on this device (docs/plan.md)",
            ("--probe-steps", {"type": int, "default": 2, "help": "timed steps per measurement (after 1 warm-up)"}),
            ("--probe-batch-size", {"type": int, "default": None,
                                    "help": "measure at this batch and scale linearly (default: the config's batches)"}),
            ("--device", {"choices": ("cpu", "cuda"), "default": None, "help": "default: the config's device"}),
            ("--dataset-size", {"type": int, "default": None, "help": "images in the dataset, where it is not here yet"}),
            ("--num-classes", {"type": int, "default": None, "help": "its classes (0: unlabelled), where it is not here"}),
            ("--probes", {"default": None, "help": "keep the measurements in this JSON file and reuse them when it exists"}),
            ("--out", {"default": None, "help": "also write the table as CSV"}))
    from pdm import regress

    regress.add_arguments(sub.add_parser("regress", help="compare a results table with a golden table under tolerances"))
    _add_data_commands(sub.add_parser("data", help="prepare the paper's datasets (pdm.datasets); needs no config"))
    paper = sub.add_parser("paper-tables", help="IS / FID / KID and cost per dataset x method from several experiments")
    paper.add_argument("--tables", nargs="+", required=True,
                       help="each experiment's tables/main.csv (one experiment per dataset; results.csv beside it)")
    paper.add_argument("--published", default=None, help="published numbers to show beside ours (config/published.csv)")
    paper.add_argument("--out", required=True, help="folder for paper.csv, paper_{fid,is,kid}.md/.tex/.html, ...")
    paper.add_argument("--plots", default=None, help="folder for samples.png (rows methods, columns datasets)")
    paper.add_argument("--confidence", type=float, default=0.95, help="level of the t intervals over seeds")
    return parser


def _add_data_commands(parser: argparse.ArgumentParser) -> None:
    from pdm.datasets.catalog import CATALOG

    data = parser.add_subparsers(dest="data_command", required=True)
    prepare = data.add_parser("prepare", help="native files in ROOT/NAME/raw/ -> ROOT/NAME/{images,labels}.npy + manifest.json")
    prepare.add_argument("name", choices=list(CATALOG))
    prepare.add_argument("--root", required=True, help="data folder; configs name it as data.root")
    prepare.add_argument("--download", action="store_true",
                         help="download missing native files (torchvision's URLs and md5 checks); default: offline")
    prepare.add_argument("--seed", type=int, default=0, help="seed of the per-class draw (celeba, tinyimagenet)")
    prepare.add_argument("--per-class", type=int, default=None,
                         help="images drawn per class (celeba: per Male value, default 10000; tinyimagenet: default 250)")
    listing = data.add_parser("list", help="the preparable datasets (and, with --root, which are prepared there)")
    listing.add_argument("--root", default=None)


def _data(args: argparse.Namespace) -> int:
    from pdm.datasets.prepare import list_datasets, prepare

    try:
        if args.data_command == "prepare":
            prepare(args.name, args.root, download=args.download, seed=args.seed, per_class=args.per_class)
        else:
            for row in list_datasets(args.root):
                prepared = f"  prepared: {row['prepared']}" if "prepared" in row else ""
                print(f"{row['name']:13s}{row['resolution']:4d}x{row['resolution']:<4d}{row['count']:>7,d} images  "
                      f"{row['source']}{prepared}")
    except (ValueError, FileNotFoundError) as err:  # DataError is a ValueError
        print(f"pdm-bench data {args.data_command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def paper_tables(args) -> int:
    """The cross-dataset tables (pdm.paper_render) and, with --plots, the sample-grid figure of every dataset."""
    from pathlib import Path

    from pdm.paper_render import write_paper_tables

    try:
        scores = write_paper_tables(args.tables, args.out, args.published, args.confidence)
        if args.plots:
            from pdm.paper import experiment_dataset
            from pdm.paper_figures import datasets_sample_figure

            plots = {experiment_dataset(Path(t))[0]: Path(t).parent.parent / "plots" for t in args.tables}
            datasets_sample_figure(plots, Path(args.plots) / "samples.png", list(dict.fromkeys(scores["method"])))
    except (FileNotFoundError, ValueError) as err:
        print(f"pdm-bench paper-tables: error: {err}", file=sys.stderr)
        return 2
    print(f"pdm-bench paper-tables: {scores['dataset'].nunique()} dataset(s), {scores['method'].nunique()} method(s) "
          f"-> {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "regress":  # needs no experiment config
        from pdm import regress

        return regress.run(args)
    if args.command == "data":  # needs no experiment config
        return _data(args)
    if args.command == "paper-tables":  # reads finished experiments' tables, no config
        return paper_tables(args)
    if args.command == "plan":  # needs neither the data nor the config's device
        return _plan(args)
    try:
        cfg = load_config(args.config)
        preflight(cfg)
        if args.command != "validate" and getattr(args, "method", None) is not None:
            cfg.method_options(args.method)
        from pdm import steps

        if args.command == "validate":
            print(f"{args.config}: valid (experiment {cfg.experiment}, methods {', '.join(cfg.methods)}, hash {cfg.hash})")
        elif args.command == "stage1":
            steps.stage1_step(cfg, args.method, args.seed, args.out)
        elif args.command == "train":
            record = steps.train_step(cfg, args.method, args.seed, args.out, args.stage1_dir)
            if record["status"] != "ok":
                print(f"pdm-bench train: training failed: {record['failure']} (recorded in {args.out}/train.json)",
                      file=sys.stderr)
                return 3
        elif args.command == "sample":
            steps.sample_step(cfg, args.method, args.seed, args.model_dir, args.out)
        elif args.command == "refstats":
            steps.refstats_step(cfg, args.out)
        elif args.command == "evaluate":
            steps.evaluate_step(cfg, args.method, args.seed, args.model_dir, args.samples_dir, args.refstats, args.out)
        elif args.command == "diagnose":
            from pdm.diagnostics import diagnose

            diagnose(cfg, args.method, args.seed, args.model_dir, args.out)
        elif args.command == "report":
            from pdm.report import report

            report(args.records, args.tables_dir, args.plots_dir, args.grids, args.stage1_records,
                   reference_method=cfg.report.reference_method, confidence=cfg.report.confidence)
        elif args.command == "identity":
            from pdm.identity import all_identities

            for name, value in all_identities(cfg, args.method, args.seed).items():
                print(f"{name:14s}{value}")
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"pdm-bench {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


def _plan(args) -> int:
    from pdm.io import atomic_path
    from pdm.plan import plan

    try:
        if args.probe_batch_size is not None and args.probe_batch_size < 1:
            raise ConfigError(f"--probe-batch-size {args.probe_batch_size}: give a positive batch size")
        table, text = plan(args.config, device=args.device, probe_batch_size=args.probe_batch_size,
                           probe_steps=args.probe_steps, dataset_size=args.dataset_size, num_classes=args.num_classes,
                           probes_file=args.probes,
                           progress=lambda message: print(f"pdm-bench plan: {message}", file=sys.stderr, flush=True))
    except (ConfigError, FileNotFoundError, ValueError) as err:
        print(f"pdm-bench plan: error: {err}", file=sys.stderr)
        return 2
    print(text, end="")
    if args.out:
        with atomic_path(args.out, suffix=".csv") as tmp:
            table.to_csv(tmp, index=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())
