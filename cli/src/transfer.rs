//! The commands that move objects: `cp` (uploads, downloads, server-side
//! copies, one object or a whole tree with `-r`), `mv`, `rm` and `cat`, with
//! one progress bar for all the bytes of a command.
//!
//! `--parallelism N` means N objects in flight for a tree, or N segments in
//! flight for one object (the library then holds up to N segments of
//! plaintext, see `UploadOptions::parallelism`); never both, so memory stays
//! at N segments. Trees are walked lazily: the local directory entry by
//! entry, the network listing page by page, so a million objects cost the
//! memory of a page.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::SystemTime;

use archipel_client::{
    ByteRange, CopyMetadata, ListEntry, ObjectInfo, Progress, Project, UploadOptions,
};
use futures::{Stream, TryStreamExt};
use indicatif::{ProgressBar, ProgressStyle};
use tokio::io::AsyncRead;

use crate::listing::pages;
use crate::{io_error, parse_location, CliError, Location};

/// A single transfer at least this large shows a progress bar on a terminal.
const PROGRESS_THRESHOLD: u64 = 8 << 20;

/// Flags of `cp` that describe what an upload stores.
#[derive(clap::Args, Default)]
pub(crate) struct UploadFlags {
    /// When the network may delete the uploaded objects: a date
    /// (2027-01-01), an RFC 3339 time, or a duration from now (+30d).
    #[arg(long, value_parser = crate::parse_time)]
    expires: Option<SystemTime>,
    /// The objects' content type (default: guessed from the file name's
    /// extension for common types). On a copy between two ap:// locations,
    /// --content-type and --metadata replace the source's.
    #[arg(long)]
    content_type: Option<String>,
    /// User metadata KEY=VALUE, stored encrypted (repeatable).
    #[arg(long = "metadata", value_name = "KEY=VALUE", value_parser = parse_metadata)]
    metadata: Vec<(String, String)>,
}

fn parse_metadata(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_string(), value.to_string())),
        _ => Err(format!("{text:?} is not KEY=VALUE")),
    }
}

impl UploadFlags {
    fn given(&self) -> bool {
        self.expires.is_some() || self.content_type.is_some() || !self.metadata.is_empty()
    }

    fn options(&self, name: &str, progress: Option<Progress>, parallelism: usize) -> UploadOptions {
        UploadOptions {
            expires: self.expires,
            content_type: self
                .content_type
                .clone()
                .or_else(|| guess_content_type(name).map(str::to_string)),
            metadata: self.metadata.iter().cloned().collect(),
            progress,
            parallelism,
            ..Default::default()
        }
    }

    /// What a server-side copy's metadata becomes.
    fn copy_metadata(&self) -> Result<CopyMetadata, CliError> {
        if self.expires.is_some() {
            return Err(CliError::Usage(
                "--expires applies to uploads; a copy between ap:// locations keeps the source's expiration".into(),
            ));
        }
        if self.content_type.is_none() && self.metadata.is_empty() {
            return Ok(CopyMetadata::Keep);
        }
        Ok(CopyMetadata::Replace {
            content_type: self.content_type.clone(),
            metadata: self.metadata.iter().cloned().collect::<BTreeMap<_, _>>(),
        })
    }
}

/// The content type of common file types, by the name's extension.
fn guess_content_type(name: &str) -> Option<&'static str> {
    let (_, extension) = name.rsplit_once('.')?;
    Some(match extension.to_ascii_lowercase().as_str() {
        "html" | "htm" => "text/html",
        "css" => "text/css",
        "js" | "mjs" => "text/javascript",
        "txt" | "log" => "text/plain",
        "md" => "text/markdown",
        "csv" => "text/csv",
        "json" => "application/json",
        "xml" => "application/xml",
        "pdf" => "application/pdf",
        "zip" => "application/zip",
        "gz" | "tgz" => "application/gzip",
        "tar" => "application/x-tar",
        "wasm" => "application/wasm",
        "png" => "image/png",
        "jpg" | "jpeg" => "image/jpeg",
        "gif" => "image/gif",
        "webp" => "image/webp",
        "avif" => "image/avif",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "mp4" | "m4v" => "video/mp4",
        "webm" => "video/webm",
        "mov" => "video/quicktime",
        "mkv" => "video/x-matroska",
        "mp3" => "audio/mpeg",
        "m4a" => "audio/mp4",
        "ogg" | "oga" => "audio/ogg",
        "wav" => "audio/wav",
        "flac" => "audio/flac",
        _ => return None,
    })
}

