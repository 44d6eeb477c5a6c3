//! The client's upload pipeline for one segment held in memory, measured against
//! its primitives on the same data in the same run:
//! `cargo bench -p archipel-client --bench pipeline`.
//!
//! - `pipeline`: [`archipel_client::encode_segment`] (the upload's own path:
//!   AES-256-GCM blocks → stripes → Reed-Solomon batches) with every piece fed
//!   into a [`TreeBuilder`] as it comes out, i.e. encrypt + encode + the hash
//!   trees the upload builds to check each node's signed root (the upload
//!   hashes each node's stream on its own task; here one thread does all);
//! - `encrypt`: `ring` sealing the segment in place in 64 KiB blocks, no copies;
//! - `encode`: [`BatchEncoder::encode`] over the ciphertext, cut into batches of
//!   the size the pipeline uses;
//! - `hash`: one [`TreeBuilder`] over each of the `n` finished pieces.
//!
//! Throughput is always counted in plaintext bytes of the segment, so the three
//! primitives' times add up to the time the pipeline would take if it did
//! nothing else; see docs/PERFORMANCE.md ("Upload pipeline").

use std::hint::black_box;
use std::time::Duration;

use archipel_client::encode_segment;
use archipel_proto::erasure::BatchEncoder;
use archipel_proto::hashtree::{TreeBuilder, DEFAULT_CHUNK_SIZE};
use archipel_proto::Redundancy;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, AES_256_GCM};

const SEGMENT: usize = 64 << 20;
const SHARE_SIZE: u32 = 4096;
/// The client's AEAD block size (`crypto::DEFAULT_BLOCK_SIZE`).
const AEAD_BLOCK: usize = 64 * 1024;

/// Incompressible, reproducible plaintext.
fn pseudo_random(len: usize) -> Vec<u8> {
    let mut out = vec![0u8; len];
    blake3::Hasher::new()
        .update(b"pipeline bench")
        .finalize_xof()
        .fill(&mut out);
    out
}

/// Runs the real pipeline once; returns the `n` pieces and the batch size in
/// data bytes it used.
fn pieces_of(plain: &[u8], scheme: Redundancy) -> (Vec<Vec<u8>>, usize) {
    let mut pieces = vec![Vec::new(); scheme.total as usize];
    let mut batch_bytes = 0;
    futures::executor::block_on(encode_segment(plain, scheme, SEGMENT as u64, |shards| {
        batch_bytes = batch_bytes.max(shards[0].len() * scheme.required as usize);
        for (piece, shard) in pieces.iter_mut().zip(shards) {
            piece.extend_from_slice(&shard);
        }
    }))
    .expect("a segment in memory encodes");
    (pieces, batch_bytes)
}

fn nonce(block: usize) -> Nonce {
    let mut nonce = [0u8; 12];
    nonce[4..].copy_from_slice(&(block as u64).to_be_bytes());
    Nonce::assume_unique_for_key(nonce)
}

/// The ciphertext of the segment (blocks with their tags), as the encoder sees it.
fn seal(key: &LessSafeKey, plain: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(plain.len() + plain.len() / AEAD_BLOCK * 16 + 16);
    let mut block = Vec::with_capacity(AEAD_BLOCK + 16);
    for (i, chunk) in plain.chunks(AEAD_BLOCK).enumerate() {
        block.clear();
        block.extend_from_slice(chunk);
        key.seal_in_place_append_tag(nonce(i), Aad::from([0u8; 13]), &mut block)
            .expect("sealing in memory cannot fail");
        out.extend_from_slice(&block);
    }
    out
}

fn pipeline(c: &mut Criterion) {
    let plain = pseudo_random(SEGMENT);
    let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, &[7; 32]).expect("a 32-byte key"));
    for (k, repair, success, n) in [(4u16, 6u16, 8u16, 10u16), (29, 35, 80, 110)] {
        let scheme = Redundancy::new(k, repair, success, n, SHARE_SIZE).expect("valid schemes");
        let (pieces, batch_bytes) = pieces_of(&plain, scheme);
        let ciphertext = seal(&key, &plain);

        let mut group = c.benchmark_group(format!("upload k={k},n={n}"));
        group
            .sample_size(10)
            .warm_up_time(Duration::from_secs(1))
            .measurement_time(Duration::from_secs(4))
            .throughput(Throughput::Bytes(SEGMENT as u64));

        group.bench_function(BenchmarkId::from_parameter("pipeline"), |b| {
            b.iter(|| {
                let mut trees: Vec<TreeBuilder> = (0..n)
                    .map(|_| TreeBuilder::new(DEFAULT_CHUNK_SIZE))
                    .collect();
                let encoded = encode_segment(&plain[..], scheme, SEGMENT as u64, |shards| {
                    for (tree, shard) in trees.iter_mut().zip(&shards) {
                        tree.update(shard);
                    }
                });
                futures::executor::block_on(encoded).expect("a segment in memory encodes");
                trees.into_iter().map(|t| t.finish().0).collect::<Vec<_>>()
            })
        });

        // Sealing in place, block by block, with no copy: AES-GCM's speed does
        // not depend on the data, so the same buffer is sealed over and over.
        let mut buffer = plain.clone();
        group.bench_function(BenchmarkId::from_parameter("encrypt"), |b| {
            b.iter(|| {
                for (i, block) in buffer.chunks_mut(AEAD_BLOCK).enumerate() {
                    let tag = key
                        .seal_in_place_separate_tag(nonce(i), Aad::from([0u8; 13]), block)
                        .expect("sealing in memory cannot fail");
                    let _ = black_box(tag);
                }
            })
        });

        let mut encoder = BatchEncoder::new(scheme);
        let stripe = scheme.stripe_size() as usize;
        group.bench_function(BenchmarkId::from_parameter("encode"), |b| {
            b.iter(|| {
                let mut last = Vec::new();
                for batch in ciphertext.chunks(batch_bytes) {
                    last = if batch.len() % stripe == 0 {
                        encoder.encode(batch).expect("whole stripes")
                    } else {
                        let mut padded = batch.to_vec();
                        padded.resize(batch.len().div_ceil(stripe) * stripe, 0);
                        encoder.encode(&padded).expect("whole stripes")
                    };
                }
                black_box(last)
            })
        });

        group.bench_function(BenchmarkId::from_parameter("hash"), |b| {
            b.iter(|| {
                pieces
                    .iter()
                    .map(|piece| {
                        let mut tree = TreeBuilder::new(DEFAULT_CHUNK_SIZE);
                        tree.update(piece);
                        tree.finish().0
                    })
                    .collect::<Vec<_>>()
            })
        });
        group.finish();
    }
}

criterion_group!(benches, pipeline);
criterion_main!(benches);
