"""Latency: layer keys, tables (measured LUTs, device models, measured whole nets), profiling with onnxruntime.

May import nas.core and search_spaces (device-model fits price published nets of the spaces); never the engine.
"""
