# Train stage: tensors -> results/{ds}/models/{regime}.pt + {regime}.history.csv
#
# While a job runs it keeps an undeclared per-epoch resume file {regime}.pt.ckpt.pt next to the
# model (removed when the model is written), so a killed or requeued job continues where it
# stopped. Its hash covers the params below (config slices and `code`, the hash of the package
# modules train.py imports) and a digest of the input files: a resume file left by other config,
# code or data is refused with a TrainingError naming it (delete it), as is a truncated one.


rule train_clean:
    input:
        unpack(get_tensor_inputs),
    output:
        model=f"{R}/{{ds}}/models/{{regime}}.pt",
        history=report(
            f"{R}/{{ds}}/models/{{regime}}.history.csv",
            caption="../report/history.rst",
            category="{ds}",
            subcategory="training",
            labels={"dataset": "{ds}", "regime": "{regime}"},
        ),
    log:
        f"{R}/logs/train/{{ds}}/{{regime}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{ds}}/{{regime}}.tsv"
    wildcard_constraints:
        regime=_spec.regime_wildcard(("clean",)),
    conda:
        "../envs/oncorobust.yaml"
    threads: job_resource("train", "threads")
    resources:
        mem_mb=job_resource("train", "mem_mb"),
        runtime=job_resource("train", "runtime"),
        gpu=job_resource("train", "gpu"),
    params:
        code=code_version("scripts/train.py"),
        registry=get_registry("train"),
        regime="clean",
        model=get_dataset_cfg("model"),
        train=get_dataset_cfg("train"),
        adversarial_training=None,
        seed=get_train_seed,
        device=config["device"],
    script:
        "../scripts/train.py"


rule train_adversarial:
    input:
        unpack(get_adv_train_inputs),
    output:
        model=f"{R}/{{ds}}/models/{{regime}}.pt",
        history=report(
            f"{R}/{{ds}}/models/{{regime}}.history.csv",
            caption="../report/history.rst",
            category="{ds}",
            subcategory="training",
            labels={"dataset": "{ds}", "regime": "{regime}"},
        ),
    log:
        f"{R}/logs/train/{{ds}}/{{regime}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{ds}}/{{regime}}.tsv"
    wildcard_constraints:
        regime=_spec.regime_wildcard(_spec.ADVERSARIAL_REGIMES),
    conda:
        "../envs/oncorobust.yaml"
    threads: job_resource("train", "threads")
    resources:
        mem_mb=job_resource("train", "mem_mb"),
        runtime=job_resource("train", "runtime"),
        gpu=job_resource("train", "gpu"),
    params:
        code=code_version("scripts/train.py"),
        registry=get_registry("train"),
        regime=lambda w: _spec.split_replicate_name(w.regime)[0],
        model=get_dataset_cfg("model"),
        train=get_dataset_cfg("train"),
        adversarial_training=get_adv_training_cfg,
        seed=get_train_seed,
        device=config["device"],
    script:
        "../scripts/train.py"
