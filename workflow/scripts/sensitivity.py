"""Snakemake adapter: model + val/test tensors -> per-image min-flip eps CSV."""

import torch

from oncorobust.evaluation.sensitivity import sensitivity_frame
from oncorobust.io import write_result_csv
from oncorobust.logs import step_logging
from oncorobust.models.loading import load_model
from oncorobust.provenance import file_fingerprint, model_fingerprint
from oncorobust.device import resolve_device

sm = snakemake  # noqa: F821 (injected by snakemake)
with step_logging(sm.log[0], "sensitivity") as log:
    torch.set_num_threads(sm.threads)
    device = resolve_device(sm.params.device)
    cfg = sm.params.sensitivity
    splits = {s: torch.load(getattr(sm.input, s), map_location="cpu", weights_only=True) for s in ("val", "test")}
    stats = {}
    frame = sensitivity_frame(load_model(sm.input.model, device), splits, device=device,
                              batch_size=sm.params.batch_size, eps_max=cfg["eps_max"], tol=cfg["tol"],
                              rel_tol=cfg["rel_tol"], refine_steps=cfg["refine_steps"],
                              method=cfg["method"], steps=cfg["steps"], restarts=cfg["restarts"],
                              alpha_ratio=sm.params.pgd_alpha_ratio, fab_check=cfg["fab_check"],
                              fab_steps=cfg["fab_steps"], seed=sm.params.seed, stats=stats)
    data_fp = frame.split.map({s: file_fingerprint(getattr(sm.input, s)) for s in ("val", "test")})
    write_result_csv(frame, sm.output[0], model_fp=model_fingerprint(sm.input.model), data_fp=data_fp)
    finite = frame.min_flip_eps[frame.min_flip_eps < float("inf")]
    log.info("flipping eps (eps_upper): %d images, %d not flipped at eps_max=%g, median %.4g;"
             " median bracket width %.3g; %d gradient evaluations (%.0f per image), FAB lowered %d,"
             " %d boundary flips pushed",
             len(frame), len(frame) - len(finite), cfg["eps_max"], finite.median() if len(finite) else float("nan"),
             (frame.eps_upper - frame.eps_lower)[frame.eps_upper < float("inf")].median() if len(finite) else float("nan"),
             stats["grad_evals"], stats["grad_evals"] / max(len(frame), 1), stats["lowered_by_fab"], stats["pushed"])
