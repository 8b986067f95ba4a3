# Prototype diagnostics (pdm.diagnostics) of every method whose class has prototypes (`has_prototypes`): prototype
# usage, the assignment entropy logged over training and a PCA of f_phi's features, from the trained weights alone.
rule diagnostics:
    input:
        record=rules.train.output.record,
        weights=rules.train.output.weights,
        data=DATA_INPUTS,
    output:
        usage=report(f"{R}/diagnostics/{{method}}/seed{{seed}}/usage.png", caption="../report/diagnostics_usage.rst",
                 category="4 PDM diagnostics", subcategory="{method}",
                 labels={"method": "{method}", "seed": "{seed}", "figure": "prototype usage"}),
        entropy=report(f"{R}/diagnostics/{{method}}/seed{{seed}}/entropy.png", caption="../report/diagnostics_entropy.rst",
                 category="4 PDM diagnostics", subcategory="{method}",
                 labels={"method": "{method}", "seed": "{seed}", "figure": "assignment entropy over training"}),
        pca=report(f"{R}/diagnostics/{{method}}/seed{{seed}}/pca.png", caption="../report/diagnostics_pca.rst",
                 category="4 PDM diagnostics", subcategory="{method}",
                 labels={"method": "{method}", "seed": "{seed}", "figure": "PCA of f_phi features"}),
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
