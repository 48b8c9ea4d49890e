"""Attacks: closed forms, step counts, budgets, ε = 0, monotonicity, CSV and table contracts."""

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from oncorobust.attacks.methods import attack, method_params
from oncorobust.errors import AttackError
from oncorobust.attacks.checks import AttackSanityError, check_adversarial
from oncorobust.evaluation.evaluate import COLUMNS, evaluate_attack
from oncorobust.evaluation.stats import paired_difference, wilson
from oncorobust.reporting.tables import sanity_warnings, table1, table1_markdown, table_s5
from oncorobust.evaluation.results import summarize


class Linear(nn.Module):
    """logits = W·flatten(x) + b: the input gradient's sign is known in closed form."""

    def __init__(self, d=16, classes=2, seed=0):
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.fc = nn.Linear(d, classes)
        with torch.no_grad():
            self.fc.weight.copy_(torch.randn(classes, d, generator=g))
            self.fc.bias.zero_()
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        return self.fc(x.flatten(1))


@pytest.fixture
def batch():
    g = torch.Generator().manual_seed(1)
    x = 0.25 + 0.5 * torch.rand(32, 1, 4, 4, generator=g)  # away from the [0,1] bounds
    return x, torch.randint(0, 2, (32,), generator=g)


def test_fgsm_equals_closed_form(batch):
    x, y = batch
    model = Linear()
    eps = 0.01
    adv = attack(model, x, y, "fgsm", eps)
    # d CE / d x = W^T (softmax - onehot); for 2 classes its sign is sign((w_other - w_y) * p_other)
    w = model.fc.weight.detach()
    direction = (w[1 - y] - w[y]).view_as(x)
    np.testing.assert_allclose(adv.numpy(), (x + eps * direction.sign()).numpy(), atol=1e-7)


@pytest.mark.parametrize("method,steps", [("bim", 10), ("pgd", 10), ("pgd", 3), ("bim", 7)])
def test_iterative_methods_take_exactly_the_configured_steps(batch, method, steps):
    x, y = batch
    model = Linear()
    attack(model, x, y, method, 0.002, steps=steps)
    assert model.calls == steps  # one forward per step (restarts=1: no extra scoring pass)


def test_bim_never_gets_zero_steps_or_torchattacks_alpha_at_the_papers_small_eps(batch):
    # torchattacks' BIM defaults to alpha = 2/255 (> the paper's eps): every parameter is explicit
    assert method_params("bim") == {"steps": 10, "alpha_ratio": 0.1}
    assert method_params("pgd")["alpha_ratio"] == 0.25
    x, y = batch
    model = Linear()
    adv = attack(model, x, y, "bim", 0.001)
    # 10 steps of eps/10 from the clean image: the perturbation reaches the ball's surface
    assert (adv - x).abs().max().item() == pytest.approx(0.001, abs=1e-6)
    with pytest.raises(AttackError, match="steps"):
        attack(model, x, y, "pgd", 0.01, steps=0)
    with pytest.raises(AttackError, match="unknown parameter"):
        attack(model, x, y, "pgd", 0.01, stpes=3)


@pytest.mark.parametrize("method", ["fgsm", "bim", "pgd"])
@pytest.mark.parametrize("eps", [0.0, 0.001, 0.05, 0.3])
def test_budget_range_and_eps_zero(batch, method, eps):
    x, y = batch
    model = Linear()
    model.train()
    adv = attack(model, x, y, method, eps, **({"restarts": 3} if method == "pgd" else {}))
    assert model.training  # mode restored
    assert adv.dtype == torch.float32 and 0 <= adv.min() and adv.max() <= 1
    assert (adv - x).abs().max() <= eps + 1e-6
    if eps == 0:
        assert torch.equal(adv, x)


def test_sanity_check_catches_violations(batch):
    x, _ = batch
    with pytest.raises(AttackSanityError, match="exceeds ε"):
        check_adversarial(x, x + 0.02, 0.01)
    with pytest.raises(AttackSanityError, match="leave \\[0,1\\]"):
        check_adversarial(torch.zeros(1, 1, 2, 2), torch.full((1, 1, 2, 2), -0.001), 0.01)


