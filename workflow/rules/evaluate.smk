# Reference statistics are computed once per (dataset, resolution, extractor) and shared by every method and seed.
rule refstats:
    output:
        REFSTATS,
    log:
        f"{R}/logs/refstats.log",
    benchmark:
        f"{R}/benchmarks/refstats.tsv"
    threads: CFG.threads_per_job
    script:
        "../scripts/refstats.py"


rule evaluate:
    input:
        train=rules.train.output,
        samples=rules.sample.output.samples,
        refstats=REFSTATS,
    output:
        f"{R}/metrics/{{method}}/seed{{seed}}.json",
    log:
        f"{R}/logs/evaluate/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/evaluate/{{method}}_seed{{seed}}.tsv"
    threads: CFG.threads_per_job
    script:
        "../scripts/evaluate.py"
