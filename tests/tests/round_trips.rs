//! Upload/download round trips through the whole network at the sizes where
//! the data path changes shape: empty, inline, stripe and segment boundaries,
//! and a large multi-segment object; plus random range reads.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use archipel_client::{ByteRange, UploadOptions};
use archipel_tests::{on_both_backends, test_data, Backend, Planet, PlanetConfig};
use proptest::prelude::*;

/// AEAD block size and tag, as the client seals content.
const BLOCK: usize = 64 * 1024;
const TAG: usize = 16;

/// Plaintext size whose ciphertext is exactly `encrypted` bytes (for sizes
/// within one segment).
fn plain_for_encrypted(encrypted: usize) -> usize {
    let blocks = encrypted.div_ceil(BLOCK + TAG);
    encrypted - blocks * TAG
}

async fn round_trip(planet: &Planet, size: usize, seed: u64) {
    let project = planet.project().await.unwrap();
    let _ = project.create_bucket("sizes").await;
    let data = test_data(size, seed);
    let key = format!("object-{size}");
    let info = project
        .upload("sizes", &key, &data[..], UploadOptions::default())
        .await
        .unwrap_or_else(|e| panic!("upload of {size} bytes: {e}"));
    assert_eq!(info.size, size as u64);
    let mut out = Vec::new();
    let n = project
        .download("sizes", &key, None, &mut out, None)
        .await
        .unwrap();
    assert_eq!(n, size as u64);
    assert!(out == data, "download of {size} bytes differs");
}

async fn boundary_sizes(backend: Backend) {
    let config = PlanetConfig::with_backend(backend);
    let inline = config.inline_threshold as usize;
    let stripe = config.redundancy.stripe_size() as usize;
    let segment = config.max_segment_size as usize;
    let planet = Planet::start(config).await.unwrap();
    let mut sizes = vec![0, 1];
    for edge in [
        plain_for_encrypted(inline),
        inline,
        plain_for_encrypted(stripe),
        plain_for_encrypted(3 * stripe),
        BLOCK,
        segment,
        3 * segment,
    ] {
        sizes.extend([edge - 1, edge, edge + 1]);
    }
    for (i, size) in sizes.into_iter().enumerate() {
        round_trip(&planet, size, i as u64).await;
    }
    planet.shutdown().await.unwrap();
}

async fn large_multi_segment_object(backend: Backend) {
    let config = PlanetConfig {
        max_segment_size: 64 << 20,
        ..PlanetConfig::with_backend(backend)
    };
    let planet = Planet::start(config).await.unwrap();
    round_trip(&planet, (200 << 20) + 12345, 99).await;
    let project = planet.project().await.unwrap();
    let info = project
        .stat("sizes", &format!("object-{}", (200 << 20) + 12345))
        .await
        .unwrap();
    assert_eq!(info.segments.len(), 4);
    planet.shutdown().await.unwrap();
}

async fn random_range_reads(backend: Backend) {
    let planet = Planet::start(PlanetConfig::with_backend(backend))
        .await
        .unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("ranges").await.unwrap();
    let data = test_data((3 << 20) + 777, 7);
    project
        .upload("ranges", "obj", &data[..], UploadOptions::default())
        .await
        .unwrap();

    let handle = tokio::runtime::Handle::current();
    let size = data.len() as u64;
    let checked = tokio::task::spawn_blocking(move || {
        let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(48));
        let result = runner.run(
            &(0..size, 0..size, any::<bool>()),
            |(offset, len, open_ended)| {
                let range = ByteRange {
                    offset,
                    length: (!open_ended).then_some(len.min(size - offset)),
                };
                let mut out = Vec::new();
                handle
                    .block_on(project.download("ranges", "obj", Some(range), &mut out, None))
                    .map_err(|e| TestCaseError::fail(e.to_string()))?;
                let end = range.length.map_or(size, |l| offset + l) as usize;
                prop_assert!(
                    out == data[offset as usize..end],
                    "range {offset}+{:?} differs",
                    range.length
                );
                Ok(())
            },
        );
        result.map_err(|e| e.to_string())
    })
    .await
    .unwrap();
    checked.unwrap();

    let project = planet.project().await.unwrap();
    let past_end = ByteRange {
        offset: size + 1,
        length: None,
    };
    assert!(project
        .download("ranges", "obj", Some(past_end), &mut Vec::new(), None)
        .await
        .is_err());
    planet.shutdown().await.unwrap();
}

on_both_backends!(
    boundary_sizes,
    large_multi_segment_object,
    random_range_reads
);
