"""oncorobust.pipeline.resources: declared memory and run time grow with the model, the input and the batch."""

import pytest

from oncorobust.pipeline import resources as res


def test_param_count_matches_the_models():
    torch = pytest.importorskip("torch")
    from oncorobust.models.architectures import build_model

    for arch, size, width in (("vgg16", 224, 32), ("vgg16", 116, 32), ("vgg16", 32, 32), ("vgg_small", 32, 16)):
        model = build_model(arch, classes=2, in_channels=1, size=size, mean=[0.5], std=[0.25], width=width)
        assert res.param_count(arch, size, width=width) == sum(p.numel() for p in model.parameters())
    del torch


def test_activations_scale_with_the_image_area():
    assert res.activation_mb("vgg16", 224) == pytest.approx(57.5, abs=0.1)  # documented value
    assert res.activation_mb("vgg16", 224) / res.activation_mb("vgg16", 112) == pytest.approx(4, rel=0.01)


@pytest.mark.parametrize("kind", sorted(res.MODEL_COPIES))
def test_monotone_in_batch_and_size(kind):
    by_batch = [res.mem_mb(kind, "vgg16", 224, b) for b in (1, 8, 32, 64, 128)]
    assert by_batch == sorted(by_batch) and by_batch[-1] > by_batch[0]
    by_size = [res.mem_mb(kind, "vgg16", s, 64) for s in (32, 64, 116, 160, 224)]
    assert by_size == sorted(by_size) and by_size[-1] > by_size[0]
    small = [res.mem_mb(kind, "vgg_small", s, 64, width=16) for s in (16, 32, 64)]
    assert small == sorted(small)
    assert all(m % 100 == 0 and m >= res.FLOOR_MB for m in by_batch + by_size + small)


def test_paper_shape_far_above_the_demo():
    paper = res.mem_mb("attack", "vgg16", 224, 64)
    demo = res.mem_mb("attack", "vgg_small", 32, 64, width=16)
    assert demo <= 1500 and paper >= 5 * demo
    # what was measured: ≈ 70 MB per extra image of VGG16 at 224 px (input gradient or SGD step)
    assert res.mem_mb("attack", "vgg16", 224, 64) - res.mem_mb("attack", "vgg16", 224, 32) >= 32 * 70
    assert res.mem_mb("train", "vgg16", 224, 50) > res.mem_mb("attack", "vgg16", 224, 50)
    assert res.mem_mb("transfer", "vgg16", 224, 64) > res.mem_mb("attack", "vgg16", 224, 64)
    # measured: the sensitivity search keeps about twice an attack's activations per image
    assert res.mem_mb("sensitivity", "vgg16", 116, 32) - res.mem_mb("sensitivity", "vgg16", 116, 16) >= 16 * 30
    assert res.mem_mb("train", "vgg16", 224, 50, pretrained=True) > res.mem_mb("train", "vgg16", 224, 50)


def test_batch_never_larger_than_the_split():
    full = res.mem_mb("attack", "vgg16", 224, 64)
    few = res.mem_mb("attack", "vgg16", 224, 64, n_images=4)
    assert few < full and few == res.mem_mb("attack", "vgg16", 224, 4)
    # images counted from the tensor files' size (float32, 1 channel): 7 images of 224 px
    data_mb = 7 * 224 * 224 * 4 / 2 ** 20
    assert res.images_in(data_mb, 224) == 7
    assert res.mem_mb("attack", "vgg16", 224, 64, data_mb=data_mb) < full
    assert res.mem_mb("attack", "vgg16", 224, 64, data_mb=100 * data_mb) > res.mem_mb("attack", "vgg16", 224, 64)


def test_restarts_do_not_change_memory_but_runtime_grows():
    """Restarts run one after another on the same batch: mem_mb takes no restarts at all."""
    import inspect
    assert "restarts" not in inspect.signature(res.mem_mb).parameters
    one = res.runtime_min("vgg16", 224, 500, res.attack_passes("pgd", {"steps": 10, "restarts": 1}), device="cuda")
    twenty = res.runtime_min("vgg16", 224, 500, res.attack_passes("pgd", {"steps": 10, "restarts": 20}), device="cuda")
    assert twenty > one >= res.FLOOR_MIN
    assert res.runtime_min("vgg16", 224, 500, 30) > res.runtime_min("vgg16", 224, 500, 30, device="cuda")
    assert res.runtime_min("vgg16", 224, 0, 30) == res.FLOOR_MIN


