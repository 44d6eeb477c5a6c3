//! Side-by-side benchmarks of the primitives Archipel's data path is built on,
//! so the choices in DESIGN.md's "Dependencies" table can be re-checked at any
//! time: `cargo bench -p archipel-proto --bench primitives`.
//!
//! Groups:
//! - `erasure_encode`: reed-solomon-simd (raw, through our `BatchEncoder`, and
//!   including our gather step) vs reed-solomon-erasure 6;
//! - `erasure_decode`: recovery with every data shard lost, both libraries, plus
//!   our `decode_data_shards` on its fast path (all data present) and slow path;
//! - `aead`: AES-256-GCM sealing of 64 KiB blocks, `ring` vs the `aes-gcm` crate;
//! - `hash`: BLAKE3 one-shot vs our piece hash tree (and its leaf work without
//!   the domain prefix), and one-chunk range proofs.
//!
//! reed-solomon-erasure is built with its `simd-accel` feature (C code compiled
//! by `cc` with `-march=haswell`), which built without trouble here; that is the
//! fastest configuration it offers, so the comparison is as fair to it as it
//! can be. Cargo features are unified per build, so the plain-Rust variant can
//! only be measured by dropping the feature from proto's dev-dependencies.
//!
//! Throughput is always counted in original (data) bytes: for erasure coding the
//! `k` data shards of a batch, for decoding the `k` shards restored, for the hash
//! tree proofs the one 16 KiB chunk proved.

use std::hint::black_box;
use std::time::Duration;

use archipel_proto::erasure::{decode_data_shards, gather_data_shards, BatchEncoder};
use archipel_proto::hashtree::{self, TreeBuilder, DEFAULT_CHUNK_SIZE};
use archipel_proto::Redundancy;
use criterion::{
    criterion_group, criterion_main, BenchmarkId, Criterion, SamplingMode, Throughput,
};
use reed_solomon_erasure::galois_8::ReedSolomon as RsErasure;
use reed_solomon_simd::{ReedSolomonDecoder, ReedSolomonEncoder};

/// A realistic upload batch: 64 stripes of 4 KiB shares, so each shard (and
/// piece chunk) written per batch is 256 KiB.
const SHARE_SIZE: u32 = 4096;
const STRIPES_PER_BATCH: usize = 64;
const SHARD_BYTES: usize = SHARE_SIZE as usize * STRIPES_PER_BATCH;

const AEAD_BLOCK: usize = 64 * 1024;
const HASH_INPUT: usize = 16 * 1024 * 1024;

/// Incompressible, reproducible bytes (the data path only ever sees ciphertext).
fn pseudo_random(len: usize, seed: u8) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(&[seed])
        .finalize_xof()
        .fill(&mut out);
    out
}

fn scheme(k: u16, n: u16) -> Redundancy {
    Redundancy::new(k, k, k, n, SHARE_SIZE).expect("benchmark schemes are valid")
}

fn erasure_encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("erasure_encode");
    // One iteration is several MiB of coding; flat sampling keeps the run short.
    group.sampling_mode(SamplingMode::Flat);
    for (k, n) in [(29u16, 80u16), (4, 10)] {
        let scheme = scheme(k, n);
        let (k, m) = (k as usize, (n - k) as usize);
        let batch = pseudo_random(k * SHARD_BYTES, 1);
        let data = gather_data_shards(&scheme, &batch);
        let param = format!("k={k},n={n}");
        group.throughput(Throughput::Bytes(batch.len() as u64));

        group.bench_function(BenchmarkId::new("reed-solomon-simd", &param), |b| {
            let mut encoder = ReedSolomonEncoder::new(k, m, SHARD_BYTES).expect("supported");
            b.iter(|| {
                encoder.reset(k, m, SHARD_BYTES).expect("supported");
                for shard in &data {
                    encoder.add_original_shard(shard).expect("right size");
                }
                let result = encoder.encode().expect("all shards added");
                black_box(result.recovery(0));
            });
        });

        group.bench_function(BenchmarkId::new("reed-solomon-erasure", &param), |b| {
            let rs = RsErasure::new(k, m).expect("supported");
            let mut parity = vec![vec![0u8; SHARD_BYTES]; m];
            b.iter(|| {
                rs.encode_sep(&data, &mut parity).expect("right sizes");
                black_box(&parity);
            });
        });

        // Our wrapper on pre-gathered shards: adds copying the recovery shards out.
        group.bench_function(
            BenchmarkId::new("BatchEncoder::encode_recovery", &param),
            |b| {
                let mut encoder = BatchEncoder::new(scheme);
                b.iter(|| black_box(encoder.encode_recovery(&data).expect("valid batch")));
            },
        );

        // What an upload pays per batch: gather stripes into shards, then encode.
        group.bench_function(BenchmarkId::new("BatchEncoder incl. gather", &param), |b| {
            let mut encoder = BatchEncoder::new(scheme);
            b.iter(|| black_box(encoder.encode(&batch).expect("valid batch")));
        });
    }
    group.finish();
}

