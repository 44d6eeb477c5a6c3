//! `archipel-bench gateway`: the S3 gateway side by side with the `archipel`
//! CLI and the client library, on one in-process network in one run.
//!
//! A large object (`--size`, 1 GiB by default) is generated into a file once,
//! then goes up and comes down three ways: through the gateway with
//! `aws-sdk-s3` (one PutObject streamed from the file, one GetObject streamed
//! into a hashing sink; then multipart PUTs of it in 16 MiB parts, without
//! and with CRC32 part checksums, and copies), with the `archipel` binary as a subprocess
//! (`cp FILE ap://…`, `cp ap://… -` into a pipe this process hashes), and with
//! the client library in this process. Then small objects: N PUTs then N GETs,
//! one at a time and with several in flight, gateway against library; the CLI
//! does a shorter one-at-a-time batch, paying a process start-up and a
//! satellite connection per operation.
//! Every download is compared with what went up. The gateway, the SDK client
//! and the library share this process with the network; the machine is
//! shared too, so only ratios from the same run mean much.

use std::path::{Path, PathBuf};
use std::time::Instant;

use archipel_client::{Project, UploadOptions};
use archipel_tests::Planet;
use aws_sdk_s3::error::DisplayErrorContext;
use aws_sdk_s3::primitives::{ByteStream, Length};
use aws_sdk_s3::types::{ChecksumAlgorithm, CompletedMultipartUpload, CompletedPart};
use aws_sdk_s3::Client;
use futures::{StreamExt, TryStreamExt};
use nix::sys::resource::UsageWho;

use crate::harness::{children_cpu, ArchipelCli, Gateway};
use crate::latency::{timed, Latencies, PutGet};
use crate::stages::{self, Stages};
use crate::{cpu_seconds, peak_rss_kib, BenchError, Generator, HashSink, BUCKET};

#[derive(clap::Args)]
pub(crate) struct Args {
    /// Small objects written then read per size, path and concurrency.
    #[arg(long, default_value_t = 200)]
    small_count: usize,
    /// Sizes of the small objects in bytes, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [4096, 65536, 1 << 20])]
    small_sizes: Vec<usize>,
    /// Small objects written then read by the CLI, one process per operation.
    #[arg(long, default_value_t = 50)]
    cli_small_count: usize,
    /// Operations in flight in the concurrent small-object runs.
    #[arg(long, default_value_t = 8)]
    concurrency: usize,
    /// Measure only the small objects through the gateway and the library
    /// (no large object, no CLI).
    #[arg(long)]
    small_only: bool,
    /// Instead of measuring, break small PUTs and GETs down into their stages
    /// (gateway, satellite calls, node transfers), one at a time, with the
    /// debug spans of every component enabled.
    #[arg(long)]
    pub(crate) stages: bool,
    /// The `archipel` CLI binary [default: `archipel` next to this program].
    #[arg(long)]
    archipel: Option<PathBuf>,
}

fn s3_error(error: impl std::error::Error) -> BenchError {
    BenchError::S3(DisplayErrorContext(error).to_string())
}

/// What one measured step cost.
struct Sample {
    seconds: f64,
    /// CPU seconds of this process and of the children that ended meanwhile.
    cpu: f64,
    /// This process's peak resident set during the step (since the whole run
    /// when the kernel does not let the peak be reset).
    peak_rss_kib: u64,
}

/// Lets `VmHWM` restart from the current resident set, so that each step's
/// peak is its own; false when the kernel refuses.
fn reset_peak_rss() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

async fn measure<T>(
    step: impl std::future::Future<Output = Result<T, BenchError>>,
) -> Result<(T, Sample), BenchError> {
    reset_peak_rss();
    let cpu_before = cpu_seconds(UsageWho::RUSAGE_SELF) + children_cpu();
    let started = Instant::now();
    let value = step.await?;
    let seconds = started.elapsed().as_secs_f64();
    let sample = Sample {
        seconds,
        cpu: cpu_seconds(UsageWho::RUSAGE_SELF) + children_cpu() - cpu_before,
        peak_rss_kib: peak_rss_kib(),
    };
    Ok((value, sample))
}