def test_other_archs_get_a_conservative_estimate():
    for arch in ("torchvision:resnet18", "monai:DenseNet121", "torchscript:model.pt", "python:m.py:f"):
        assert res.mem_mb("attack", arch, 224, 64) > res.mem_mb("attack", "vgg16", 224, 64)
        assert res.mem_mb("train", arch, 64, 32) >= res.mem_mb("train", "vgg16", 64, 32)
        assert res.runtime_min(arch, 224, 1000, 30) >= res.runtime_min("vgg16", 224, 1000, 30)
    with pytest.raises(ValueError, match="arch"):
        res.param_count("resnet", 224)


def test_bad_arguments():
    with pytest.raises(ValueError, match="kind"):
        res.mem_mb("predict", "vgg16", 224, 64)
    with pytest.raises(ValueError, match="batch"):
        res.mem_mb("attack", "torchvision:resnet18", 224, 0)
    with pytest.raises(ValueError, match="batch"):
        res.mem_mb("attack", "vgg16", 224, 0)


def test_train_grad_evals_known_counts():
    from oncorobust.pipeline.passes import train_grad_evals
    from oncorobust.training.losses import REGIME_LOSSES

    adv = {"iters": 7, "clean_fraction": 0.5, "free_replays": 4, "robust_val_max": 50}
    assert train_grad_evals("clean", None, 100, 40) == {"train": 100.0, "validation": 0.0, "per_image": 1.0}
    assert train_grad_evals("adv_pgd", adv, 100, 40)["train"] == 100 * (1 + 7 * 0.5)
    assert train_grad_evals("adv_pgd", adv, 100, 80)["validation"] == 50 * 7  # robust_val_max caps it
    assert train_grad_evals("adv_fast", adv, 100, 40)["per_image"] == 2
    assert train_grad_evals("adv_free", adv, 100, 40)["per_image"] == 4
    for name, rl in REGIME_LOSSES.items():  # the loss registry's own count
        assert train_grad_evals(name, adv, 10, 0)["per_image"] == rl.image_passes(7)
    with pytest.raises(ValueError, match="unknown regime"):
        train_grad_evals("adv_nope", adv, 1, 1)


# ------------------------------------------------------------------ job_resource: the workflow's jobs
def _config(size=16, device="cpu", jobs="per_method", eps=(0.01, 0.02), methods=("fgsm", "pgd")):
    return {"device": device, "results": "res",
            "attacks": {"batch_size": 32, "labels": "true", "jobs": jobs, "pgd": {"steps": 10, "restarts": 1},
                        "fgsm": {}, "worst": {"members": ["pgd"]},
                        "health": {"max_images": 4, "square_queries": 100}},
            "datasets": {"d": {"source": {"format": "digits"}, "preprocess": {"size": size},
                               "model": {"arch": "vgg_small", "width": 8},
                               "train": {"batch_size": 16, "epochs": 3},
                               "attack": {"methods": list(methods), "eps": list(eps), "reference_eps": eps[0]},
                               "sensitivity": {"eps_max": 0.1, "tol": 0.001, "exclude_fraction": 0.1},
                               "corruptions": {"names": ["gaussian_blur"]}}}}


def _tensors(path, n, size=16):
    """A file the size of n single-channel float32 images."""
    path.write_bytes(b"\0" * (4 * size * size * n))
    return str(path)


def test_job_resource_threads_and_gpu_follow_the_config():
    assert res.job_resource(_config(), "train", "threads", wildcards={"ds": "d"}) == 1
    assert res.job_resource(_config(size=116), "train", "threads", wildcards={"ds": "d"}) == 8
    for device, gpu in (("cpu", 0), ("auto", 0), ("cuda", 1), ("cuda:1", 1)):
        assert res.job_resource(_config(device=device), "attack", "gpu", ds="d") == gpu


