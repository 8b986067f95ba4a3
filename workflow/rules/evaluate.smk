# Reference statistics are computed once per identity (real images + extractor) and shared by every method and seed;
# the file name carries the identity, so a change of eval.num_real makes a new file instead of reusing a stale one.
rule refstats:
    input:
        data=DATA_INPUTS,
    output:
        REFSTATS,
    params:
        identity=refstats_identity(CFG),
    log:
        f"{R}/logs/refstats.log",
    benchmark:
        f"{R}/benchmarks/refstats.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../../environment.yml"
    script:
        "../scripts/refstats.py"


# Scoring resumes from metrics/{method}/seed{seed}.work/ (finished feature chunks) after a kill.
rule evaluate:
    input:
        train=rules.train.output.record,
        weights=rules.train.output.weights,
        samples=rules.sample.output.samples,
        sample_record=rules.sample.output.record,
        refstats=REFSTATS,
    output:
        f"{R}/metrics/{{method}}/seed{{seed}}.json",
    params:
        identity=lambda wc: evaluation_identity(CFG, wc.method, int(wc.seed)),
    log:
        f"{R}/logs/evaluate/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{method}}_seed{{seed}}.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../../environment.yml"
    script:
        "../scripts/evaluate.py"
