//! The piece index: one row per piece file, in the node's SQLite database
//! (`node.db` in the storage directory), saying where the file is (stored or
//! in the trash), its size, when its order limit was created (the
//! satellite's clock, which garbage collection compares against) and when it
//! expires; and the space the pieces use per satellite, kept in the same
//! transactions. So the node knows its usage, its expiring pieces and its
//! trash without walking its disk.
//!
//! The same database keeps the node's other records: the bytes transferred
//! per satellite, action and day ([`crate::bandwidth`]), the last retain
//! filter applied and what each satellite said at the last check-in.
//!
//! # Staying in step with the files
//!
//! Every change to piece files goes through [`Index::begin`] and
//! [`Index::settle`]: the pieces about to change are noted in a journal
//! (committed) before any file moves, and their rows change, with their
//! journal entries removed, in one transaction after. A crash between the two
//! leaves journal entries, and opening the index hands them back so that the
//! store sets each row from what is on disk. SQLite runs in WAL mode with
//! `synchronous = NORMAL`: a process that dies loses no committed transaction,
//! but a machine that loses power may lose the last ones, so the store also
//! reconciles the whole index with the disk, in the background, after an
//! unclean stop on an earlier boot (see [`Opened`]).

use std::collections::HashMap;
use std::path::Path;

use archipel_proto::orders::PieceId;
use archipel_proto::NodeId;
use rusqlite::{params, Connection, OptionalExtension, Transaction};

use crate::error::{Error, Result};

/// The database's file name in the storage directory.
pub const DATABASE_NAME: &str = "node.db";

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS pieces (
    satellite BLOB NOT NULL,
    piece_id BLOB NOT NULL,
    size INTEGER NOT NULL,
    created INTEGER NOT NULL,
    expiration INTEGER NOT NULL,
    trashed_at INTEGER,
    PRIMARY KEY (satellite, piece_id)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS pieces_expiring ON pieces (expiration)
    WHERE expiration <> 0 AND trashed_at IS NULL;
CREATE INDEX IF NOT EXISTS pieces_trashed ON pieces (trashed_at)
    WHERE trashed_at IS NOT NULL;
CREATE TABLE IF NOT EXISTS usage (
    satellite BLOB PRIMARY KEY,
    pieces INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    trash_pieces INTEGER NOT NULL,
    trash_bytes INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS journal (
    satellite BLOB NOT NULL,
    piece_id BLOB NOT NULL,
    PRIMARY KEY (satellite, piece_id)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS bandwidth (
    satellite BLOB NOT NULL,
    action TEXT NOT NULL,
    day INTEGER NOT NULL,
    bytes INTEGER NOT NULL,
    PRIMARY KEY (satellite, action, day)
) WITHOUT ROWID;
";

/// Where a piece file is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Place {
    Stored,
    /// In the trash since this time (unix seconds, the node's clock).
    Trash(i64),
}

/// What the index records of one piece.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PieceRow {
    /// Bytes of the piece file.
    pub size: u64,
    /// When the order limit it was stored under was created (unix seconds).
    pub created: i64,
    /// Unix seconds; 0 = never.
    pub expiration: i64,
    pub place: Place,
}

/// Space used for one satellite.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Usage {
    pub pieces: u64,
    pub bytes: u64,
    pub trash_pieces: u64,
    pub trash_bytes: u64,
}

impl Usage {
    /// What `row` counts for.
    fn of(row: Option<&PieceRow>) -> Usage {
        match row {
            None => Usage::default(),
            Some(
                row @ PieceRow {
                    place: Place::Stored,
                    ..
                },
            ) => Usage {
                pieces: 1,
                bytes: row.size,
                ..Usage::default()
            },
            Some(
                row @ PieceRow {
                    place: Place::Trash(_),
                    ..
                },
            ) => Usage {
                trash_pieces: 1,
                trash_bytes: row.size,
                ..Usage::default()
            },
        }
    }

    /// Bytes on disk, stored or in the trash.
    pub fn disk_bytes(&self) -> u64 {
        self.bytes.saturating_add(self.trash_bytes)
    }

