//! Loopback ports for backends and balancers.

use std::net::TcpListener;
use std::sync::Mutex;

/// A loopback port that is free now and that nothing else will take by accident: it is
/// below the kernel's ephemeral range (so no outgoing connection and no `bind(:0)` is
/// given it while the test holds it in reserve for a restart) and never handed out twice
/// by this process.
pub fn free_port() -> u16 {
    static GIVEN: Mutex<Vec<u16>> = Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|range| range.split_whitespace().next()?.parse::<u16>().ok())
        .unwrap_or(32768);
    let mut given = GIVEN.lock().unwrap_or_else(|poisoned| poisoned.into_inner());
    if ephemeral_low > 12_000 {
        let low = ephemeral_low - 10_000;
        // Start somewhere that depends on the process, so concurrent test binaries rarely
        // probe the same ports; 7 is coprime with 10,000, so one pass visits every port.
        let first = std::process::id() % 10_000;
        for offset in 0..10_000u32 {
            let port = low + ((first + offset * 7) % 10_000) as u16;
            if given.contains(&port) {
                continue;
            }
            if TcpListener::bind(("127.0.0.1", port)).is_ok() {
                given.push(port);
                return port;
            }
        }
    }
    // No room below the ephemeral range: let the kernel choose.
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .expect("bind a free loopback port");
    given.push(port);
    port
}

/// Whether something listens on TCP `port` (any local address, IPv4 or IPv6), from the
/// kernel's socket tables: looking does not open a connection the server would see.
/// `None` where `/proc/net/tcp` cannot be read (not Linux).
pub fn listening(port: u16) -> Option<bool> {
    let mut readable = false;
    for table in ["/proc/net/tcp", "/proc/net/tcp6"] {
        let Ok(text) = std::fs::read_to_string(table) else {
            continue;
        };
        readable = true;
        if listens_in(&text, port) {
            return Some(true);
        }
    }
    readable.then_some(false)
}

/// One table of `/proc/net/tcp`: `sl local_address rem_address st ...`, addresses as
/// `HEX_IP:HEX_PORT`, state `0A` for LISTEN.
fn listens_in(table: &str, port: u16) -> bool {
    table.lines().skip(1).any(|line| {
        let mut fields = line.split_whitespace();
        let local = fields.nth(1);
        let state = fields.nth(1);
        state == Some("0A")
            && local
                .and_then(|local| local.rsplit_once(':'))
                .and_then(|(_, hex)| u16::from_str_radix(hex, 16).ok())
                == Some(port)
    })
}

/// `name` on `PATH`, or in `/usr/sbin`, `/usr/local/sbin` or `/sbin`, where distributions
/// put daemons (often off a user's `PATH`).
pub fn find_program(name: &str) -> Option<std::path::PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/usr/local/sbin", "/sbin"].map(std::path::PathBuf::from))
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_listening_socket_is_found_in_the_kernel_table() {
        let table = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid\n\
                     0: 0100007F:1F90 00000000:0000 0A 00000000:00000000 00:00000000 00000000 0\n\
                     1: 0100007F:1F91 0100007F:C350 01 00000000:00000000 00:00000000 00000000 0\n";
        assert!(listens_in(table, 0x1F90));
        assert!(
            !listens_in(table, 0x1F91),
            "an established connection is not a listener"
        );
        assert!(!listens_in(table, 80));
    }

    #[test]
    fn a_bound_listener_is_seen_and_a_closed_one_is_not() {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().expect("address").port();
        if listening(port).is_none() {
            return; // no /proc/net/tcp here
        }
        assert_eq!(listening(port), Some(true));
        drop(listener);
        assert_eq!(listening(port), Some(false));
    }
}
