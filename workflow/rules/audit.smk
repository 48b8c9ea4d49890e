# Given models: a dataset whose model.checkpoint (a state dict of a torchvision/monai/python arch)
# or model.arch torchscript:<file> is given is not trained. import_model checks the file against
# the dataset (classes, input channels, size), wraps it with model.input's normalisation and
# writes results/{ds}/models/clean.pt in the project's format, so every later stage (attacks,
# health, sensitivity, tables, figures) runs on it through models.load_model. The file is an
# input: replacing it reruns exactly this dataset's jobs that depend on the model.
rule import_model:
    input:
        unpack(get_import_inputs),
    output:
        model=f"{R}/{{ds}}/models/clean.pt",
    log:
        f"{R}/logs/import_model/{{ds}}.log",
    wildcard_constraints:
        ds="|".join(_re.escape(ds) for ds in GIVEN) or "(?!)",
    conda:
        "../envs/oncorobust.yaml"
    threads: 1
    resources:
        mem_mb=job_resource("import", "mem_mb"),
        runtime=10,
    params:
        code=code_version("scripts/import_model.py"),
        model=get_dataset_cfg("model"),
    script:
        "../scripts/import_model.py"


# a given model's clean.pt comes from import_model; train_clean cannot match such a dataset's
# inputs differently, so the order settles which rule writes it
ruleorder: import_model > train_clean
