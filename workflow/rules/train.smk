# Train stage: tensors -> results/{ds}/models/{regime}.pt + {regime}.history.csv


rule train_clean:
    input:
        unpack(get_tensor_inputs),
    output:
        model=f"{R}/{{ds}}/models/clean.pt",
        history=report(f"{R}/{{ds}}/models/clean.history.csv", caption="../report/history.rst",
                       category="{ds}", subcategory="training", labels={"dataset": "{ds}", "regime": "clean"}),
    log:
        f"{R}/logs/train/{{ds}}/clean.log",
    benchmark:
        f"{R}/benchmarks/train/{{ds}}/clean.tsv"
    params:
        regime="clean",
        model=get_dataset_cfg("model"),
        train=get_dataset_cfg("train"),
        adversarial_training=None,
        seed=config["seed"],
        device=config["device"],
    threads: get_train_threads
    resources:
        mem_mb=get_train_mem_mb,
        runtime=get_train_runtime,
        gpu=get_gpu,
    conda:
        "../envs/oncorobust.yaml"
    script:
        "../scripts/train.py"


rule train_adversarial:
    wildcard_constraints:
        regime="adv_pgd|adv_fast|adv_free",
    input:
        unpack(get_adv_train_inputs),
    output:
        model=f"{R}/{{ds}}/models/{{regime}}.pt",
        history=report(f"{R}/{{ds}}/models/{{regime}}.history.csv", caption="../report/history.rst",
                       category="{ds}", subcategory="training", labels={"dataset": "{ds}", "regime": "{regime}"}),
    log:
        f"{R}/logs/train/{{ds}}/{{regime}}.log",
    benchmark:
        f"{R}/benchmarks/train/{{ds}}/{{regime}}.tsv"
    params:
        regime=lambda w: w.regime,
        model=get_dataset_cfg("model"),
        train=get_dataset_cfg("train"),
        adversarial_training=get_adv_training_cfg,
        seed=config["seed"],
        device=config["device"],
    threads: get_train_threads
    resources:
        mem_mb=get_train_mem_mb,
        runtime=get_train_runtime,
        gpu=get_gpu,
    conda:
        "../envs/oncorobust.yaml"
    script:
        "../scripts/train.py"
