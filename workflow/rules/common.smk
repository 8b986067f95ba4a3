# Input and params functions of the curve rules (workflow/rules/curves.smk); Snakemake's lint wants them apart.


def _model(wc, key):
    return {key: f"{MODELS}/{wc.method}/seed{wc.seed}/train.json", "weights": f"{MODELS}/{wc.method}/seed{wc.seed}/weights"}


def _snapshot_weights(wc):
    model = f"{MODELS}/{wc.method}/seed{wc.seed}"
    return f"{model}/weights" if wc.fraction == FINAL else f"{model}/snapshots/{wc.fraction}"


def _point_cfg(wc):
    return CFG.with_sampling(wc.sampler, int(wc.steps))


def _guidance_cfg(wc):
    return CFG.with_method_options(wc.method, guidance_weight=float(wc.weight))


def _snapshot(wc):
    return None if wc.fraction == FINAL else float(wc.fraction)


def _curve_records(_):
    """The snapshots' records; the final weights' is the main evaluation's when this experiment made it."""
    records = []
    for method in CURVE_METHODS:
        for seed in SEEDS:
            for fraction in FRACTIONS:
                if fraction == FINAL and CFG.trains:
                    records.append(f"{R}/metrics/{method}/seed{seed}.json")
                else:
                    records.append(f"{R}/curve/metrics/{method}/seed{seed}/{fraction}.json")
    return records
