"""`make bench`: measured throughput and latency, written to docs/benchmarks.md."""
