//! `weft-proxy await`: waits until the proxy of this pod answers `/ready`,
//! then optionally runs a command and, when it ends, tells the proxy to
//! shut down. It is the `postStart` hook of a classic (not native) sidecar,
//! which holds the app's container back until the proxy can carry its
//! traffic, and the wrapper that lets a Job's pod finish:
//! `weft-proxy await --shutdown -- ./batch` exits with `./batch`'s code
//! after asking the proxy (POST `/shutdown`) to drain and exit.
//!
//! Plain blocking HTTP/1.0 over loopback to the admin port: no runtime,
//! nothing but the admin server touched.

use clap::Args;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use crate::config::duration;

/// How often `/ready` is asked.
const POLL: Duration = Duration::from_millis(100);
/// How long one request may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(1);

#[derive(Debug, Args)]
pub struct AwaitArgs {
    /// The proxy's admin server.
    #[arg(
        long,
        env = "WEFT_PROXY_AWAIT_ADMIN_ADDR",
        default_value = "127.0.0.1:4191"
    )]
    pub admin_addr: SocketAddr,

    /// How long to wait for `/ready`; past it, exit 1.
    #[arg(long, env = "WEFT_PROXY_AWAIT_TIMEOUT", value_parser = duration, default_value = "2m")]
    pub timeout: Duration,

    /// After COMMAND ends, POST `/shutdown` so the proxy drains and exits
    /// (a Job's pod then completes).
    #[arg(long, requires = "command")]
    pub shutdown: bool,

    /// A command to run once the proxy is ready; await exits with its code.
    #[arg(last = true, value_name = "COMMAND")]
    pub command: Vec<String>,
}

/// Runs `weft-proxy await`.
pub fn run(args: &AwaitArgs) -> ExitCode {
    if let Err(e) = wait_ready(args.admin_addr, args.timeout) {
        eprintln!("weft-proxy await: {e}");
        return ExitCode::FAILURE;
    }
    let Some((program, rest)) = args.command.split_first() else {
        return ExitCode::SUCCESS;
    };
    let status = std::process::Command::new(program).args(rest).status();
    if args.shutdown {
        if let Err(e) = request(args.admin_addr, "POST", "/shutdown") {
            eprintln!("weft-proxy await: POST /shutdown: {e}");
        }
    }
    match status {
        Ok(s) => match s.code() {
            Some(code) => ExitCode::from(u8::try_from(code).unwrap_or(1)),
            None => {
                eprintln!("weft-proxy await: {program} was killed by a signal");
                ExitCode::FAILURE
            }
        },
        Err(e) => {
            eprintln!("weft-proxy await: cannot run {program}: {e}");
            ExitCode::from(127)
        }
    }
}

/// Returns once `GET /ready` answers 200, or says why not within `timeout`.
pub fn wait_ready(admin: SocketAddr, timeout: Duration) -> Result<(), String> {
    let deadline = Instant::now() + timeout;
    loop {
        let last = match request(admin, "GET", "/ready") {
            Ok(200) => return Ok(()),
            Ok(status) => format!("/ready answered {status}"),
            Err(e) => e,
        };
        if Instant::now() >= deadline {
            return Err(format!(
                "the proxy at {admin} was not ready within {timeout:?} ({last})"
            ));
        }
        std::thread::sleep(POLL);
    }
}

/// One HTTP/1.0 request; its status code.
fn request(addr: SocketAddr, method: &str, path: &str) -> Result<u16, String> {
    let mut tcp = TcpStream::connect_timeout(&addr, REQUEST_TIMEOUT).map_err(|e| e.to_string())?;
    tcp.set_read_timeout(Some(REQUEST_TIMEOUT))
        .and_then(|()| tcp.set_write_timeout(Some(REQUEST_TIMEOUT)))
        .map_err(|e| e.to_string())?;
    // One write: the whole request in one segment.
    let request =
        format!("{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Length: 0\r\n\r\n");
    tcp.write_all(request.as_bytes())
        .map_err(|e| e.to_string())?;
    let mut head = Vec::new();
    tcp.take(64 * 1024)
        .read_to_end(&mut head)
        .map_err(|e| e.to_string())?;
    let line = String::from_utf8_lossy(&head);
    line.split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| "not an HTTP answer".to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    /// An admin server that answers 503 `not_ready` times, then 200.
    fn admin(not_ready: usize) -> (SocketAddr, std::thread::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let mut seen = Vec::new();
            for (i, tcp) in listener.incoming().enumerate() {
                let mut tcp = tcp.unwrap();
                // The whole head, however it arrives.
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") && tcp.read(&mut byte).unwrap() == 1 {
                    head.push(byte[0]);
                }
                let line = String::from_utf8_lossy(&head)
                    .lines()
                    .next()
                    .unwrap_or("")
                    .to_owned();
                let status = if i < not_ready {
                    "503 Service Unavailable"
                } else {
                    "200 OK"
                };
                let _ = write!(tcp, "HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
                let done = line.starts_with("POST");
                seen.push(line);
                if done {
                    break;
                }
            }
            seen
        });
        (addr, server)
    }

    #[test]
    fn waits_for_ready_then_runs_the_command_and_shuts_the_proxy_down() {
        let (addr, server) = admin(3);
        let args = AwaitArgs {
            admin_addr: addr,
            timeout: Duration::from_secs(10),
            shutdown: true,
            command: vec!["sh".into(), "-c".into(), "exit 7".into()],
        };
        assert_eq!(run(&args), ExitCode::from(7));
        let seen = server.join().unwrap();
        assert_eq!(seen.len(), 5, "{seen:?}");
        assert!(
            seen[..4].iter().all(|l| l == "GET /ready HTTP/1.0"),
            "{seen:?}"
        );
        assert_eq!(seen[4], "POST /shutdown HTTP/1.0");
    }

    #[test]
    fn gives_up_after_its_timeout_saying_why() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        drop(listener);
        let err = wait_ready(addr, Duration::from_millis(250)).unwrap_err();
        assert!(err.contains("was not ready within 250ms"), "{err}");
        assert!(err.contains("refused"), "{err}");
    }
}
