#!/usr/bin/env python3
"""Large PUTs and GETs through the S3 gateway of running devnets, with boto3.

Measures what a new user with boto3 sees: `upload_file` and `download_fileobj`
with 16 MiB parts, 4 in flight (multipart PUT, ranged GETs), and what the
servers (satellite, gateway and every node process named in the devnet's
`devnet.json`) spent in CPU seconds per GB meanwhile. Several devnets (say,
two builds of Archipel) can be compared: the runs are interleaved, repeated,
and reported as median and spread, since this machine's noise is large.

    python3 tests/bench/boto3_large.py --size 1GiB --rounds 3 devnet other-devnet
"""

import argparse
import hashlib
import json
import os
import statistics
import sys
import tempfile
import time

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config

PART = 16 << 20
IN_FLIGHT = 4


def parse_size(text):
    units = {"KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
    for suffix, factor in units.items():
        if text.endswith(suffix):
            return int(text[: -len(suffix)]) * factor
    return int(text)


def server_pids(layout):
    pids = [layout["satellite"].get("pid"), layout["gateway"].get("pid")]
    pids += [node.get("pid") for node in layout["nodes"]]
    return [pid for pid in pids if pid]


def cpu_seconds(pids):
    """User plus system CPU seconds the processes used so far."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as stat:
            # The command name may hold spaces; the fields after it do not.
            fields = stat.read().rsplit(")", 1)[1].split()
        total += int(fields[11]) + int(fields[12])
    return total / ticks


class HashingSink:
    """A non-seekable file object: boto3 then writes the parts in order."""

    def __init__(self):
        self.hasher = hashlib.sha256()
        self.size = 0

    def write(self, data):
        self.hasher.update(data)
        self.size += len(data)
        return len(data)


class Devnet:
    def __init__(self, directory):
        with open(os.path.join(directory, "devnet.json")) as f:
            layout = json.load(f)
        gateway = layout["gateway"]
        self.name = directory
        self.pids = server_pids(layout)
        self.s3 = boto3.client(
            "s3",
            endpoint_url=gateway["endpoint"],
            aws_access_key_id=gateway["access_key_id"],
            aws_secret_access_key=gateway["secret_access_key"],
            region_name=gateway["region"],
            config=Config(s3={"addressing_style": "path"}),
        )
        self.bucket = "boto3-bench"
        try:
            self.s3.create_bucket(Bucket=self.bucket)
        except self.s3.exceptions.BucketAlreadyOwnedByYou:
            pass

    def measure(self, step):
        cpu = cpu_seconds(self.pids)
        started = time.monotonic()
        result = step()
        return result, time.monotonic() - started, cpu_seconds(self.pids) - cpu


def make_file(directory, size):
    path = os.path.join(directory, "object")
    block = os.urandom(PART)
    digest = hashlib.sha256()
    with open(path, "wb") as f:
        written = 0
        while written < size:
            # Every block differs, so nothing downstream can deduplicate.
            chunk = written.to_bytes(8, "little") + block[8 : min(PART, size - written)]
            f.write(chunk)
            digest.update(chunk)
            written += len(chunk)
    return path, digest.hexdigest()


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("devnets", nargs="+", help="devnet directories")
    parser.add_argument("--size", default="1GiB", type=parse_size)
    parser.add_argument("--rounds", default=3, type=int)
    args = parser.parse_args()
    transfer = TransferConfig(
        multipart_threshold=PART, multipart_chunksize=PART, max_concurrency=IN_FLIGHT
    )
    devnets = [Devnet(d) for d in args.devnets]
    results = {(d.name, op): [] for d in devnets for op in ("PUT", "GET")}
    with tempfile.TemporaryDirectory() as scratch:
        path, expected = make_file(scratch, args.size)
        for round_ in range(args.rounds):
            for devnet in devnets:
                key = f"large-{round_}"
                _, seconds, cpu = devnet.measure(
                    lambda: devnet.s3.upload_file(path, devnet.bucket, key, Config=transfer)
                )
                results[(devnet.name, "PUT")].append((seconds, cpu))
                sink = HashingSink()
                _, seconds, cpu = devnet.measure(
                    lambda: devnet.s3.download_fileobj(devnet.bucket, key, sink, Config=transfer)
                )
                if sink.size != args.size or sink.hasher.hexdigest() != expected:
                    sys.exit(f"{devnet.name}: the object came back different")
                results[(devnet.name, "GET")].append((seconds, cpu))
                devnet.s3.delete_object(Bucket=devnet.bucket, Key=key)
                print(f"round {round_ + 1}, {devnet.name}: done", file=sys.stderr)
    gb = args.size / 1e9
    print(f"{args.size} bytes, {PART >> 20} MiB parts, {IN_FLIGHT} in flight, {args.rounds} rounds")
    print("| devnet | op | MB/s median (min–max) | servers CPU-s/GB median (min–max) |")
    print("|---|---|---:|---:|")
    for (name, op), runs in results.items():
        rates = [gb * 1e3 / s for s, _ in runs]
        cpus = [c / gb for _, c in runs]
        print(
            f"| {name} | {op} | {statistics.median(rates):.0f} ({min(rates):.0f}–{max(rates):.0f})"
            f" | {statistics.median(cpus):.2f} ({min(cpus):.2f}–{max(cpus):.2f}) |"
        )


if __name__ == "__main__":
    main()
