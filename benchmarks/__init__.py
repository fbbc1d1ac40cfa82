"""Benchmark suite (issue 5): `python -m benchmarks {step,bptt,memory,efficiency,convshapes,all}`."""
