//! A tunnel that is finished delivers what its far side sent last: a server that
//! answers and exits must not lose its answer to its own exit (runner saw a
//! container's `nc` exit, stopped the environment, and the client got nothing).

use std::sync::Arc;
use std::time::Duration;

use runner_core::tunnel::{FarSide, Opener, Tunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A tunnel whose every connection reaches the returned server end.
async fn tunnel() -> (Tunnel, tokio::sync::mpsc::Receiver<tokio::io::DuplexStream>) {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let (servers, accepted) = tokio::sync::mpsc::channel(4);
    let open: Opener = Arc::new(move || {
        let servers = servers.clone();
        Box::pin(async move {
            let (ours, server) = tokio::io::duplex(1024);
            servers.send(server).await.map_err(std::io::Error::other)?;
            let (read, write) = tokio::io::split(ours);
            let far: FarSide = (Box::new(write), Box::new(read));
            Ok(far)
        })
    });
    (Tunnel::serve(listener, open).unwrap(), accepted)
}

#[tokio::test]
async fn a_finished_tunnel_delivers_the_far_sides_last_words() {
    let (tunnel, mut accepted) = tunnel().await;
    let addr = tunnel.local_addr();
    let mut client = tokio::net::TcpStream::connect(addr).await.unwrap();
    client.write_all(b"GET").await.unwrap();
    let mut server = accepted.recv().await.unwrap();
    let mut asked = [0u8; 3];
    server.read_exact(&mut asked).await.unwrap();
    assert_eq!(&asked, b"GET");
    // The environment stops while the answer is still on its way.
    let finished = tokio::spawn(tunnel.finish(Duration::from_secs(10)));
    tokio::time::sleep(Duration::from_millis(100)).await;
    // No new connection is taken once it is finishing.
    assert!(
        tokio::net::TcpStream::connect(addr).await.is_err(),
        "a finishing tunnel still listens"
    );
    server.write_all(b"the answer").await.unwrap();
    drop(server);
    let mut answer = String::new();
    tokio::time::timeout(Duration::from_secs(10), client.read_to_string(&mut answer))
        .await
        .expect("the answer came")
        .expect("read");
    assert_eq!(answer, "the answer");
    drop(client);
    tokio::time::timeout(Duration::from_secs(10), finished)
        .await
        .expect("finish returned once the connection ended")
        .unwrap();
}

/// A connection that never ends holds `finish` for its bound only.
#[tokio::test]
async fn finish_waits_no_longer_than_its_bound() {
    let (tunnel, mut accepted) = tunnel().await;
    let _client = tokio::net::TcpStream::connect(tunnel.local_addr())
        .await
        .unwrap();
    let _server = accepted.recv().await.unwrap();
    tokio::time::timeout(
        Duration::from_secs(10),
        tunnel.finish(Duration::from_millis(200)),
    )
    .await
    .expect("finish ended at its bound");
}
