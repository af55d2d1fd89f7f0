//! A network namespace of the test's own, joined to the test's namespace by a veth pair, so a
//! test can cut a link (`ip link set … down`) without touching any interface it did not create.
//!
//! Names carry the PID and a counter (parallel runs and tests do not collide); the addresses are
//! a link-local /30 (169.254.0.0/16) picked from the same numbers. An `unreachable` route for
//! that /30 (with a worse metric than the veth's own) keeps traffic for the namespace from
//! falling back to the default route while the link is down: a cut link then fails locally
//! (EHOSTUNREACH) instead of sending SYNs and retransmissions out of the machine's real
//! interface to whatever the default gateway is. Everything is removed in
//! `Drop`, which also runs when a test panics: deleting the host end of the veth deletes the
//! pair, and `ip netns del` the namespace. Processes started in the namespace are the caller's
//! to stop (by PID) before this is dropped.
#![allow(dead_code)]

use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

pub struct NetNs {
    /// The namespace, for `ip netns exec NAME …`.
    pub name: String,
    /// The veth end in the test's namespace.
    pub host_if: String,
    /// The address of `host_if`.
    pub host_ip: Ipv4Addr,
    /// The address of the veth end inside the namespace: where servers there listen.
    pub ns_ip: Ipv4Addr,
    ns_if: String,
    /// The /30, for the `unreachable` fallback route.
    subnet: String,
}

/// Metric of the fallback route: worse than the kernel's route on the veth (0).
const FALLBACK_METRIC: &str = "4000";

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .stdin(Stdio::null())
        .output()
        .map_err(|e| format!("cannot run `ip`: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "`ip {}` failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

impl NetNs {
    /// Creates the namespace and the link. `Err` says why it cannot (not root, no
    /// CAP_NET_ADMIN, no `ip`): the caller skips its test then.
    pub fn create() -> Result<NetNs, String> {
        static COUNTER: AtomicU32 = AtomicU32::new(0);
        let pid = std::process::id();
        let n = COUNTER.fetch_add(1, Ordering::Relaxed);
        // A /30 in 169.254.1.0 – 169.254.254.255 (RFC 3927 reserves the first and last /24).
        let index = 64 + (pid.wrapping_mul(16).wrapping_add(n)) % 16_256;
        let base = index * 4;
        let (a, b) = ((base / 256) as u8, (base % 256) as u8);
        let host_ip = Ipv4Addr::new(169, 254, a, b + 1);
        let ns_ip = Ipv4Addr::new(169, 254, a, b + 2);
        let name = format!("pp-{pid}-{n}");
        ip(&["netns", "add", &name])?;
        let ns = NetNs {
            host_if: format!("pp{pid}x{n}h"),
            ns_if: format!("pp{pid}x{n}n"),
            subnet: format!("{}/30", Ipv4Addr::new(169, 254, a, b)),
            name,
            host_ip,
            ns_ip,
        };
        // From here on, Drop cleans up whatever was made.
        ns.setup()?;
        Ok(ns)
    }

    fn setup(&self) -> Result<(), String> {
        let (host_cidr, ns_cidr) = (format!("{}/30", self.host_ip), format!("{}/30", self.ns_ip));
        ip(&[
            "route",
            "add",
            "unreachable",
            &self.subnet,
            "metric",
            FALLBACK_METRIC,
        ])?;
        ip(&[
            "link",
            "add",
            &self.host_if,
            "type",
            "veth",
            "peer",
            "name",
            &self.ns_if,
        ])?;
        ip(&["link", "set", &self.ns_if, "netns", &self.name])?;
        ip(&["addr", "add", &host_cidr, "dev", &self.host_if])?;
        ip(&["link", "set", &self.host_if, "up"])?;
        let inside = |args: &[&str]| {
            let mut all = vec!["netns", "exec", &self.name, "ip"];
            all.extend_from_slice(args);
            ip(&all)
        };
        inside(&["addr", "add", &ns_cidr, "dev", &self.ns_if])?;
        inside(&["link", "set", &self.ns_if, "up"])?;
        inside(&["link", "set", "lo", "up"])
    }

    /// Brings the host end of the link up or down: down cuts every connection through it
    /// without closing anything (no FIN, no RST), like a pulled cable; new connections fail
    /// with "no route to host" meanwhile.
    pub fn set_link(&self, up: bool) {
        ip(&["link", "set", &self.host_if, if up { "up" } else { "down" }])
            .expect("set the veth link state");
    }
}

impl Drop for NetNs {
    fn drop(&mut self) {
        let _ = ip(&["link", "del", &self.host_if]);
        let _ = ip(&["netns", "del", &self.name]);
        let _ = ip(&[
            "route",
            "del",
            "unreachable",
            &self.subnet,
            "metric",
            FALLBACK_METRIC,
        ]);
    }
}
