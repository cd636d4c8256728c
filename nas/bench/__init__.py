"""Benchmarks behind `nas bench`: latency models, zero-cost proxies and strategies against ground truth.

May import the search pipeline and everything below it; only the API and the CLI import it.
"""