/// One progress bar for all the bytes of a command, on standard error
/// when it is a terminal (nothing otherwise).
pub(crate) struct Bar(Option<ProgressBar>);

impl Bar {
    /// A bar for `total` bytes; none below [`PROGRESS_THRESHOLD`] when
    /// `small_quiet`, so that small single transfers draw nothing.
    fn new(total: Option<u64>, small_quiet: bool) -> Bar {
        let quiet = small_quiet && total.is_some_and(|t| t < PROGRESS_THRESHOLD);
        if !std::io::stderr().is_terminal() || quiet {
            return Bar(None);
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total).with_style(
                ProgressStyle::with_template(
                    "{bar:40} {bytes}/{total_bytes} {bytes_per_sec} eta {eta} {msg}",
                )
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
            ),
            None => ProgressBar::new_spinner().with_style(
                ProgressStyle::with_template("{spinner} {bytes} {bytes_per_sec}")
                    .unwrap_or_else(|_| ProgressStyle::default_spinner()),
            ),
        };
        Bar(Some(bar))
    }

    /// A bar whose total grows as a tree walk finds objects.
    fn growing() -> Bar {
        Bar::new(Some(0), false)
    }

    fn add_total(&self, bytes: u64) {
        if let Some(bar) = &self.0 {
            bar.inc_length(bytes);
        }
    }

    fn message(&self, text: String) {
        if let Some(bar) = &self.0 {
            bar.set_message(text);
        }
    }

    /// The progress callback of one transfer: it reports that transfer's
    /// bytes so far, the bar adds what is new.
    fn tracker(&self) -> Option<Progress> {
        let bar = self.0.clone()?;
        let last = AtomicU64::new(0);
        Some(Arc::new(move |done: u64| {
            let before = last.swap(done, Ordering::Relaxed);
            bar.inc(done.saturating_sub(before));
        }))
    }

    fn finish(&self) {
        if let Some(bar) = &self.0 {
            bar.finish_and_clear();
        }
    }
}

/// Ensures a non-empty key prefix ends with `/`: `-r` works on whole path
/// components (`ap://b/photos` is everything below `photos/`).
fn as_directory(key: &str) -> String {
    if key.is_empty() || key.ends_with('/') {
        key.to_string()
    } else {
        format!("{key}/")
    }
}

/// The last path component of a key.
fn base_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// The objects (not prefixes) below `prefix`, page by page.
fn objects(
    project: &Project,
    bucket: &str,
    prefix: &str,
) -> impl Stream<Item = Result<ListEntry, CliError>> + Send + 'static {
    pages(project, bucket, prefix, true)
        .map_ok(|page| futures::stream::iter(page.into_iter().filter(|e| !e.is_prefix).map(Ok)))
        .try_flatten()
}

