"""The search pipeline: config, plan, runners (local, cooperative, Ray), the catalogue and reports.

May import every engine package below it (store, deploy, training, supernet, evaluators, strategies, cluster).
"""
