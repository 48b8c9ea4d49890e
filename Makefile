# Thin wrappers around the environment, the workflow and the tests.
VENV   ?= .venv
PY     := $(VENV)/bin/python
SMK    := $(VENV)/bin/snakemake
SNAKEFMT := $(VENV)/bin/snakefmt
CORES  ?= all
STAMP  := $(VENV)/.installed

.PHONY: setup demo test lint bench clean readme smoke-paper

setup: $(STAMP)

# torch 2.14.1 / torchvision 0.29.1 are pinned for the environment (pyproject gives a range).
# torchattacks is installed with --no-deps: its metadata pins requests~=2.25.1, which would
# downgrade requests for snakemake, and its code needs neither requests nor torchvision at import.
$(STAMP): pyproject.toml
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install --upgrade pip
	$(PY) -m pip install torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -e '.[test]'
	$(PY) -m pip install --no-deps 'torchattacks==3.5.1'
	touch $(STAMP)

# The report is rebuilt only when a result is newer than it (a no-change rerun takes seconds).
demo: $(STAMP)
	$(SMK) --cores $(CORES) --configfile config/config.yaml
	@if [ -s results/report.html ] && [ -z "$$(find results -type f -newer results/report.html | head -n 1)" ]; then \
		echo "results/report.html is up to date"; \
	else \
		$(SMK) --configfile config/config.yaml --report results/report.html; \
	fi

test: $(STAMP)
	$(PY) -m pytest -n 2 tests

# Benchmarks print their ratios and write results/benchmarks/*.json (not part of the tests).
bench: $(STAMP)
	$(PY) -m pip install -e '.[bench]'
	$(SMK) --cores $(CORES) --configfile config/config.yaml results/mammo/models/clean.pt results/mammo/tensors/test.pt
	$(PY) benchmarks/attack_throughput.py
	$(SMK) --cores $(CORES) results/digits/models/clean.pt results/digits/tensors/test.pt
	$(PY) benchmarks/sensitivity_vs_grid.py
	$(SMK) --cores $(CORES) --configfile config/config.yaml results/ct/models/clean.pt results/ct/tensors/test.pt
	$(PY) benchmarks/sensitivity_optimality.py
	$(SMK) --cores $(CORES) --configfile config/config.yaml
	$(PY) benchmarks/noop_rerun.py
	$(PY) benchmarks/adv_training_regimes.py

# Paper-shape smoke run: config/paper.yaml's shapes (VGG16 at 224/116/32 px, the paper's batches,
# 20 PGD restarts) on tiny synthetic data, on the CPU, into $(SMOKE)/ (its own working directory);
# then every job's peak RSS (benchmark max_rss) against its declared mem_mb (exit 1 if above).
SMOKE ?= results-smoke
smoke-paper: $(STAMP)
	mkdir -p $(SMOKE)
	$(SMK) --cores $(CORES) --directory $(SMOKE) --configfile $(CURDIR)/config/paper_smoke.yaml \
		-s $(CURDIR)/workflow/Snakefile
	$(PY) benchmarks/paper_smoke_report.py $(SMOKE)

# The README's demo numbers and figures, regenerated from results/ (after `make demo`).
readme: $(STAMP)
	$(PY) tools/update_readme.py

# Snakemake's linter on the demo config, and the rule files' format (snakefmt's defaults: line
# length 88; `$(SNAKEFMT) workflow` reformats them).
lint: $(STAMP)
	$(SMK) --lint --configfile config/config.yaml
	$(SNAKEFMT) --check workflow

clean:
	rm -rf results .snakemake