/// `archipel cp`.
pub(crate) async fn cp(
    project: &Project,
    source: &str,
    destination: &str,
    recursive: bool,
    parallelism: usize,
    flags: &UploadFlags,
) -> Result<(), CliError> {
    match (parse_location(source), parse_location(destination)) {
        (None, Some(dest)) if recursive => {
            upload_tree(project, Path::new(source), dest, parallelism, flags).await
        }
        (None, Some(dest)) => {
            let bucket = dest.bucket.clone();
            let info = upload(project, source, dest, parallelism, flags).await?;
            eprintln!("Uploaded {} bytes to ap://{bucket}/{}", info.size, info.key);
            Ok(())
        }
        (Some(src), None) => {
            if flags.given() {
                return Err(CliError::Usage(
                    "--expires, --content-type and --metadata apply to uploads and copies, not downloads".into(),
                ));
            }
            if recursive {
                return download_tree(project, src, Path::new(destination), parallelism).await;
            }
            let target = if destination == "-" {
                None
            } else if Path::new(destination).is_dir() {
                Some(Path::new(destination).join(base_name(&src.key)))
            } else {
                Some(PathBuf::from(destination))
            };
            let n = download(project, &src, target.as_deref(), None, parallelism, None).await?;
            if destination != "-" {
                eprintln!("Downloaded {n} bytes to {destination}");
            }
            Ok(())
        }
        (Some(src), Some(dest)) => {
            let metadata = flags.copy_metadata()?;
            if recursive {
                let n = copy_tree(project, &src, &dest, parallelism, metadata, false).await?;
                eprintln!(
                    "Copied {n} objects to ap://{}/{}",
                    dest.bucket,
                    as_directory(&dest.key)
                );
            } else {
                let key = copy_one(project, &src, &dest, metadata, false).await?;
                eprintln!(
                    "Copied ap://{}/{} to ap://{}/{key}",
                    src.bucket, src.key, dest.bucket
                );
            }
            Ok(())
        }
        (None, None) => Err(CliError::Usage(
            "one side of cp must be a location like ap://bucket/key".into(),
        )),
    }
}

/// `archipel mv`: moves objects within the network (a server-side copy,
/// then the source is deleted).
pub(crate) async fn mv(
    project: &Project,
    source: &str,
    destination: &str,
    recursive: bool,
    parallelism: usize,
) -> Result<(), CliError> {
    let (Some(src), Some(dest)) = (parse_location(source), parse_location(destination)) else {
        return Err(CliError::Usage(
            "mv moves objects within the network: both sides are locations like ap://bucket/key (use cp to upload or download)".into(),
        ));
    };
    if recursive {
        let n = copy_tree(project, &src, &dest, parallelism, CopyMetadata::Keep, true).await?;
        eprintln!(
            "Moved {n} objects to ap://{}/{}",
            dest.bucket,
            as_directory(&dest.key)
        );
    } else {
        let key = copy_one(project, &src, &dest, CopyMetadata::Keep, true).await?;
        eprintln!(
            "Moved ap://{}/{} to ap://{}/{key}",
            src.bucket, src.key, dest.bucket
        );
    }
    Ok(())
}

