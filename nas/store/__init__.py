"""The trial store: trials, Optuna storages (SQLite, RDB, journal), shared studies, run locks.

May import nas.core only (no search space, latency model or strategy): everything above keeps its trials here.
"""
