#!/usr/bin/env bash
# The S3 gateway driven by the real `aws` CLI, as its users drive it: starts a
# devnet (satellite, 14 storage nodes, gateway; dev profile, so it reuses the
# test build), then runs `aws s3` and `aws s3api` commands against it and
# checks every answer. Any failed check stops the script with a message saying
# what differed; the devnet is always stopped, and its logs' tails are printed
# when something failed. Needs `aws` (Debian package awscli, v1 or v2), jq,
# python3 (which awscli depends on), sha256sum, md5sum, diff, curl. Ends
# with the README's sharing and backup walkthroughs through the `archipel` CLI.
set -Eeuo pipefail
cd "$(dirname "$0")/.."
trap 'echo "s3-scenario: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR

tmp=$(mktemp -d)
devnet_pid=
started=$SECONDS

stop_devnet() {
    local status=$?
    if [[ -n $devnet_pid ]] && kill -0 "$devnet_pid" 2>/dev/null; then
        kill -TERM "$devnet_pid" 2>/dev/null || true
        for _ in $(seq 1 150); do
            kill -0 "$devnet_pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$devnet_pid" 2>/dev/null || true
        wait "$devnet_pid" 2>/dev/null || true
    fi
    if ((status != 0)); then
        echo "---- the scenario failed; tails of the devnet's logs ----" >&2
        for log in "$tmp/devnet.out" "$tmp"/devnet/logs/*.log; do
            [[ -f $log ]] || continue
            lines=8
            [[ $log == */node*.log ]] || lines=40
            echo "== $log" >&2
            tail -n "$lines" "$log" >&2
        done
    fi
    rm -rf "$tmp"
    exit "$status"
}
trap stop_devnet EXIT

fail() {
    echo "s3-scenario: FAILED: $*" >&2
    exit 1
}

step() {
    echo "s3-scenario [$((SECONDS - started))s]: $*"
}

# `expect_eq WHAT EXPECTED ACTUAL`
expect_eq() {
    [[ $2 == "$3" ]] || fail "$1: expected '$2', got '$3'"
}

sha256() {
    sha256sum "$1" | cut -d' ' -f1
}

# The CRC32 of one file, or S3's composite CRC32 of several as the parts of
# one object (the CRC32 of their big-endian CRC32s, "-N"), base64, computed by
# Python's zlib independently of the gateway.
crc32_b64() {
    python3 -c 'import base64, sys, zlib
crcs = [zlib.crc32(open(f, "rb").read()).to_bytes(4, "big") for f in sys.argv[1:]]
value = crcs[0] if len(crcs) == 1 else zlib.crc32(b"".join(crcs)).to_bytes(4, "big")
print(base64.b64encode(value).decode() + ("" if len(crcs) == 1 else "-%d" % len(crcs)))' "$@"
}

# ---- the network ----------------------------------------------------------

step "building archipel-devnet (dev profile)"
# The very units `cargo test --workspace` builds (same targets, same feature
# unification), so after the tests this compiles nothing; building the binary
# alone would resolve other features and recompile much of the tree.
cargo build --quiet --workspace --tests
target_dir=$(cargo metadata --format-version 1 --no-deps | jq -r .target_directory)
step "starting the devnet in $tmp/devnet"
# Two satellites, so the scenario also shows independent satellites sharing
# the same nodes; everything but that step uses the first.
"$target_dir/debug/archipel-devnet" --dir "$tmp/devnet" --satellites 2 >"$tmp/devnet.out" 2>&1 &
devnet_pid=$!

# The devnet writes s3.env once every node has checked in and the gateway listens.
for _ in $(seq 1 1200); do
    [[ -f $tmp/devnet/s3.env ]] && break
    kill -0 "$devnet_pid" 2>/dev/null || fail "the devnet exited before writing s3.env"
    sleep 0.1
done
[[ -f $tmp/devnet/s3.env ]] || fail "the devnet wrote no s3.env within 120 s"
# shellcheck source=/dev/null
source "$tmp/devnet/s3.env"

# A config of our own: path-style addressing on 127.0.0.1, checksums only where
# S3 requires them, nothing from the caller's ~/.aws. The endpoint is also
# passed as a flag because awscli before 2.13 ignores AWS_ENDPOINT_URL.
export AWS_CONFIG_FILE=$tmp/aws-config
export AWS_SHARED_CREDENTIALS_FILE=$tmp/aws-credentials
export AWS_PAGER=
export AWS_DEFAULT_REGION=$AWS_REGION
cat >"$AWS_CONFIG_FILE" <<'EOF'
[default]
request_checksum_calculation = when_required
response_checksum_validation = when_required
s3 =
    addressing_style = path
