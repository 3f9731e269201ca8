# Thin wrappers; every target works on a fresh machine with Python 3.11 (and Go >= 1.26 for the
# e2e control plane, or RECONCILER_E2E_USE_KUBECONFIG=1 with an existing cluster).
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.PHONY: test test-unit test-e2e e2e-first e2e-second lint demo cluster image bench soak schema docs clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	touch $(STAMP)

test: lint test-unit test-e2e

lint: $(STAMP)
	$(BIN)/ruff check .

test-unit: $(STAMP)
	$(BIN)/pytest tests/unit

# The e2e suite as two pytest sessions at once, each with its own control plane: the suite
# waits on leases, timeouts and polls far more than it computes (one session kept the 2 cores
# 31% busy). The first has every test of the real node (one per machine) and the crash tests
# (to balance the two: 401 s and 514 s without them, 2026-12-03), the second the rest, new
# files included; each ends with its own render check and secret scan.
E2E        := tests/e2e
# (the real node starts in the background when the session does: its tests come later)
E2E_FIRST  := $(addprefix $(E2E)/,test_faults.py test_deploy_rbac.py test_checks_e2e.py \
	test_image.py test_real_node.py test_outputs_e2e.py test_daemon_pod.py test_examples.py \
	test_soak.py test_workflow_runs.py test_crash.py test_zz_real_node_leaves_no_trace.py)
# both end with these: the render check of the reports they committed, the secret scan
E2E_LAST   := $(addprefix $(E2E)/,test_zz_report_render.py test_zz_secret_scan.py)
E2E_SECOND := $(filter-out $(E2E_FIRST) $(E2E_LAST),$(sort $(wildcard $(E2E)/test_*.py)))

test-e2e: $(STAMP)
	@if [ "$$RECONCILER_E2E_USE_KUBECONFIG" != "1" ]; then $(MAKE) --no-print-directory cluster; fi
	$(MAKE) --no-print-directory -j2 --output-sync=target e2e-first e2e-second

e2e-first: $(STAMP)
	$(BIN)/pytest --durations=10 $(E2E_FIRST) $(E2E_LAST)

e2e-second: $(STAMP)
	$(BIN)/pytest --durations=10 $(E2E_SECOND) $(E2E_LAST)

cluster:
	bash tests/e2e/cluster/build.sh
	bash tests/e2e/prometheus/build.sh
	bash tests/e2e/node/build.sh
	bash tests/render/build.sh

# The daemon's OCI image from ./Dockerfile, without Docker (podman; image/build.sh).
image:
	bash image/build.sh

demo: $(STAMP)
	@if [ -z "$$KUBECONFIG" ]; then $(MAKE) --no-print-directory cluster; fi
	$(BIN)/python demo/run.py

soak: $(STAMP)
	@if [ "$$RECONCILER_E2E_USE_KUBECONFIG" != "1" ]; then $(MAKE) --no-print-directory cluster; fi
	RECONCILER_SOAK_CYCLES=1000 RECONCILER_CRASH_ROUNDS=6 RECONCILER_LOAD_SCALE=1 $(BIN)/pytest -s tests/e2e/test_soak.py \
	  tests/e2e/test_crash.py tests/e2e/test_load.py tests/e2e/test_zz_secret_scan.py \
	  -k "does_not_leak or kill_9 or many_workflows or secret"

bench: $(STAMP)
	$(BIN)/python bench/engine_bench.py
	$(BIN)/python bench/diff_bench.py
	$(BIN)/python bench/checkpoint_bench.py
	$(BIN)/python bench/checks_bench.py

# The peers bench (issue 18; not run by `make test`): Flux's controllers built from Go modules,
# then the Flux side's check, 5 event-driven trials on a kwok cluster of its own.
# Ours beside the peers, measured in one run (docs/benchmarks.md, Peers); not part of `make test`
.PHONY: bench-peers
bench-peers: $(STAMP)
	bash bench/peers/build_flux.sh
	$(BIN)/python bench/peers/run.py --trials 20 --poll-trials 20 --interval 10
	$(BIN)/python bench/peers/throughput.py --workflows 5000 --rising
	$(BIN)/python bench/engine_bench.py

schema: $(STAMP)
	$(BIN)/reconciler schema > schema/workflow.schema.json

# The generated parts of the README: the manifest reference and the daemon's flags.
docs: $(STAMP) schema
	$(BIN)/python -m reconciler.manifest.reference README.md
	$(BIN)/python -m reconciler.commands.daemon README.md

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis
