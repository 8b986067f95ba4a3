# One rule concatenates every record into tidy tables and draws the plots from them. Outputs wrapped in report() go
# into `snakemake --report report.html` (captions: workflow/report/*.rst); tables go in as their .html twins (the
# report shows .html inline, .csv only as a download). Each run's own grid enters the report from the sample rule
# (train.smk), the prototype diagnostics from the diagnostics rule, the curves from curves.smk.
STAGE1_TABLE_OUTPUTS = {
    name: multiext(f"{R}/tables/{name}", ".csv", ".md", ".tex")
    for name, method in (("autoencoder", "ldm"), ("retrieval", "rdm"))
    if method in METHODS
}
CAPTIONS = "../report"  # report() captions are relative to this file
TABLE_HTML = {  # each table's .html twin (pdm.html_tables), shown inline in the report
    name: report(f"{R}/tables/{name}.html", caption=f"{CAPTIONS}/{name}.rst", category="1 Tables", labels={"table": name})
    for name in ["main", "efficiency", *STAGE1_TABLE_OUTPUTS]
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
        main_html=TABLE_HTML["main"],
        efficiency_html=TABLE_HTML["efficiency"],
        stage1_html=[TABLE_HTML[name] for name in STAGE1_TABLE_OUTPUTS],
        fid_plot=report(f"{R}/plots/fid_comparison.png", caption=f"{CAPTIONS}/fid_comparison.rst",
                        category="2 Figures", labels={"figure": "FID, KID, clean-FID per method"}),
        cost_plot=report(f"{R}/plots/fid_vs_cost.png", caption=f"{CAPTIONS}/fid_vs_cost.rst",
                         category="2 Figures", labels={"figure": "FID against cost"}),
        samples_plot=report(f"{R}/plots/samples.png", caption=f"{CAPTIONS}/samples.rst", category="3 Samples",
                            subcategory="all methods", labels={"figure": "every method, first seed"}),
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