EOF
touch "$AWS_SHARED_CREDENTIALS_FILE"
# botocore sends `Expect: 100-continue` with a 0-byte PUT too; the gateway then
# answers at once with the final response (no 100), after which botocore
# misparses the next response on that pooled connection: a 60 s read timeout
# and a retry (boto/botocore#3755). Recent botocore can leave the expectation
# off empty bodies; older ones (Debian's awscli 2.9) still stall once in `sync`.
export BOTO_EXPERIMENTAL__NO_EMPTY_CONTINUE=true
s3() {
    aws --endpoint-url "$AWS_ENDPOINT_URL" "$@"
}

for _ in $(seq 1 100); do
    s3 s3 ls >/dev/null 2>&1 && break
    sleep 0.2
done
s3 s3 ls >/dev/null || fail "the gateway at $AWS_ENDPOINT_URL does not answer ListBuckets"
step "devnet up; gateway at $AWS_ENDPOINT_URL ($(aws --version 2>&1))"

# ---- files ------------------------------------------------------------------

work=$tmp/work
mkdir -p "$work"
bucket=scenario
head -c 100000 /dev/urandom >"$work/small.bin"

# A tree with nesting, spaces and non-ASCII names; 30 files.
tree=$work/tree
tree_keys=()
add_tree_file() {
    mkdir -p "$(dirname "$tree/$1")"
    head -c "$2" /dev/urandom >"$tree/$1"
    tree_keys+=("tree/$1")
}
for i in $(seq 1 10); do
    add_tree_file "top-$i.txt" $((i * 700))
done
for i in $(seq 1 8); do
    add_tree_file "a/b/c/deep-$i.dat" $((i * 5000 + 1))
done
for i in $(seq 1 6); do
    add_tree_file "dir with spaces/file $i.txt" $((i * 300))
done
add_tree_file "été/naïve café ☕.txt" 4321
add_tree_file "日本語/ファイル.bin" 9000
add_tree_file "mixed/ünï cödé/x y z.md" 123
add_tree_file "empty-file" 0
add_tree_file "exactly-4k" 4096
add_tree_file "a/one-meg" $((1 << 20))

# ---- buckets and single objects ---------------------------------------------

step "mb s3://$bucket"
s3 s3 mb "s3://$bucket" >/dev/null || fail "aws s3 mb s3://$bucket"
buckets=$(s3 s3 ls) || fail "aws s3 ls"
grep -q " $bucket\$" <<<"$buckets" || fail "aws s3 ls does not list the new bucket $bucket: $buckets"

step "cp a small file up and back"
s3 s3 cp "$work/small.bin" "s3://$bucket/small.bin" >/dev/null || fail "aws s3 cp small.bin up"
s3 s3 cp "s3://$bucket/small.bin" "$work/small.back" >/dev/null || fail "aws s3 cp small.bin down"
expect_eq "sha256 of small.bin after a round trip" "$(sha256 "$work/small.bin")" "$(sha256 "$work/small.back")"

step "s3api head-object: ContentLength and ETag"
read -r length etag < <(s3 s3api head-object --bucket "$bucket" --key small.bin \
    --query '[ContentLength, ETag]' --output text) || fail "aws s3api head-object small.bin"
expect_eq "head-object ContentLength" 100000 "$length"
expect_eq "head-object ETag (MD5 of the body)" "\"$(md5sum "$work/small.bin" | cut -d' ' -f1)\"" "$etag"

step "s3api get-object --range"
s3 s3api get-object --bucket "$bucket" --key small.bin --range bytes=1000-1999 \
    "$work/range.bin" >/dev/null || fail "aws s3api get-object --range bytes=1000-1999"
dd if="$work/small.bin" of="$work/range.expected" iflag=skip_bytes,count_bytes \
    skip=1000 count=1000 status=none
cmp -s "$work/range.expected" "$work/range.bin" ||
    fail "get-object --range bytes=1000-1999 returned other bytes ($(stat -c %s "$work/range.bin") bytes)"
s3 s3api get-object --bucket "$bucket" --key small.bin --range bytes=-100 \
    "$work/suffix.bin" >/dev/null || fail "aws s3api get-object --range bytes=-100"
tail -c 100 "$work/small.bin" | cmp -s - "$work/suffix.bin" ||
    fail "get-object --range bytes=-100 did not return the last 100 bytes"

step "s3api put-object with a content type and metadata"
s3 s3api put-object --bucket "$bucket" --key typed.json --body "$work/small.bin" \
    --content-type application/x-scenario --metadata owner=ci,purpose=s3-scenario \
    >/dev/null || fail "aws s3api put-object --content-type --metadata"
read -r ctype owner purpose < <(s3 s3api head-object --bucket "$bucket" --key typed.json \
    --query '[ContentType, Metadata.owner, Metadata.purpose]' --output text) ||
    fail "aws s3api head-object typed.json"
