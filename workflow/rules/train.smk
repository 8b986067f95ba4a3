# Stage 1 (LDM's autoencoder, RDM's database + index) is its own job; its folder and cost feed the method's training.
# Every rule passes its stage's identity (pdm.identity) as a param: Snakemake re-runs a job exactly when it changes.


rule stage1:
    input:
        data=DATA_INPUTS,
    output:
        directory(f"{R}/stage1/{{method}}/seed{{seed}}"),
    params:
        identity=lambda wc: stage1_identity(CFG, wc.method, int(wc.seed)),
    log:
        f"{R}/logs/stage1/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/stage1/{{method}}_seed{{seed}}.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
        runtime=24 * 60,
    conda:
        "../../environment.yml"
    script:
        "../scripts/stage1.py"


# Training of one method for one seed; the same budget for every method (config `train`). The job resumes from
# models/{method}/seed{seed}/checkpoint/ (its private state, removed when training ends) after a kill.
# Snapshots (train.snapshots) are written by the same job, each before the checkpoint of its step, so a resumed job
# still has them all (where Snakemake cleared them before a rerun, the trainer restarts from step 0: same weights). They
# are in no identity (the final weights do not depend on them), but each snapshot folder is a declared output (a
# fraction that is never reached gets a snapshot.json saying so): a fraction added to the config is a missing output, so Snakemake re-runs this job (which
# gives bitwise the same weights), and a removed one is simply no longer asked for.
# Several GPUs for one job (`--set-resources train:gpu=4`, or a profile's set-resources; the SLURM executor plugin asks
# for them with --gpus): the job trains data-parallel in one process per GPU (pdm.launch, docs/multigpu.md), with the
# same data order, global batch and identity as one process.
rule train:
    input:
        unpack(lambda wc: {"stage1": f"{R}/stage1/{wc.method}/seed{wc.seed}"} if wc.method in STAGE1_METHODS else {}),
        data=DATA_INPUTS,
    output:
        record=f"{R}/models/{{method}}/seed{{seed}}/train.json",
        weights=directory(f"{R}/models/{{method}}/seed{{seed}}/weights"),
        # train.snapshots: the weights at those fractions of the budget, same layout + snapshot.json (pdm.checkpoint)
        snapshots=[directory(f"{R}/models/{{method}}/seed{{seed}}/snapshots/{name}") for name in SNAPSHOTS],
    params:
        identity=lambda wc: training_identity(CFG, wc.method, int(wc.seed)),
    log:
        job=f"{R}/logs/train/{{method}}_seed{{seed}}.log",
        losses=f"{R}/models/{{method}}/seed{{seed}}/train.log",  # the trainer's step-by-step losses
    benchmark:
        f"{R}/benchmarks/train/{{method}}_seed{{seed}}.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
        runtime=24 * 60,
    conda:
        "../../environment.yml"
    script:
        "../scripts/train.py"


# Sampling resumes from samples/{method}/seed{seed}/chunks/ (finished batches, removed at the end) after a kill.
rule sample:
    input:
        record=rules.train.output.record,
        weights=rules.train.output.weights,
    output:
        samples=f"{R}/samples/{{method}}/seed{{seed}}/samples.npz",
        grid=report(f"{R}/samples/{{method}}/seed{{seed}}/grid.png", caption="../report/sample_grid.rst",
                    category="3 Samples", subcategory="{method}", labels={"method": "{method}", "seed": "{seed}"}),
        record=f"{R}/samples/{{method}}/seed{{seed}}/sample.json",
    params:
        identity=lambda wc: sampling_identity(CFG, wc.method, int(wc.seed)),
    log:
        f"{R}/logs/sample/{{method}}_seed{{seed}}.log",
    benchmark:
        f"{R}/benchmarks/sample/{{method}}_seed{{seed}}.tsv"
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../../environment.yml"
    script:
        "../scripts/sample.py"
