# Stage 1 (LDM's autoencoder, RDM's database + index) is its own job; its outputs and cost feed the method's training.
STAGE1_METHODS = [m for m in METHODS if get_method_class(m).has_stage1]


def stage1_input(wildcards):
    if wildcards.method in STAGE1_METHODS:
        return f"{R}/stage1/{wildcards.method}/seed{wildcards.seed}/stage1.json"
    return []


rule stage1:
    output:
        f"{R}/stage1/{{method}}/seed{{seed}}/stage1.json",
    log:
        f"{R}/logs/stage1/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/stage1/{{method}}_seed{{seed}}.tsv"
    threads: CFG.threads_per_job
    resources:
        runtime=24 * 60,
    script:
        "../scripts/stage1.py"


# Training of one method for one seed; the same budget for every method (config `train`).
rule train:
    input:
        stage1_input,
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