expect_eq "head-object ContentType" application/x-scenario "$ctype"
expect_eq "head-object Metadata.owner" ci "$owner"
expect_eq "head-object Metadata.purpose" s3-scenario "$purpose"

# ---- a directory tree -------------------------------------------------------

step "sync a tree of ${#tree_keys[@]} files up and down"
s3 s3 sync "$tree" "s3://$bucket/tree" >/dev/null || fail "aws s3 sync up"
s3 s3 sync "s3://$bucket/tree" "$work/tree.back" >/dev/null || fail "aws s3 sync down"
diff -r "$tree" "$work/tree.back" || fail "the tree synced down differs from the one synced up"
again=$(s3 s3 sync "$tree" "s3://$bucket/tree") || fail "aws s3 sync up, second time"
[[ -z $again ]] || fail "a second sync of an unchanged tree transferred files: $again"

step "ls --recursive lists every key"
listing=$(s3 s3 ls --recursive "s3://$bucket/") || fail "aws s3 ls --recursive"
listed=$(sed -E 's/^[0-9-]+ [0-9:]+ +[0-9]+ //' <<<"$listing" | LC_ALL=C sort)
expected=$(printf '%s\n' small.bin typed.json "${tree_keys[@]}" | LC_ALL=C sort)
expect_eq "number of keys in ls --recursive" "$(wc -l <<<"$expected")" "$(wc -l <<<"$listed")"
[[ $listed == "$expected" ]] ||
    fail "ls --recursive lists other keys: $(diff <(echo "$expected") <(echo "$listed") || true)"
size_line=$(grep ' tree/a/one-meg$' <<<"$listing") || fail "ls --recursive has no tree/a/one-meg"
[[ $size_line =~ \ 1048576\ tree/a/one-meg$ ]] || fail "ls --recursive shows a wrong size: $size_line"

