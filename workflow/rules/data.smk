# Data stage: (demo data) -> manifest.csv (ingest) -> tensors (preprocess).
#
# privacy.pseudonymize_ids: ingest also writes the private mapping (pseudonym -> real IDs and
# source paths) and the real list of skipped inputs under privacy.mapping_dir (outside results/);
# preprocess reads the real paths from it. The key is never a param: only its one-way fingerprint
# is (a new key reruns ingest).

from oncorobust.data.privacy import (
    Pseudonymizer,
    enabled as _privacy_enabled,
    load_salt,
    private_paths,
)

PRIVATE = _privacy_enabled(config["privacy"])
_PRIV = private_paths(config["privacy"], "{ds}")
# (the rules' `# fmt: off` blocks: snakefmt would list these **unpacked files before the named ones,
# changing the files' order)
PRIVATE_INGEST = (
    {"private_mapping": _PRIV["mapping"], "private_skipped": _PRIV["skipped"]}
    if PRIVATE
    else {}
)
PRIVATE_PREPROCESS = {"private_skipped": _PRIV["preprocess_skipped"]} if PRIVATE else {}
KEY_FINGERPRINT = (
    Pseudonymizer(load_salt(config["privacy"])).fingerprint() if PRIVATE else None
)


rule demo_data:
    output:
        directory(f"{R}/demo_data/{{ds}}"),
    log:
        f"{R}/logs/demo_data/{{ds}}.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=2000,
        runtime=10,
    params:
        code=code_version("scripts/demo_data.py"),
        fmt=lambda w: config["datasets"][w.ds]["source"]["format"],
        synthetic=lambda w: config["datasets"][w.ds]["source"]["synthetic"],
        seed=config["seed"],
    script:
        "../scripts/demo_data.py"


rule ingest:
    input:
        get_ingest_input,
    # fmt: off
    output:
        manifest=f"{R}/{{ds}}/manifest.csv",
        skipped=f"{R}/{{ds}}/skipped.csv",
        **PRIVATE_INGEST,
    # fmt: on
    log:
        f"{R}/logs/ingest/{{ds}}.log",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=4000,
        runtime=60,
    params:
        code=code_version("scripts/ingest.py"),
        source=get_source,
        split=get_dataset_cfg("split"),
        seed=config["seed"],
        privacy=canon(config["privacy"]),
        key=KEY_FINGERPRINT,
        on_bad_file=config["on_bad_file"],
    script:
        "../scripts/ingest.py"


rule preprocess:
    # fmt: off
    input:
        manifest=f"{R}/{{ds}}/manifest.csv",
        **({"private_mapping": _PRIV["mapping"]} if PRIVATE else {}),
    output:
        tensors=expand(f"{R}/{{{{ds}}}}/tensors/{{split}}.pt", split=["train", "val", "test"]),
        stats=f"{R}/{{ds}}/tensors/stats.json",
        skipped=f"{R}/{{ds}}/tensors/skipped.csv",
        noise=f"{R}/{{ds}}/tensors/noise.csv",
        **PRIVATE_PREPROCESS,
    # fmt: on
    log:
        f"{R}/logs/preprocess/{{ds}}.log",
    benchmark:
        f"{R}/benchmarks/preprocess/{{ds}}.tsv"
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=8000,
        runtime=120,
    params:
        code=code_version("scripts/preprocess.py"),
        source=get_source,
        preprocess=get_dataset_cfg("preprocess"),
        privacy=canon(config["privacy"]),
        seed=config["seed"],
        on_bad_file=config["on_bad_file"],
    script:
        "../scripts/preprocess.py"
