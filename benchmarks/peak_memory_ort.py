"""Peak activation memory from the layer specs (search_spaces/memory.py) vs what onnxruntime holds.

    python benchmarks/peak_memory_ort.py [--archs 4] [--resolution 224]

Each arch of the mbconv space is exported to ONNX (random weights) and run once in a fresh process
at batch 1 with onnxruntime (CPU, one thread, no memory arena and no memory pattern, so every tensor
is malloc'ed and freed as the run goes; glibc is told to mmap every allocation of 64 KiB or more and to
trim the heap at once, so a free returns its pages and RSS follows the tensors alive). Its transient memory is the rise of the process's peak RSS
during the run: the peak is reset just before (`echo 5 > /proc/self/clear_refs`, Linux), so weights
and the session are not counted. That includes the runtime's scratch buffers (e.g. im2col of the
convolutions, which the spec model does not count), so it is an upper reference, not ground truth.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))   # this checkout's nas, not an installed one

CHILD = r"""
import sys, numpy as np, onnxruntime as ort
path, shape = sys.argv[1], [int(v) for v in sys.argv[2].split(",")]
o = ort.SessionOptions(); o.intra_op_num_threads = 1; o.inter_op_num_threads = 1
o.enable_cpu_mem_arena = False; o.enable_mem_pattern = False
s = ort.InferenceSession(path, o, providers=["CPUExecutionProvider"])
x = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
name = s.get_inputs()[0].name
s.run(None, {name: x})                       # warm: lazily made kernels and their buffers
def status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key):
            return int(line.split()[1])
rises = []
for _ in range(3):
    rss = status("VmRSS:")
    open("/proc/self/clear_refs", "w").write("5")   # reset the peak RSS to the current RSS
    s.run(None, {name: x})
    rises.append(status("VmHWM:") - rss)
print(sorted(rises)[1])
"""


#: every malloc its own mmap, returned to the system on free: RSS follows the live allocations
ENV = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "65536", "MALLOC_TRIM_THRESHOLD_": "0", "OMP_NUM_THREADS": "1"}


def main() -> None:
    from nas.deploy.export import export_onnx
    from nas.strategies.constraints import arch_metrics
    from search_spaces.catalog import get_space
    ap = argparse.ArgumentParser()
    ap.add_argument("--archs", type=int, default=4)
    ap.add_argument("--resolution", type=int, default=224)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()
    space = get_space("mbconv", resolution=args.resolution)
    rng = np.random.default_rng(args.seed)
    archs = [space.sample(rng) for _ in range(args.archs)]
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for i, arch in enumerate(archs):
            path, _ = export_onnx(space, arch, Path(tmp) / f"net{i}.onnx", batch=1)
            shape = ",".join(map(str, (1, *space.input_shape)))
            kib = [int(subprocess.run([sys.executable, "-c", CHILD, str(path), shape], capture_output=True,
                                      text=True, check=True, env=ENV).stdout.strip()) for _ in range(3)]
            # each value: the median of 3 runs after a warm-up run in one process; 3 processes
            predicted = arch_metrics(space, arch)["peak_memory_mb"]
            measured = float(np.median(kib)) * 1024 / 1e6
            rows.append({"arch": space.format(arch), "predicted_mb": predicted, "ort_peak_rise_mb": measured,
                         "runs_kib": kib, "ratio": measured / predicted})
            print(f"{predicted:8.3f} MB predicted  {measured:8.3f} MB onnxruntime (median of 3: {kib} KiB)  "
                  f"ratio {measured / predicted:.2f}  {space.format(arch)}")
    print(json.dumps({"resolution": args.resolution, "rows": rows}, indent=1))


if __name__ == "__main__":
    main()
