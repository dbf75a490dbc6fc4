//! Ports tunnelled to wherever a backend's processes run: a listener on this machine
//! whose every connection is carried by a connection the backend opens on the far
//! side ([`Opener`]: for a container, a process of runner's helper connected to the
//! port inside it). The same whether the engine is on this machine, in a VM or on
//! another host; nothing is asked of the engine's own port publishing.
//!
//! Each connection copies both ways until both ends are done: the end of one
//! direction is passed on as a half-close. [`Tunnel::finish`] stops listening and
//! lets the connections deliver what their far side sent (a server that answered and
//! exited: its answer must not lose a race with its exit); dropping the [`Tunnel`]
//! closes the listener and every connection it carries at once.

use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpListener;

/// The `tracing` target of what a backend did that its user should hear of without
/// asking (a port tunnelled, later a project synced): front-ends say these aloud
/// (`runner: note: …`), at `info`.
pub const NOTE_TARGET: &str = "runner::note";

/// The far side of one tunnelled connection: where to write what the client sends,
/// and where to read what goes back to it.
pub type FarSide = (
    Box<dyn AsyncWrite + Send + Unpin>,
    Box<dyn AsyncRead + Send + Unpin>,
);

/// Opens the far side of a new connection.
pub type Opener =
    Arc<dyn Fn() -> Pin<Box<dyn Future<Output = std::io::Result<FarSide>> + Send>> + Send + Sync>;

/// A listening tunnel; dropped, it stops listening and ends its connections.
#[derive(Debug)]
pub struct Tunnel {
    local: SocketAddr,
    task: tokio::task::JoinHandle<()>,
    /// Stops the listening; the task then waits for its connections to end.
    stop: Option<tokio::sync::oneshot::Sender<()>>,
}

impl Tunnel {
    /// Carries every connection `listener` accepts through a connection `open` makes.
    pub fn serve(listener: TcpListener, open: Opener) -> std::io::Result<Tunnel> {
        let local = listener.local_addr()?;
        let (stop, mut stopped) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            let mut connections = tokio::task::JoinSet::new();
            loop {
                tokio::select! {
                    accepted = listener.accept() => {
                        let Ok((client, _)) = accepted else { continue };
                        let open = Arc::clone(&open);
                        connections.spawn(carry(client, open));
                    }
                    Some(_) = connections.join_next(), if !connections.is_empty() => {}
                    _ = &mut stopped => break,
                }
            }
            drop(listener);
            while connections.join_next().await.is_some() {}
        });
        Ok(Tunnel {
            local,
            task,
            stop: Some(stop),
        })
    }

    /// Stops listening and waits, for at most `bound`, until every connection has
    /// ended; then ends the rest. Called when the far side's processes are done, so
    /// that what they sent last still reaches the client.
    pub async fn finish(mut self, bound: std::time::Duration) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(bound, &mut self.task).await;
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local
    }
}

impl Drop for Tunnel {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn carry(client: tokio::net::TcpStream, open: Opener) {
    let _ = client.set_nodelay(true);
    let (mut to_far, mut from_far) = match open().await {
        Ok(far) => far,
        Err(e) => {
            tracing::warn!(error = %e, "a tunnelled connection could not be opened on the far side");
            return;
        }
    };
    let (mut client_in, mut client_out) = client.into_split();
    let up = async {
        let _ = tokio::io::copy(&mut client_in, &mut to_far).await;
        let _ = to_far.shutdown().await;
    };
    let down = async {
        let _ = tokio::io::copy(&mut from_far, &mut client_out).await;
        let _ = client_out.shutdown().await;
    };
    tokio::join!(up, down);
}
