# Shortcuts for people who type `make`; `./kit` is the real entry point (README.md).
.PHONY: lab test setup bench
lab:
	./kit lab
test:
	./kit test
setup:
	./kit setup
bench:
	.venv/bin/python benchmarks/bench_lab.py
	.venv/bin/python benchmarks/bench_images.py
	.venv/bin/python benchmarks/bench_analysis.py
	.venv/bin/python benchmarks/bench_tls.py
	.venv/bin/python benchmarks/bench_srtp_relay.py
	.venv/bin/python benchmarks/bench_trunk.py
	.venv/bin/python benchmarks/bench_hardening.py
	.venv/bin/python benchmarks/bench_grading.py
