//! Multipart uploads: recording their parts, listing parts and uploads,
//! aborting, and choosing the parts a completed upload is made of.

use std::collections::HashMap;

use archipel_proto::multipart;

use super::objects::Object;
use super::segments::{removed_segments, RemovedSegment, Segment, SegmentRecord};
use super::{BeginWrite, Metabase, Pool, MAX_LIST_LIMIT, OBJECT_COLUMNS, SEGMENT_COLUMNS};
use crate::{Error, Result};

/// A recorded part of a multipart upload.
#[derive(Clone, Debug, PartialEq, Eq, sqlx::FromRow)]
pub struct Part {
    pub part_number: i64,
    pub plain_size: i64,
    pub segment_count: i64,
    pub encrypted_info: Vec<u8>,
    pub created_at: i64,
}

/// Splits a multipart upload's segments (in position order) into those of
/// the `chosen` parts (number, encrypted info as the client listed it), which
/// must be recorded with that info, ascending and each complete, and the rest.
pub(super) fn choose_parts(
    segments: Vec<Segment>,
    recorded: &[Part],
    chosen: &[(u32, Vec<u8>)],
) -> Result<(Vec<Segment>, Vec<Segment>)> {
    if chosen.is_empty() {
        return Err(Error::InvalidArgument(
            "a multipart upload is completed with at least one part".into(),
        ));
    }
    if chosen.windows(2).any(|w| w[0].0 >= w[1].0) {
        return Err(Error::InvalidArgument(
            "the parts must be named in ascending order".into(),
        ));
    }
    let mut wanted = HashMap::new();
    for (number, info) in chosen {
        let part = recorded
            .iter()
            .find(|p| p.part_number == i64::from(*number))
            .ok_or_else(|| Error::FailedPrecondition(format!("part {number} was not uploaded")))?;
        if part.encrypted_info != *info {
            return Err(Error::FailedPrecondition(format!(
                "part {number} was recorded again since it was listed"
            )));
        }
        wanted.insert(*number, (part, 0i64, 0i64));
    }
    let (kept, dropped): (Vec<Segment>, Vec<Segment>) = segments
        .into_iter()
        .partition(|s| wanted.contains_key(&multipart::part_of(s.position)));
    for segment in &kept {
        let number = multipart::part_of(segment.position);
        if let Some((_, count, size)) = wanted.get_mut(&number) {
            if i64::from(multipart::index_in_part(segment.position)) != *count {
                return Err(Error::FailedPrecondition(format!(
                    "segment {count} of part {number} is missing"
                )));
            }
            *count += 1;
            *size = size.saturating_add(segment.plain_size);
        }
    }
    for (number, (part, count, size)) in &wanted {
        if *count != part.segment_count || *size != part.plain_size {
            return Err(Error::FailedPrecondition(format!(
                "part {number} has changed since it was recorded"
            )));
        }
    }
    Ok((kept, dropped))
}

