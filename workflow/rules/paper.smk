# The paper's tables across datasets (pdm.paper): IS / FID / KID and cost per dataset x method, from each
# experiment's tables/main.csv (one experiment per dataset), with the published numbers beside ours, and one sample
# figure (rows methods, columns datasets). The including Snakefile names the experiments before including this file:
#     PAPER_EXPERIMENTS = ["cifar10", "stl10", ...]     # results/{experiment}/tables/main.csv, made by their report rules
#     PAPER_OUT = "results/paper"                        # optional (default results/paper)
#     PUBLISHED = "config/published.csv"                 # optional (default: that file where it exists, else none)
PAPER_OUT = globals().get("PAPER_OUT", "results/paper")
PUBLISHED = globals().get("PUBLISHED", "config/published.csv" if Path("config/published.csv").exists() else None)
PAPER_CONFIDENCE = globals().get("PAPER_CONFIDENCE", 0.95)

PAPER_HTML = {  # each paper table's .html twin (pdm.html_tables), shown inline in the report
    name: report(f"{PAPER_OUT}/tables/{name}.html", caption=f"../report/{caption}.rst", category="0 Paper (all datasets)",
                 labels={"table": label})
    for name, caption, label in (("paper_fid", "paper_metric", "FID per dataset x method"),
                                 ("paper_is", "paper_metric", "IS per dataset x method"),
                                 ("paper_kid", "paper_metric", "KID per dataset x method"),
                                 ("paper_efficiency", "paper_efficiency", "cost per dataset x method"))
}


rule paper_tables:
    input:
        tables=expand("results/{experiment}/tables/main.csv", experiment=PAPER_EXPERIMENTS),
        records=expand("results/{experiment}/tables/results.csv", experiment=PAPER_EXPERIMENTS),
        efficiency=expand("results/{experiment}/tables/efficiency.csv", experiment=PAPER_EXPERIMENTS),
        grids=expand("results/{experiment}/plots/samples.png", experiment=PAPER_EXPERIMENTS),
        published=[PUBLISHED] if PUBLISHED else [],
    output:
        scores=f"{PAPER_OUT}/tables/paper.csv",
        metrics=multiext(f"{PAPER_OUT}/tables/paper_fid", ".md", ".tex")
        + multiext(f"{PAPER_OUT}/tables/paper_is", ".md", ".tex")
        + multiext(f"{PAPER_OUT}/tables/paper_kid", ".md", ".tex"),
        efficiency=multiext(f"{PAPER_OUT}/tables/paper_efficiency", ".csv", ".md", ".tex"),
        fid_html=PAPER_HTML["paper_fid"],
        is_html=PAPER_HTML["paper_is"],
        kid_html=PAPER_HTML["paper_kid"],
        efficiency_html=PAPER_HTML["paper_efficiency"],
        samples=report(f"{PAPER_OUT}/plots/samples.png", caption="../report/paper_samples.rst",
                       category="0 Paper (all datasets)", labels={"table": "samples per dataset x method"}),
    params:
        confidence=PAPER_CONFIDENCE,
    log:
        f"{PAPER_OUT}/logs/paper_tables.log",
    conda:
        "../../environment.yml"
    script:
        "../scripts/paper_tables.py"
