#!/usr/bin/env bash
# The same four bench commands on the pre-refactor code (fdb3629), same machine, right after the new code's.
set -u
cd /work/wt/old
OUT=/work/main/benchmarks/results/idle_2026-12-03/before_refactor_fdb3629
mkdir -p $OUT
export PYTHONPATH=/work/wt/old/src
V="/work/main/.venv/bin/python -m vitkit.cli.main"
date -u
$V bench --model ViT-B_16 --mode infer --batch 16 --dtype fp32 --compare hf --threads 2 --steps 6 --warmup 2 --out $OUT 2>&1 | grep -E "speedup|images_per_s"
$V bench --model ViT-B_16 --mode infer --batch 16 --dtype bf16 --compare hf --threads 2 --steps 8 --warmup 2 --out $OUT 2>&1 | grep -E "speedup|images_per_s"
$V bench --model ViT-S_16 --mode train --batch 32 --dtype fp32 --compare hf --threads 2 --steps 6 --warmup 2 --out $OUT 2>&1 | grep -E "speedup|images_per_s"
$V bench --model ViT-S_16 --mode train --batch 32 --dtype bf16 --compare hf --threads 2 --steps 8 --warmup 3 --out $OUT 2>&1 | grep -E "speedup|images_per_s"
date -u