fn check_hash(expected: &str, actual: blake3::Hash) -> Result<(), BenchError> {
    let actual = actual.to_hex().to_string();
    if actual == expected {
        Ok(())
    } else {
        Err(BenchError::Mismatch(expected.to_string(), actual))
    }
}

fn check_bytes(expected: &[u8], actual: &[u8]) -> Result<(), BenchError> {
    if expected == actual {
        Ok(())
    } else {
        Err(BenchError::Mismatch(
            blake3::hash(expected).to_hex().to_string(),
            blake3::hash(actual).to_hex().to_string(),
        ))
    }
}

/// One large-object transfer: bytes moved and what it cost.
struct Transfer {
    bytes: u64,
    sample: Sample,
}

impl Transfer {
    fn mb_per_s(&self) -> f64 {
        self.bytes as f64 / self.sample.seconds / 1e6
    }
}

struct Large {
    put: Transfer,
    get: Transfer,
}

async fn gateway_large(
    s3: &Client,
    file: &Path,
    size: u64,
    hash: &str,
) -> Result<Large, BenchError> {
    let key = "large/gateway";
    let ((), put) = measure(async {
        let body = ByteStream::from_path(file).await.map_err(s3_error)?;
        s3.put_object()
            .bucket(BUCKET)
            .key(key)
            .body(body)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    })
    .await?;
    let (bytes, get) = measure(get_checked(s3, key, hash)).await?;
    Ok(Large {
        put: Transfer {
            bytes: size,
            sample: put,
        },
        get: Transfer { bytes, sample: get },
    })
}

/// GETs `key` through the gateway into a hashing sink; returns the bytes
/// read, failing unless their BLAKE3 is `hash`.
async fn get_checked(s3: &Client, key: &str, hash: &str) -> Result<u64, BenchError> {
    let output = s3
        .get_object()
        .bucket(BUCKET)
        .key(key)
        .send()
        .await
        .map_err(s3_error)?;
    let mut body = std::pin::pin!(output.body.into_async_read());
    let mut sink = HashSink::default();
    let bytes = tokio::io::copy_buf(&mut body, &mut sink).await?;
    check_hash(hash, sink.hasher.finalize())?;
    Ok(bytes)
}

/// Copies of the large object through the gateway: CopyObject (server-side:
/// only keys and metadata are new) against UploadPartCopy of the whole object
/// into a one-part multipart upload (the range streams down and up through
/// the gateway, as every copy did before copies were server-side). Both
/// copies are read back and compared.
async fn gateway_copies(s3: &Client, hash: &str) -> Result<[Sample; 2], BenchError> {
    let source = format!("{BUCKET}/large/gateway");
    let ((), server_side) = measure(async {
        s3.copy_object()
            .copy_source(&source)
            .bucket(BUCKET)
            .key("large/copy")
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    })
    .await?;
    let ((), streamed) = measure(async {
        let key = "large/part-copy";
        let upload = s3
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .send()
            .await
            .map_err(s3_error)?;
        let upload_id = upload.upload_id().unwrap_or_default();
        let part = s3
            .upload_part_copy()
            .bucket(BUCKET)
            .key(key)
            .upload_id(upload_id)
            .part_number(1)
            .copy_source(&source)
            .send()
            .await
            .map_err(s3_error)?;
        let etag = part
            .copy_part_result()
            .and_then(|r| r.e_tag())
            .unwrap_or_default();
        let completed = aws_sdk_s3::types::CompletedMultipartUpload::builder()
            .parts(
                aws_sdk_s3::types::CompletedPart::builder()
                    .part_number(1)
                    .e_tag(etag)
                    .build(),
            )
            .build();
        s3.complete_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(completed)
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    })
    .await?;
    for key in ["large/copy", "large/part-copy"] {
        get_checked(s3, key, hash).await?;
    }
    Ok([server_side, streamed])
}

/// Part size and parts in flight of the multipart PUTs (the aws CLI's 8 MiB
/// parts make a 1 GiB object 128 parts; 16 MiB keeps the same shape).
const PART_SIZE: u64 = 16 << 20;
const PARTS_IN_FLIGHT: usize = 4;