    /// Adds `plus` and takes away `minus`, saturating.
    pub fn shift(&mut self, plus: &Usage, minus: &Usage) {
        let step = |value: &mut u64, plus: u64, minus: u64| {
            *value = value.saturating_add(plus).saturating_sub(minus);
        };
        step(&mut self.pieces, plus.pieces, minus.pieces);
        step(&mut self.bytes, plus.bytes, minus.bytes);
        step(
            &mut self.trash_pieces,
            plus.trash_pieces,
            minus.trash_pieces,
        );
        step(&mut self.trash_bytes, plus.trash_bytes, minus.trash_bytes);
    }
}

/// A row's change as [`Index::settle`] made it: what the piece counted for
/// before and after, for the caller's copy of the usage.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Settled {
    pub satellite: NodeId,
    pub before: Usage,
    pub after: Usage,
}

/// How the index was found at open.
#[derive(Debug, Default)]
pub struct Opened {
    /// The database did not exist: pieces already on disk are not indexed.
    pub created: bool,
    /// The previous run did not stop cleanly and the machine has restarted
    /// since: the last transactions may be lost.
    pub lost_transactions: bool,
    /// Pieces whose files were changing when the previous run stopped.
    pub journal: Vec<(NodeId, PieceId)>,
}

pub struct Index {
    conn: Connection,
}

fn db(error: rusqlite::Error) -> Error {
    Error::Database(error)
}

fn to_i64(value: u64) -> i64 {
    i64::try_from(value).unwrap_or(i64::MAX)
}

fn to_u64(value: i64) -> u64 {
    u64::try_from(value).unwrap_or(0)
}

fn piece_id(bytes: Vec<u8>) -> Result<PieceId> {
    bytes.try_into().map_err(|bytes: Vec<u8>| {
        Error::Database(rusqlite::Error::InvalidColumnType(
            0,
            format!("a piece id of {} bytes", bytes.len()),
            rusqlite::types::Type::Blob,
        ))
    })
}

fn satellite_id(bytes: &[u8]) -> Result<NodeId> {
    NodeId::from_bytes(bytes).map_err(|e| {
        Error::Database(rusqlite::Error::InvalidColumnType(
            0,
            format!("a satellite id: {e}"),
            rusqlite::types::Type::Blob,
        ))
    })
}

/// This boot of the machine, to tell a process that died from a machine that
/// restarted; `None` where the system does not say.
fn boot_id() -> Option<String> {
    std::fs::read_to_string("/proc/sys/kernel/random/boot_id")
        .ok()
        .map(|id| id.trim().to_string())
}

impl Index {
    /// Opens (creating if needed) the index in `storage_dir` and marks it in use
    /// until [`Index::close`].
    pub fn open(storage_dir: &Path) -> Result<(Index, Opened)> {
        let path = storage_dir.join(DATABASE_NAME);
        let created = !path.exists();
        let conn = Connection::open(&path).map_err(db)?;
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(db)?;
        conn.busy_timeout(std::time::Duration::from_secs(30))
            .map_err(db)?;
        conn.execute_batch(SCHEMA).map_err(db)?;
        let index = Index { conn };
        let running: Option<String> = index.state("running")?;
        let this_boot = boot_id();
        let lost_transactions =
            running.is_some_and(|boot| this_boot.as_deref() != Some(boot.as_str()));
        index.set_state("running", this_boot.as_deref().unwrap_or("unknown"))?;
        let journal = index.journal()?;
        Ok((
            index,
            Opened {
                created,
                lost_transactions,
                journal,
            },
        ))
    }

    /// Marks a clean stop: the next open trusts the index as it stands.
    pub fn close(&mut self) -> Result<()> {
        self.conn
            .execute("DELETE FROM state WHERE key = 'running'", [])
            .map_err(db)?;
        Ok(())
    }

