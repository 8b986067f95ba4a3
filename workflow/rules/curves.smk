# Curves without retraining (pdm.sweep): FID against network evaluations (sweep: samplers x steps) and FID over training
# (train.snapshots). The models come from results/{models_experiment}/models/: this experiment's own (the train rule
# makes them) or, with sweep.models_from, another experiment's, which are plain inputs (the Snakefile checked them) and
# which no rule here can make: nothing is ever retrained. Sampling and evaluation are the ordinary steps with the
# point's sampler and steps (their identities include them) or the snapshot's weights.
MODELS = f"results/{CFG.models_experiment}/models"
SWEEP_METHODS = list(CFG.sweep_methods) if CFG.sweep.enabled else []
CURVE_METHODS = (METHODS if CFG.trains else list(CFG.sweep_methods)) if CFG.train.snapshots else []
FRACTIONS = curve_fractions(CFG) if CFG.train.snapshots else []
# Reference statistics of another experiment are reused when it has the very file this config names (the file name
# carries the refstats identity: same real images, same extractor); else this experiment computes its own.
_OTHER_REFSTATS = REFSTATS.replace(f"results/{EXP}/", f"results/{CFG.models_experiment}/", 1)
CURVE_REFSTATS = _OTHER_REFSTATS if not CFG.trains and Path(_OTHER_REFSTATS).exists() else REFSTATS


wildcard_constraints:
    sampler="ddim|dpmpp|ddpm",
    steps=r"\d+",
    weight=r"\d+(\.\d+)?",
    fraction=r"0\.\d+|1\.0",


# --- FID against NFE: every (sampler, steps) of `sweep:` for every swept method and seed -------------------------
rule sample_sweep:
    input:
        unpack(lambda wc: _model(wc, "record")),
    output:
        samples=f"{R}/sweep/samples/{{method}}/seed{{seed}}/{{sampler}}-{{steps}}/samples.npz",
        grid=f"{R}/sweep/samples/{{method}}/seed{{seed}}/{{sampler}}-{{steps}}/grid.png",
        record=f"{R}/sweep/samples/{{method}}/seed{{seed}}/{{sampler}}-{{steps}}/sample.json",
    params:
        identity=lambda wc: sampling_identity(_point_cfg(wc), wc.method, int(wc.seed)),
    log:
        f"{R}/logs/sample_sweep/{{method}}_seed{{seed}}_{{sampler}}-{{steps}}.log",
    benchmark:
        f"{R}/benchmarks/sample_sweep/{{method}}_seed{{seed}}_{{sampler}}-{{steps}}.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../../environment.yml"
    script:
        "../scripts/sample.py"


rule evaluate_sweep:
    input:
        unpack(lambda wc: _model(wc, "train")),
        samples=rules.sample_sweep.output.samples,
        sample_record=rules.sample_sweep.output.record,
        refstats=CURVE_REFSTATS,
    output:
        f"{R}/sweep/metrics/{{method}}/seed{{seed}}/{{sampler}}-{{steps}}.json",
    params:
        identity=lambda wc: evaluation_identity(_point_cfg(wc), wc.method, int(wc.seed)),
    log:
        f"{R}/logs/evaluate_sweep/{{method}}_seed{{seed}}_{{sampler}}-{{steps}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_sweep/{{method}}_seed{{seed}}_{{sampler}}-{{steps}}.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


rule sweep_report:
    input:
        records=expand(f"{R}/sweep/metrics/{{method}}/seed{{seed}}/{{sampler}}-{{steps}}.json", method=SWEEP_METHODS,
                       seed=SEEDS, sampler=CFG.sweep.samplers, steps=CFG.sweep.steps),
    output:
        table=multiext(f"{R}/tables/sweep", ".csv", ".md"),
        table_html=report(f"{R}/tables/sweep.html", caption="../report/sweep.rst", category="1 Tables",
                          labels={"table": "sweep"}),
        plot=report(f"{R}/plots/fid_vs_nfe.png", caption="../report/fid_vs_nfe.rst", category="5 Curves",
                    labels={"figure": "FID against sampling steps"}),
    params:
        settings=f"confidence={CFG.report.confidence}",  # report-only: a change re-runs this rule alone
    log:
        f"{R}/logs/sweep_report.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/curve_report.py"