/// A multipart PUT of the large file as `aws s3 cp` sends big files: parts
/// read from their ranges of the file, several in flight, then completed.
/// With `checksum` the upload is created with that algorithm, every part
/// carries one the SDK computes (the gateway verifies it and seals it with
/// the part) and the completion names them all, as the CLI does with its
/// default CRC32. The object is read back and compared.
async fn gateway_multipart(
    s3: &Client,
    (file, size, hash): (&Path, u64, &str),
    key: &str,
    checksum: Option<ChecksumAlgorithm>,
) -> Result<Sample, BenchError> {
    let ((), sample) = measure(async {
        let created = s3
            .create_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .set_checksum_algorithm(checksum.clone())
            .send()
            .await
            .map_err(s3_error)?;
        let upload_id = created.upload_id().unwrap_or_default();
        let parts: Vec<CompletedPart> = futures::stream::iter(0..size.div_ceil(PART_SIZE).max(1))
            .map(|index| {
                let checksum = checksum.clone();
                async move {
                    let offset = index * PART_SIZE;
                    let number = i32::try_from(index + 1).unwrap_or(i32::MAX);
                    let body = ByteStream::read_from()
                        .path(file)
                        .offset(offset)
                        .length(Length::Exact(PART_SIZE.min(size - offset)))
                        .build()
                        .await
                        .map_err(s3_error)?;
                    let part = s3
                        .upload_part()
                        .bucket(BUCKET)
                        .key(key)
                        .upload_id(upload_id)
                        .part_number(number)
                        .set_checksum_algorithm(checksum)
                        .body(body)
                        .send()
                        .await
                        .map_err(s3_error)?;
                    Ok::<_, BenchError>(
                        CompletedPart::builder()
                            .part_number(number)
                            .set_e_tag(part.e_tag)
                            .set_checksum_crc32(part.checksum_crc32)
                            .build(),
                    )
                }
            })
            .buffered(PARTS_IN_FLIGHT)
            .try_collect()
            .await?;
        s3.complete_multipart_upload()
            .bucket(BUCKET)
            .key(key)
            .upload_id(upload_id)
            .multipart_upload(
                CompletedMultipartUpload::builder()
                    .set_parts(Some(parts))
                    .build(),
            )
            .send()
            .await
            .map_err(s3_error)?;
        Ok(())
    })
    .await?;
    get_checked(s3, key, hash).await?;
    Ok(sample)
}

/// The large transfers by the CLI, with each process's peak RSS in KiB.
async fn cli_large(
    cli: &ArchipelCli,
    file: &Path,
    size: u64,
    hash: &str,
) -> Result<(Large, [u64; 2]), BenchError> {
    let location = format!("ap://{BUCKET}/large/cli");
    let path = file.to_string_lossy();
    let ((_, put_rss), put) = measure(cli.run(
        &["cp", &*path, location.as_str()],
        &[],
        &mut tokio::io::sink(),
    ))
    .await?;
    let ((bytes, get_rss), get) = measure(async {
        let mut sink = HashSink::default();
        let got = cli
            .run(&["cp", location.as_str(), "-"], &[], &mut sink)
            .await?;
        check_hash(hash, sink.hasher.finalize())?;
        Ok(got)
    })
    .await?;
    Ok((
        Large {
            put: Transfer {
                bytes: size,
                sample: put,
            },
            get: Transfer { bytes, sample: get },
        },
        [put_rss, get_rss],
    ))
}

async fn library_large(project: &Project, file: &Path, hash: &str) -> Result<Large, BenchError> {
    let key = "large/library";
    let (bytes_up, put) = measure(async {
        let source = tokio::fs::File::open(file).await?;
        let info = project
            .upload(BUCKET, key, source, UploadOptions::default())
            .await?;
        Ok(info.size)
    })
    .await?;
    let (bytes, get) = measure(async {
        let mut sink = HashSink::default();
        let bytes = project.download(BUCKET, key, None, &mut sink, None).await?;
        check_hash(hash, sink.hasher.finalize())?;
        Ok(bytes)
    })
    .await?;
    Ok(Large {
        put: Transfer {
            bytes: bytes_up,
            sample: put,
        },
        get: Transfer { bytes, sample: get },
    })
}

