"""Evaluators: `base` (the interface, Compose, LatencyEvaluator), `zero_cost` + `proxies` (training-
free scores), and the registry `catalog` (`EVALUATORS`, `make_evaluator`)."""
