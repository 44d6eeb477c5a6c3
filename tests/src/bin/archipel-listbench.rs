//! `archipel-listbench`: how long listing one large level takes.
//!
//! Starts a [`Planet`] and an S3 gateway in this process, puts `--objects`
//! small (inline) objects into one level of a bucket with encrypted names and
//! of one with unencrypted names, concurrently through the client library,
//! then times `Project::list` of that level and a full S3 ListObjectsV2 walk of
//! it (pages of 1000, delimiter `/`, to the end) with `aws-sdk-s3`. Every walk
//! is checked: all keys, in lexicographic order.

use std::process::ExitCode;
use std::time::{Duration, Instant};

use archipel_client::{BucketOptions, Project, UploadOptions};
use archipel_tests::{Backend, Planet, PlanetConfig};
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use clap::Parser;
use futures::{StreamExt, TryStreamExt};
use tokio::net::TcpListener;

/// The buckets compared: name, and whether object names are unencrypted.
const BUCKETS: [(&str, bool); 2] = [("bench", false), ("bench-plain", true)];
const LEVEL: &str = "level/";
/// Uploads in flight while filling the level.
const CONCURRENCY: usize = 32;

#[derive(Parser)]
#[command(
    name = "archipel-listbench",
    about = "Time listing one level of many objects, through the client library and the S3 gateway"
)]
struct Cli {
    /// Objects in the listed level.
    #[arg(long, default_value_t = 10_000)]
    objects: usize,
    /// Timed runs of each listing (the table shows the fastest and the median).
    #[arg(long, default_value_t = 5)]
    runs: usize,
    /// Keep the metabase in PostgreSQL (`ARCHIPEL_TEST_POSTGRES`) instead of SQLite.
    #[arg(long)]
    postgres: bool,
}