    fn state(&self, key: &str) -> Result<Option<String>> {
        self.conn
            .query_row("SELECT value FROM state WHERE key = ?1", [key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(db)
    }

    fn set_state(&self, key: &str, value: &str) -> Result<()> {
        self.conn
            .execute(
                "INSERT INTO state (key, value) VALUES (?1, ?2) \
                 ON CONFLICT (key) DO UPDATE SET value = excluded.value",
                params![key, value],
            )
            .map_err(db)?;
        Ok(())
    }

    /// The creation time of the last retain filter applied for `satellite`.
    pub fn last_retain(&self, satellite: &NodeId) -> Result<Option<i64>> {
        Ok(self
            .state(&format!("retain:{satellite}"))?
            .and_then(|text| text.parse().ok()))
    }

    pub fn set_last_retain(&self, satellite: &NodeId, created_at: i64) -> Result<()> {
        self.set_state(&format!("retain:{satellite}"), &created_at.to_string())
    }

    /// A record other parts of the node keep (JSON): a satellite's standing
    /// from its check-ins, an exit's progress.
    pub fn record(&self, key: &str) -> Result<Option<String>> {
        self.state(key)
    }

    pub fn set_record(&self, key: &str, value: &str) -> Result<()> {
        self.set_state(key, value)
    }

    /// Adds transferred bytes, each `(satellite, action, day, bytes)`, in one
    /// transaction.
    pub fn add_bandwidth(&mut self, entries: &[(NodeId, &str, i64, u64)]) -> Result<()> {
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut add = tx
                .prepare_cached(
                    "INSERT INTO bandwidth (satellite, action, day, bytes) VALUES (?1, ?2, ?3, ?4) \
                     ON CONFLICT (satellite, action, day) DO UPDATE SET bytes = bytes + excluded.bytes",
                )
                .map_err(db)?;
            for (satellite, action, day, bytes) in entries {
                add.execute(params![satellite.as_bytes(), action, day, to_i64(*bytes)])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// The bytes transferred on `since_day` and later, as
    /// `(satellite, action, day, bytes)`.
    pub fn bandwidth_since(&self, since_day: i64) -> Result<Vec<(NodeId, String, i64, u64)>> {
        let mut statement = self
            .conn
            .prepare_cached(
                "SELECT satellite, action, day, bytes FROM bandwidth WHERE day >= ?1 \
                 ORDER BY satellite, day, action",
            )
            .map_err(db)?;
        let rows = statement
            .query_map([since_day], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    r.get::<_, String>(1)?,
                    r.get::<_, i64>(2)?,
                    r.get::<_, i64>(3)?,
                ))
            })
            .map_err(db)?;
        let mut out = Vec::new();
        for row in rows {
            let (satellite, action, day, bytes) = row.map_err(db)?;
            out.push((satellite_id(&satellite)?, action, day, to_u64(bytes)));
        }
        Ok(out)
    }

    fn journal(&self) -> Result<Vec<(NodeId, PieceId)>> {
        let mut statement = self
            .conn
            .prepare("SELECT satellite, piece_id FROM journal")
            .map_err(db)?;
        let rows = statement
            .query_map([], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(db)?;
        let mut journal = Vec::new();
        for row in rows {
            let (satellite, id) = row.map_err(db)?;
            journal.push((satellite_id(&satellite)?, piece_id(id)?));
        }
        Ok(journal)
    }

    /// The space used per satellite, as recorded.
    pub fn usage(&self) -> Result<HashMap<NodeId, Usage>> {
        let mut statement = self
            .conn
            .prepare("SELECT satellite, pieces, bytes, trash_pieces, trash_bytes FROM usage")
            .map_err(db)?;
        let rows = statement
            .query_map([], |r| {
                Ok((
                    r.get::<_, Vec<u8>>(0)?,
                    Usage {
                        pieces: to_u64(r.get(1)?),
                        bytes: to_u64(r.get(2)?),
                        trash_pieces: to_u64(r.get(3)?),
                        trash_bytes: to_u64(r.get(4)?),
                    },
                ))
            })
            .map_err(db)?;
        let mut usage = HashMap::new();
        for row in rows {
            let (satellite, counts) = row.map_err(db)?;
            usage.insert(satellite_id(&satellite)?, counts);
        }
        Ok(usage)
    }

    /// The row of one piece.
    pub fn get(&self, satellite: &NodeId, id: &PieceId) -> Result<Option<PieceRow>> {
        get_row(&self.conn, satellite, id)
    }

    /// Notes that the files of `ids` are about to change: from here until
    /// [`Index::settle`], a crash leaves them to be checked on disk.
    pub fn begin(&mut self, satellite: &NodeId, ids: &[PieceId]) -> Result<()> {
        let tx = self.conn.transaction().map_err(db)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO journal (satellite, piece_id) VALUES (?1, ?2) \
                     ON CONFLICT DO NOTHING",
                )
                .map_err(db)?;
            for id in ids {
                insert
                    .execute(params![satellite.as_bytes(), id.as_slice()])
                    .map_err(db)?;
            }
        }
        tx.commit().map_err(db)
    }