async fn gateway_puts(
    s3: &Client,
    prefix: &str,
    objects: &[Vec<u8>],
    in_flight: usize,
) -> Result<Latencies, BenchError> {
    timed(objects.len(), in_flight, |i| async move {
        s3.put_object()
            .bucket(BUCKET)
            .key(format!("{prefix}/{i}"))
            .body(ByteStream::from(objects[i].clone()))
            .send()
            .await
            .map(drop)
            .map_err(s3_error)
    })
    .await
}

async fn gateway_gets(
    s3: &Client,
    prefix: &str,
    objects: &[Vec<u8>],
    in_flight: usize,
) -> Result<Latencies, BenchError> {
    timed(objects.len(), in_flight, |i| async move {
        let output = s3
            .get_object()
            .bucket(BUCKET)
            .key(format!("{prefix}/{i}"))
            .send()
            .await
            .map_err(s3_error)?;
        let body = output.body.collect().await.map_err(s3_error)?;
        check_bytes(&objects[i], &body.into_bytes())
    })
    .await
}

async fn library_puts(
    project: &Project,
    prefix: &str,
    objects: &[Vec<u8>],
    in_flight: usize,
) -> Result<Latencies, BenchError> {
    timed(objects.len(), in_flight, |i| async move {
        project
            .upload(
                BUCKET,
                &format!("{prefix}/{i}"),
                objects[i].as_slice(),
                UploadOptions::default(),
            )
            .await
            .map(drop)
            .map_err(BenchError::from)
    })
    .await
}

async fn library_gets(
    project: &Project,
    prefix: &str,
    objects: &[Vec<u8>],
    in_flight: usize,
) -> Result<Latencies, BenchError> {
    timed(objects.len(), in_flight, |i| async move {
        let mut out = Vec::with_capacity(objects[i].len());
        project
            .download(BUCKET, &format!("{prefix}/{i}"), None, &mut out, None)
            .await?;
        check_bytes(&objects[i], &out)
    })
    .await
}

/// One process per operation, one at a time.
async fn cli_small(cli: &ArchipelCli, objects: &[Vec<u8>]) -> Result<PutGet, BenchError> {
    let location = |i: usize| format!("ap://{BUCKET}/small/cli/{i}");
    let put = timed(objects.len(), 1, |i| async move {
        cli.run(
            &["cp", "-", &location(i)],
            &objects[i],
            &mut tokio::io::sink(),
        )
        .await
        .map(drop)
    })
    .await?;
    let get = timed(objects.len(), 1, |i| async move {
        let mut out = Vec::with_capacity(objects[i].len());
        cli.run(&["cp", &location(i), "-"], &[], &mut out).await?;
        check_bytes(&objects[i], &out)
    })
    .await?;
    Ok(PutGet { put, get })
}

fn ratio(a: f64, b: f64) -> String {
    format!("{:.2}", a / b)
}

fn mib(kib: u64) -> String {
    format!("{:.0}", kib as f64 / 1024.0)
}

/// One row of the large-object step table.
fn step_row(name: &str, sample: &Sample, gb: f64, child_rss_kib: Option<u64>) {
    println!(
        "| {name} | {:.3} | {:.1} | {:.1} | {} | {} |",
        sample.seconds,
        sample.cpu,
        sample.cpu / gb,
        mib(sample.peak_rss_kib),
        child_rss_kib.map_or("–".to_string(), mib)
    );
}

