# `make test` and `make parity` create .venv on first use (pinned by constraints.txt).
PY      := .venv/bin/python
VENV_OK := .venv/.installed
OUT     ?= parity_out

.PHONY: test parity parity-long envelope-calibration bench clean

$(VENV_OK): pyproject.toml constraints.txt
	python3 -m venv .venv
	.venv/bin/pip install -q pip==26.3  # pinned: reproducible resolver
	.venv/bin/pip install -q -c constraints.txt -e ".[torch,test]"
	touch $(VENV_OK)

# Two pytest workers (one per core); whole files per worker, so a module's fixtures compile once.
test: $(VENV_OK)
	$(PY) -m pytest -q -n 2 --dist loadfile parity_tests

parity: $(VENV_OK)
	.venv/bin/jaxmtl parity --config tiny --dtype float64 --steps 100 --optimizer sgd,adam,adamw --out $(OUT)/float64
	.venv/bin/jaxmtl parity --config tiny --dtype float32 --steps 100 --optimizer sgd,adam,adamw --out $(OUT)/float32
	.venv/bin/jaxmtl parity --config small --dtype float64 --steps 20 --optimizer sgd,adam,adamw --out $(OUT)/small_float64

# Not in `make test`: JAX and torch train `small` for 300 float32 steps over 4 seeds each; the
# held-out loss and accuracy must agree within the seed-to-seed spread (jaxmtl/parity/long_horizon.py).
parity-long: $(VENV_OK)
	$(PY) -m jaxmtl.parity.long_horizon --config small --seeds 0,1,2,3 --steps 300 --out $(OUT)/long_horizon

# The measurement behind the float32 envelope's k and floors, and its false-alarm rate
# (jaxmtl/parity/calibrate_envelope.py): `tiny`, 4 seeds x 3 optimizers x 100 steps.
envelope-calibration: $(VENV_OK)
	$(PY) -m jaxmtl.parity.calibrate_envelope --config tiny --seeds 0,1,2,3 --steps 100 --out $(OUT)/envelope_calibration

bench: $(VENV_OK)
	$(PY) -m benchmarks all --out bench_out

clean:
	rm -rf .venv $(OUT) bench_out

# The generated pages of the autodiff study (parity_tests check that they match the code).
.PHONY: tutorials-docs
tutorials-docs: $(VENV_OK)
	.venv/bin/jaxmtl tutorials --write-docs docs/tutorials
