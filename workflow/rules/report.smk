# One rule concatenates every record into tidy tables and draws the plots from them.
rule report:
    input:
        expand(f"{R}/metrics/{{method}}/seed{{seed}}.json", method=METHODS, seed=SEEDS),
    output:
        results=f"{R}/tables/results.csv",
        main=multiext(f"{R}/tables/main", ".csv", ".md", ".tex"),
        efficiency=multiext(f"{R}/tables/efficiency", ".csv", ".md", ".tex"),
        fid_plot=f"{R}/plots/fid_comparison.png",
        cost_plot=f"{R}/plots/fid_vs_cost.png",
    log:
        f"{R}/logs/report.log",
    script:
        "../scripts/report.py"
