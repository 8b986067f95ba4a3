# PLACEHOLDER (issue 9), to be replaced by the data-preparation change: downloads and prepares one of the paper's
# datasets into {root}/{dataset}/ (manifest.json last). Included once by the Snakefile, beside every experiment, so
# experiments on the same dataset share one preparation. A local rule: compute nodes of a cluster often have no internet.
from pdm.data import PREPARED_DATASETS


localrules:
    prepare_data,


rule prepare_data:
    output:
        "{root}/{dataset}/manifest.json",
    wildcard_constraints:
        dataset="|".join(PREPARED_DATASETS),
    log:
        "{root}/logs/prepare_{dataset}.log",
    conda:
        "../../environment.yml"
    shell:
        "pdm-bench data prepare {wildcards.dataset} --root {wildcards.root} > {log} 2>&1"
