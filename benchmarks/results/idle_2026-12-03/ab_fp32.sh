#!/usr/bin/env bash
set -u
cmd="bench --model ViT-B_16 --mode infer --batch 16 --dtype fp32 --compare hf --threads 2 --steps 6 --warmup 2 --json"
for i in 1 2; do
  for side in new old; do
    if [ $side = old ]; then export PYTHONPATH=/work/wt/old/src; cd /work/wt/old; else unset PYTHONPATH; cd /work/main; fi
    /work/main/.venv/bin/python -m vitkit.cli.main $cmd 2>/dev/null | python3 -c "import json,sys; d=json.load(sys.stdin); print('$side', d['speedup_vs_hf'], d['speedup_median_of_rounds'], d['results']['vitkit']['images_per_s'], d['results']['hf']['images_per_s'])"
  done
done