def test_rejects_non_float32_and_unnormalised_inputs(batch):
    x, y = batch
    with pytest.raises(AttackError, match="float32"):
        attack(Linear(), x.double(), y, "fgsm", 0.01)
    with pytest.raises(AttackError, match=r"\[0,1\]"):
        attack(Linear(), x * 4, y, "fgsm", 0.01)
    with pytest.raises(AttackError, match="NaN"):
        attack(Linear(), torch.where(x > 0.5, torch.nan, x), y, "fgsm", 0.01)
    with pytest.raises(AttackError, match="eps"):
        attack(Linear(), x, y, "pgd", float("nan"))
    with pytest.raises(AttackError, match="one label per image"):
        attack(Linear(), x, y[:-1], "pgd", 0.01)
    with pytest.raises(AttackError, match="unknown attack method"):
        attack(Linear(), x, y, "cw", 0.01)
    with pytest.raises(AttackError, match="not a class of this model"):
        attack(Linear(), x, torch.full_like(y, 2), "pgd", 0.01)
    with pytest.raises(AttackError, match="int64"):
        attack(Linear(), x, y.float(), "pgd", 0.01)


def test_accuracy_falls_with_eps_to_near_zero(batch):
    x, _ = batch
    model = Linear(seed=3)
    with torch.no_grad():
        y = model(x).argmax(1)  # a perfect model on its own labels
    accs = []
    for eps in [0.0, 0.005, 0.02, 0.05, 0.2, 0.5]:
        adv = attack(model, x, y, "pgd", eps, seed=1)
        accs.append((model(adv).argmax(1) == y).float().mean().item())
    assert accs[0] == 1.0 and accs[-1] < 0.05
    assert all(b <= a + 1e-9 for a, b in zip(accs, accs[1:]))


def test_restarts_are_worst_case_and_seeded(batch):
    x, y = batch
    model = Linear(seed=5)
    a = attack(model, x, y, "pgd", 0.03, restarts=4, seed=2)
    b = attack(model, x, y, "pgd", 0.03, restarts=4, seed=2)
    assert torch.equal(a, b)
    one = attack(model, x, y, "pgd", 0.03, restarts=1, seed=2)
    fooled = lambda z: (model(z).argmax(1) != y).sum().item()  # noqa: E731
    assert fooled(a) >= fooled(one)


def test_evaluate_attack_csv_contract_and_labels_modes(batch):
    x, _ = batch
    model = Linear(seed=7)
    y = torch.zeros(len(x), dtype=torch.int64)  # half of them misclassified
    ids = [f"s{i}" for i in range(len(x))]
    pred = evaluate_attack(model, x, y, ids, "pgd", 0.5, labels="predicted", batch_size=10)
    true = evaluate_attack(model, x, y, ids, "pgd", 0.5, labels="true", batch_size=10)
    assert list(pred.columns[:len(COLUMNS)]) == COLUMNS and pred.sample_id.tolist() == ids
    assert (pred.linf <= 0.5 + 1e-6).all() and pred.clean_prob.between(0.5, 1).all()
    # predicted labels: every prediction flipped, so misclassified images became correct
    assert (pred.adv_pred != pred.clean_pred).all()
    assert (pred.adv_pred == pred.label).mean() == pytest.approx(1 - (pred.clean_pred == pred.label).mean())
    # true labels: correct images are pushed wrong, wrong ones stay wrong -> accuracy 0
    assert (true.adv_pred == true.label).sum() == 0


def test_transfer_crafts_on_source_and_scores_target(batch):
    x, y = batch
    source, target = Linear(seed=1), Linear(seed=2)
    ids = [str(i) for i in range(len(x))]
    t = evaluate_attack(target, x, y, ids, "transfer_fgsm", 0.05, source_model=source)
    expected = attack(source, x, source(x).argmax(1), "fgsm", 0.05)
    assert t.adv_pred.tolist() == target(expected).argmax(1).tolist()
    with pytest.raises(ValueError, match="source"):
        evaluate_attack(target, x, y, ids, "transfer_fgsm", 0.05)


# ---------------------------------------------------------------- statistics and tables


def test_wilson_known_values():
    # Newcombe (1998), Table I: 81/263 -> 0.2553-0.3662; 15/148 -> 0.0624-0.1605; 0/10 -> 0-0.2775
    assert wilson(81, 263) == pytest.approx((0.2553, 0.3662), abs=1e-4)
    assert wilson(15, 148) == pytest.approx((0.0624, 0.1605), abs=1e-4)
    assert wilson(0, 10) == pytest.approx((0.0, 0.2775), abs=1e-4)
    assert wilson(10, 10)[1] == pytest.approx(1.0) and wilson(10, 10)[0] == pytest.approx(0.7225, abs=1e-4)


