#!/usr/bin/env bash
# Starts a local 3-node mTLS cluster from config1..3.yaml: node1 bootstraps, node2 and node3
# find it through gossip (start-join-addrs = gossip addresses; all three start at once, in any
# order), waits until all three are voters, and stops them all on Ctrl-C.
# Certificates and the default ACL files go to $HOME/.mokv on first run.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
scripts/setup.sh
source scripts/env.sh
cargo build -q -p mokv-shell -p mokv-client --bins
bin="$CARGO_TARGET_DIR/debug"
certs="$HOME/.mokv"
if [ ! -f "$certs/ca.pem" ]; then
    "$bin/mokvd" certs --out "$certs" --node node1 --node node2 --node node3 --client root --client nobody
elif [ ! -f "$certs/cluster.key" ]; then
    "$bin/mokvd" certs --out "$certs"   # certificates from before gossip: add the cluster key
fi
cp -n certs/model.conf certs/policy.csv "$certs/" 2>/dev/null || true
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait' EXIT INT TERM
for i in 3 2 1; do
    "$bin/mokvd" --config "example/config$i.yaml" > "/tmp/mokv-example-node$i.log" 2>&1 &
    pids+=($!)
done
mokv=("$bin/mokv" --endpoints 127.0.0.1:8400,127.0.0.1:8410,127.0.0.1:8420
      --ca "$certs/ca.pem" --cert "$certs/root.pem" --key "$certs/root-key.pem")
for _ in $(seq 60); do
    if [ "$("${mokv[@]}" members 2>/dev/null | grep -c voter)" = 3 ]; then break; fi
    sleep 1
done
"${mokv[@]}" members
echo "cluster up; logs in /tmp/mokv-example-node*.log; try: ${mokv[*]} set hello world"
wait
