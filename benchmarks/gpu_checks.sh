#!/usr/bin/env bash
# Every check that needs a GPU, in one run (about 12 minutes on one H100), for a session that
# has a GPU machine: run it from the repository root with the output directory as $1, e.g.
#   bash benchmarks/gpu_checks.sh "$OUT"
# Name steps after it to run only those, e.g. `bash benchmarks/gpu_checks.sh "$OUT" gate_qwen2`.
# It uses the machine's own torch/transformers/peft (no install) and the repository's src/.
# Each step has its own time limit, so one slow step cannot eat the others' time.
set -u
out=${1:-gpu-checks}
shift || true
only=" $* "
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
step() {
  local name=$1 limit=$2
  shift 2
  if [[ "$only" != "  " && "$only" != *" $name "* ]]; then return; fi
  echo "=== $name (limit ${limit}s)"
  timeout "$limit" "$@" 2>&1 | tee "$out/$name.log"
  echo "=== $name: exit ${PIPESTATUS[0]}"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$out/gpu.txt"
python3 -c 'import torch, transformers, peft; print(torch.__version__, transformers.__version__, peft.__version__)'
# Control for the seeding test: torch's own initial CUDA seed in two fresh processes.
step cuda_default_seed 60 bash -c 'for i in 1 2; do python3 -c "import torch; torch.cuda.init(); print(torch.cuda.initial_seed())"; done'
# CUDA RNG capture/restore in seed_context; bf16/fp16 hooks and device placement tests.
step pytest_gpu 120 python3 -m pytest -q -p no:cacheprovider -m gpu tests
# Qwen2-1.5B-sized bf16 forward, batch 8 x 256: ReLU gate target <= 1.05x ungated.
step gate_qwen2 120 python3 benchmarks/gate.py --device cuda --dtype bfloat16 --preset qwen2-1.5b --repeats 15
# The same with TF32 allowed for the gates' fp32 matmuls (the TopK gate's full encode).
step gate_qwen2_tf32 120 python3 benchmarks/gate.py --device cuda --dtype bfloat16 --preset qwen2-1.5b --repeats 15 --matmul-precision high
# A model split across cuda:0 and cpu with an accelerate device_map, gated on both sides.
step gate_split 90 python3 benchmarks/gate.py --device cuda --dtype bfloat16 --preset qwen2-1.5b --split
# One base copy, peak CUDA memory vs the original lifecycle, memory flat within 1% over 10 seeds.
step memory 150 python3 benchmarks/memory.py --device cuda --seeds 3 --flat-seeds 10
# Processor overhead per decoding step on the GPU.
step dynamic_gating 240 python3 benchmarks/dynamic_gating.py --device cuda --repeats 3
# The exact TopK gate (fp32, mixed candidate pass, auto) side by side with the ungated bf16
# prefill, and whether each gives the fp32 gate's logits bit for bit (target: <= 1.10x).
step topk_exact_prefill 180 python3 benchmarks/gate.py --device cuda --dtype bfloat16 --preset qwen2-1.5b --repeats 15 --topk-precision fp32 mixed auto
# The same at decoding-step size (8 rows x 1 token, where auto runs the candidate pass).
step topk_exact_decode 120 python3 benchmarks/gate.py --device cuda --dtype bfloat16 --preset qwen2-1.5b --batch 8 --seq 1 --repeats 30 --topk-precision fp32 mixed auto
# Qwen2-1.5B-sized random model: the cached-reference LoRA step (uncached / default / all
# cached), token-budget generation against batches of 16, and two recovery attacks.
step lora_cache 300 python3 benchmarks/gpu_throughput.py --device cuda --dtype bfloat16 --items lora
step generation_budget 240 python3 benchmarks/gpu_throughput.py --device cuda --dtype bfloat16 --items generation
step recovery 240 python3 benchmarks/gpu_throughput.py --device cuda --dtype bfloat16 --items recovery
