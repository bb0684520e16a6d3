//! A SOCKS5 proxy for the tests of `--push-proxy`: Debian's microsocks, which the test
//! command installs, on a free loopback port.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// microsocks on a free loopback port, stopped by its PID when dropped.
pub struct Microsocks {
    child: Child,
    /// The port it listens on, on 127.0.0.1.
    pub port: u16,
}

impl Microsocks {
    /// Starts it and waits until it listens; panics, saying how to install it, if it cannot.
    pub fn start() -> Microsocks {
        // The port is found free and then handed over, so another process can take it in
        // between; microsocks then exits, and another port is tried.
        for _ in 0..5 {
            let port = free_port();
            let child = Command::new("microsocks")
                .args(["-i", "127.0.0.1", "-p", &port.to_string()])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()
                .unwrap_or_else(|e| panic!("cannot start microsocks ({e}); the test command, bash scripts/test, installs it"));
            let mut proxy = Microsocks { child, port };
            let deadline = Instant::now() + Duration::from_secs(5);
            while Instant::now() < deadline && !matches!(proxy.child.try_wait(), Ok(Some(_))) {
                if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                    return proxy;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        panic!("microsocks did not start listening on the loopback");
    }
}

impl Drop for Microsocks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A loopback port nothing listens on (as long as nothing takes it meanwhile).
pub fn free_port() -> u16 {
    let free = std::net::TcpListener::bind(("127.0.0.1", 0)).expect("bind 127.0.0.1:0");
    free.local_addr().expect("the bound address").port()
}
