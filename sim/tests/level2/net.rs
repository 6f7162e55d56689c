//! The simulated network under the real gRPC stack: turmoil's TCP as tonic's server connections
//! and as the channel connector of the shell's peer links and of the client.

use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use mokv_shell::embed::{Identity, VouchedIdentity};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tonic::transport::{Channel, Endpoint, Uri};

/// Port of every node's gRPC services (KV and Peer on one port, as in mokvd).
pub const RPC_PORT: u16 = 8400;

/// Node hosts are named `n1`, `n2`, ...: their callers are nodes (the peer service admits
/// them). Every other host is a client, and calls as `root` (the default policy lets `root`
/// do everything), as mokvd's dev client certificate does.
pub fn identity_of_host(host: &str) -> Identity {
    if is_node_host(host) {
        Identity { name: host.to_owned(), is_node: true }
    } else {
        Identity { name: "root".to_owned(), is_node: false }
    }
}

pub fn is_node_host(host: &str) -> bool {
    host.strip_prefix('n').is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// An accepted simulated connection, with the identity of the host that opened it (what the
/// client certificate says in mokvd).
#[derive(Debug)]
pub struct SimConn {
    stream: turmoil::net::TcpStream,
    caller: VouchedIdentity,
}

impl tonic::transport::server::Connected for SimConn {
    type ConnectInfo = VouchedIdentity;

    fn connect_info(&self) -> VouchedIdentity {
        self.caller.clone()
    }
}

impl AsyncRead for SimConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_read(cx, buf)
    }
}

impl AsyncWrite for SimConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.stream).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.stream).poll_shutdown(cx)
    }
}

/// Connections accepted on `listener`, each with its caller's identity (by turmoil host name).
pub fn incoming(
    listener: turmoil::net::TcpListener,
) -> tokio_stream::wrappers::ReceiverStream<io::Result<SimConn>> {
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::task::spawn_local(async move {
        loop {
            let accepted = tokio::select! {
                () = tx.closed() => return,
                a = listener.accept() => a,
            };
            let item = accepted.map(|(stream, peer)| {
                let host = turmoil::reverse_lookup(peer.ip()).unwrap_or_default();
                SimConn { stream, caller: VouchedIdentity(identity_of_host(&host)) }
            });
            if tx.send(item).await.is_err() {
                return;
            }
        }
    });
    tokio_stream::wrappers::ReceiverStream::new(rx)
}

/// Opens turmoil TCP connections for a tonic channel: used for the shell's peer links and joins
/// and for the client. The endpoint keeps every setting the real code gave it (connect timeout,
/// keepalive).
pub fn channel_factory() -> Arc<dyn Fn(Endpoint) -> Channel + Send + Sync> {
    Arc::new(|endpoint: Endpoint| {
        endpoint.connect_with_connector_lazy(tower::service_fn(|uri: Uri| async move {
            let host = uri.host().unwrap_or_default().to_owned();
            let port = uri.port_u16().unwrap_or(RPC_PORT);
            let stream = turmoil::net::TcpStream::connect((host.as_str(), port)).await?;
            Ok::<_, io::Error>(hyper_util::rt::TokioIo::new(stream))
        }))
    })
}