def test_job_resource_before_the_inputs_exist(tmp_path):
    """A dry run: the inputs are not written, so the fixed fallbacks."""
    missing = {k: str(tmp_path / f"{k}.pt") for k in ("train", "val", "test", "checkpoint")}
    w = {"ds": "d", "regime": "clean", "method": "pgd"}
    got = {(kind, name): res.job_resource(_config(), kind, name, wildcards=w, inputs=missing)
           for kind, name in (("train", "runtime"), ("attack", "runtime"), ("corrupt", "runtime"),
                              ("health", "runtime"), ("sensitivity", "runtime"), ("import", "mem_mb"))}
    assert got == {("train", "runtime"): 60, ("attack", "runtime"): 60, ("corrupt", "runtime"): 10,
                   ("health", "runtime"): 60, ("sensitivity", "runtime"): 60, ("import", "mem_mb"): 2000}
    assert res.job_resource(_config(size=116), "train", "runtime", wildcards=w, inputs=missing) == 24 * 60
    assert res.job_resource(_config(), "fig1", "runtime", inputs={"tests": [missing["test"]]}) == 60


def test_job_resource_counts_the_images_of_the_inputs(tmp_path):
    test = _tensors(tmp_path / "test.pt", 10)
    c = _config()
    attack = res.job_resource(c, "attack", "mem_mb", ds="d", wildcards={"regime": "adv_pgd", "method": "pgd"},
                              inputs={"test": test})
    assert attack == res.mem_mb("attack", "vgg_small", 16, 32, width=8, data_mb=10 * 1024 / 2 ** 20)
    transfer = res.job_resource(c, "attack", "mem_mb", ds="d", wildcards={"method": "transfer_pgd"},
                                inputs={"test": test})
    assert transfer == res.mem_mb("transfer", "vgg_small", 16, 32, width=8, data_mb=10 * 1024 / 2 ** 20)
    # per_method: one job runs both ε of the grid; per_eps one
    minutes = {jobs: res.job_resource(_config(size=16, jobs=jobs), "attack", "runtime", ds="d",
                                      wildcards={"method": "pgd"}, inputs={"test": test})
               for jobs in ("per_method", "per_eps")}
    passes = res.attack_passes("pgd", c["attacks"]["pgd"]) + 2
    assert minutes == {"per_method": res.runtime_min("vgg_small", 16, 10, 2 * passes, width=8),
                       "per_eps": res.runtime_min("vgg_small", 16, 10, passes, width=8)}
    # the health check looks at max_images (4) of the 10
    health = res.job_resource(c, "health", "mem_mb", wildcards={"ds": "d"}, inputs={"test": test})
    assert health == res.mem_mb("health", "vgg_small", 16, 32, width=8, data_mb=10 * 1024 / 2 ** 20, n_images=4)
    ckpt = _tensors(tmp_path / "model.pt", 1024, size=32)  # 4 MB
    assert res.job_resource(c, "import", "mem_mb", wildcards={"ds": "d"}, inputs={"checkpoint": ckpt}) == 2016


def test_job_resource_training_time_scales_with_threads_and_regime(tmp_path):
    inputs = {"train": _tensors(tmp_path / "train.pt", 2000, 116), "val": _tensors(tmp_path / "val.pt", 500, 116)}
    c = _config(size=116)
    c["datasets"]["d"]["model"]["arch"] = "vgg16"
    c["datasets"]["d"]["adversarial_training"] = {"regimes": ["adv_pgd"], "iters": 7, "epochs": 3}

    def minutes(regime, threads=1):
        return res.job_resource(c, "train", "runtime", wildcards={"ds": "d", "regime": regime}, inputs=inputs,
                                threads=threads)

    assert minutes("clean") > minutes("clean", threads=8) > res.FLOOR_MIN
    assert minutes("adv_pgd") > minutes("clean") and minutes("adv_pgd-r2") == minutes("adv_pgd")


def test_job_resource_refuses_what_it_does_not_define():
    with pytest.raises(ValueError, match="no resource 'runtime' for job kind 'import'"):
        res.job_resource(_config(), "import", "runtime", wildcards={"ds": "d"})
    with pytest.raises(ValueError, match="job kind 'deploy'"):
        res.job_resource(_config(), "deploy", "mem_mb", wildcards={"ds": "d"})