fn erasure_decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("erasure_decode");
    group.sampling_mode(SamplingMode::Flat);
    let (k16, n16) = (29u16, 80u16);
    let scheme = scheme(k16, n16);
    let (k, n) = (k16 as usize, n16 as usize);
    let m = n - k;
    let param = format!("k={k},n={n}");
    let batch = pseudo_random(k * SHARD_BYTES, 2);
    let shards = BatchEncoder::new(scheme)
        .encode(&batch)
        .expect("valid batch");
    group.throughput(Throughput::Bytes(batch.len() as u64));

    // Every data shard lost: rebuild from the first k recovery shards.
    group.bench_function(
        BenchmarkId::new("reed-solomon-simd, data lost", &param),
        |b| {
            let mut decoder = ReedSolomonDecoder::new(k, m, SHARD_BYTES).expect("supported");
            b.iter(|| {
                decoder.reset(k, m, SHARD_BYTES).expect("supported");
                for (i, shard) in shards[k..2 * k].iter().enumerate() {
                    decoder.add_recovery_shard(i, shard).expect("right size");
                }
                let result = decoder.decode().expect("enough shards");
                black_box(result.restored_original(0));
            });
        },
    );

    // Same loss pattern. The library caches the inverted matrix per pattern, as
    // it would across the batches of one segment download.
    group.bench_function(
        BenchmarkId::new("reed-solomon-erasure, data lost", &param),
        |b| {
            let rs = RsErasure::new(k, m).expect("supported");
            let mut slots: Vec<(Vec<u8>, bool)> = shards
                .iter()
                .enumerate()
                .map(|(i, s)| (s.clone(), (k..2 * k).contains(&i)))
                .collect();
            b.iter(|| {
                rs.reconstruct_data(&mut slots).expect("enough shards");
                black_box(&slots[0].0);
            });
        },
    );

    // Our download path when pieces of every data shard arrived: no coding at all.
    group.bench_function(
        BenchmarkId::new("decode_data_shards, all data present", &param),
        |b| {
            let present: Vec<Option<&[u8]>> = shards
                .iter()
                .enumerate()
                .map(|(i, s)| (i < k).then_some(s.as_slice()))
                .collect();
            b.iter(|| black_box(decode_data_shards(&scheme, &present).expect("enough shards")));
        },
    );

    // Our download path in the worst case: fresh decoder plus copies out.
    group.bench_function(
        BenchmarkId::new("decode_data_shards, data lost", &param),
        |b| {
            let recovery_only: Vec<Option<&[u8]>> = shards
                .iter()
                .enumerate()
                .map(|(i, s)| (k..2 * k).contains(&i).then_some(s.as_slice()))
                .collect();
            b.iter(|| {
                black_box(decode_data_shards(&scheme, &recovery_only).expect("enough shards"))
            });
        },
    );
    group.finish();
}

