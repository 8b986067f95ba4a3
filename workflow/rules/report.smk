# One rule concatenates every record into tidy tables and draws the plots from them.
STAGE1_TABLE_OUTPUTS = {
    name: multiext(f"{R}/tables/{name}", ".csv", ".md", ".tex")
    for name, method in (("autoencoder", "ldm"), ("retrieval", "rdm"))
    if method in METHODS
}


rule report:
    input:
        records=expand(f"{R}/metrics/{{method}}/seed{{seed}}.json", method=METHODS, seed=SEEDS),
        stage1=expand(f"{R}/stage1/{{method}}/seed{{seed}}", method=STAGE1_METHODS, seed=SEEDS),
        grids=expand(f"{R}/samples/{{method}}/seed{{seed}}/grid.png", method=METHODS, seed=SEEDS),
    output:
        results=f"{R}/tables/results.csv",
        main=multiext(f"{R}/tables/main", ".csv", ".md", ".tex"),
        efficiency=multiext(f"{R}/tables/efficiency", ".csv", ".md", ".tex"),
        stage1=[path for paths in STAGE1_TABLE_OUTPUTS.values() for path in paths],
        fid_plot=f"{R}/plots/fid_comparison.png",
        cost_plot=f"{R}/plots/fid_vs_cost.png",
        sample_plots=expand(f"{R}/plots/samples_{{method}}_seed{{seed}}.png", method=METHODS, seed=SEEDS),
    params:
        # report-only settings: a change re-runs this rule alone (they are in no job's identity)
        settings=f"reference_method={CFG.report.reference_method} confidence={CFG.report.confidence}",
    log:
        f"{R}/logs/report.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/report.py"
