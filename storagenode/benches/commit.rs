//! What the piece index costs a node per committed piece, measured beside the
//! whole commit in the same run: `cargo bench -p archipel-storagenode --bench commit`.
//!
//! - `commit`: a 4 KiB piece through [`PieceStore`] as the piecestore service
//!   stores it: create, write, commit (leaf hashes and header, `fsync`, the
//!   index's journal entry, rename, the index row and usage, directory sync);
//! - `index`: only the index's part of that, [`Index::begin`] and
//!   [`Index::settle`] for one piece, in a database of its own on the same disk.
//!
//! Remote 4 KiB objects are the worst case for the index (ten piece commits
//! for 4 KiB of data); see docs/PERFORMANCE.md ("The node's piece index").

use std::hint::black_box;
use std::time::Duration;

use archipel_proto::pb::{OrderLimit, PieceAction};
use archipel_proto::{orders, Identity};
use archipel_storagenode::index::{Index, PieceRow, Place};
use archipel_storagenode::PieceStore;
use criterion::{criterion_group, criterion_main, Criterion};

const PIECE: usize = 4096;

/// A fresh piece id per iteration: a commit refuses an id already stored.
fn piece_id(counter: &mut u64) -> [u8; 32] {
    *counter += 1;
    *blake3::hash(&counter.to_le_bytes()).as_bytes()
}

fn limit(satellite: &Identity, piece_id: [u8; 32]) -> OrderLimit {
    orders::sign_order_limit(
        satellite,
        OrderLimit {
            serial_number: orders::new_serial(),
            node_id: vec![9; 32],
            piece_id: piece_id.to_vec(),
            action: PieceAction::Put as i32,
            limit: 1 << 20,
            order_expiration: orders::unix_now() + 3600,
            ..Default::default()
        },
    )
}

fn bench(c: &mut Criterion) {
    let runtime = tokio::runtime::Runtime::new().expect("a tokio runtime");
    // On the disk the repository is on, like a node's storage, not in /tmp
    // (often a tmpfs, where fsync costs nothing).
    let base = std::env::current_dir().expect("a working directory");
    let dir = tempfile::tempdir_in(base).expect("a temporary directory");
    let (satellite, node) = (Identity::generate(), Identity::generate());
    let data = vec![0x5a; PIECE];
    let mut counter = 0;

    let mut group = c.benchmark_group("piece_4k");
    group.measurement_time(Duration::from_secs(10));

    let store = runtime
        .block_on(PieceStore::open(dir.path().join("store"), 1 << 40))
        .expect("the piece store opens");
    group.bench_function("commit", |b| {
        b.iter(|| {
            let limit = limit(&satellite, piece_id(&mut counter));
            runtime.block_on(async {
                let mut writer = store.create(limit, PIECE as u64).await.expect("create");
                writer.write(&data).await.expect("write");
                black_box(writer.commit(&node).await.expect("commit"))
            })
        })
    });

    let index_dir = dir.path().join("index");
    std::fs::create_dir_all(&index_dir).expect("the index directory");
    let (mut index, _) = Index::open(&index_dir).expect("the index opens");
    let satellite_id = satellite.id();
    let row = PieceRow {
        size: PIECE as u64 + 512,
        created: orders::unix_now(),
        expiration: 0,
        place: Place::Stored,
    };
    group.bench_function("index", |b| {
        b.iter(|| {
            let id = piece_id(&mut counter);
            index.begin(&satellite_id, &[id]).expect("begin");
            black_box(
                index
                    .settle(&satellite_id, &[(id, Some(row))])
                    .expect("settle"),
            )
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
