#!/usr/bin/env bash
# One device session: paper-scale SST-2 (MiniLM-L6 stands in for bert-base, which cannot be fetched
# offline) for four policies, and the IWSLT14 architecture on Multi30k for a fixed 2,000-step budget
# for two policies, all six runs side by side on one GPU.
set -u
export PYTHONPATH=$PWD HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 TOKENIZERS_PARALLELISM=false PYTHONUNBUFFERED=1
nvidia-smi -L; nproc
python3 -c "import torch, transformers, accelerate, sentencepiece, sacrebleu, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'transformers', transformers.__version__, 'accelerate', accelerate.__version__, 'sentencepiece', sentencepiece.__version__, 'sacrebleu', sacrebleu.__version__)"
D=.devcarry; R=/tmp/runs; mkdir -p $R; S=${SEED:-42}; MS=${MTSEED:-1}
sst() { tag=$1; shift; timeout ${TMO:-470} python3 recipes/sst2_bert.py recipes/configs/sst2_bert.yaml \
  --model_name_or_path $D/minilm --train_file $D/data/train.tsv --validation_file $D/data/validation.tsv \
  --output_dir $R/sst2-$tag --bf16 true --disable_tqdm true --logging_steps 500 --seed $S "$@" > $R/sst2-$tag.log 2>&1; echo "sst2-$tag rc=$?"; }
mt() { tag=$1; shift; timeout ${TMO:-470} python3 recipes/iwslt14_transformer.py recipes/configs/iwslt14_transformer.yaml \
  --data_dir $D/data/multi30k-de-en --output_dir $R/mt-$tag --bf16 true --disable_tqdm true --max_steps 2000 \
  --save_strategy no --save_model false --logging_steps 250 --seed $MS "$@" > $R/mt-$tag.log 2>&1; echo "mt-$tag rc=$?"; }
start=$(date +%s)
sst hf-default --gamma_policy hf-default &
sst guidelines --gamma_policy guidelines &
sst guidelines-approx --gamma_policy guidelines --gamma_invariance approximate &
sst all --gamma_policy all &
mt hf-default --gamma_policy hf-default &
mt guidelines --gamma_policy guidelines &
wait
echo "wall $(( $(date +%s) - start )) s"
for f in $R/*.log; do echo "== $f"; grep -E "accuracy|BLEU|bleu|Error|error|Traceback|train_runtime" $f | tail -6; done
python3 - <<'PY'
import glob, json, os
out = {}
for d in sorted(glob.glob('/tmp/runs/*/')):
    name = os.path.basename(d.rstrip('/'))
    rec = {}
    for f in ('results.json', 'gamma_history.jsonl'):
        p = os.path.join(d, f)
        if os.path.exists(p):
            rec[f] = json.load(open(p)) if f.endswith('.json') else [json.loads(l) for l in open(p) if l.strip()]
    p = os.path.join(d, 'trainer_state.json')
    out[name] = rec
json.dump(out, open(os.path.join(os.environ['OUT'], 'gpu_results.json'), 'w'), indent=1)
PY
cat $R/*.log > $OUT/gpu_logs.txt
