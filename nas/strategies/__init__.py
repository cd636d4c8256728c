"""Search strategies behind one ask/tell interface (`base.Strategy`); the registry is `catalog`."""