fn aead(c: &mut Criterion) {
    use aes_gcm::aead::{AeadInPlace, KeyInit};
    use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

    let mut group = c.benchmark_group("aead");
    group.throughput(Throughput::Bytes(AEAD_BLOCK as u64));
    let key = pseudo_random(32, 3);
    // Position binding as the client does it: segment position, block index, last flag.
    let aad = [0u8; 13];
    let mut block = pseudo_random(AEAD_BLOCK, 4);

    group.bench_function(BenchmarkId::new("ring", "64 KiB"), |b| {
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &key).expect("32-byte key"));
        let mut index = 0u64;
        b.iter(|| {
            index += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&index.to_be_bytes());
            key.seal_in_place_separate_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut block,
            )
            .expect("block within AES-GCM limits")
        });
    });

    group.bench_function(BenchmarkId::new("aes-gcm", "64 KiB"), |b| {
        let cipher = aes_gcm::Aes256Gcm::new_from_slice(&key).expect("32-byte key");
        let mut index = 0u64;
        b.iter(|| {
            index += 1;
            let mut nonce = [0u8; 12];
            nonce[4..].copy_from_slice(&index.to_be_bytes());
            cipher
                .encrypt_in_place_detached(&nonce.into(), &aad, &mut block)
                .expect("block within AES-GCM limits")
        });
    });
    group.finish();
}

fn hash(c: &mut Criterion) {
    let mut group = c.benchmark_group("hash");
    let data = pseudo_random(HASH_INPUT, 5);
    group.throughput(Throughput::Bytes(data.len() as u64));

    group.bench_function(BenchmarkId::new("blake3 one-shot", "16 MiB"), |b| {
        b.iter(|| black_box(blake3::hash(&data)));
    });

    group.bench_function(
        BenchmarkId::new("TreeBuilder, 16 KiB chunks", "16 MiB"),
        |b| {
            b.iter(|| {
                let mut tree = TreeBuilder::new(DEFAULT_CHUNK_SIZE);
                tree.update(&data);
                black_box(tree.finish())
            });
        },
    );

    // The tree's leaf work without its one-byte domain prefix: separates the cost
    // of hashing 16 KiB chunks independently from the cost of the prefix, which
    // shifts every chunk off BLAKE3's 1 KiB chunk grid.
    group.bench_function(
        BenchmarkId::new("blake3 per 16 KiB chunk, no prefix", "16 MiB"),
        |b| {
            b.iter(|| {
                let leaves: Vec<blake3::Hash> = data
                    .chunks(DEFAULT_CHUNK_SIZE as usize)
                    .map(blake3::hash)
                    .collect();
                black_box(leaves)
            });
        },
    );

    // One chunk of a 16 MiB piece: 1024 leaves.
    let (root, leaves) = {
        let mut tree = TreeBuilder::new(DEFAULT_CHUNK_SIZE);
        tree.update(&data);
        tree.finish()
    };
    assert_eq!(leaves.len(), 1024);
    let chunk = DEFAULT_CHUNK_SIZE as usize;
    let index = 517;
    let proof = hashtree::range_proof(&leaves, index, index + 1);
    group.throughput(Throughput::Bytes(chunk as u64));

    // Node side: build the proof for one chunk from the stored leaves.
    group.bench_function(BenchmarkId::new("range_proof", "1 of 1024 leaves"), |b| {
        b.iter(|| black_box(hashtree::range_proof(&leaves, index, index + 1)));
    });

    // Reader side: hash the received chunk and check it against the root.
    group.bench_function(
        BenchmarkId::new("leaf_hash + verify_range", "1 of 1024 leaves"),
        |b| {
            let bytes = &data[index * chunk..(index + 1) * chunk];
            b.iter(|| {
                let leaf = hashtree::leaf_hash(bytes);
                hashtree::verify_range(
                    &root,
                    HASH_INPUT as u64,
                    DEFAULT_CHUNK_SIZE,
                    index as u64,
                    &[leaf],
                    &proof,
                )
                .expect("untampered chunk verifies");
            });
        },
    );
    group.finish();
}

criterion_group! {
    name = primitives;
    // Small enough that the whole run takes well under three minutes on 2 cores.
    config = Criterion::default()
        .sample_size(10)
        .measurement_time(Duration::from_secs(2))
        .warm_up_time(Duration::from_secs(1));
    targets = erasure_encode, erasure_decode, aead, hash
}
criterion_main!(primitives);