def test_paired_difference_known_values():
    d, lo, hi = paired_difference(b=10, c=5, n=100)
    se = np.sqrt(10 + 5 - 25 / 100) / 100
    assert d == pytest.approx(0.05) and lo == pytest.approx(0.05 - 1.959964 * se, abs=1e-6)
    assert paired_difference(0, 0, 50) == (0.0, 0.0, 0.0)


def _per_image(n, acc, seed, flip=0.0):
    rng = np.random.default_rng(seed)
    label = rng.integers(0, 2, n)
    adv = np.where(rng.random(n) < acc, label, 1 - label)
    return pd.DataFrame({"sample_id": [f"s{i}" for i in range(n)], "label": label, "clean_pred": label,
                         "adv_pred": adv, "clean_prob": 0.9, "adv_prob": 0.8, "linf": 0.002})


def test_tables_render_their_numbers():
    per = {("ct", "clean", "pgd", 0.002): _per_image(200, 0.3, 0),
           ("ct", "clean", "fgsm", 0.002): _per_image(200, 0.4, 1),
           ("ct", "adv_pgd", "pgd", 0.002): _per_image(200, 0.7, 2),
           ("ct", "adv_pgd", "transfer_pgd", 0.002): _per_image(200, 0.8, 3)}
    summary = pd.DataFrame([summarize(df, *k) for k, df in per.items()])
    t1 = table1(summary, {"ct": "ct"}, "predicted")
    assert t1.method.tolist() == ["baseline", "fgsm", "pgd"]
    base = t1[t1.method == "baseline"].iloc[0]
    assert base.accuracy == 100 and base.paper == pytest.approx(75.41)
    pgd = t1[t1.method == "pgd"].iloc[0]
    assert pgd.accuracy == pytest.approx(100 * (per[("ct", "clean", "pgd", 0.002)].adv_pred
                                                == per[("ct", "clean", "pgd", 0.002)].label).mean())
    assert pgd.paper == pytest.approx(26.92)
    md = table1_markdown(t1)
    assert f"{pgd.accuracy:.1f} [{pgd.ci_low:.1f}, {pgd.ci_high:.1f}]" in md and "26.92" in md
    assert "**predicted**" in md
    s5 = table_s5(per, {"ct": 0.002}, {"ct": "ct"})
    assert set(s5.evaluation) == {"white-box", "transfer"}
    wb = s5[s5.evaluation == "white-box"].iloc[0]
    assert wb.adv_trained - wb.original == pytest.approx(wb.difference)
    assert wb.diff_ci_low < wb.difference < wb.diff_ci_high and wb.paper_adv_trained == pytest.approx(67.72)


def test_table_s5_pairs_replicate_k_with_clean_replicate_k():
    from oncorobust.evaluation.paired import mean_difference, two_level_bootstrap
    from oncorobust.reporting.tables import S5_COLUMNS, S5_SEED_COLUMNS

    acc = {"clean": (0.3, 0.5, 0.4), "adv_pgd": (0.6, 0.62, 0.9)}
    per = {}
    for r, accs in acc.items():
        for k, a in enumerate(accs, start=1):
            name = r if k == 1 else f"{r}-r{k}"
            per[("ct", name, "pgd", 0.002)] = _per_image(300, a, 10 * k + (r == "clean"))
    s5 = table_s5(per, {"ct": 0.002}, {"ct": "ct"}, n_boot=300, seed=4)
    # one row per base regime (clean-r2 / adv_pgd-r2 are replicates, not regimes of their own)
    assert list(s5.columns) == S5_COLUMNS + S5_SEED_COLUMNS and list(s5.regime) == ["adv_pgd"]
    row = s5.iloc[0]
    ok = {n: (df.adv_pred == df.label).to_numpy() for (_, n, _, _), df in per.items()}
    d = [100 * (ok[a].mean() - ok[c].mean()) for c, a in
         (("clean", "adv_pgd"), ("clean-r2", "adv_pgd-r2"), ("clean-r3", "adv_pgd-r3"))]
    assert row.replicates == 3 and row.interval == "seeds+images"
    assert row.difference == pytest.approx(np.mean(d))  # replicate k against clean replicate k
    assert (row.diff_seed_min, row.diff_seed_max) == pytest.approx((min(d), max(d)))
    assert row.original == pytest.approx(100 * np.mean([ok[n].mean() for n in ("clean", "clean-r2", "clean-r3")]))
    direct = two_level_bootstrap([np.column_stack([ok[c], ok[a]]).astype(float) for c, a in
                                  (("clean", "adv_pgd"), ("clean-r2", "adv_pgd-r2"), ("clean-r3", "adv_pgd-r3"))],
                                 mean_difference, n_boot=300, seed=4, bounds=(-1.0, 1.0))
    assert (row.diff_ci_low, row.diff_ci_high, row.diff_sa_ci_low) == pytest.approx(
        (100 * direct["ci_low"], 100 * direct["ci_high"], 100 * direct["sa_ci_low"]))
    assert row.diff_sa_ci_low < row.difference < row.diff_sa_ci_high
    # one seed: today's columns only, and the row is that one pair
    one = table_s5({k: v for k, v in per.items() if "-r" not in k[1]}, {"ct": 0.002}, {"ct": "ct"})
    assert list(one.columns) == S5_COLUMNS and one.iloc[0].difference == pytest.approx(d[0])


