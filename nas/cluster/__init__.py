"""Ray: connecting to a cluster or starting one, the watchdog, and `nas train --runner ray`.

May import nas.core and nas.training; the search's Ray executor (nas.pipeline.ray_runner) builds on it.
"""
