#!/usr/bin/env bash
# Usage: bash src/imgpipe/bench/time_workers.sh (after `make data`); copies the committed project twice under $TMPDIR.
# One vs two multi_worker processes on loopback, same data: CNN, 3,000 train + 3,000 val images, 2 epochs, batch 64/replica.
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../../.." && pwd)
export PATH=$ROOT/.venv/bin:$PATH TF_CPP_MIN_LOG_LEVEL=2
W=${TMPDIR:-/tmp}/imgpipe-workers && rm -rf $W && mkdir -p $W
git clone -q "$ROOT" $W/host-0 && cp -r "$ROOT"/data/raw/. $W/host-0/data/raw/
cd $W/host-0
python - <<'PY'
import yaml; p=yaml.safe_load(open('params.yaml'))
p['split']['limit_per_class']=300; p['train']['cnn'].update(epochs=2, batch_size=64)
yaml.safe_dump(p, open('params.yaml','w'), sort_keys=False)
PY
imgpipe run preprocess >/dev/null 2>&1 && imgpipe run split >/dev/null 2>&1
cp -r $W/host-0 $W/host-1
start=$(date +%s.%N); imgpipe run train cnn >$W/one.log 2>&1; end=$(date +%s.%N)
echo "one worker (strategy default): stage $(echo "$end-$start"|bc) s; fit $(python -c "import json;d=json.load(open('metrics/train/cnn.json'));print(d['wall_time_s'],'s,',d['images_per_second'],'images/s')")"
for h in 0 1; do sed -i 's/^  strategy: default/  strategy: multi_worker/' $W/host-$h/params.yaml; done
PORTS=$(python -c "import socket;s=[socket.socket() for _ in range(2)];[x.bind(('127.0.0.1',0)) for x in s];print(' '.join(str(x.getsockname()[1]) for x in s))")
set -- $PORTS; CLUSTER="[\"127.0.0.1:$1\", \"127.0.0.1:$2\"]"
start=$(date +%s.%N)
for h in 0 1; do (cd $W/host-$h && TF_CONFIG="{\"cluster\": {\"worker\": $CLUSTER}, \"task\": {\"type\": \"worker\", \"index\": $h}}" imgpipe run train cnn >$W/two-$h.log 2>&1) & done
wait; end=$(date +%s.%N)
echo "two workers (multi_worker, loopback): stage $(echo "$end-$start"|bc) s; chief fit $(python -c "import json;d=json.load(open('$W/host-0/metrics/train/cnn.json'));print(d['wall_time_s'],'s,',d['images_per_second'],'images/s, replicas',d['replicas'])")"