#[derive(Debug, thiserror::Error)]
enum BenchError {
    #[error("the test network failed: {0}")]
    Planet(#[from] archipel_tests::PlanetError),
    #[error("the client failed: {0}")]
    Client(#[from] archipel_client::Error),
    #[error("the gateway failed: {0}")]
    Gateway(#[from] archipel_gateway::Error),
    #[error("S3 request failed: {0}")]
    S3(String),
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    #[error("wrong listing: {0}")]
    Wrong(String),
}

fn key(i: usize) -> String {
    format!("{LEVEL}object-{i:06}")
}

async fn fill(project: &Project, bucket: &str, objects: usize) -> Result<Duration, BenchError> {
    let start = Instant::now();
    futures::stream::iter(0..objects)
        .map(|i| async move {
            let body = format!("object {i}");
            project
                .upload(bucket, &key(i), body.as_bytes(), UploadOptions::default())
                .await
        })
        .buffer_unordered(CONCURRENCY)
        .try_for_each(|_| async { Ok(()) })
        .await?;
    Ok(start.elapsed())
}

fn check(keys: &[String], objects: usize) -> Result<(), BenchError> {
    if keys.len() != objects {
        return Err(BenchError::Wrong(format!(
            "{} keys instead of {objects}",
            keys.len()
        )));
    }
    match keys.iter().enumerate().find(|(i, k)| **k != key(*i)) {
        Some((i, k)) => Err(BenchError::Wrong(format!("key {i} is {k:?}"))),
        None => Ok(()),
    }
}

async fn list_library(project: &Project, bucket: &str, objects: usize) -> Result<(), BenchError> {
    let entries = project.list(bucket, LEVEL, false).await?;
    let keys: Vec<String> = entries.into_iter().map(|e| e.key).collect();
    check(&keys, objects)
}

/// Walks the level page by page, or only its first page; returns the number of pages.
async fn list_s3(
    s3: &aws_sdk_s3::Client,
    bucket: &str,
    objects: usize,
    first_only: bool,
) -> Result<usize, BenchError> {
    let mut keys = Vec::with_capacity(objects);
    let mut token = None;
    let mut pages = 0;
    loop {
        let page = s3
            .list_objects_v2()
            .bucket(bucket)
            .prefix(LEVEL)
            .delimiter("/")
            .max_keys(1000)
            .set_continuation_token(token)
            .send()
            .await
            .map_err(|e| BenchError::S3(format!("{e:?}")))?;
        pages += 1;
        keys.extend(
            page.contents()
                .iter()
                .filter_map(|o| o.key().map(String::from)),
        );
        token = page.next_continuation_token().map(String::from);
        if first_only && keys.len() == objects.min(1000) {
            return Ok(pages);
        }
        if first_only {
            return Err(BenchError::Wrong(format!(
                "{} keys on the first page",
                keys.len()
            )));
        }
        if !page.is_truncated().unwrap_or(false) {
            break;
        }
    }
    check(&keys, objects)?;
    Ok(pages)
}

/// Fastest and median of `runs` timings of `op`.
async fn time<F, Fut, T>(runs: usize, mut op: F) -> Result<(Duration, Duration, T), BenchError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, BenchError>>,
{
    let mut times = Vec::with_capacity(runs);
    let mut last = None;
    for _ in 0..runs.max(1) {
        let start = Instant::now();
        last = Some(op().await?);
        times.push(start.elapsed());
    }
    times.sort();
    let value = last.ok_or_else(|| BenchError::Wrong("no run".into()))?;
    Ok((times[0], times[times.len() / 2], value))
}

fn ms(d: Duration) -> String {
    format!("{:.0}", d.as_secs_f64() * 1000.0)
}

async fn bench(cli: &Cli) -> Result<(), BenchError> {
    let planet = Planet::start(PlanetConfig {
        nodes: 0,
        backend: if cli.postgres {
            Backend::Postgres
        } else {
            Backend::Sqlite
        },
        ..Default::default()
    })
    .await?;
    let project = planet.project().await?;
    for (bucket, unencrypted_names) in BUCKETS {
        project
            .create_bucket_with(
                bucket,
                BucketOptions {
                    unencrypted_names,
                    ..Default::default()
                },
            )
            .await?;
        let filled = fill(&project, bucket, cli.objects).await?;
        println!(
            "{} objects in one level of {bucket} put in {:.1} s ({:.0}/s, {CONCURRENCY} in flight), {}",
            cli.objects,
            filled.as_secs_f64(),
            cli.objects as f64 / filled.as_secs_f64(),
            if cli.postgres { "PostgreSQL" } else { "SQLite" }
        );
    }

    let dir = tempfile::tempdir()?;
    let grant = dir.path().join("grant");
    std::fs::write(&grant, planet.access().serialize())?;
    let grant = grant
        .to_str()
        .ok_or_else(|| BenchError::Wrong("temp path is not UTF-8".into()))?;
    let (config, _) = archipel_gateway::config::setup(dir.path(), grant)?;
    let credential = config.credentials[0].clone();
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let endpoint = format!("http://{}", listener.local_addr()?);
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let gateway = tokio::spawn(archipel_gateway::run(config, listener, async move {
        let _ = stopped.await;
    }));
    let s3 = aws_sdk_s3::Client::from_conf(
        aws_sdk_s3::Config::builder()
            .behavior_version(BehaviorVersion::latest())
            .endpoint_url(&endpoint)
            .force_path_style(true)
            .region(Region::new("us-east-1"))
            .credentials_provider(Credentials::new(
                &credential.access_key_id,
                &credential.secret_access_key,
                None,
                None,
                "bench",
            ))
            .build(),
    );

    println!(
        "| listing of {} keys, one level | names | fastest ms | median ms |",
        cli.objects
    );
    println!("|---|---|---:|---:|");
    for (bucket, unencrypted_names) in BUCKETS {
        let names = if unencrypted_names {
            "unencrypted"
        } else {
            "encrypted"
        };
        let (min, median, ()) =
            time(cli.runs, || list_library(&project, bucket, cli.objects)).await?;
        println!(
            "| `Project::list` | {names} | {} | {} |",
            ms(min),
            ms(median)
        );
        let (min, median, pages) =
            time(cli.runs, || list_s3(&s3, bucket, cli.objects, false)).await?;
        println!(
            "| S3 ListObjectsV2, {pages} pages of 1000 | {names} | {} | {} |",
            ms(min),
            ms(median)
        );
        let (min, median, _) = time(cli.runs, || list_s3(&s3, bucket, cli.objects, true)).await?;
        println!(
            "| S3 ListObjectsV2, first page only | {names} | {} | {} |",
            ms(min),
            ms(median)
        );
    }

    let _ = stop.send(());
    gateway
        .await
        .map_err(|e| BenchError::Wrong(format!("gateway task: {e}")))??;
    planet.shutdown().await?;
    Ok(())
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(e) => {
            eprintln!("archipel-listbench: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(bench(&cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("archipel-listbench: {e}");
            ExitCode::FAILURE
        }
    }
}
