"""Regenerate the README's demo numbers and figures from results/ (run by `make readme` after
`make demo`): every block between `<!-- results:NAME -->` and `<!-- /results:NAME -->` is replaced
by the current content of its source, so the README never carries hand-pasted numbers.

Blocks: ``table1`` (PGD and the worst case from results/tables/table1.md), ``health``
(results/tables/evaluation_health.md), ``robustness`` (results/tables/robustness_summary.md),
``deferral`` (results/tables/deferral_auc.md), ``directions`` (the per-direction flipping ε of
results/tables/directions.md), ``visibility`` (the clean models' worst case in
results/tables/visibility.md), ``clinical`` (the clean models' AUROC, sensitivity and specificity
clean and under "any attack", from results/tables/clinical.csv); figures docs/demo_fig2.png, docs/demo_fig5.png
and docs/demo_fig6.png are copied from results/figures/.
"""

from __future__ import annotations

import re
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def table_body(md: str) -> str:
    """The markdown tables and notes of a results .md file, without its '# ' title."""
    return "\n".join(line for line in md.strip().splitlines() if not line.startswith("# ")).strip()


def table1_rows(md: str, keep=("Baseline", "PGD", "WORST")) -> str:
    """Table 1 restricted to the baseline, PGD and worst-case rows (side by side: how much lower
    the worst case goes), plus its note."""
    lines = md.strip().splitlines()
    out = [ln for ln in lines if ln.startswith("| attack") or ln.startswith("|---")]
    out += [ln for ln in lines if ln.startswith("| ") and ln.split("|")[1].strip() in keep]
    note = [ln for ln in lines if ln.startswith("Attacks pushed")]
    return "\n".join(out + [""] + note)


def direction_eps_tables(md: str) -> str:
    """The per-direction flipping-ε tables of results/tables/directions.md, one per dataset under a
    bold line naming it and its positive class (the per-ε counts stay in the file)."""
    out, keep = [], False
    for line in md.strip().splitlines():
        if line.startswith("## "):
            out += ["", f"**{line[3:].strip()}**", ""]
            keep = False
        elif line.startswith("Flipping ε per direction"):
            keep = True
        elif keep and line.startswith("|"):
            out.append(line)
    return "\n".join(out).strip()


def visibility_rows(md: str, regime: str = "clean", method: str = "worst") -> str:
    """results/tables/visibility.md restricted to one regime's rows of one attack, plus its note."""
    lines = md.strip().splitlines()
    out = [ln for ln in lines if ln.startswith("| dataset") or ln.startswith("|---")]
    out += [ln for ln in lines if ln.startswith("| ") and [c.strip() for c in ln.split("|")[2:4]] == [regime, method]]
    note = [ln for ln in lines if ln.startswith("Median [min, max]")]
    return "\n".join(out + [""] + note)


def clinical_rows(csv: Path) -> str:
    """results/tables/clinical.csv as Markdown: the clean models' clean and "any attack" rows, the
    datasets with a positive class, each under a bold line instead of a heading."""
    import pandas as pd

    sys.path.insert(0, str(ROOT / "src"))
    from oncorobust.epsilon import eps_text
    from oncorobust.evaluation.clinical_metrics import clinical_markdown, positive_class_rows

    t = pd.read_csv(csv, keep_default_na=False, na_values=[""])
    md = clinical_markdown(t[positive_class_rows(t) & (t.regime.astype(str) == "clean")], eps_text, methods=[])
    return "\n".join(f"**{ln[3:].strip()}**" if ln.startswith("## ") else ln for ln in md.strip().splitlines())


def main(root: Path = ROOT) -> int:
    res = root / "results"
    sources = {
        "table1": lambda: table1_rows((res / "tables/table1.md").read_text().split("\n## ")[0]),
        "health": lambda: table_body((res / "tables/evaluation_health.md").read_text()),
        "robustness": lambda: table_body((res / "tables/robustness_summary.md").read_text()),
        "deferral": lambda: table_body((res / "tables/deferral_auc.md").read_text()),
        "directions": lambda: direction_eps_tables((res / "tables/directions.md").read_text()),
        "visibility": lambda: visibility_rows((res / "tables/visibility.md").read_text()),
        "clinical": lambda: clinical_rows(res / "tables/clinical.csv"),
    }
    readme = root / "README.md"
    text = readme.read_text()
    for name, get in sources.items():
        pattern = re.compile(rf"(<!-- results:{name} -->\n)(?:.*?\n)?(<!-- /results:{name} -->)", re.S)
        if not pattern.search(text):
            print(f"README.md has no block results:{name}; skipped", file=sys.stderr)
            continue
        text = pattern.sub(lambda m: m.group(1) + get().rstrip("\n") + "\n" + m.group(2), text)
    readme.write_text(text)
    for fig in ("fig2_accuracy_vs_eps", "fig5_robustness_curves", "fig6_clinical"):
        src = res / "figures" / f"{fig}.png"
        if src.exists():
            shutil.copyfile(src, root / "docs" / f"demo_{fig.split('_')[0]}.png")
    print("README.md and docs/demo_fig*.png regenerated from results/")
    return 0


if __name__ == "__main__":
    sys.exit(main())