impl Metabase {
    /// Records part `part` of a pending multipart upload as its segments
    /// `0 .. n` holding `plain_size` bytes, segment `i` committed with the
    /// key nonce `segment_key_nonces[i]` (so that they are this upload's);
    /// segments beyond them (left by an earlier, longer upload of the part)
    /// are removed and returned. Recording a part again replaces its record.
    #[allow(clippy::too_many_arguments)]
    pub async fn commit_part(
        &self,
        project: &[u8],
        stream_id: &[u8],
        part: u32,
        segment_key_nonces: &[Vec<u8>],
        plain_size: i64,
        encrypted_info: &[u8],
        now: i64,
    ) -> Result<Vec<RemovedSegment>> {
        let segment_count = u32::try_from(segment_key_nonces.len()).unwrap_or(u32::MAX);
        let Some(first) = multipart::position(part, 0) else {
            return Err(Error::InvalidArgument(format!(
                "part number {part} is not between 1 and {}",
                multipart::MAX_PART
            )));
        };
        if segment_count == 0 || segment_count > multipart::MAX_PART_SEGMENTS {
            return Err(Error::InvalidArgument(format!(
                "a part has 1 to {} segments, not {segment_count}",
                multipart::MAX_PART_SEGMENTS
            )));
        }
        let first = i64::from(first);
        let end = first + i64::from(segment_count);
        let part_end = first + i64::from(multipart::MAX_PART_SEGMENTS);
        let segments_sql = format!(
            "SELECT {SEGMENT_COLUMNS} FROM segments WHERE stream_id = $1 \
             AND position >= $2 AND position < $3 ORDER BY position"
        );
        on_pool!(self, pool => {
            let _writing = self.writing().await;
            let mut tx = pool.begin_write().await?;
            let pending = sqlx::query(
                "UPDATE objects SET segment_count = segment_count WHERE stream_id = $1 \
                 AND project_id = $2 AND committed = 0 AND multipart = 1",
            )
            .bind(stream_id)
            .bind(project)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if pending == 0 {
                return Err(Error::NotFound("a pending multipart upload for this stream".into()));
            }
            let stale: Vec<SegmentRecord> = sqlx::query_as(&segments_sql)
                .bind(stream_id)
                .bind(end)
                .bind(part_end)
                .fetch_all(&mut *tx)
                .await?;
            sqlx::query("DELETE FROM segments WHERE stream_id = $1 AND position >= $2 AND position < $3")
                .bind(stream_id)
                .bind(end)
                .bind(part_end)
                .execute(&mut *tx)
                .await?;
            let records: Vec<SegmentRecord> = sqlx::query_as(&segments_sql)
                .bind(stream_id)
                .bind(first)
                .bind(end)
                .fetch_all(&mut *tx)
                .await?;
            let mut total = 0i64;
            for (index, record) in records.iter().enumerate() {
                if record.position != first + index as i64 {
                    return Err(Error::FailedPrecondition(format!(
                        "segment {index} of part {part} was not uploaded"
                    )));
                }
                if segment_key_nonces.get(index) != Some(&record.encrypted_key_nonce) {
                    return Err(Error::FailedPrecondition(format!(
                        "segment {index} of part {part} is another upload's: \
                         was the part uploaded twice at once?"
                    )));
                }
                total = total.saturating_add(record.plain_size);
            }
            if records.len() != segment_count as usize || total != plain_size {
                return Err(Error::FailedPrecondition(format!(
                    "part {part} holds {} segments of {total} bytes, not {segment_count} of \
                     {plain_size}: was it uploaded twice at once?",
                    records.len()
                )));
            }
            sqlx::query("DELETE FROM parts WHERE stream_id = $1 AND part_number = $2")
                .bind(stream_id)
                .bind(i64::from(part))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "INSERT INTO parts (stream_id, part_number, plain_size, segment_count, \
                 encrypted_info, created_at) VALUES ($1, $2, $3, $4, $5, $6)",
            )
            .bind(stream_id)
            .bind(i64::from(part))
            .bind(plain_size)
            .bind(i64::from(segment_count))
            .bind(encrypted_info)
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let removed = removed_segments(stale)?;
            queue_deletions!(tx, &removed);
            tx.commit().await?;
            Ok(removed)
        })
    }

    /// The multipart upload of a stream and its parts numbered above `after`,
    /// at most `limit` of them, and whether more follow. A completed upload
    /// is its committed object (as long as that is there), with no parts.
    pub async fn list_parts(
        &self,
        project: &[u8],
        stream_id: &[u8],
        after: u32,
        limit: usize,
    ) -> Result<(Object, Vec<Part>, bool)> {
        let object = self.object_by_stream(project, stream_id).await?;
        if object.multipart == 0 {
            return Err(Error::NotFound(
                "a pending multipart upload for this stream".into(),
            ));
        }
        if object.committed != 0 {
            // Completed: the parts are the object's now.
            return Ok((object, Vec::new(), false));
        }
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let mut parts: Vec<Part> = on_pool!(self, pool => {
            sqlx::query_as(
                "SELECT part_number, plain_size, segment_count, encrypted_info, created_at \
                 FROM parts WHERE stream_id = $1 AND part_number > $2 \
                 ORDER BY part_number LIMIT $3",
            )
            .bind(stream_id)
            .bind(i64::from(after))
            .bind(limit as i64 + 1)
            .fetch_all(pool)
            .await?
        });
        let more = parts.len() > limit;
        parts.truncate(limit);
        Ok((object, parts, more))
    }

    /// Pending multipart uploads of a bucket, by key then stream id, after the
    /// one of `cursor` (a key and stream id), at most `limit`, and whether more follow.
    pub async fn list_multipart_uploads(
        &self,
        project: &[u8],
        bucket: &str,
        cursor: Option<(&[u8], &[u8])>,
        limit: usize,
    ) -> Result<(Vec<Object>, bool)> {
        let limit = limit.clamp(1, MAX_LIST_LIMIT);
        let (key, stream) = cursor.unwrap_or((&[], &[]));
        let sql = format!(
            "SELECT {OBJECT_COLUMNS} FROM objects WHERE project_id = $1 AND bucket = $2 \
             AND multipart = 1 AND committed = 0 \
             AND (object_key > $3 OR (object_key = $3 AND stream_id > $4)) \
             ORDER BY object_key, stream_id LIMIT $5"
        );
        let mut objects: Vec<Object> = on_pool!(self, pool => {
            sqlx::query_as(&sql)
                .bind(project)
                .bind(bucket)
                .bind(key)
                .bind(stream)
                .bind(limit as i64 + 1)
                .fetch_all(pool)
                .await?
        });
        let more = objects.len() > limit;
        objects.truncate(limit);
        Ok((objects, more))
    }

    /// Deletes a pending object of the project with whatever it stored;
    /// returns its remote segments.
    pub async fn abort_object(
        &self,
        project: &[u8],
        stream_id: &[u8],
    ) -> Result<Vec<RemovedSegment>> {
        let object = self.object_by_stream(project, stream_id).await?;
        if object.committed != 0 {
            return Err(Error::FailedPrecondition(
                "the upload is already complete".into(),
            ));
        }
        self.delete_stream(stream_id, 0)
            .await?
            .ok_or_else(|| Error::NotFound("a pending object for this stream".into()))
    }
}
