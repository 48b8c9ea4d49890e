"""`make readme`: the README's demo numbers come from results/, block by block."""

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def _tool():
    spec = importlib.util.spec_from_file_location("update_readme", ROOT / "tools" / "update_readme.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_blocks_are_replaced_from_results(tmp_path):
    (tmp_path / "results" / "tables").mkdir(parents=True)
    (tmp_path / "results" / "figures").mkdir()
    (tmp_path / "docs").mkdir()
    t = tmp_path / "results" / "tables"
    (t / "table1.md").write_text("# Table 1\n\n| attack | ε | ct |\n|---|---|---|\n| Baseline |  | 90.0 |\n"
                                 "| FGSM | 0.01 | 80.0 |\n| PGD | 0.01 | 70.0 |\n| WORST | 0.01 | 60.0 |\n\n"
                                 "Attacks pushed each image away.\n\n## ε in the stored data\n\n| x |\n")
    (t / "evaluation_health.md").write_text("# Health\n\n| check |\n|---|\n| ok |\n")
    (t / "robustness_summary.md").write_text("# R\n\n| eps50 |\n")
    (t / "deferral_auc.md").write_text("# D\n\n| auc |\n")
    (t / "directions.md").write_text("# Missed findings vs false alarms\n\n## ct (positive class: malignant)\n\n"
                                     "| regime | attack | ε | missed findings | false alarms |\n|---|\n| clean | pgd | 0.01 | 1/2 |\n\n"
                                     "Flipping ε per direction (...):\n\n| regime | ε₅₀ missed |\n|---|---|\n| clean | 0.012 |\n")
    (tmp_path / "results" / "figures" / "fig5_robustness_curves.png").write_bytes(b"png")
    readme = tmp_path / "README.md"
    readme.write_text("intro\n<!-- results:table1 -->\nold numbers\n<!-- /results:table1 -->\n"
                      "<!-- results:health -->\n<!-- /results:health -->\n"
                      "<!-- results:directions -->\n<!-- /results:directions -->\nend\n")
    assert _tool().main(tmp_path) == 0
    text = readme.read_text()
    assert "old numbers" not in text and "| PGD | 0.01 | 70.0 |" in text and "| WORST | 0.01 | 60.0 |" in text
    assert "FGSM" not in text and "stored data" not in text and "| ok |" in text
    assert text.startswith("intro\n") and text.endswith("end\n")
    # directions: the per-direction ε table under its dataset's name, not the per-ε counts
    assert "**ct (positive class: malignant)**" in text and "| clean | 0.012 |" in text and "1/2" not in text
    assert (tmp_path / "docs" / "demo_fig5.png").read_bytes() == b"png"