def test_sanity_warnings_flag_rising_accuracy_and_weak_attacks():
    rows = [summarize(_per_image(400, a, i), "digits", "clean", "pgd", e)
            for i, (a, e) in enumerate([(0.2, 0.05), (0.9, 0.1)])]
    rows.append(summarize(_per_image(400, 0.2, 9), "digits", "clean", "fgsm", 0.1))
    w = sanity_warnings(pd.DataFrame(rows), controls={"digits"})
    text = " ".join(w.warning)
    assert "accuracy rises with ε" in text and "above FGSM" in text and "still" in text


def test_kernels_return_one_type(batch):
    from oncorobust.attacks.kernels import Outcome, apgd, apgd_start, sign_iterate, sign_iterate_images, signed_noise

    x, y = batch
    model = Linear()
    e = torch.full((len(x), 1, 1, 1), 0.01)
    for early_exit in (False, True):
        out = sign_iterate(model, x, y, e, steps=3, alpha=e / 4, early_exit=early_exit)
        assert isinstance(out, Outcome) and out.flipped.dtype == torch.bool and out.images.shape == x.shape
    model.calls = 0
    images = sign_iterate_images(model, x, y, e, steps=3, alpha=e / 4)
    assert model.calls == 3  # not scored: no extra forward pass
    assert torch.equal(images, sign_iterate(model, x, y, e, steps=3, alpha=e / 4).images)
    start = apgd_start(x, e, signed_noise(x.shape, list(range(len(x))), 0, x))
    assert isinstance(apgd(model, x, y, e, steps=5, rho=0.75, loss="ce", start=start), Outcome)


def test_until_flipped_runs_only_unflipped_images_with_the_callers_draws():
    from oncorobust.attacks.ensemble import Run, until_flipped

    x = torch.zeros(4, 1, 1, 1)
    seen = []

    def run(step, todo):  # flips image k in the run whose draw index is k's "lucky" draw
        seen.append((step, todo.tolist()))
        lucky = torch.tensor([0, 101, 101, 1000])[todo]
        return Run(x[todo] + step.draw, lucky == step.draw)

    out = until_flipped(x, ["a", "b"], run, restarts=2, draw=lambda r, m: 100 * m + r,
                        done=torch.tensor([False, False, False, True]))
    assert [(s.restart, s.member, s.name, s.draw) for s, _ in seen] == [(0, 0, "a", 0), (0, 1, "b", 100),
                                                                         (1, 0, "a", 1), (1, 1, "b", 101)]
    assert [t for _, t in seen] == [[0, 1, 2], [1, 2], [1, 2], [1, 2]]
    assert out.flipped.tolist() == [True, True, True, True] and out.flipped_by == [1, 0, 0, 2]
    # flipped images keep their first success; the already-done one and none else keep x
    assert out.images.flatten().tolist() == [0.0, 101.0, 101.0, 0.0]


def test_worst_counts_members_and_never_weaker(batch):
    from oncorobust.attacks.kernels import image_seeds
    from oncorobust.attacks.methods import worst_case

    x, _ = batch
    model = Linear().eval()
    with torch.no_grad():
        y = model(x).argmax(1)  # pushed away from the predictions: no image flipped at the start
    e = torch.full((len(x), 1, 1, 1), 0.2)
    stats = {}
    adv = worst_case(model, x, y, e, ["fgsm", "pgd", "bim"], image_seeds(None, len(x), 0), stats=stats)
    flipped = int((model(adv).argmax(1) != y).sum())
    assert set(stats["flipped_by"]) == {"fgsm", "pgd", "bim"} and sum(stats["flipped_by"].values()) == flipped
    assert flipped > 0 and flipped >= int((model(attack(model, x, y, "fgsm", 0.2)).argmax(1) != y).sum())
