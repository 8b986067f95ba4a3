# Prototype diagnostics (pdm.diagnostics) of every method whose class has prototypes (`has_prototypes`): prototype
# usage, the assignment entropy logged over training and a PCA of f_phi's features, from the trained weights alone.
rule diagnostics:
    input:
        record=rules.train.output.record,
        weights=rules.train.output.weights,
        data=DATA_INPUTS,
    output:
        usage=f"{R}/diagnostics/{{method}}/seed{{seed}}/usage.png",
        entropy=f"{R}/diagnostics/{{method}}/seed{{seed}}/entropy.png",
        pca=f"{R}/diagnostics/{{method}}/seed{{seed}}/pca.png",
        record=f"{R}/diagnostics/{{method}}/seed{{seed}}/diagnostics.json",
    params:
        identity=lambda wc: training_identity(CFG, wc.method, int(wc.seed)),  # a function of the trained model only
    log:
        f"{R}/logs/diagnostics/{{method}}_seed{{seed}}.log",
    threads: CFG.threads_per_job
    resources:
        gpu=GPUS_PER_JOB,
    conda:
        "../../environment.yml"
    script:
        "../scripts/diagnose.py"
