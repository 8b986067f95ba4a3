# Stage 1 (if any) and training of one method for one seed; the same budget for every method (config `train`).
rule train:
    output:
        f"{R}/models/{{method}}/seed{{seed}}/train.json",
    log:
        f"{R}/logs/train/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{method}}_seed{{seed}}.tsv"
    threads: CFG.threads_per_job
    resources:
        runtime=24 * 60,
    script:
        "../scripts/train.py"


rule sample:
    input:
        rules.train.output,
    output:
        samples=f"{R}/samples/{{method}}/seed{{seed}}/samples.npz",
        grid=f"{R}/samples/{{method}}/seed{{seed}}/grid.png",
        record=f"{R}/samples/{{method}}/seed{{seed}}/sample.json",
    log:
        f"{R}/logs/sample/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{method}}_seed{{seed}}.tsv"
    threads: CFG.threads_per_job
    script:
        "../scripts/sample.py"
