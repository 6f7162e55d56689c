//! Sockets a node inherits instead of binding them itself (inetd style: on standard input), so
//! a supervisor or a test can bind a port, know it, and hand the bound socket over without
//! ever releasing it.

use std::io;
use std::os::fd::AsFd as _;

/// The UDP socket open on standard input, made non-blocking for tokio.
///
/// Fails with `InvalidInput` when standard input is not a bound datagram socket (a terminal,
/// a file, a TCP socket), so a misconfigured start stops with a clear error.
pub fn udp_socket_on_stdin() -> io::Result<tokio::net::UdpSocket> {
    let fd = io::stdin().as_fd().try_clone_to_owned()?;
    let socket = socket2::Socket::from(fd);
    let not_udp = || io::Error::new(io::ErrorKind::InvalidInput, "stdin is not a UDP socket");
    if socket.r#type().map_err(|_| not_udp())? != socket2::Type::DGRAM {
        return Err(not_udp());
    }
    socket.local_addr().map_err(|_| not_udp())?.as_socket().ok_or_else(not_udp)?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket.into())
}
