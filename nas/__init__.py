"""nas: neural architecture search with hardware-latency models."""
__version__ = "0.1.0"
