//! The client address that per-IP limits count: the TCP peer, or, when the
//! peer is a trusted proxy, the nearest untrusted address in X-Forwarded-For.
//! A header from an untrusted peer is never believed.

use std::net::IpAddr;

use actix_web::HttpRequest;
use ipnet::IpNet;

pub fn client_ip(req: &HttpRequest, trusted: &[IpNet]) -> String {
    let Some(peer) = req.peer_addr().map(|a| canonical(a.ip())) else {
        return "unknown".into();
    };
    let is_trusted = |ip: &IpAddr| trusted.iter().any(|net| net.contains(ip));
    let mut ip = peer;
    if is_trusted(&peer) {
        // Rightmost first: each trusted proxy appended the address it saw.
        let chain: Vec<&str> = req
            .headers()
            .get_all("x-forwarded-for")
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .collect();
        for hop in chain.iter().rev() {
            match hop.trim().parse::<IpAddr>() {
                Ok(hop) => {
                    ip = canonical(hop);
                    if !is_trusted(&ip) {
                        break;
                    }
                }
                // A garbled entry: stop at the last address we could read.
                Err(_) => break,
            }
        }
    }
    bucket(ip)
}

fn canonical(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    }
}

/// IPv6 hosts get a whole /64, so limits count the /64.
fn bucket(ip: IpAddr) -> String {
    match ip {
        IpAddr::V4(v4) => v4.to_string(),
        IpAddr::V6(v6) => {
            let s = v6.segments();
            format!("{:x}:{:x}:{:x}:{:x}::/64", s[0], s[1], s[2], s[3])
        }
    }
}
