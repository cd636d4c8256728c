"""Search strategies behind one ask/tell interface (`base.Strategy`) and the problem they solve (`problem`).

May import every package below the pipeline (store, training, supernet, evaluators, differentiable); the registry is `catalog`.
"""
