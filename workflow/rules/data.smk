# Data stage: (demo data) -> manifest.csv (ingest) -> tensors (preprocess).


rule demo_data:
    output:
        directory(f"{R}/demo_data/{{ds}}"),
    log:
        f"{R}/logs/demo_data/{{ds}}.log",
    params:
        fmt=lambda w: config["datasets"][w.ds]["source"]["format"],
        synthetic=lambda w: config["datasets"][w.ds]["source"]["synthetic"],
        seed=config["seed"],
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    conda:
        "../envs/oncorobust.yaml"
    script:
        "../scripts/demo_data.py"


rule ingest:
    input:
        get_ingest_input,
    output:
        manifest=f"{R}/{{ds}}/manifest.csv",
        skipped=f"{R}/{{ds}}/skipped.csv",
    log:
        f"{R}/logs/ingest/{{ds}}.log",
    params:
        source=get_source,
        split=get_dataset_cfg("split"),
        seed=config["seed"],
        privacy=config["privacy"],
        on_bad_file=config["on_bad_file"],
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    conda:
        "../envs/oncorobust.yaml"
    script:
        "../scripts/ingest.py"


rule preprocess:
    input:
        manifest=f"{R}/{{ds}}/manifest.csv",
    output:
        tensors=expand(f"{R}/{{{{ds}}}}/tensors/{{split}}.pt", split=["train", "val", "test"]),
        stats=f"{R}/{{ds}}/tensors/stats.json",
        skipped=f"{R}/{{ds}}/tensors/skipped.csv",
    log:
        f"{R}/logs/preprocess/{{ds}}.log",
    benchmark:
        f"{R}/benchmarks/preprocess/{{ds}}.tsv"
    params:
        source=get_source,
        preprocess=get_dataset_cfg("preprocess"),
        seed=config["seed"],
        on_bad_file=config["on_bad_file"],
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    conda:
        "../envs/oncorobust.yaml"
    script:
        "../scripts/preprocess.py"
