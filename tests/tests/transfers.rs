//! The library's options for many-object and large-object transfers through
//! the whole network: uploads and downloads that keep several segments in
//! flight (same bytes, same segments, bounded read-ahead, monotonic
//! progress), and paged listings that walk a bucket one satellite page at a
//! time, in both name modes.

#![allow(clippy::unwrap_used)] // test code: a failed step should panic with its error

use std::collections::BTreeSet;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use archipel_client::{BucketOptions, ByteRange, ListCursor, Project, UploadOptions};
use archipel_tests::{test_data, Planet, PlanetConfig};
use futures::StreamExt;
use tokio::io::{AsyncRead, ReadBuf};

/// A reader that counts what was taken from it.
struct Counting<'a> {
    data: &'a [u8],
    read: Arc<AtomicU64>,
}

impl AsyncRead for Counting<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let n = buf.remaining().min(self.data.len());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        self.read.fetch_add(n as u64, Ordering::SeqCst);
        Poll::Ready(Ok(()))
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn segments_in_flight_together_store_and_read_the_same_bytes() {
    let config = PlanetConfig::default();
    let segment = config.max_segment_size;
    let planet = Planet::start(config).await.unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("big").await.unwrap();
    // Five and a half segments: full ones and a short last one.
    let size = 5 * segment as usize + segment as usize / 2;
    let data = test_data(size, 42);

    let read = Arc::new(AtomicU64::new(0));
    let reports = Arc::new(Mutex::new(Vec::new()));
    let ahead = Arc::new(AtomicU64::new(0));
    let progress = {
        let (read, reports, ahead) = (read.clone(), reports.clone(), ahead.clone());
        Arc::new(move |sent: u64| {
            let taken = read.load(Ordering::SeqCst);
            ahead.fetch_max(taken.saturating_sub(sent), Ordering::SeqCst);
            reports.lock().unwrap().push(sent);
        })
    };
    let parallelism = 3;
    let info = project
        .upload(
            "big",
            "object",
            Counting {
                data: &data,
                read: read.clone(),
            },
            UploadOptions {
                parallelism,
                progress: Some(progress),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(info.size, size as u64);
    let positions: Vec<u32> = info.segments.iter().map(|s| s.position).collect();
    assert_eq!(positions, [0, 1, 2, 3, 4, 5]);
    let reports = reports.lock().unwrap().clone();
    assert!(reports.windows(2).all(|w| w[0] <= w[1]), "{reports:?}");
    assert_eq!(reports.last(), Some(&(size as u64)));
    // Never more than the segments in flight (and the one-byte lookahead
    // with its read buffer) is read ahead of what was sent.
    let ahead = ahead.load(Ordering::SeqCst);
    assert!(
        ahead <= parallelism as u64 * segment + 64 * 1024,
        "read {ahead} bytes ahead"
    );

    let stat = project.stat("big", "object").await.unwrap();
    assert_eq!(stat.segments.len(), 6);
    for parallelism in [1, 4] {
        let mut out = Vec::new();
        let written = Arc::new(Mutex::new(Vec::new()));
        let reports = written.clone();
        let n = project
            .open_object("big", "object", 0)
            .await
            .unwrap()
            .with_parallelism(parallelism)
            .download(
                None,
                &mut out,
                Some(Arc::new(move |n| reports.lock().unwrap().push(n))),
            )
            .await
            .unwrap();
        assert_eq!(n, size as u64);
        assert!(out == data, "parallelism {parallelism}: the bytes differ");
        let written = written.lock().unwrap().clone();
        assert!(written.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(written.last(), Some(&(size as u64)));
    }
    // A range across three segments, read with segments in flight.
    let (offset, length) = (segment + 1000, 2 * segment);
    let mut out = Vec::new();
    project
        .open_object("big", "object", offset)
        .await
        .unwrap()
        .with_parallelism(3)
        .download(
            Some(ByteRange {
                offset,
                length: Some(length),
            }),
            &mut out,
            None,
        )
        .await
        .unwrap();
    assert!(out[..] == data[offset as usize..(offset + length) as usize]);

    // Small objects (inline, one segment) and an empty one take the same path.
    for size in [0, 100, segment as usize - 1, segment as usize] {
        let small = test_data(size, 7);
        let info = project
            .upload(
                "big",
                "small",
                &small[..],
                UploadOptions {
                    parallelism: 4,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(info.size, size as u64);
        let mut out = Vec::new();
        project
            .download("big", "small", None, &mut out, None)
            .await
            .unwrap();
        assert!(out == small, "{size} bytes");
    }
    planet.shutdown().await.unwrap();
}

/// Walks a listing with [`Project::list_page`]; returns every page.
async fn pages(project: &Project, bucket: &str, prefix: &str, recursive: bool) -> Vec<Vec<String>> {
    let mut pages = Vec::new();
    let mut cursor: Option<ListCursor> = None;
    loop {
        let page = project
            .list_page(bucket, prefix, recursive, cursor.as_ref())
            .await
            .unwrap();
        pages.push(page.entries.into_iter().map(|e| e.key).collect());
        match page.next {
            Some(next) => cursor = Some(next),
            None => return pages,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn paged_listings_walk_a_bucket_a_page_at_a_time() {
    let planet = Planet::start(PlanetConfig::default()).await.unwrap();
    let project = planet.project().await.unwrap();
    project.create_bucket("secret").await.unwrap();
    project
        .create_bucket_with(
            "plain",
            BucketOptions {
                unencrypted_names: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    // 2100 objects under a/ (more than two satellite pages), a few around it.
    let mut keys: Vec<String> = (0..2100)
        .map(|i| format!("a/{:02}/{i:05}", i % 7))
        .collect();
    keys.extend(["0-before".to_string(), "b/after".into(), "a".into()]);
    for bucket in ["secret", "plain"] {
        futures::stream::iter(&keys)
            .for_each_concurrent(16, |key| {
                let project = project.clone();
                async move {
                    project
                        .upload(bucket, key, &b"x"[..], UploadOptions::default())
                        .await
                        .unwrap();
                }
            })
            .await;
    }
    let below_a: BTreeSet<String> = keys
        .iter()
        .filter(|k| k.starts_with("a/"))
        .cloned()
        .collect();

    for bucket in ["secret", "plain"] {
        let walk = pages(&project, bucket, "a/", true).await;
        assert!(walk.len() >= 3, "{bucket}: {} pages", walk.len());
        for page in &walk {
            assert!(
                page.windows(2).all(|w| w[0] < w[1]),
                "{bucket}: a page is not sorted"
            );
        }
        let all: Vec<String> = walk.concat();
        assert_eq!(all.len(), below_a.len(), "{bucket}: an entry came twice");
        assert_eq!(all.iter().cloned().collect::<BTreeSet<_>>(), below_a);
        if bucket == "plain" {
            // Unencrypted names: the pages are in order with one another.
            assert!(all.windows(2).all(|w| w[0] < w[1]));
        }
        // One level: the seven prefixes.
        let level: Vec<String> = pages(&project, bucket, "a/", false).await.concat();
        assert_eq!(
            level.iter().cloned().collect::<BTreeSet<_>>(),
            (0..7)
                .map(|i| format!("a/{i:02}/"))
                .collect::<BTreeSet<_>>()
        );
        // The whole bucket, and a prefix that is not a whole component.
        let everything: Vec<String> = pages(&project, bucket, "", true).await.concat();
        assert_eq!(everything.len(), keys.len());
        let partial: Vec<String> = pages(&project, bucket, "a/03/0001", true).await.concat();
        assert_eq!(
            partial.into_iter().collect::<BTreeSet<_>>(),
            below_a
                .iter()
                .filter(|k| k.starts_with("a/03/0001"))
                .cloned()
                .collect::<BTreeSet<_>>()
        );
    }
    planet.shutdown().await.unwrap();
}