/// `archipel rm`.
pub(crate) async fn rm(
    project: &Project,
    object: &str,
    recursive: bool,
    parallelism: usize,
) -> Result<(), CliError> {
    if !recursive {
        let loc = crate::object_location(object)?;
        project.delete_object(&loc.bucket, &loc.key).await?;
        return crate::output::outln!("Removed {object}");
    }
    let loc = crate::location(object)?;
    let prefix = as_directory(&loc.key);
    let removed = AtomicU64::new(0);
    objects(project, &loc.bucket, &prefix)
        .try_for_each_concurrent(parallelism, |entry| {
            let removed = &removed;
            let bucket = &loc.bucket;
            async move {
                project.delete_object(bucket, &entry.key).await?;
                removed.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await?;
    crate::output::outln!(
        "Removed {} objects below ap://{}/{prefix}",
        removed.into_inner(),
        loc.bucket
    )
}

/// `archipel cat`: the object, or a range of it, to standard output.
pub(crate) async fn cat(
    project: &Project,
    object: &str,
    range: Option<ByteRange>,
) -> Result<(), CliError> {
    let loc = crate::object_location(object)?;
    download(project, &loc, None, range, 1, None).await?;
    Ok(())
}

/// Uploads one file (or standard input for `-`) to `dest` (a key, or a
/// prefix ending with `/` that the file's name is appended to).
async fn upload(
    project: &Project,
    source: &str,
    dest: Location,
    parallelism: usize,
    flags: &UploadFlags,
) -> Result<ObjectInfo, CliError> {
    let key = if dest.key.is_empty() || dest.key.ends_with('/') {
        let name = Path::new(source).file_name().ok_or_else(|| {
            CliError::Usage(format!("give an object key to upload {source:?} to"))
        })?;
        format!("{}{}", dest.key, name.to_string_lossy())
    } else {
        dest.key.clone()
    };
    let (reader, size, name): (Box<dyn AsyncRead + Unpin + Send>, Option<u64>, &str) =
        if source == "-" {
            (Box::new(tokio::io::stdin()), None, "")
        } else {
            let file = tokio::fs::File::open(source)
                .await
                .map_err(io_error("open", source))?;
            let metadata = file.metadata().await.map_err(io_error("read", source))?;
            if metadata.is_dir() {
                return Err(CliError::Usage(format!(
                    "{source} is a directory: upload it with cp -r"
                )));
            }
            (Box::new(file), Some(metadata.len()), &key)
        };
    let bar = Bar::new(size, true);
    let options = flags.options(name, bar.tracker(), parallelism);
    let info = project.upload(&dest.bucket, &key, reader, options).await;
    bar.finish();
    Ok(info?)
}

/// Downloads `source` (or `range` of it) to the file `target`, or to
/// standard output when `None`; returns the bytes written. A file is
/// written beside the target and renamed at the end, so a failed download
/// never leaves a file that looks complete. `bar` is the command's bar (a
/// tree's); without one, a large download draws its own.
async fn download(
    project: &Project,
    source: &Location,
    target: Option<&Path>,
    range: Option<ByteRange>,
    parallelism: usize,
    bar: Option<&Bar>,
) -> Result<u64, CliError> {
    let offset = range.map_or(0, |range| range.offset);
    let object = project
        .open_object(&source.bucket, &source.key, offset)
        .await?
        .with_parallelism(parallelism);
    let Some(target) = target else {
        return Ok(object.download(range, tokio::io::stdout(), None).await?);
    };
    let own_bar = match bar {
        Some(_) => Bar(None),
        None => Bar::new(Some(object.info().size), true),
    };
    let bar = bar.unwrap_or(&own_bar);
    let temp = target.with_file_name(format!(
        ".{}.archipel-partial",
        target
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default()
    ));
    let file = tokio::fs::File::create(&temp)
        .await
        .map_err(io_error("create", &temp.display().to_string()))?;
    let result = object.download(range, file, bar.tracker()).await;
    own_bar.finish();
    match result {
        Ok(n) => {
            tokio::fs::rename(&temp, target)
                .await
                .map_err(io_error("write", &target.display().to_string()))?;
            Ok(n)
        }
        Err(e) => {
            let _ = tokio::fs::remove_file(&temp).await;
            Err(e.into())
        }
    }
}

/// A file found below the directory a tree upload walks.
struct LocalFile {
    path: PathBuf,
    /// Its path below the directory, components joined with `/`.
    relative: String,
    size: u64,
}

/// Walks a directory tree lazily, depth first, yielding regular files
/// (and symbolic links to them). Symbolic links to directories are not
/// followed (a link to an ancestor would never end); they are reported on
/// standard error and skipped, as are sockets, FIFOs and devices.
struct Walk {
    stack: Vec<(std::fs::ReadDir, String)>,
}

impl Walk {
    fn new(dir: &Path) -> Result<Walk, CliError> {
        let shown = dir.display().to_string();
        let entries = std::fs::read_dir(dir).map_err(io_error("read the directory", &shown))?;
        Ok(Walk {
            stack: vec![(entries, String::new())],
        })
    }

    fn entry(
        &mut self,
        entry: std::fs::DirEntry,
        above: &str,
    ) -> Option<Result<LocalFile, CliError>> {
        let path = entry.path();
        let shown = path.display().to_string();
        let Some(name) = entry.file_name().to_str().map(str::to_string) else {
            return Some(Err(CliError::Usage(format!(
                "the file name of {shown} is not UTF-8, so it cannot be an object key"
            ))));
        };
        let relative = format!("{above}{name}");
        let file_type = match entry.file_type() {
            Ok(file_type) => file_type,
            Err(e) => return Some(Err(io_error("read", &shown)(e))),
        };
        if file_type.is_dir() {
            return match std::fs::read_dir(&path) {
                Ok(entries) => {
                    self.stack.push((entries, format!("{relative}/")));
                    None
                }
                Err(e) => Some(Err(io_error("read the directory", &shown)(e))),
            };
        }
        // Follows a symbolic link to what it points to.
        match std::fs::metadata(&path) {
            Ok(metadata) if metadata.is_file() => Some(Ok(LocalFile {
                path,
                relative,
                size: metadata.len(),
            })),
            Ok(metadata) if metadata.is_dir() => {
                eprintln!("archipel: skipping {shown}: a symbolic link to a directory");
                None
            }
            Ok(_) => {
                eprintln!("archipel: skipping {shown}: not a regular file");
                None
            }
            Err(e) => Some(Err(io_error("read", &shown)(e))),
        }
    }
}

impl Iterator for Walk {
    type Item = Result<LocalFile, CliError>;

    fn next(&mut self) -> Option<Self::Item> {
        loop {
            let (entries, above) = self.stack.last_mut()?;
            let above = above.clone();
            match entries.next() {
                None => {
                    self.stack.pop();
                }
                Some(Err(e)) => return Some(Err(io_error("read the directory", &above)(e))),
                Some(Ok(entry)) => {
                    if let Some(found) = self.entry(entry, &above) {
                        return Some(found);
                    }
                }
            }
        }
    }
}

/// `cp -r DIR ap://b/prefix/`: every file below `dir` as prefix + its
/// relative path, `parallelism` files at once.
async fn upload_tree(
    project: &Project,
    dir: &Path,
    dest: Location,
    parallelism: usize,
    flags: &UploadFlags,
) -> Result<(), CliError> {
    if !dir.is_dir() {
        return Err(CliError::Usage(format!(
            "{} is not a directory (cp -r uploads a directory tree)",
            dir.display()
        )));
    }
    let prefix = as_directory(&dest.key);
    let bar = Bar::growing();
    let (files, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    futures::stream::iter(Walk::new(dir)?)
        .try_for_each_concurrent(parallelism, |file| {
            let (bar, files, bytes, prefix, bucket) = (&bar, &files, &bytes, &prefix, &dest.bucket);
            async move {
                bar.add_total(file.size);
                let shown = file.path.display().to_string();
                let reader = tokio::fs::File::open(&file.path)
                    .await
                    .map_err(io_error("open", &shown))?;
                // One segment at a time per file: the files are the parallelism.
                let options = flags.options(&file.relative, bar.tracker(), 1);
                let key = format!("{prefix}{}", file.relative);
                let info = project.upload(bucket, &key, reader, options).await?;
                bytes.fetch_add(info.size, Ordering::Relaxed);
                let done = files.fetch_add(1, Ordering::Relaxed) + 1;
                bar.message(format!("{done} files"));
                Ok(())
            }
        })
        .await
        .inspect_err(|_| bar.finish())?;
    bar.finish();
    eprintln!(
        "Uploaded {} files ({} bytes) to ap://{}/{prefix}",
        files.into_inner(),
        bytes.into_inner(),
        dest.bucket
    );
    Ok(())
}

/// The path components of `relative` (an object's key below the prefix a
/// tree download starts at) if it names a path inside the target
/// directory: no empty, `.` or `..` component (an absolute key starts with
/// an empty one). A last empty component (a key ending with `/`) names a
/// directory.
fn safe_components<'k>(
    relative: &'k str,
    shown: &str,
    dir: &Path,
) -> Result<Vec<&'k str>, CliError> {
    let components: Vec<&str> = relative.split('/').collect();
    let last = components.len() - 1;
    for (i, component) in components.iter().enumerate() {
        let empty_dir_marker = component.is_empty() && i == last && i > 0;
        if empty_dir_marker {
            continue;
        }
        if component.is_empty()
            || *component == "."
            || *component == ".."
            || component.contains('\0')
        {
            return Err(CliError::Usage(format!(
                "refusing to download {shown}: its name would not stay inside {} (an empty, `.` or `..` path component)",
                dir.display()
            )));
        }
    }
    Ok(components)
}

/// Creates the directories `components` below `dir`, refusing to go
/// through a symbolic link (which could lead outside `dir`).
fn make_dirs(dir: &Path, components: &[&str], shown: &str) -> Result<PathBuf, CliError> {
    let mut path = dir.to_path_buf();
    for component in components {
        path.push(component);
        let display = path.display().to_string();
        match std::fs::symlink_metadata(&path) {
            Ok(metadata) if metadata.file_type().is_symlink() => {
                return Err(CliError::Usage(format!(
                    "refusing to download {shown}: {display} is a symbolic link"
                )))
            }
            Ok(metadata) if metadata.is_dir() => {}
            Ok(_) => {
                return Err(CliError::Usage(format!(
                    "cannot download {shown}: {display} is a file, not a directory"
                )))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                match std::fs::create_dir(&path) {
                    // Another download of the tree made it meanwhile.
                    Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
                    other => other.map_err(io_error("create the directory", &display))?,
                }
            }
            Err(e) => return Err(io_error("read", &display)(e)),
        }
    }
    Ok(path)
}

/// `cp -r ap://b/prefix/ DIR`: every object below the prefix into `dir`
/// (created if missing) at its path below the prefix, `parallelism` at once.
async fn download_tree(
    project: &Project,
    source: Location,
    dir: &Path,
    parallelism: usize,
) -> Result<(), CliError> {
    let shown_dir = dir.display().to_string();
    std::fs::create_dir_all(dir).map_err(io_error("create the directory", &shown_dir))?;
    let prefix = as_directory(&source.key);
    let bar = Bar::growing();
    let (files, bytes) = (AtomicU64::new(0), AtomicU64::new(0));
    objects(project, &source.bucket, &prefix)
        .try_for_each_concurrent(parallelism, |entry| {
            let (bar, files, bytes, prefix, bucket) =
                (&bar, &files, &bytes, &prefix, &source.bucket);
            async move {
                let shown = format!("ap://{bucket}/{}", entry.key);
                let relative = entry.key.get(prefix.len()..).unwrap_or_default();
                if relative.is_empty() {
                    return Ok(()); // the prefix's own "directory" object
                }
                let components = safe_components(relative, &shown, dir)?;
                let (parents, name) = components.split_at(components.len() - 1);
                let parent = make_dirs(dir, parents, &shown)?;
                if name[0].is_empty() {
                    return Ok(()); // a "directory" object: the directory is made
                }
                let target = parent.join(name[0]);
                if std::fs::symlink_metadata(&target).is_ok_and(|m| m.file_type().is_symlink()) {
                    return Err(CliError::Usage(format!(
                        "refusing to download {shown}: {} is a symbolic link",
                        target.display()
                    )));
                }
                bar.add_total(entry.size);
                let location = Location {
                    bucket: bucket.clone(),
                    key: entry.key.clone(),
                };
                let n = download(project, &location, Some(&target), None, 1, Some(bar)).await?;
                bytes.fetch_add(n, Ordering::Relaxed);
                let done = files.fetch_add(1, Ordering::Relaxed) + 1;
                bar.message(format!("{done} files"));
                Ok(())
            }
        })
        .await
        .inspect_err(|_| bar.finish())?;
    bar.finish();
    eprintln!(
        "Downloaded {} files ({} bytes) to {shown_dir}",
        files.into_inner(),
        bytes.into_inner()
    );
    Ok(())
}

/// Copies one object on the satellite (a destination key that is empty or
/// ends with `/` takes the source's name); then deletes the source when
/// `delete_source`. Returns the destination key.
async fn copy_one(
    project: &Project,
    src: &Location,
    dest: &Location,
    metadata: CopyMetadata,
    delete_source: bool,
) -> Result<String, CliError> {
    if src.key.is_empty() {
        return Err(CliError::Usage(format!(
            "ap://{} names a bucket, not an object (use -r for everything in it)",
            src.bucket
        )));
    }
    let key = if dest.key.is_empty() || dest.key.ends_with('/') {
        format!("{}{}", dest.key, base_name(&src.key))
    } else {
        dest.key.clone()
    };
    if delete_source && src.bucket == dest.bucket && src.key == key {
        return Err(CliError::Usage(format!(
            "ap://{}/{key} is both the source and the destination",
            src.bucket
        )));
    }
    project
        .copy_object(&src.bucket, &src.key, &dest.bucket, &key, metadata)
        .await?;
    if delete_source {
        project.delete_object(&src.bucket, &src.key).await?;
    }
    Ok(key)
}

/// Copies (or moves) every object below `src`'s prefix to `dest`'s prefix
/// on the satellite, `parallelism` at once; returns how many.
async fn copy_tree(
    project: &Project,
    src: &Location,
    dest: &Location,
    parallelism: usize,
    metadata: CopyMetadata,
    delete_source: bool,
) -> Result<u64, CliError> {
    let (from, to) = (as_directory(&src.key), as_directory(&dest.key));
    // Copies landing below the prefix being walked would be walked again.
    if src.bucket == dest.bucket && (from.starts_with(&to) || to.starts_with(&from)) {
        return Err(CliError::Usage(format!(
            "ap://{}/{from} and ap://{}/{to} overlap: copying a prefix into itself (or into one of its parents) would walk its own copies",
            src.bucket, dest.bucket
        )));
    }
    let copied = AtomicU64::new(0);
    objects(project, &src.bucket, &from)
        .try_for_each_concurrent(parallelism, |entry| {
            let (copied, metadata, from, to) = (&copied, &metadata, &from, &to);
            async move {
                let relative = entry.key.get(from.len()..).unwrap_or_default();
                let key = format!("{to}{relative}");
                project
                    .copy_object(
                        &src.bucket,
                        &entry.key,
                        &dest.bucket,
                        &key,
                        metadata.clone(),
                    )
                    .await?;
                if delete_source {
                    project.delete_object(&src.bucket, &entry.key).await?;
                }
                copied.fetch_add(1, Ordering::Relaxed);
                Ok(())
            }
        })
        .await?;
    Ok(copied.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_that_would_leave_the_directory_are_refused() {
        let dir = Path::new("/tmp/target");
        let ok = |relative| safe_components(relative, "x", dir).unwrap();
        assert_eq!(ok("a.txt"), ["a.txt"]);
        assert_eq!(ok("a/b/c.txt"), ["a", "b", "c.txt"]);
        assert_eq!(ok("a/b/"), ["a", "b", ""]);
        assert_eq!(ok("..."), ["..."]);
        for bad in [
            "../a",
            "a/../../b",
            "/etc/passwd",
            "a//b",
            "./a",
            "a/.",
            "..",
            "",
            "a\0b",
        ] {
            assert!(safe_components(bad, "x", dir).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn content_types_are_guessed_from_common_extensions_only() {
        assert_eq!(guess_content_type("a/movie.MP4"), Some("video/mp4"));
        assert_eq!(guess_content_type("index.html"), Some("text/html"));
        assert_eq!(guess_content_type("notes"), None);
        assert_eq!(guess_content_type("archive.xyz"), None);
    }

    #[test]
    fn metadata_flags_are_key_equals_value() {
        assert_eq!(parse_metadata("a=b=c").unwrap(), ("a".into(), "b=c".into()));
        assert_eq!(parse_metadata("a=").unwrap(), ("a".into(), String::new()));
        assert!(parse_metadata("=b").is_err());
        assert!(parse_metadata("ab").is_err());
    }
}
