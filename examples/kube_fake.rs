//! The Kubernetes API fake of the tests (`scim_test_support::kube_fake`) as a
//! standalone server, for running `scim-operator controller` as a process or in a
//! container against it (`make e2e-pod`, tests/image/e2e_pod.py).
//!
//! Prints
//!
//! ```text
//! KUBE URL: http://127.0.0.1:PORT
//! ```
//!
//! and serves plain HTTP without authentication (any credential in a kubeconfig is
//! ignored) until SIGTERM or SIGINT, or until its stdin closes when stdin is a pipe
//! (so a parent that dies takes it along). The fake's simulated Deployment controller
//! marks every Deployment available; `--deployments-unready` makes them not ready.

use std::io::{Read, Write};
use std::os::unix::fs::FileTypeExt;

use clap::Parser;
use scim_test_support::kube_fake::{KubeFake, Options};
use tokio::signal::unix::{SignalKind, signal};

#[derive(Parser)]
#[command(about = "In-process Kubernetes API fake, served standalone")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: String,
    /// Watch events kept for resuming watches.
    #[arg(long, default_value_t = Options::default().history)]
    history: usize,
    /// Simulated Deployments report no ready replicas.
    #[arg(long)]
    deployments_unready: bool,
}

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let a = Args::parse();
    let fake = KubeFake::start_on(&a.listen, Options { history: a.history }).await?;
    if a.deployments_unready {
        fake.set_deployments_ready(false);
    }
    {
        let mut out = std::io::stdout().lock();
        writeln!(out, "KUBE URL: {}", fake.url())?;
        out.flush()?;
    }

    let (closed_tx, closed_rx) = tokio::sync::oneshot::channel::<()>();
    let stdin_is_pipe = std::fs::metadata("/proc/self/fd/0").is_ok_and(|m| m.file_type().is_fifo());
    if stdin_is_pipe {
        std::thread::spawn(move || {
            let mut buf = [0u8; 256];
            let mut stdin = std::io::stdin().lock();
            while matches!(stdin.read(&mut buf), Ok(n) if n > 0) {}
            let _ = closed_tx.send(());
        });
    }
    let stdin_closed = async move {
        if stdin_is_pipe {
            let _ = closed_rx.await;
        } else {
            std::future::pending::<()>().await;
        }
    };
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
        _ = stdin_closed => {}
    }
    drop(fake);
    Ok(())
}
