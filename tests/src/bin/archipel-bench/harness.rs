//! What the benches that compare the network's own tools with S3 clients
//! share: external programs (the `archipel` CLI, restic) run as child
//! processes whose peak memory is watched, and an S3 gateway on the planet,
//! in this process.

use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::time::Duration;

use aws_sdk_s3::config::{
    BehaviorVersion, Credentials, Region, RequestChecksumCalculation, ResponseChecksumValidation,
};
use aws_sdk_s3::Client;
use nix::sys::resource::UsageWho;
use tokio::io::AsyncWriteExt;
use tokio::process::{Child, Command};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

use crate::{cpu_seconds, vm_hwm_kib, BenchError};

/// User plus system CPU seconds of the children that ended so far.
pub(crate) fn children_cpu() -> f64 {
    cpu_seconds(UsageWho::RUSAGE_CHILDREN)
}

/// Waits for `child`, reading its `VmHWM` meanwhile; returns its exit status
/// and the last peak resident set seen, in KiB. (`RUSAGE_CHILDREN` would count
/// this large process's image from before the child's `exec`.)
async fn wait_watching(child: &mut Child) -> std::io::Result<(ExitStatus, u64)> {
    let status_file = child.id().map(|pid| format!("/proc/{pid}/status"));
    let mut peak = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(10));
    loop {
        tokio::select! {
            status = child.wait() => return Ok((status?, peak)),
            _ = tick.tick() => {
                if let Some(kib) = status_file.as_deref().and_then(vm_hwm_kib) {
                    peak = peak.max(kib);
                }
            }
        }
    }
}

/// Runs `command` (called `what` in errors) with `input` on its stdin and its
/// stdout copied into `sink`; returns the bytes copied and the process's peak
/// RSS in KiB. Fails unless the process exits successfully.
pub(crate) async fn run_watched(
    command: &mut Command,
    what: &str,
    input: &[u8],
    sink: &mut (impl tokio::io::AsyncWrite + Unpin),
) -> Result<(u64, u64), BenchError> {
    let mut child = command
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| BenchError::Child(format!("cannot start {what}: {e}")))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take();
    let feed = async {
        if let Some(mut stdin) = stdin {
            stdin.write_all(input).await?;
        }
        Ok::<_, std::io::Error>(())
    };
    let drain = async {
        match stdout {
            Some(mut stdout) => tokio::io::copy(&mut stdout, sink).await,
            None => Ok(0),
        }
    };
    let (fed, drained, waited) = tokio::join!(feed, drain, wait_watching(&mut child));
    let (status, peak_rss_kib) = waited?;
    if !status.success() {
        return Err(BenchError::Child(format!("{what} exited with {status}")));
    }
    fed?;
    Ok((drained?, peak_rss_kib))
}

/// The `archipel` binary with the planet's grant in its environment.
pub(crate) struct ArchipelCli {
    exe: PathBuf,
    access: String,
}

impl ArchipelCli {
    /// The binary at `exe`, or `archipel` next to this program; fails when
    /// it is not there.
    pub(crate) fn locate(exe: Option<&Path>, access: String) -> Result<ArchipelCli, BenchError> {
        let exe = match exe {
            Some(exe) => exe.to_path_buf(),
            None => std::env::current_exe()?.with_file_name("archipel"),
        };
        if !exe.is_file() {
            return Err(BenchError::Child(format!(
                "no archipel CLI at {}: build it first (cargo build --release -p archipel-cli --bin archipel) or pass --archipel",
                exe.display()
            )));
        }
        Ok(ArchipelCli { exe, access })
    }

    /// `archipel ARGS`, to run with [`run_watched`].
    pub(crate) fn command(&self, args: &[&str]) -> Command {
        let mut command = Command::new(&self.exe);
        command.env("ARCHIPEL_ACCESS", &self.access).args(args);
        command
    }

    /// Runs `archipel ARGS` with `input` on its stdin and its stdout copied
    /// into `sink`; returns the bytes copied and the process's peak RSS in KiB.
    pub(crate) async fn run(
        &self,
        args: &[&str],
        input: &[u8],
        sink: &mut (impl tokio::io::AsyncWrite + Unpin),
    ) -> Result<(u64, u64), BenchError> {
        let what = format!("archipel {args:?}");
        run_watched(&mut self.command(args), &what, input, sink).await
    }
}

/// An S3 gateway (`archipel_gateway::run` on 127.0.0.1:0, configured by
/// `config::setup` with a grant) running in this process.
pub(crate) struct Gateway {
    /// `http://127.0.0.1:PORT`.
    pub(crate) endpoint: String,
    pub(crate) region: String,
    pub(crate) access_key_id: String,
    pub(crate) secret_access_key: String,
    stop: oneshot::Sender<()>,
    task: JoinHandle<Result<(), archipel_gateway::Error>>,
}

impl Gateway {
    /// Starts a gateway for `access`, its configuration written in `dir`.
    pub(crate) async fn start(access: &str, dir: &Path) -> Result<Gateway, BenchError> {
        let (config, _) = archipel_gateway::config::setup(dir, access)?;
        let credential = config
            .credentials
            .first()
            .ok_or(archipel_gateway::Error::NoCredentials)?;
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let endpoint = format!("http://{}", listener.local_addr()?);
        let (access_key_id, secret_access_key) = (
            credential.access_key_id.clone(),
            credential.secret_access_key.clone(),
        );
        let region = config.region.clone();
        let (stop, stopped) = oneshot::channel::<()>();
        let task = tokio::spawn(archipel_gateway::run(config, listener, async move {
            let _ = stopped.await;
        }));
        Ok(Gateway {
            endpoint,
            region,
            access_key_id,
            secret_access_key,
            stop,
            task,
        })
    }

    /// An SDK client for the gateway, path-style, that computes and checks
    /// checksums only where S3 requires them.
    pub(crate) fn s3_client(&self) -> Client {
        Client::from_conf(
            aws_sdk_s3::Config::builder()
                .behavior_version(BehaviorVersion::latest())
                .endpoint_url(&self.endpoint)
                .force_path_style(true)
                .region(Region::new(self.region.clone()))
                .credentials_provider(Credentials::new(
                    &self.access_key_id,
                    &self.secret_access_key,
                    None,
                    None,
                    "archipel-bench",
                ))
                // The gateway is measured, not the SDK's CRC32 of every body.
                .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
                .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
                .build(),
        )
    }

    /// Stops the gateway and waits for it.
    pub(crate) async fn stop(self) -> Result<(), BenchError> {
        let _ = self.stop.send(());
        self.task
            .await
            .map_err(|e| BenchError::Child(format!("the gateway task failed: {e}")))?
            .map_err(BenchError::from)
    }
}
