#!/usr/bin/env bash
# Unsigned GET of a public-read object vs presigned GET of the same object,
# side by side on one devnet, 4 KiB object, alternating rounds of 40.
# Builds nothing: run after `cargo build --workspace --tests` (the devnet of
# the dev profile, as .ci/s3-scenario.sh uses). Needs aws, curl and python3.
set -euo pipefail
cd "$(dirname "$0")/../.."
dir=$(mktemp -d)
target/debug/archipel-devnet --dir "$dir/devnet" >"$dir/devnet.out" 2>&1 &
pid=$!
trap 'kill $pid; wait $pid 2>/dev/null; rm -rf "$dir"' EXIT
for _ in $(seq 1 1200); do [[ -f $dir/devnet/s3.env ]] && break; sleep 0.1; done
source "$dir/devnet/s3.env"
export AWS_CONFIG_FILE=$dir/aws-config AWS_SHARED_CREDENTIALS_FILE=$dir/creds AWS_PAGER= AWS_DEFAULT_REGION=$AWS_REGION
printf '[default]\ns3 =\n    addressing_style = path\n' >"$AWS_CONFIG_FILE"; touch "$AWS_SHARED_CREDENTIALS_FILE"
s3() { aws --endpoint-url "$AWS_ENDPOINT_URL" "$@"; }
head -c 4096 /dev/urandom >"$dir/obj"
s3 s3 mb s3://bench >/dev/null
s3 s3 cp "$dir/obj" s3://bench/obj --acl public-read >/dev/null
presigned=$(s3 s3 presign s3://bench/obj --expires-in 3600)
anon="$AWS_ENDPOINT_URL/bench/obj"
for url in "$anon" "$presigned"; do curl -fsS -o /dev/null "$url"; done
: >"$dir/anon.txt"; : >"$dir/signed.txt"
for round in 1 2 3 4 5; do
  for i in $(seq 1 40); do curl -fsS -o /dev/null -w '%{time_total}\n' "$anon" >>"$dir/anon.txt"; done
  for i in $(seq 1 40); do curl -fsS -o /dev/null -w '%{time_total}\n' "$presigned" >>"$dir/signed.txt"; done
done
python3 - "$dir/anon.txt" "$dir/signed.txt" <<'PY'
import statistics, sys
a = [float(x)*1000 for x in open(sys.argv[1])]
s = [float(x)*1000 for x in open(sys.argv[2])]
ma, ms = statistics.median(a), statistics.median(s)
print(f"unsigned GET (public-read): n={len(a)} median {ma:.2f} ms, p90 {sorted(a)[int(len(a)*0.9)]:.2f} ms")
print(f"presigned GET:              n={len(s)} median {ms:.2f} ms, p90 {sorted(s)[int(len(s)*0.9)]:.2f} ms")
print(f"ratio unsigned/presigned: {ma/ms:.2f}")
PY
