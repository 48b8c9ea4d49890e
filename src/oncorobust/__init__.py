"""oncorobust: how fragile are medical-imaging classifiers to adversarial images?

The package holds the logic; the Snakemake workflow under ``workflow/`` only calls it.
"""

__version__ = "0.1.0"
