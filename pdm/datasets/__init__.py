"""The paper's five reference datasets, prepared once into one checked on-disk format (`pdm-bench data prepare`).

    catalog.py       what each dataset is (resolution, count, source, licence): cheap, imported by pdm.data
    raw.py           the native files each needs, where they go, checksums, extraction, downloads
    readers.py       native files -> uint8 images + labels, with the reference code's choices (torchvision classes)
    tinyimagenet.py  Tiny ImageNet's checked downloader and native-layout reader (torchvision has no class for it)
    store.py         the prepared format: images.npy, labels.npy, manifest.json (sha256 of each), atomic writes
    prepare.py       `prepare(name, root)` and `list_datasets`, what the CLI and the workflow rule call
"""
