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
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.command == "regress":  # needs no experiment config
        from pdm import regress

        return regress.run(args)
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