# --- FID against the classifier-free guidance weight: every sweep.guidance_weights w for each swept guided method -----
rule sample_guidance:
    input:
        unpack(lambda wc: _model(wc, "record")),
    output:
        samples=f"{R}/guidance/samples/{{method}}/seed{{seed}}/w{{weight}}/samples.npz",
        grid=f"{R}/guidance/samples/{{method}}/seed{{seed}}/w{{weight}}/grid.png",
        record=f"{R}/guidance/samples/{{method}}/seed{{seed}}/w{{weight}}/sample.json",
    params:
        identity=lambda wc: sampling_identity(_guidance_cfg(wc), wc.method, int(wc.seed)),
    log:
        f"{R}/logs/sample_guidance/{{method}}_seed{{seed}}_w{{weight}}.log",
    benchmark:
        f"{R}/benchmarks/sample_guidance/{{method}}_seed{{seed}}_w{{weight}}.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../../environment.yml"
    script:
        "../scripts/sample.py"


rule evaluate_guidance:
    input:
        unpack(lambda wc: _model(wc, "train")),
        samples=rules.sample_guidance.output.samples,
        sample_record=rules.sample_guidance.output.record,
        refstats=CURVE_REFSTATS,
    output:
        f"{R}/guidance/metrics/{{method}}/seed{{seed}}/w{{weight}}.json",
    params:
        identity=lambda wc: evaluation_identity(_guidance_cfg(wc), wc.method, int(wc.seed)),
    log:
        f"{R}/logs/evaluate_guidance/{{method}}_seed{{seed}}_w{{weight}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_guidance/{{method}}_seed{{seed}}_w{{weight}}.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


rule guidance_report:
    input:
        records=expand(f"{R}/guidance/metrics/{{method}}/seed{{seed}}/w{{weight}}.json", method=CFG.guidance_methods,
                       seed=SEEDS, weight=[f"{float(w):g}" for w in CFG.sweep.guidance_weights]),
    output:
        table=multiext(f"{R}/tables/guidance", ".csv", ".md"),
        table_html=report(f"{R}/tables/guidance.html", caption="../report/guidance.rst", category="1 Tables",
                          labels={"table": "guidance"}),
        plot=report(f"{R}/plots/fid_vs_guidance.png", caption="../report/fid_vs_guidance.rst", category="5 Curves",
                    labels={"figure": "FID against guidance weight"}),
    params:
        settings=f"confidence={CFG.report.confidence}",  # report-only: a change re-runs this rule alone
    log:
        f"{R}/logs/guidance_report.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/curve_report.py"


# --- FID over training: each snapshot (train.snapshots) and the final weights, with the experiment's `sample:` -----
rule sample_snapshot:
    input:
        record=f"{MODELS}/{{method}}/seed{{seed}}/train.json",
        weights=_snapshot_weights,
    output:
        samples=f"{R}/curve/samples/{{method}}/seed{{seed}}/{{fraction}}/samples.npz",
        grid=f"{R}/curve/samples/{{method}}/seed{{seed}}/{{fraction}}/grid.png",
        record=f"{R}/curve/samples/{{method}}/seed{{seed}}/{{fraction}}/sample.json",
    params:
        identity=lambda wc: sampling_identity(CFG, wc.method, int(wc.seed), _snapshot(wc)),
    log:
        f"{R}/logs/sample_snapshot/{{method}}_seed{{seed}}_{{fraction}}.log",
    benchmark:
        f"{R}/benchmarks/sample_snapshot/{{method}}_seed{{seed}}_{{fraction}}.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../../environment.yml"
    script:
        "../scripts/sample.py"


rule evaluate_snapshot:
    input:
        train=f"{MODELS}/{{method}}/seed{{seed}}/train.json",
        weights=_snapshot_weights,
        samples=rules.sample_snapshot.output.samples,
        sample_record=rules.sample_snapshot.output.record,
        refstats=CURVE_REFSTATS,
    output:
        f"{R}/curve/metrics/{{method}}/seed{{seed}}/{{fraction}}.json",
    params:
        identity=lambda wc: evaluation_identity(CFG, wc.method, int(wc.seed), _snapshot(wc)),
    log:
        f"{R}/logs/evaluate_snapshot/{{method}}_seed{{seed}}_{{fraction}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate_snapshot/{{method}}_seed{{seed}}_{{fraction}}.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"


rule training_curve:
    input:
        records=_curve_records(None),
    output:
        table=multiext(f"{R}/tables/training_curve", ".csv", ".md"),
        table_html=report(f"{R}/tables/training_curve.html", caption="../report/training_curve.rst", category="1 Tables",
                          labels={"table": "training_curve"}),
        plot=report(f"{R}/plots/fid_over_training.png", caption="../report/fid_over_training.rst", category="5 Curves",
                    labels={"figure": "FID over training"}),
    params:
        settings=f"confidence={CFG.report.confidence}",
    log:
        f"{R}/logs/training_curve.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/curve_report.py"
