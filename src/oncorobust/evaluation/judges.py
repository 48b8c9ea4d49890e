"""Whose numbers each evaluation-health check judges (:mod:`oncorobust.evaluation.health`), torch-free
so that the cards and the health table can say which results a failed check weakens.

A verdict rests on the worst case (``worst``) and the per-image flipping-ε search; a check that
judges only the paper's PGD (``attacks.pgd``: its convergence, its loss) or its BIM and PGD says
that Table 1's rows of those attacks may be optimistic, not that the verdict is.
"""

from __future__ import annotations

#: Whose numbers each check judges. ``all``: the model's gradients or the attack code as a whole,
#: so a failure weakens every result (the worst case and the per-image search included);
#: ``whitebox``: every white-box attack (gradient masking); ``worst``: the worst case (``worst``)
#: against the per-image search; ``pgd`` / ``bim_pgd``: the paper's PGD (``attacks.pgd``) or its BIM
#: and PGD, i.e. Table 1's rows of those attacks and not the worst case or the search, whose
#: attacks have their own budgets.
JUDGES = {"gradients": "all", "deterministic": "all", "unbounded_attack": "all", "monotone_in_eps": "all",
          "square_vs_whitebox": "whitebox", "transfer_vs_whitebox": "whitebox", "worst_vs_bracket": "worst",
          "worst_convergence": "worst",
          "iterative_vs_fgsm": "bim_pgd", "pgd_convergence": "pgd", "loss_converged": "pgd"}
#: :data:`JUDGES` in words, for tables and cards.
JUDGES_TEXT = {"all": "every attack", "whitebox": "every white-box attack", "worst": "the worst case",
               "pgd": "PGD (Table 1)", "bim_pgd": "BIM and PGD (Table 1)"}


def judges(check: str) -> str:
    """Whose numbers a health check judges (:data:`JUDGES`; an unknown check: ``all``).

    Args:
        check: the check's name (the health CSV's ``check`` column).
    Returns:
        ``all``, ``whitebox``, ``worst``, ``pgd`` or ``bim_pgd``.
    """
    return JUDGES.get(str(check), "all")


def judges_paper_attacks_only(check: str) -> bool:
    """Whether a check judges only the paper's BIM/PGD rows (not the worst case or the per-image
    search a verdict rests on).

    Args:
        check: the check's name.
    Returns:
        True for ``pgd_convergence``, ``loss_converged``, ``iterative_vs_fgsm``.
    """
    return judges(check) in ("pgd", "bim_pgd")
