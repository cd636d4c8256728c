"""The `nas` command line: argparse, one library call per command, printing.

The top layer: may import anything; nothing imports it. `python -m nas.cli` runs it.
"""
