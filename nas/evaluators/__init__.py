"""Evaluators: `base` (the interface, Compose, LatencyEvaluator), `zero_cost` + `proxies` (training-
free scores), `training` (short training), `tabular`, and the registry `catalog` (`EVALUATORS`, `make_evaluator`).

May import nas.core, search_spaces, latency, nas.store, nas.deploy, nas.training, nas.cluster and nas.supernet.
"""
