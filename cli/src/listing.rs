//! `archipel ls`: buckets, one level, or everything below a prefix, for
//! people (sizes like `4.2 MiB`, times to the minute in UTC) or as JSON
//! Lines (one object per line, so that it streams).
//!
//! A recursive listing, and any listing of a bucket with unencrypted names,
//! is printed page by page as the satellite returns them: memory stays at
//! one page of 1000 entries for any number of objects. In a bucket with
//! encrypted names the satellite's order is that of the encrypted names,
//! so `ls -r` there is sorted within each page only; one level (`ls`
//! without `-r`) is read whole and sorted, as levels are usually small.

use std::pin::pin;

use archipel_client::{ListCursor, ListEntry, Project};
use futures::{Stream, TryStreamExt};

use crate::output::{self, human_size, human_time};
use crate::CliError;

/// The listing below `prefix`, one satellite page at a time (each sorted).
pub(crate) fn pages(
    project: &Project,
    bucket: &str,
    prefix: &str,
    recursive: bool,
) -> impl Stream<Item = Result<Vec<ListEntry>, CliError>> + Send + 'static {
    let (project, bucket, prefix) = (project.clone(), bucket.to_string(), prefix.to_string());
    // `Some(cursor)`: a page to read after `cursor`; `None`: the end.
    futures::stream::try_unfold(Some(None::<ListCursor>), move |state| {
        let (project, bucket, prefix) = (project.clone(), bucket.clone(), prefix.clone());
        async move {
            let Some(cursor) = state else {
                return Ok(None);
            };
            let page = project
                .list_page(&bucket, &prefix, recursive, cursor.as_ref())
                .await?;
            Ok(Some((page.entries, page.next.map(Some))))
        }
    })
}

/// `archipel ls [ap://BUCKET/PREFIX] [-r] [--json]`.
pub(crate) async fn ls(
    project: &Project,
    location: Option<&str>,
    recursive: bool,
    json: bool,
) -> Result<(), CliError> {
    let Some(text) = location else {
        let mut out = String::new();
        for bucket in project.list_buckets().await? {
            if json {
                out.push_str(&to_json(&bucket)?);
            } else {
                out.push_str(&format!("{}  {}", human_time(bucket.created), bucket.name));
            }
            out.push('\n');
        }
        return output::print(&out);
    };
    let loc = crate::location(text)?;
    if recursive || project.lists_in_order(&loc.bucket).await? {
        let mut pages = pin!(pages(project, &loc.bucket, &loc.key, recursive));
        while let Some(page) = pages.try_next().await? {
            print_entries(&page, json)?;
        }
        Ok(())
    } else {
        print_entries(&project.list(&loc.bucket, &loc.key, false).await?, json)
    }
}

fn to_json(value: &impl serde::Serialize) -> Result<String, CliError> {
    serde_json::to_string(value)
        .map_err(|e| CliError::Usage(format!("cannot format the listing as JSON: {e}")))
}

/// Prints entries with one write: `DATE  SIZE  KEY` lines (prefixes show
/// `PRE`), or one JSON object per line.
fn print_entries(entries: &[ListEntry], json: bool) -> Result<(), CliError> {
    if entries.is_empty() {
        return Ok(());
    }
    let mut out = String::new();
    for entry in entries {
        let line = if json {
            to_json(entry)?
        } else if entry.is_prefix {
            format!("{:16}  {:>10}  {}", "", "PRE", entry.key)
        } else {
            let created = entry.created.map(human_time).unwrap_or_default();
            format!(
                "{created:16}  {:>10}  {}",
                human_size(entry.size),
                entry.key
            )
        };
        out.push_str(&line);
        out.push('\n');
    }
    output::print(&out)
}