step "s3api list-objects-v2 paging with --max-keys 7"
total=$((${#tree_keys[@]} + 2))
token=
pages=0
paged=()
while :; do
    args=(--bucket "$bucket" --max-keys 7 --no-paginate --output json)
    [[ -n $token ]] && args+=(--continuation-token "$token")
    page=$(s3 s3api list-objects-v2 "${args[@]}") || fail "aws s3api list-objects-v2 (page $((pages + 1)))"
    pages=$((pages + 1))
    count=$(jq '.KeyCount' <<<"$page")
    truncated=$(jq '.IsTruncated' <<<"$page")
    mapfile -t keys < <(jq -r '.Contents[]?.Key' <<<"$page")
    expect_eq "KeyCount of page $pages" "${#keys[@]}" "$count"
    paged+=("${keys[@]}")
    [[ $truncated == true ]] || break
    expect_eq "keys on full page $pages" 7 "$count"
    token=$(jq -r '.NextContinuationToken // empty' <<<"$page")
    [[ -n $token ]] || fail "page $pages is truncated but has no NextContinuationToken"
    ((pages <= total)) || fail "list-objects-v2 paging does not end"
done
expect_eq "pages of 7 for $total keys" $(((total + 6) / 7)) "$pages"
expect_eq "keys listed over all pages" "$expected" "$(printf '%s\n' "${paged[@]}" | LC_ALL=C sort)"

step "s3api delete-objects"
deleted=$(s3 s3api delete-objects --bucket "$bucket" \
    --delete '{"Objects":[{"Key":"tree/top-1.txt"},{"Key":"tree/top-2.txt"}],"Quiet":false}' \
    --query 'length(Deleted)' --output text) || fail "aws s3api delete-objects"
expect_eq "objects reported deleted" 2 "$deleted"
if s3 s3api head-object --bucket "$bucket" --key tree/top-1.txt >/dev/null 2>&1; then
    fail "tree/top-1.txt is still there after delete-objects"
fi

step "rm --recursive and rb"
s3 s3 rm --recursive "s3://$bucket/" >/dev/null || fail "aws s3 rm --recursive"
left=$(s3 s3 ls --recursive "s3://$bucket/") || fail "aws s3 ls after rm --recursive"
[[ -z $left ]] || fail "objects left after rm --recursive: $left"
s3 s3 rb "s3://$bucket" >/dev/null || fail "aws s3 rb s3://$bucket"
buckets=$(s3 s3 ls) || fail "aws s3 ls after rb"
if grep -q " $bucket\$" <<<"$buckets"; then
    fail "bucket $bucket is still listed after rb"
fi

# ---- multipart ----------------------------------------------------------------
# Last, in a bucket of its own: `aws s3 cp` of a file above the CLI's 8 MiB
# threshold uploads it in 8 MiB parts (CreateMultipartUpload, UploadPart,
# CompleteMultipartUpload) and downloads it with ranged GETs.

step "cp a 40 MiB file up (multipart) and back"
bucket=scenario-multipart
head -c $((40 << 20)) /dev/urandom >"$work/large.bin"
s3 s3 mb "s3://$bucket" >/dev/null || fail "aws s3 mb s3://$bucket"
if ! s3 s3 cp "$work/large.bin" "s3://$bucket/large.bin" >"$work/large.out" 2>&1; then
    if grep -q NotImplemented "$work/large.out"; then
        fail "multipart upload: the gateway answers NotImplemented: $(tail -n 1 "$work/large.out")"
    fi
    fail "aws s3 cp of a 40 MiB file (multipart): $(tail -n 3 "$work/large.out")"
fi
length=$(s3 s3api head-object --bucket "$bucket" --key large.bin --query ContentLength --output text) ||
    fail "aws s3api head-object large.bin"
expect_eq "ContentLength of the multipart object" $((40 << 20)) "$length"
s3 s3 cp "s3://$bucket/large.bin" "$work/large.back" >/dev/null || fail "aws s3 cp large.bin down"
expect_eq "sha256 of large.bin after a round trip" "$(sha256 "$work/large.bin")" "$(sha256 "$work/large.back")"
etag=$(s3 s3api head-object --bucket "$bucket" --key large.bin --query ETag --output text) ||
    fail "aws s3api head-object large.bin"
[[ $etag == *-5\" ]] || fail "the ETag of a 5-part object is S3's multipart form (md5-5), got $etag"
# CLIs that send checksums by default (aws-cli >= 1.37 / 2.23) create the
# upload with CRC32: composite over the 5 parts of 8 MiB the ETag shows, or (a
# CRT-based CLI) the full object's CRC32.
read -r checksum kind < <(s3 s3api head-object --bucket "$bucket" --key large.bin --checksum-mode ENABLED \
    --query '[ChecksumCRC32, ChecksumType]' --output text) ||
    fail "aws s3api head-object --checksum-mode ENABLED large.bin"
case $kind in
COMPOSITE)
    split -b 8M -d "$work/large.bin" "$work/large.part."
    expect_eq "composite CRC32 of the CLI's multipart upload" "$(crc32_b64 "$work"/large.part.*)" "$checksum"
    ;;
FULL_OBJECT)
    expect_eq "full-object CRC32 of the CLI's multipart upload" "$(crc32_b64 "$work/large.bin")" "$checksum"
    ;;
None) ;;
*) fail "checksum type of the CLI's multipart upload: $kind" ;;
esac

step "copies: s3api copy-object (server-side) and s3 cp between keys (part copies)"
s3 s3api copy-object --bucket "$bucket" --key copy.bin --copy-source "$bucket/large.bin" \
    --metadata-directive REPLACE --metadata origin=copy >/dev/null || fail "aws s3api copy-object"
s3 s3 cp "s3://$bucket/large.bin" "s3://$bucket/cp-copy.bin" >/dev/null ||
    fail "aws s3 cp between two keys"
s3 s3 rm "s3://$bucket/large.bin" >/dev/null || fail "aws s3 rm large.bin"
for copy in copy.bin cp-copy.bin; do
    s3 s3 cp "s3://$bucket/$copy" "$work/$copy" >/dev/null || fail "aws s3 cp $copy down"
    expect_eq "sha256 of $copy after its source was deleted" "$(sha256 "$work/large.bin")" "$(sha256 "$work/$copy")"
done
origin=$(s3 s3api head-object --bucket "$bucket" --key copy.bin --query Metadata.origin --output text) ||
    fail "aws s3api head-object copy.bin"
expect_eq "metadata of the copy" "copy" "$origin"
copy_etag=$(s3 s3api head-object --bucket "$bucket" --key copy.bin --query ETag --output text) ||
    fail "aws s3api head-object copy.bin"
expect_eq "ETag of the server-side copy" "$etag" "$copy_etag"
s3 s3 rm "s3://$bucket/copy.bin" >/dev/null || fail "aws s3 rm copy.bin"
s3 s3 rm "s3://$bucket/cp-copy.bin" >/dev/null || fail "aws s3 rm cp-copy.bin"

step "versioning: two versions, list them, read the old one, a delete marker, restore by copy"
s3 s3 mb s3://versioned >/dev/null || fail "aws s3 mb s3://versioned"
s3 s3api put-bucket-versioning --bucket versioned --versioning-configuration Status=Enabled ||
    fail "aws s3api put-bucket-versioning"
expect_eq "versioning status" Enabled \
    "$(s3 s3api get-bucket-versioning --bucket versioned --query Status --output text)"
echo "first version" >"$work/v1.txt"
echo "second version" >"$work/v2.txt"
v1=$(s3 s3api put-object --bucket versioned --key notes.txt --body "$work/v1.txt" --query VersionId --output text) ||
    fail "aws s3api put-object (first version)"
v2=$(s3 s3api put-object --bucket versioned --key notes.txt --body "$work/v2.txt" --query VersionId --output text) ||
    fail "aws s3api put-object (second version)"
[[ -n $v1 && $v1 != None && $v1 != "$v2" ]] || fail "the two PUTs answered versions '$v1' and '$v2'"
listed=$(s3 s3api list-object-versions --bucket versioned --query 'Versions[].[VersionId,IsLatest]' --output text) ||
    fail "aws s3api list-object-versions"
expect_eq "versions listed (newest first)" "$(printf '%s\tTrue\n%s\tFalse' "$v2" "$v1")" "$listed"
s3 s3api get-object --bucket versioned --key notes.txt --version-id "$v1" "$work/v1.back" >/dev/null ||
    fail "aws s3api get-object --version-id (the old version)"
cmp -s "$work/v1.txt" "$work/v1.back" || fail "the old version reads other bytes"
marker=$(s3 s3api delete-object --bucket versioned --key notes.txt --query VersionId --output text) ||
    fail "aws s3api delete-object (a delete marker)"
if s3 s3api head-object --bucket versioned --key notes.txt >/dev/null 2>&1; then
    fail "a key under a delete marker still answers HEAD"
fi
expect_eq "delete markers listed" "$marker" \
    "$(s3 s3api list-object-versions --bucket versioned --query 'DeleteMarkers[].VersionId' --output text)"
s3 s3api copy-object --bucket versioned --key notes.txt --copy-source "versioned/notes.txt?versionId=$v1" >/dev/null ||
    fail "aws s3api copy-object of the old version (restore)"
s3 s3 cp s3://versioned/notes.txt "$work/restored.txt" >/dev/null || fail "aws s3 cp the restored object"
cmp -s "$work/v1.txt" "$work/restored.txt" || fail "the restored object is not the first version"
expect_eq "versions after the restore" 4 \
    "$(s3 s3api list-object-versions --bucket versioned --query 'length([Versions[], DeleteMarkers[]][])' --output text)"
for version in $(s3 s3api list-object-versions --bucket versioned \
    --query '[Versions[].VersionId, DeleteMarkers[].VersionId][]' --output text); do
    s3 s3api delete-object --bucket versioned --key notes.txt --version-id "$version" >/dev/null ||
        fail "aws s3api delete-object --version-id $version"
done
s3 s3 rb s3://versioned >/dev/null || fail "aws s3 rb of the emptied versioned bucket"

step "object lock: a locked object survives aws s3 rm and a versioned delete until its date"
s3 s3api create-bucket --bucket vault --object-lock-enabled-for-bucket >/dev/null ||
    fail "aws s3api create-bucket --object-lock-enabled-for-bucket"
expect_eq "a locked bucket's versioning" Enabled \
    "$(s3 s3api get-bucket-versioning --bucket vault --query Status --output text)"
expect_eq "object lock configuration" Enabled \
    "$(s3 s3api get-object-lock-configuration --bucket vault \
        --query ObjectLockConfiguration.ObjectLockEnabled --output text)"
until_epoch=$(($(date +%s) + 8))
echo "ledger entries" >"$work/ledger.txt"
locked=$(s3 s3api put-object --bucket vault --key ledger.txt --body "$work/ledger.txt" \
    --object-lock-mode COMPLIANCE --object-lock-retain-until-date "$(date -u -d "@$until_epoch" +%Y-%m-%dT%H:%M:%SZ)" \
    --query VersionId --output text) || fail "aws s3api put-object --object-lock-mode COMPLIANCE"
expect_eq "retention mode" COMPLIANCE \
    "$(s3 s3api get-object-retention --bucket vault --key ledger.txt --query Retention.Mode --output text)"
s3 s3 rm s3://vault/ledger.txt >/dev/null || fail "aws s3 rm of a locked object (adds a delete marker)"
if s3 s3api delete-object --bucket vault --key ledger.txt --version-id "$locked" >/dev/null 2>"$work/locked.err"; then
    fail "a version under a compliance retention was deleted"
fi
grep -q AccessDenied "$work/locked.err" ||
    fail "deleting a locked version did not answer AccessDenied: $(cat "$work/locked.err")"
if s3 s3api delete-object --bucket vault --key ledger.txt --version-id "$locked" \
    --bypass-governance-retention >/dev/null 2>&1; then
    fail "a bypass of governance deleted a version under a compliance retention"
fi
s3 s3api get-object --bucket vault --key ledger.txt --version-id "$locked" "$work/ledger.back" >/dev/null ||
    fail "aws s3api get-object --version-id of the locked version"
cmp -s "$work/ledger.txt" "$work/ledger.back" || fail "the locked version reads other bytes"
while (($(date +%s) <= until_epoch)); do sleep 1; done
for version in $(s3 s3api list-object-versions --bucket vault \
    --query '[Versions[].VersionId, DeleteMarkers[].VersionId][]' --output text); do
    s3 s3api delete-object --bucket vault --key ledger.txt --version-id "$version" >/dev/null ||
        fail "aws s3api delete-object --version-id $version once the retention is over"
done
s3 s3 rb s3://vault >/dev/null || fail "aws s3 rb of the emptied locked bucket"

step "public access: a public-read object reads without a signature, a private one is refused"
s3 s3 mb s3://open-data >/dev/null || fail "aws s3 mb s3://open-data"
echo "published" >"$work/published.txt"
s3 s3 cp "$work/published.txt" s3://open-data/published.txt --acl public-read >/dev/null ||
    fail "aws s3 cp --acl public-read"
s3 s3 cp "$work/published.txt" s3://open-data/private.txt >/dev/null || fail "aws s3 cp (private)"
expect_eq "the public object's group grant" "http://acs.amazonaws.com/groups/global/AllUsers READ" \
    "$(s3 s3api get-object-acl --bucket open-data --key published.txt \
        --query 'Grants[?Grantee.Type==`Group`].[Grantee.URI, Permission]' --output text | tr '\t' ' ')"
curl -fsS "$AWS_ENDPOINT_URL/open-data/published.txt" -o "$work/published.back" ||
    fail "an unsigned GET of a public-read object"
cmp -s "$work/published.txt" "$work/published.back" || fail "the unsigned GET read other bytes"
expect_eq "status of an unsigned GET of a private object" 403 \
    "$(curl -sS -o /dev/null -w '%{http_code}' "$AWS_ENDPOINT_URL/open-data/private.txt")"
expect_eq "status of an unsigned listing of a private bucket" 403 \
    "$(curl -sS -o /dev/null -w '%{http_code}' "$AWS_ENDPOINT_URL/open-data?list-type=2")"
s3 s3 rb --force s3://open-data >/dev/null || fail "aws s3 rb --force s3://open-data"

step "s3api multipart: create, upload-part, list-parts, list-multipart-uploads, abort"
upload_id=$(s3 s3api create-multipart-upload --bucket "$bucket" --key pending.bin --query UploadId --output text) ||
    fail "aws s3api create-multipart-upload"
head -c 1000 /dev/urandom >"$work/part.bin"
part_etag=$(s3 s3api upload-part --bucket "$bucket" --key pending.bin --upload-id "$upload_id" \
    --part-number 1 --body "$work/part.bin" --query ETag --output text) || fail "aws s3api upload-part"
expect_eq "ETag of a part" "\"$(md5sum "$work/part.bin" | cut -d' ' -f1)\"" "$part_etag"
parts=$(s3 s3api list-parts --bucket "$bucket" --key pending.bin --upload-id "$upload_id" \
    --query 'Parts[].PartNumber' --output text) || fail "aws s3api list-parts"
expect_eq "parts listed" "1" "$parts"
uploads=$(s3 s3api list-multipart-uploads --bucket "$bucket" --query 'Uploads[].Key' --output text) ||
    fail "aws s3api list-multipart-uploads"
expect_eq "uploads in progress" "pending.bin" "$uploads"
s3 s3api abort-multipart-upload --bucket "$bucket" --key pending.bin --upload-id "$upload_id" ||
    fail "aws s3api abort-multipart-upload"
uploads=$(s3 s3api list-multipart-uploads --bucket "$bucket" --query 'length(Uploads || `[]`)' --output text) ||
    fail "aws s3api list-multipart-uploads after the abort"
expect_eq "uploads in progress after the abort" "0" "$uploads"

step "s3api multipart with CRC32: part checksums, the composite object checksum"
head -c $((5 << 20)) /dev/urandom >"$work/part1.bin"
head -c 777 /dev/urandom >"$work/part2.bin"
upload_id=$(s3 s3api create-multipart-upload --bucket "$bucket" --key summed.bin \
    --checksum-algorithm CRC32 --query UploadId --output text) ||
    fail "aws s3api create-multipart-upload --checksum-algorithm CRC32"
completed='{"Parts": ['
for n in 1 2; do
    answer=$(s3 s3api upload-part --bucket "$bucket" --key summed.bin --upload-id "$upload_id" \
        --part-number $n --body "$work/part$n.bin" --checksum-algorithm CRC32 --output json) ||
        fail "aws s3api upload-part $n with CRC32"
    crc=$(jq -r .ChecksumCRC32 <<<"$answer")
    expect_eq "CRC32 of part $n" "$(crc32_b64 "$work/part$n.bin")" "$crc"
    ((n == 1)) || completed+=', '
    completed+=$(jq -c --argjson n $n '{PartNumber: $n, ETag: .ETag, ChecksumCRC32: .ChecksumCRC32}' <<<"$answer")
done
completed+=']}'
composite=$(crc32_b64 "$work/part1.bin" "$work/part2.bin")
checksum=$(s3 s3api complete-multipart-upload --bucket "$bucket" --key summed.bin --upload-id "$upload_id" \
    --multipart-upload "$completed" --query ChecksumCRC32 --output text) ||
    fail "aws s3api complete-multipart-upload with the parts' CRC32s"
expect_eq "composite CRC32 of the completed object" "$composite" "$checksum"
checksum=$(s3 s3api head-object --bucket "$bucket" --key summed.bin --checksum-mode ENABLED \
    --query '[ChecksumCRC32, ChecksumType]' --output text) || fail "aws s3api head-object --checksum-mode ENABLED"
expect_eq "checksum and type on HEAD" "$composite	COMPOSITE" "$checksum"
s3 s3 cp "s3://$bucket/summed.bin" "$work/summed.back" >/dev/null || fail "aws s3 cp summed.bin down"
cat "$work/part1.bin" "$work/part2.bin" >"$work/summed.bin"
expect_eq "sha256 of summed.bin" "$(sha256 "$work/summed.bin")" "$(sha256 "$work/summed.back")"
s3 s3 rm "s3://$bucket/summed.bin" >/dev/null || fail "aws s3 rm summed.bin"
s3 s3 rb "s3://$bucket" >/dev/null || fail "aws s3 rb s3://$bucket"

# ---- sharing: the README's walkthrough --------------------------------------

archipel() {
    "$target_dir/debug/archipel" "$@"
}
export ARCHIPEL_ACCESS=$tmp/devnet/access
step "share a folder read-only, use it as a friend, revoke it"
archipel mb ap://family >/dev/null || fail "archipel mb ap://family"
archipel cp "$work/small.bin" ap://family/videos/clip.bin 2>/dev/null || fail "archipel cp clip.bin"
archipel cp "$work/part2.bin" ap://family/private/notes.txt 2>/dev/null || fail "archipel cp notes.txt"
archipel share ap://family/videos/ --readonly --not-after +7d | head -1 >"$work/friend" ||
    fail "archipel share --readonly"
archipel access inspect "$work/friend" | grep -q "family/videos" ||
    fail "archipel access inspect does not name the shared prefix"
listing=$(ARCHIPEL_ACCESS=$work/friend archipel ls -r ap://family/) || fail "the friend's archipel ls -r"
grep -q "videos/clip.bin" <<<"$listing" || fail "the friend does not see videos/clip.bin: $listing"
! grep -q "notes" <<<"$listing" || fail "the friend sees outside the shared folder: $listing"
ARCHIPEL_ACCESS=$work/friend archipel cat ap://family/videos/clip.bin >"$work/clip.back" ||
    fail "the friend's archipel cat"
expect_eq "sha256 of the shared file as the friend reads it" "$(sha256 "$work/small.bin")" "$(sha256 "$work/clip.back")"
if ARCHIPEL_ACCESS=$work/friend archipel cat ap://family/private/notes.txt >/dev/null 2>&1; then
    fail "the friend read a file outside the shared folder"
fi
if ARCHIPEL_ACCESS=$work/friend archipel cp "$work/part2.bin" ap://family/videos/new.bin 2>/dev/null; then
    fail "a read-only grant uploaded"
fi
archipel access revoke "$work/friend" >/dev/null || fail "archipel access revoke"
if ARCHIPEL_ACCESS=$work/friend archipel ls ap://family/videos/ >/dev/null 2>&1; then
    fail "a revoked grant still lists"
fi

step "a public link: page and byte ranges"
links=$(jq -r .gateway.linksharing "$tmp/devnet/devnet.json")
shared=$(archipel share ap://family/videos/ --readonly --url --linksharing "$links") ||
    fail "archipel share --url"
link=$(sed -n 2p <<<"$shared")
[[ $link == "$links"/s/* ]] || fail "the second line of share --url is not a link: $link"
curl -fsS "$link" | grep -q "clip.bin" || fail "the shared folder's page does not list clip.bin"
raw=${link/\/s\//\/raw\/}clip.bin
code=$(curl -sS -r 1000-1999 -o "$work/link-range.bin" -w '%{http_code}' "$raw") ||
    fail "curl -r 1000-1999 $raw"
expect_eq "status of a ranged link request" 206 "$code"
cmp -s "$work/range.expected" "$work/link-range.bin" || fail "the link's range 1000-1999 has other bytes"
if curl -fsS "${link%/videos/}/private/notes.txt" >/dev/null 2>&1; then
    fail "a link read outside its shared folder"
fi

# ---- two satellites on the same nodes -----------------------------------------

step "a second satellite stores through the same nodes, apart from the first"
expect_eq "satellites in devnet.json" 2 "$(jq '.satellites | length' "$tmp/devnet/devnet.json")"
second_id=$(jq -r '.satellites[1].id' "$tmp/devnet/devnet.json")
second_access=$(jq -r '.satellites[1].access_file' "$tmp/devnet/devnet.json")
[[ $second_id != "$(jq -r '.satellite.id' "$tmp/devnet/devnet.json")" ]] ||
    fail "the two satellites have one identity"
ARCHIPEL_ACCESS=$second_access archipel mb ap://elsewhere >/dev/null || fail "archipel mb on the second satellite"
ARCHIPEL_ACCESS=$second_access archipel cp "$work/small.bin" ap://elsewhere/small.bin 2>/dev/null ||
    fail "archipel cp to the second satellite"
ARCHIPEL_ACCESS=$second_access archipel cat ap://elsewhere/small.bin >"$work/elsewhere.back" ||
    fail "archipel cat from the second satellite"
expect_eq "sha256 of the object on the second satellite" "$(sha256 "$work/small.bin")" "$(sha256 "$work/elsewhere.back")"
! archipel ls | grep -q elsewhere || fail "the first satellite's project lists the second's bucket"
# Every node trusts both; the ones holding the object's pieces count them
# under the second satellite on their dashboards.
holding=0
while read -r dashboard; do
    report=$(curl -fsS "http://$dashboard/api/node") || fail "node dashboard http://$dashboard/api/node"
    expect_eq "satellites on the dashboard at $dashboard" 2 "$(jq '.satellites | length' <<<"$report")"
    pieces=$(jq --arg id "$second_id" '[.satellites[] | select(.id == $id) | .pieces] | add' <<<"$report")
    ((pieces == 0)) || holding=$((holding + 1))
done < <(jq -r '.nodes[].dashboard' "$tmp/devnet/devnet.json")
((holding > 0)) || fail "no node's dashboard counts a piece for the second satellite"

# ---- backups: the README's walkthrough ----------------------------------------

step "back up a directory, change it, back up again, restore the first snapshot"
# `init` remembers the repository in the config directory: ours, not the caller's.
export XDG_CONFIG_HOME=$tmp/config
docs=$work/Documents
mkdir -p "$docs/sub"
head -c 300000 /dev/urandom >"$docs/sub/photo.bin"
echo "first version" >"$docs/notes.txt"
ln -s notes.txt "$docs/latest-notes"
cp -a "$docs" "$work/Documents.first"
archipel backup init ap://backups/laptop >"$work/backup-init.out" || fail "archipel backup init"
grep -q "ap://backups/laptop" "$work/backup-init.out" ||
    fail "archipel backup init does not name the repository: $(cat "$work/backup-init.out")"
expect_eq "the remembered repository" ap://backups/laptop "$(cat "$XDG_CONFIG_HOME/archipel/backup-repository")"
archipel backup run "$docs" >"$work/backup-run1.out" || fail "archipel backup run (first)"
grep -Eq "^snapshot [0-9a-f]{8} saved$" "$work/backup-run1.out" ||
    fail "the first backup names no snapshot: $(cat "$work/backup-run1.out")"
echo "one more line" >>"$docs/notes.txt"
archipel backup run "$docs" >"$work/backup-run2.out" || fail "archipel backup run (second)"
grep -Eq "^Files: +0 new, +1 changed, +1 unmodified$" "$work/backup-run2.out" ||
    fail "the second backup does not see one changed and one unmodified file: $(cat "$work/backup-run2.out")"
snapshots=$(archipel backup snapshots --json) || fail "archipel backup snapshots --json"
expect_eq "snapshots after two backups" 2 "$(jq length <<<"$snapshots")"
expect_eq "the second snapshot's parent" "$(jq -r '.[0].id' <<<"$snapshots")" "$(jq -r '.[1].parent' <<<"$snapshots")"
first=$(jq -r '.[0].id[:8]' <<<"$snapshots")
archipel backup snapshots | grep -q "^$first " || fail "archipel backup snapshots does not list $first"
changes=$(archipel backup diff "$first" latest) || fail "archipel backup diff"
grep -qx "M    $docs/notes.txt" <<<"$changes" || fail "archipel backup diff does not show notes.txt modified: $changes"
archipel backup restore "$first" --target "$work/restore" >/dev/null || fail "archipel backup restore"
diff -r "$work/Documents.first" "$work/restore$docs" ||
    fail "the restored first snapshot differs from the directory it backed up"
archipel backup check --read-data >/dev/null || fail "archipel backup check --read-data"

step "all checks passed"
