#!/usr/bin/env bash
# The GPU paths in one short script, for a session that is lent a GPU machine (the `device` tool runs it in
# the repository root and brings back $OUT):
#
#     OUT=/tmp/gpu bash benchmarks/gpu_check.sh            # on the GPU machine; ~5-8 minutes
#     DEVICE=cpu OUT=/tmp/gpu bash benchmarks/gpu_check.sh # the same commands on CPU (gloo), to check the script
#
# 1. what the machine has (torch / CUDA / GPUs, onnxruntime providers);
# 2. CUDA training: `nas train` 1 epoch on digits, and the four weight-sharing strategies (benchmarks/ws_scale.py:
#    1 process, then torchrun with as many processes as GPUs, at most 2 - NCCL needs a GPU per rank, so with one
#    GPU torchrun runs a single rank and no collective is exercised: said in the log);
# 3. onnxruntime's CUDA and TensorRT execution providers: a small mbconv latency table and a validation.
# Every step has its own timeout and log under $OUT; a failed step does not stop the others; the summary
# lists each step's exit status.
set -u
OUT=${OUT:?set OUT to a folder for the logs}
DEVICE=${DEVICE:-cuda}
mkdir -p "$OUT"
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" OMP_NUM_THREADS=${OMP_NUM_THREADS:-1}
summary="$OUT/summary.txt"
: > "$summary"

step() {   # step NAME SECONDS COMMAND...: run with a timeout, log to $OUT/NAME.log, record the exit status
    local name=$1 limit=$2
    shift 2
    local t0=$SECONDS
    timeout "$limit" "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    printf '%-28s rc %-4s %5d s  %s\n' "$name" "$rc" "$((SECONDS - t0))" "$*" | tee -a "$summary"
}

step env 120 python - <<'EOF'
import json, platform
info = {"python": platform.python_version()}
try:
    import torch
    info |= {"torch": torch.__version__, "cuda_build": torch.version.cuda, "cuda_available": torch.cuda.is_available(),
             "gpus": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())],
             "nccl": torch.distributed.is_nccl_available()}
except Exception as exc:   # report, do not stop: the other steps say what works
    info["torch_error"] = repr(exc)
try:
    import onnxruntime as ort
    info |= {"onnxruntime": ort.__version__, "providers": ort.get_available_providers()}
except Exception as exc:
    info["onnxruntime_error"] = repr(exc)
print(json.dumps(info, indent=1))
EOF
cat "$OUT/env.log"

gpus=0
if [ "$DEVICE" != cpu ]; then
    gpus=$(python -c "import torch; print(torch.cuda.device_count())" 2>/dev/null || echo 0)
fi
nproc=2
if [ "$DEVICE" != cpu ]; then
    nproc=$(( gpus >= 2 ? 2 : 1 ))
    [ "$nproc" = 1 ] && echo "one GPU: torchrun runs 1 rank (no NCCL collective); NCCL needs 2 GPUs" | tee -a "$summary"
fi

step train 300 python -m nas.cli train --space mbconv --arch single-path-nas --dataset digits --epochs 1 \
    -o resolution=32 -o width_mult=0.35 --device "$DEVICE" --out "$OUT/train"
step ws_scale 420 python benchmarks/ws_scale.py --device "$DEVICE" --nproc "$nproc"

for provider in CUDAExecutionProvider TensorrtExecutionProvider; do
    [ "$DEVICE" = cpu ] && provider=CPUExecutionProvider
    step "profile-$provider" 300 python -m nas.cli latency profile --space mbconv --provider "$provider" \
        --out "$OUT/mbconv-$provider.json" --repeats 10 --warmup 2 --calibration-nets 3
    step "validate-$provider" 300 python -m nas.cli latency validate --space mbconv \
        --table "$OUT/mbconv-$provider.json" --samples 5
    [ "$DEVICE" = cpu ] && break
done
echo "--- summary ($summary)"
cat "$summary"
