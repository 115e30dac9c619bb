"""Benchmarks of the Agenix product: each runs the product's own code path and reports figures with evidence."""
