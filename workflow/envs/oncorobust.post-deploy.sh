#!/usr/bin/env bash
# Snakemake runs this once, inside the environment just created from oncorobust.yaml
# (--software-deployment-method conda). torchattacks is installed without its declared
# dependencies: its metadata pins requests~=2.25.1, which would downgrade the requests that
# snakemake needs, although its code imports neither requests nor torchvision (torch is already
# installed). Same version as the Makefile's.
set -euo pipefail
python -m pip install --no-deps "torchattacks==3.5.1"
python -c "import torchattacks"