/// Runs the comparison on `planet` and prints its tables (Markdown).
pub(crate) async fn bench(
    planet: &Planet,
    size: u64,
    args: &Args,
    setting: &str,
    stages: Option<Stages>,
) -> Result<(), BenchError> {
    let access = planet.access().serialize();
    let cli = ArchipelCli::locate(args.archipel.as_deref(), access.clone())?;
    let project = planet.project().await?;

    let dir = tempfile::tempdir()?;
    let gateway = Gateway::start(&access, dir.path()).await?;
    let s3 = gateway.s3_client();

    println!("{setting}; gateway, SDK client and library in this process, CLI as child processes");
    if let Some(stages) = stages {
        breakdown(&s3, &project, &stages, args).await?;
        return gateway.stop().await;
    }
    if !args.small_only {
        large_objects(&s3, &cli, &project, dir.path(), size).await?;
    }

    let in_flight = args.concurrency.max(1);
    let mut rows = Vec::new();
    for &object_size in &args.small_sizes {
        let objects: Vec<Vec<u8>> = (0..args.small_count)
            .map(|i| archipel_tests::test_data(object_size, i as u64))
            .collect();
        eprintln!("{object_size}-byte objects: gateway…");
        for n in [1, in_flight] {
            let prefix = format!("small/{object_size}/gateway-{n}");
            let batch = PutGet {
                put: gateway_puts(&s3, &prefix, &objects, n).await?,
                get: gateway_gets(&s3, &prefix, &objects, n).await?,
            };
            rows.push((object_size, "S3 gateway", n, batch));
        }
        eprintln!("{object_size}-byte objects: library…");
        for n in [1, in_flight] {
            let prefix = format!("small/{object_size}/library-{n}");
            let batch = PutGet {
                put: library_puts(&project, &prefix, &objects, n).await?,
                get: library_gets(&project, &prefix, &objects, n).await?,
            };
            rows.push((object_size, "client library", n, batch));
        }
        if !args.small_only && rows.len() == 4 {
            eprintln!("{object_size}-byte objects: CLI…");
            let count = args.cli_small_count.min(objects.len());
            let batch = cli_small(&cli, &objects[..count]).await?;
            rows.push((object_size, "CLI, process per op", 1, batch));
        }
    }

    gateway.stop().await?;

    println!();
    println!("| object B | path | in flight | ops | PUT p50 ms | PUT p99 ms | PUT ops/s | PUT CPU ms/op | GET p50 ms | GET p99 ms | GET ops/s | GET CPU ms/op |");
    println!("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
    for (object_size, path, n, batch) in &rows {
        println!(
            "| {object_size} | {path} | {n} | {} | {} | {} |",
            batch.put.count(),
            batch.put.cells(),
            batch.get.cells()
        );
    }
    for (object_size, path, n, batch) in &rows {
        if *n > 1 {
            let one = rows
                .iter()
                .find(|(s, p, n, _)| s == object_size && p == path && *n == 1);
            if let Some((_, _, _, one)) = one {
                println!(
                    "{object_size} B, {path}: {n} in flight give {} × the PUT rate and {} × the GET rate of one at a time",
                    ratio(batch.put.ops_per_s(), one.put.ops_per_s()),
                    ratio(batch.get.ops_per_s(), one.get.ops_per_s()),
                );
            }
        }
    }
    Ok(())
}

/// Prints where the time of small PUTs and GETs goes, one at a time, per size:
/// each stage's count and milliseconds per operation (spans nest, so stages
/// overlap: the gateway's `s3` span holds the client's, which hold the
/// satellite's and the nodes').
async fn breakdown(
    s3: &Client,
    project: &Project,
    stages: &Stages,
    args: &Args,
) -> Result<(), BenchError> {
    println!();
    println!("| operation | stage | per op | ms per op |");
    println!("|---|---|---:|---:|");
    for &object_size in &args.small_sizes {
        let objects: Vec<Vec<u8>> = (0..args.small_count)
            .map(|i| archipel_tests::test_data(object_size, i as u64))
            .collect();
        let count = objects.len();
        let gateway = format!("stages/{object_size}/gateway");
        let library = format!("stages/{object_size}/library");
        // First uploads, unmeasured, let each path learn the satellite's limits.
        gateway_puts(s3, &format!("{gateway}-warm"), &objects[..1], 1).await?;
        library_puts(project, &format!("{library}-warm"), &objects[..1], 1).await?;
        stages.take();
        gateway_puts(s3, &gateway, &objects, 1).await?;
        stages::print(
            &format!("{object_size} B PUT, gateway"),
            count,
            &stages.take(),
        );
        gateway_gets(s3, &gateway, &objects, 1).await?;
        stages::print(
            &format!("{object_size} B GET, gateway"),
            count,
            &stages.take(),
        );
        library_puts(project, &library, &objects, 1).await?;
        stages::print(
            &format!("{object_size} B PUT, library"),
            count,
            &stages.take(),
        );
        library_gets(project, &library, &objects, 1).await?;
        stages::print(
            &format!("{object_size} B GET, library"),
            count,
            &stages.take(),
        );
    }
    Ok(())
}

/// The 1 GiB comparison: PUT and GET through the gateway, the CLI and the
/// library, then multipart PUTs and copies through the gateway.
async fn large_objects(
    s3: &Client,
    cli: &ArchipelCli,
    project: &Project,
    dir: &Path,
    size: u64,
) -> Result<(), BenchError> {
    let resettable = reset_peak_rss();
    eprintln!("writing the {size}-byte object to a file…");
    let file = dir.join("large");
    let mut generator = Generator::new(size);
    let mut out = tokio::fs::File::create(&file).await?;
    tokio::io::copy(&mut generator, &mut out).await?;
    out.sync_all().await?;
    drop(out);
    let hash = generator.hasher.finalize().to_hex().to_string();

    eprintln!("large object: gateway…");
    let gateway_large = gateway_large(s3, &file, size, &hash).await?;
    eprintln!("large object: gateway multipart…");
    let large = (file.as_path(), size, hash.as_str());
    let multipart = gateway_multipart(s3, large, "large/multipart", None).await?;
    let multipart_crc32 = gateway_multipart(
        s3,
        large,
        "large/multipart-crc32",
        Some(ChecksumAlgorithm::Crc32),
    )
    .await?;
    eprintln!("large object: gateway copies…");
    let [copy, part_copy] = gateway_copies(s3, &hash).await?;
    eprintln!("large object: CLI…");
    let (cli_large, cli_rss) = cli_large(cli, &file, size, &hash).await?;
    eprintln!("large object: library…");
    let library_large = library_large(project, &file, &hash).await?;

    let gb = size as f64 / 1e9;
    println!();
    println!(
        "| work | S3 gateway | archipel CLI | client library | gateway / CLI | gateway / library |"
    );
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, g, c, l) in [
        (
            format!("PUT {gb:.2} GB, MB/s"),
            gateway_large.put.mb_per_s(),
            cli_large.put.mb_per_s(),
            library_large.put.mb_per_s(),
        ),
        (
            format!("GET {gb:.2} GB, MB/s"),
            gateway_large.get.mb_per_s(),
            cli_large.get.mb_per_s(),
            library_large.get.mb_per_s(),
        ),
    ] {
        println!(
            "| {name} | {g:.0} | {c:.0} | {l:.0} | {} | {} |",
            ratio(g, c),
            ratio(g, l)
        );
    }
    println!();
    println!("| large-object step | s | CPU s (all processes) | CPU s per GB | this process's peak RSS MiB | CLI process's peak RSS MiB |");
    println!("|---|---:|---:|---:|---:|---:|");
    for (name, transfer, child_rss) in [
        ("gateway PUT", &gateway_large.put, None),
        ("gateway GET", &gateway_large.get, None),
        ("CLI PUT", &cli_large.put, Some(cli_rss[0])),
        ("CLI GET", &cli_large.get, Some(cli_rss[1])),
        ("library PUT", &library_large.put, None),
        ("library GET", &library_large.get, None),
    ] {
        step_row(name, &transfer.sample, gb, child_rss);
    }
    let parts = size.div_ceil(PART_SIZE).max(1);
    step_row(
        &format!("gateway multipart PUT, {parts} parts, {PARTS_IN_FLIGHT} in flight"),
        &multipart,
        gb,
        None,
    );
    step_row(
        &format!(
            "gateway multipart PUT, {parts} parts, {PARTS_IN_FLIGHT} in flight, CRC32 composite"
        ),
        &multipart_crc32,
        gb,
        None,
    );
    step_row("gateway CopyObject (server-side)", &copy, gb, None);
    step_row(
        "gateway UploadPartCopy of it all (streamed)",
        &part_copy,
        gb,
        None,
    );
    println!(
        "multipart PUT: {:.0} MB/s, with CRC32 {:.0} MB/s, against PutObject {:.0} MB/s",
        size as f64 / multipart.seconds / 1e6,
        size as f64 / multipart_crc32.seconds / 1e6,
        gateway_large.put.mb_per_s()
    );
    println!(
        "copy: server-side {:.3} s against streamed {:.1} s ({})",
        copy.seconds,
        part_copy.seconds,
        ratio(part_copy.seconds, copy.seconds)
    );
    if !resettable {
        println!("(peak RSS could not be reset between steps: each figure is the peak so far)");
    }
    println!("every download matched its upload (large object BLAKE3 {hash})");
    Ok(())
}
