# Preparation of the paper's datasets (pdm.datasets): the native files in {data_root}/{dataset}/raw/ become the checked
# prepared set that a config's `data: {dataset: NAME, root: DATA_ROOT}` loads. The job never downloads: a missing native
# file fails it with a log line naming each file, its md5, URL and place (or run `pdm-bench data prepare NAME --root
# DATA_ROOT --download` once by hand). manifest.json is written last: its presence means a complete preparation.


rule prepare_data:
    output:
        manifest="{data_root}/{dataset}/manifest.json",
        images="{data_root}/{dataset}/images.npy",
        labels="{data_root}/{dataset}/labels.npy",
    log:
        "{data_root}/{dataset}/prepare.log",
    wildcard_constraints:
        dataset="cifar10|stl10|eurosat|celeba|tinyimagenet",
    resources:
        runtime=120,
    conda:
        "../../environment.yml"
    script:
        "../scripts/prepare_data.py"
