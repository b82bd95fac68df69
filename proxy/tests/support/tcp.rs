//! Plain TCP peers: servers that speak first, answer after a half-close,
//! hang up, or never accept; and addresses where nothing listens.

use socket2::{Domain, Socket, Type};
use std::net::SocketAddr;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;

/// A TCP server on 127.0.0.1 port 0 running `serve` for each connection;
/// stops accepting when dropped.
#[derive(Debug)]
pub struct Server {
    pub addr: SocketAddr,
    accept: JoinHandle<()>,
}

impl Server {
    pub async fn start<F, Fut>(serve: F) -> Self
    where
        F: Fn(TcpStream) -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()> + Send + 'static,
    {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("binds");
        let addr = listener.local_addr().expect("its address");
        let accept = tokio::spawn(async move {
            while let Ok((tcp, _)) = listener.accept().await {
                tokio::spawn(serve(tcp));
            }
        });
        Self { addr, accept }
    }

    /// Speaks first (`220 weft banner`), then echoes each line it is sent
    /// as `echo LINE` (server-speaks-first protocols: SMTP, MySQL).
    pub async fn banner() -> Self {
        Self::start(|tcp| async move {
            let (r, mut w) = tcp.into_split();
            if w.write_all(b"220 weft banner\r\n").await.is_err() {
                return;
            }
            let mut lines = BufReader::new(r).lines();
            while let Ok(Some(line)) = lines.next_line().await {
                if w.write_all(format!("echo {line}\r\n").as_bytes())
                    .await
                    .is_err()
                {
                    return;
                }
            }
        })
        .await
    }

    /// Reads until the client half-closes, then answers `received N bytes`
    /// and closes.
    pub async fn half_close() -> Self {
        Self::start(|mut tcp| async move {
            let mut n = 0u64;
            let mut buf = vec![0u8; 64 * 1024];
            loop {
                match tcp.read(&mut buf).await {
                    Ok(0) => break,
                    Ok(k) => n += k as u64,
                    Err(_) => return,
                }
            }
            let _ = tcp
                .write_all(format!("received {n} bytes").as_bytes())
                .await;
            let _ = tcp.shutdown().await;
        })
        .await
    }

    /// Reads what the client sends first, then closes without a word.
    pub async fn hang_up() -> Self {
        Self::start(|mut tcp| async move {
            let mut buf = [0u8; 1024];
            let _ = tcp.read(&mut buf).await;
        })
        .await
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.accept.abort();
    }
}

/// A loopback address where nothing listens: connections are refused.
/// The port stays bound (not listening) while this lives, so no other
/// test's listener can take it meanwhile.
#[derive(Debug)]
pub struct Refusing {
    pub addr: SocketAddr,
    _bound: Socket,
}

impl Refusing {
    pub fn new() -> Self {
        Self::on("127.0.0.1:0".parse().expect("an address"))
    }

    /// Bound to `addr` (port 0: any free one).
    pub fn on(addr: SocketAddr) -> Self {
        let socket = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
        socket.bind(&addr.into()).expect("binds");
        let addr = socket
            .local_addr()
            .expect("its address")
            .as_socket()
            .expect("an IP address");
        Self {
            addr,
            _bound: socket,
        }
    }
}

/// A listener that never accepts, its backlog already full: further
/// connections get no answer at all (the kernel drops their SYN) until
/// they time out. Keep it, and the connections, alive while needed.
#[derive(Debug)]
pub struct Unanswering {
    pub addr: SocketAddr,
    _listener: Socket,
    _queued: Vec<std::net::TcpStream>,
}

impl Unanswering {
    pub fn new() -> Self {
        let listener = Socket::new(Domain::IPV4, Type::STREAM, None).expect("a socket");
        let bind: SocketAddr = "127.0.0.1:0".parse().expect("an address");
        listener.bind(&bind.into()).expect("binds");
        listener.listen(0).expect("listens with a backlog of 0");
        let addr = listener
            .local_addr()
            .expect("its address")
            .as_socket()
            .expect("an IP address");
        // A backlog of 0 still queues one connection (and the kernel may
        // take one more while it is being queued): fill it.
        let queued = (0..2)
            .filter_map(|_| {
                std::net::TcpStream::connect_timeout(&addr, std::time::Duration::from_millis(200))
                    .ok()
            })
            .collect();
        Self {
            addr,
            _listener: listener,
            _queued: queued,
        }
    }
}