    /// Sets the rows of `changes` (`None`: no file) and the usage with them,
    /// and clears their journal entries, in one transaction. Returns what
    /// each change did to the usage.
    pub fn settle(
        &mut self,
        satellite: &NodeId,
        changes: &[(PieceId, Option<PieceRow>)],
    ) -> Result<Vec<Settled>> {
        let tx = self.conn.transaction().map_err(db)?;
        let mut settled = Vec::with_capacity(changes.len());
        let mut total_before = Usage::default();
        let mut total_after = Usage::default();
        for (id, row) in changes {
            let before = Usage::of(get_row(&tx, satellite, id)?.as_ref());
            let after = Usage::of(row.as_ref());
            set_row(&tx, satellite, id, row.as_ref())?;
            total_before.shift(&before, &Usage::default());
            total_after.shift(&after, &Usage::default());
            settled.push(Settled {
                satellite: *satellite,
                before,
                after,
            });
        }
        let mut usage: Usage = tx
            .query_row(
                "SELECT pieces, bytes, trash_pieces, trash_bytes FROM usage WHERE satellite = ?1",
                [satellite.as_bytes()],
                |r| {
                    Ok(Usage {
                        pieces: to_u64(r.get(0)?),
                        bytes: to_u64(r.get(1)?),
                        trash_pieces: to_u64(r.get(2)?),
                        trash_bytes: to_u64(r.get(3)?),
                    })
                },
            )
            .optional()
            .map_err(db)?
            .unwrap_or_default();
        usage.shift(&total_after, &total_before);
        tx.execute(
            "INSERT INTO usage (satellite, pieces, bytes, trash_pieces, trash_bytes) \
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (satellite) DO UPDATE SET \
             pieces = excluded.pieces, bytes = excluded.bytes, \
             trash_pieces = excluded.trash_pieces, trash_bytes = excluded.trash_bytes",
            params![
                satellite.as_bytes(),
                to_i64(usage.pieces),
                to_i64(usage.bytes),
                to_i64(usage.trash_pieces),
                to_i64(usage.trash_bytes)
            ],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(settled)
    }

    /// Stored pieces that expired by `now`, at most `limit`.
    pub fn expired(&self, now: i64, limit: usize) -> Result<Vec<(NodeId, PieceId)>> {
        self.pairs(
            "SELECT satellite, piece_id FROM pieces WHERE expiration <> 0 AND expiration <= ?1 \
             AND trashed_at IS NULL ORDER BY expiration LIMIT ?2",
            now,
            limit,
        )
    }

    /// Pieces in the trash since before `cutoff`, at most `limit`.
    pub fn trashed_before(&self, cutoff: i64, limit: usize) -> Result<Vec<(NodeId, PieceId)>> {
        self.pairs(
            "SELECT satellite, piece_id FROM pieces WHERE trashed_at IS NOT NULL \
             AND trashed_at < ?1 ORDER BY trashed_at LIMIT ?2",
            cutoff,
            limit,
        )
    }

    fn pairs(&self, sql: &str, bound: i64, limit: usize) -> Result<Vec<(NodeId, PieceId)>> {
        let mut statement = self.conn.prepare_cached(sql).map_err(db)?;
        let rows = statement
            .query_map(params![bound, to_i64(limit as u64)], |r| {
                Ok((r.get::<_, Vec<u8>>(0)?, r.get::<_, Vec<u8>>(1)?))
            })
            .map_err(db)?;
        let mut pairs = Vec::new();
        for row in rows {
            let (satellite, id) = row.map_err(db)?;
            pairs.push((satellite_id(&satellite)?, piece_id(id)?));
        }
        Ok(pairs)
    }

    /// The pieces of `satellite` after `after` in id order, at most `limit`,
    /// with their rows: every one, or only those in `place` (`Trash(_)`
    /// matches the trash whatever the time).
    pub fn pieces(
        &self,
        satellite: &NodeId,
        place: Option<Place>,
        after: Option<&PieceId>,
        limit: usize,
    ) -> Result<Vec<(PieceId, PieceRow)>> {
        let filter = match place {
            None => "",
            Some(Place::Stored) => "AND trashed_at IS NULL",
            Some(Place::Trash(_)) => "AND trashed_at IS NOT NULL",
        };
        let sql = format!(
            "SELECT piece_id, size, created, expiration, trashed_at FROM pieces \
             WHERE satellite = ?1 AND piece_id > ?2 {filter} ORDER BY piece_id LIMIT ?3"
        );
        let mut statement = self.conn.prepare_cached(&sql).map_err(db)?;
        let after: &[u8] = after.map_or(&[], |id| id.as_slice());
        let rows = statement
            .query_map(
                params![satellite.as_bytes(), after, to_i64(limit as u64)],
                |r| Ok((r.get::<_, Vec<u8>>(0)?, row_from(r, 1)?)),
            )
            .map_err(db)?;
        let mut pieces = Vec::new();
        for row in rows {
            let (id, row) = row.map_err(db)?;
            pieces.push((piece_id(id)?, row));
        }
        Ok(pieces)
    }

    /// Every satellite with a row in the index.
    pub fn satellites(&self) -> Result<Vec<NodeId>> {
        let mut statement = self
            .conn
            .prepare("SELECT DISTINCT satellite FROM pieces")
            .map_err(db)?;
        let rows = statement
            .query_map([], |r| r.get::<_, Vec<u8>>(0))
            .map_err(db)?;
        let mut satellites = Vec::new();
        for row in rows {
            satellites.push(satellite_id(&row.map_err(db)?)?);
        }
        Ok(satellites)
    }
}

/// Reads the columns `size, created, expiration, trashed_at` from `first` on.
fn row_from(r: &rusqlite::Row<'_>, first: usize) -> rusqlite::Result<PieceRow> {
    let trashed_at: Option<i64> = r.get(first + 3)?;
    Ok(PieceRow {
        size: to_u64(r.get(first)?),
        created: r.get(first + 1)?,
        expiration: r.get(first + 2)?,
        place: trashed_at.map_or(Place::Stored, Place::Trash),
    })
}

fn get_row(conn: &Connection, satellite: &NodeId, id: &PieceId) -> Result<Option<PieceRow>> {
    conn.prepare_cached(
        "SELECT size, created, expiration, trashed_at FROM pieces \
         WHERE satellite = ?1 AND piece_id = ?2",
    )
    .map_err(db)?
    .query_row(params![satellite.as_bytes(), id.as_slice()], |r| {
        row_from(r, 0)
    })
    .optional()
    .map_err(db)
}

fn set_row(
    tx: &Transaction<'_>,
    satellite: &NodeId,
    id: &PieceId,
    row: Option<&PieceRow>,
) -> Result<()> {
    match row {
        Some(row) => {
            let trashed_at = match row.place {
                Place::Stored => None,
                Place::Trash(at) => Some(at),
            };
            tx.prepare_cached(
                "INSERT INTO pieces (satellite, piece_id, size, created, expiration, trashed_at) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6) ON CONFLICT (satellite, piece_id) DO UPDATE SET \
                 size = excluded.size, created = excluded.created, \
                 expiration = excluded.expiration, trashed_at = excluded.trashed_at",
            )
            .map_err(db)?
            .execute(params![
                satellite.as_bytes(),
                id.as_slice(),
                to_i64(row.size),
                row.created,
                row.expiration,
                trashed_at
            ])
            .map_err(db)?;
        }
        None => {
            tx.prepare_cached("DELETE FROM pieces WHERE satellite = ?1 AND piece_id = ?2")
                .map_err(db)?
                .execute(params![satellite.as_bytes(), id.as_slice()])
                .map_err(db)?;
        }
    }
    tx.prepare_cached("DELETE FROM journal WHERE satellite = ?1 AND piece_id = ?2")
        .map_err(db)?
        .execute(params![satellite.as_bytes(), id.as_slice()])
        .map_err(db)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stored(size: u64) -> PieceRow {
        PieceRow {
            size,
            created: 100,
            expiration: 0,
            place: Place::Stored,
        }
    }

    #[test]
    fn usage_follows_every_change_and_survives_reopening() {
        let dir = tempfile::tempdir().unwrap();
        let satellite = NodeId::from_bytes(&[1; 32]).unwrap();
        let other = NodeId::from_bytes(&[2; 32]).unwrap();
        let (mut index, opened) = Index::open(dir.path()).unwrap();
        assert!(opened.created);
        index.begin(&satellite, &[[1; 32], [2; 32]]).unwrap();
        index
            .settle(
                &satellite,
                &[([1; 32], Some(stored(10))), ([2; 32], Some(stored(20)))],
            )
            .unwrap();
        index.settle(&other, &[([1; 32], Some(stored(5)))]).unwrap();
        let trashed = PieceRow {
            place: Place::Trash(500),
            ..stored(20)
        };
        let settled = index
            .settle(&satellite, &[([2; 32], Some(trashed))])
            .unwrap();
        assert_eq!(settled[0].before.bytes, 20);
        assert_eq!(settled[0].after.trash_bytes, 20);
        let usage = index.usage().unwrap();
        assert_eq!(
            usage[&satellite],
            Usage {
                pieces: 1,
                bytes: 10,
                trash_pieces: 1,
                trash_bytes: 20
            }
        );
        assert_eq!(usage[&other].bytes, 5);
        assert_eq!(
            index.trashed_before(501, 10).unwrap(),
            vec![(satellite, [2; 32])]
        );
        assert!(index.trashed_before(500, 10).unwrap().is_empty());
        index.close().unwrap();
        drop(index);

        let (mut index, opened) = Index::open(dir.path()).unwrap();
        assert!(!opened.created && !opened.lost_transactions);
        assert!(opened.journal.is_empty());
        assert_eq!(index.usage().unwrap()[&satellite].trash_bytes, 20);
        index
            .settle(&satellite, &[([1; 32], None), ([2; 32], None)])
            .unwrap();
        assert_eq!(index.usage().unwrap()[&satellite], Usage::default());
        assert!(index.get(&satellite, &[1; 32]).unwrap().is_none());
    }

    #[test]
    fn an_unsettled_change_is_handed_back_at_the_next_open() {
        let dir = tempfile::tempdir().unwrap();
        let satellite = NodeId::from_bytes(&[1; 32]).unwrap();
        let (mut index, _) = Index::open(dir.path()).unwrap();
        index.begin(&satellite, &[[9; 32]]).unwrap();
        drop(index); // as if the process died here
        let (_, opened) = Index::open(dir.path()).unwrap();
        assert_eq!(opened.journal, vec![(satellite, [9; 32])]);
        // Same boot: committed transactions are all there.
        assert!(!opened.lost_transactions);
    }

    #[test]
    fn pieces_page_in_id_order_by_place() {
        let dir = tempfile::tempdir().unwrap();
        let satellite = NodeId::from_bytes(&[1; 32]).unwrap();
        let (mut index, _) = Index::open(dir.path()).unwrap();
        let rows: Vec<_> = (1..=5u8)
            .map(|i| {
                let place = if i % 2 == 0 {
                    Place::Trash(7)
                } else {
                    Place::Stored
                };
                (
                    [i; 32],
                    Some(PieceRow {
                        place,
                        ..stored(u64::from(i))
                    }),
                )
            })
            .collect();
        index.settle(&satellite, &rows).unwrap();
        let first = index
            .pieces(&satellite, Some(Place::Stored), None, 2)
            .unwrap();
        assert_eq!(first.iter().map(|p| p.0[0]).collect::<Vec<_>>(), vec![1, 3]);
        let next = index
            .pieces(&satellite, Some(Place::Stored), Some(&first[1].0), 2)
            .unwrap();
        assert_eq!(next.iter().map(|p| p.0[0]).collect::<Vec<_>>(), vec![5]);
        let trash = index
            .pieces(&satellite, Some(Place::Trash(0)), None, 10)
            .unwrap();
        assert_eq!(trash.iter().map(|p| p.0[0]).collect::<Vec<_>>(), vec![2, 4]);
        assert_eq!(index.pieces(&satellite, None, None, 10).unwrap().len(), 5);
        assert_eq!(index.satellites().unwrap(), vec![satellite]);
    }
}
