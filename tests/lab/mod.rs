//! The fault lab: a "box" and a "server" network namespace joined by a veth pair, with
//! TEST-NET-1 addresses, and the faults a venue network inflicts — a cable pulled, a firewall
//! that starts dropping the server's packets.
//!
//! Everything a lab creates it removes in `Drop`, even when the test fails. Nothing here can
//! send a packet outside the two namespaces it made.

#![allow(dead_code)]

use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

pub const BOX_IP: &str = "192.0.2.2";
pub const SERVER_IP: &str = "192.0.2.1";

pub struct Lab {
    pub box_ns: String,
    pub server_ns: String,
    box_if: String,
    server_if: String,
}

fn ip(args: &[&str]) -> Result<(), String> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| format!("cannot run ip: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "ip {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn must(args: &[&str]) {
    if let Err(e) = ip(args) {
        panic!("{e}");
    }
}

impl Lab {
    /// Builds the lab, or explains why it cannot (not root, no `ip`): the caller skips then.
    pub fn new() -> Result<Lab, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("not root: network namespaces need CAP_SYS_ADMIN".into());
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab {
            box_ns: format!("oa-box-{id}"),
            server_ns: format!("oa-srv-{id}"),
            // Interface names are per namespace, so short fixed names are fine.
            box_if: "eth0".into(),
            server_if: "eth0".into(),
        };
        ip(&["netns", "add", &lab.box_ns])?;
        ip(&["netns", "add", &lab.server_ns])?;
        // Created in the box namespace with its peer straight in the server namespace.
        must(&[
            "-n",
            &lab.box_ns,
            "link",
            "add",
            &lab.box_if,
            "type",
            "veth",
            "peer",
            "name",
            "srv0",
            "netns",
            &lab.server_ns,
        ]);
        must(&[
            "-n",
            &lab.server_ns,
            "link",
            "set",
            "srv0",
            "name",
            &lab.server_if,
        ]);
        for (ns, ifname, addr) in [
            (&lab.box_ns, &lab.box_if, BOX_IP),
            (&lab.server_ns, &lab.server_if, SERVER_IP),
        ] {
            must(&["-n", ns, "link", "set", "lo", "up"]);
            must(&[
                "-n",
                ns,
                "addr",
                "add",
                &format!("{addr}/24"),
                "dev",
                ifname,
            ]);
            must(&["-n", ns, "link", "set", ifname, "up"]);
        }
        must(&[
            "-n",
            &lab.box_ns,
            "route",
            "add",
            "default",
            "via",
            SERVER_IP,
        ]);
        Ok(lab)
    }

    /// The cable is pulled: the server side of the veth goes down, so the box's interface
    /// loses carrier (its address and routes stay, flagged linkdown).
    pub fn cut(&self) {
        must(&[
            "-n",
            &self.server_ns,
            "link",
            "set",
            &self.server_if,
            "down",
        ]);
    }

    pub fn restore(&self) {
        must(&["-n", &self.server_ns, "link", "set", &self.server_if, "up"]);
    }

    /// A firewall starts dropping every UDP packet from the server (media path dead, HTTP
    /// still fine, link up).
    pub fn drop_server_udp(&self) {
        let rules = format!(
            "table inet onairlab {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {SERVER_IP} meta l4proto udp drop\n }}\n}}\n"
        );
        nft(&self.box_ns, &rules);
    }

    pub fn allow_server_udp(&self) {
        nft(&self.box_ns, "delete table inet onairlab\n");
    }

    /// The box's uplink carries at most `kbit` kbit/s from now on: a token bucket on its
    /// interface with room for a few packets of burst and 300 ms of queue behind it (a modem or
    /// a shared line: packets wait, then drop). Replaces any earlier limit.
    pub fn limit_uplink(&self, kbit: u32) {
        tc(
            &self.box_ns,
            &[
                "qdisc",
                "replace",
                "dev",
                &self.box_if,
                "root",
                "tbf",
                "rate",
                &format!("{kbit}kbit"),
                "burst",
                "6kb",
                "latency",
                "300ms",
            ],
        );
    }

    /// The uplink's limit is lifted.
    pub fn unlimit_uplink(&self) {
        tc(&self.box_ns, &["qdisc", "del", "dev", &self.box_if, "root"]);
    }

    /// Counts, from now on, what the box hands its uplink *before* the token bucket (the
    /// output hook runs before the qdisc): counter `offered`, every packet out of `eth0`; and
    /// counter `syns`, the TCP connections it opens to the server's `port`.
    pub fn count_offered(&self, port: u16) {
        let rules = format!(
            "table inet onaircount {{\n counter offered {{}}\n counter syns {{}}\n chain out {{\n  type filter hook output priority 0; policy accept;\n  oif \"{dev}\" counter name \"offered\"\n  ip daddr {SERVER_IP} tcp dport {port} tcp flags & (syn | ack) == syn counter name \"syns\"\n }}\n}}\n",
            dev = self.box_if
        );
        nft(&self.box_ns, &rules);
    }

    /// (packets, bytes) a counter of [`Lab::count_offered`] has seen.
    pub fn counter(&self, name: &str) -> (u64, u64) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.box_ns,
                "nft",
                "-j",
                "list",
                "counter",
            ])
            .args(["inet", "onaircount", name])
            .output()
            .expect("run nft");
        let v: serde_json::Value =
            serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null);
        let c = v["nftables"]
            .as_array()
            .and_then(|a| a.iter().find_map(|e| e.get("counter")))
            .unwrap_or_else(|| {
                panic!(
                    "no counter {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )
            });
        (
            c["packets"].as_u64().unwrap_or(0),
            c["bytes"].as_u64().unwrap_or(0),
        )
    }

    /// Random loss of `percent` % of the packets between box and server, both ways (dropped
    /// on arrival, so no sender sees an error).
    pub fn random_loss(&self, percent: u32) {
        for (ns, matcher) in [
            (&self.box_ns, format!("ip saddr {SERVER_IP}")),
            (&self.server_ns, format!("ip saddr {BOX_IP}")),
        ] {
            let rules = format!(
                "table inet onairloss {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  {matcher} numgen random mod 100 < {percent} drop\n }}\n}}\n"
            );
            nft(ns, &rules);
        }
    }

    /// Bytes the box's uplink has sent so far (its interface counter).
    pub fn uplink_tx_bytes(&self) -> u64 {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                &self.box_ns,
                "cat",
                &format!("/sys/class/net/{}/statistics/tx_bytes", self.box_if),
            ])
            .output()
            .expect("read the interface counter");
        String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .expect("tx_bytes is a number")
    }
}

/// Runs `tc` in a namespace; panics with its error.
fn tc(ns: &str, args: &[&str]) {
    let out = Command::new("ip")
        .args(["netns", "exec", ns, "tc"])
        .args(args)
        .output()
        .expect("run tc");
    assert!(
        out.status.success(),
        "tc {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Loads a ruleset into the namespace's nftables (`nft -f -`).
fn nft(ns: &str, rules: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["netns", "exec", ns, "nft", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run nft");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(rules.as_bytes())
        .expect("write nft rules");
    let out = child.wait_with_output().expect("wait for nft");
    assert!(
        out.status.success(),
        "nft {rules}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for Lab {
    fn drop(&mut self) {
        // Deleting a namespace deletes its end of the veth, and with it the other end.
        let _ = ip(&["netns", "del", &self.box_ns]);
        let _ = ip(&["netns", "del", &self.server_ns]);
    }
}

/// Builds a lab or prints why the test is skipped.
#[macro_export]
macro_rules! lab_or_skip {
    () => {
        match lab::Lab::new() {
            Ok(lab) => lab,
            Err(reason) => {
                eprintln!("SKIPPED: {reason}");
                return;
            }
        }
    };
}

/// The server's address in the two-uplink lab: on the server namespace's `lo`, reachable
/// through either uplink.
pub const FAR_SERVER_IP: &str = "203.0.113.1";

/// One of the box's uplinks: its interface in the box namespace, the peer in the server
/// namespace (the "ISP" side), its subnet and addresses.
#[derive(Debug, Clone)]
pub struct UplinkSpec {
    pub box_if: &'static str,
    pub server_if: &'static str,
    pub box_ip: &'static str,
    pub gateway: &'static str,
    pub metric: u32,
}

/// A box with two uplinks to the server: `eth0` (192.0.2.0/24) and `wlan0`
/// (198.51.100.0/24), each with its own gateway and default route, and a server whose
/// address lives on its `lo`. The server side filters by reverse path (`rp_filter=1`, as ISPs
/// do): a packet that arrives on one uplink with the other uplink's source address is
/// dropped, so a connection really dies when its path changes under it.
pub struct TwoUplinks {
    pub box_ns: String,
    pub server_ns: String,
    pub primary: UplinkSpec,
    pub secondary: UplinkSpec,
}

impl TwoUplinks {
    /// `kernel_prefers_primary`: whether `eth0`'s default route has the lower metric (when
    /// not, only `network.prefer` makes `eth0` the primary).
    pub fn new(kernel_prefers_primary: bool) -> Result<TwoUplinks, String> {
        if !nix::unistd::Uid::effective().is_root() {
            return Err("not root: network namespaces need CAP_SYS_ADMIN".into());
        }
        static N: AtomicU32 = AtomicU32::new(0);
        let id = format!(
            "{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        );
        let (eth_metric, wlan_metric) = if kernel_prefers_primary {
            (100, 200)
        } else {
            (200, 100)
        };
        let lab = TwoUplinks {
            box_ns: format!("oa-2box-{id}"),
            server_ns: format!("oa-2srv-{id}"),
            primary: UplinkSpec {
                box_if: "eth0",
                server_if: "isp-a",
                box_ip: "192.0.2.2",
                gateway: "192.0.2.1",
                metric: eth_metric,
            },
            secondary: UplinkSpec {
                box_if: "wlan0",
                server_if: "isp-b",
                box_ip: "198.51.100.2",
                gateway: "198.51.100.1",
                metric: wlan_metric,
            },
        };
        ip(&["netns", "add", &lab.box_ns])?;
        ip(&["netns", "add", &lab.server_ns])?;
        for ns in [&lab.box_ns, &lab.server_ns] {
            must(&["-n", ns, "link", "set", "lo", "up"]);
        }
        // Strict reverse-path filtering on the server side, before any interface exists
        // (new interfaces take `default`; the effective value is the max with `all`).
        for key in ["all", "default"] {
            lab.sysctl(
                &lab.server_ns,
                &format!("net.ipv4.conf.{key}.rp_filter"),
                "1",
            );
        }
        must(&[
            "-n",
            &lab.server_ns,
            "addr",
            "add",
            &format!("{FAR_SERVER_IP}/32"),
            "dev",
            "lo",
        ]);
        // Explicit interface indices, each different from its peer's: the kernel rate-limits
        // carrier reports of a device whose index equals its peer's to one per second.
        for (u, index) in [(&lab.primary, 7101), (&lab.secondary, 7201)] {
            let (box_index, server_index) = (index.to_string(), (index + 1).to_string());
            #[rustfmt::skip]
            must(&["-n", &lab.box_ns, "link", "add", u.box_if, "index", &box_index,
                   "type", "veth", "peer", "name", u.server_if, "index", &server_index,
                   "netns", &lab.server_ns]);
            must(&[
                "-n",
                &lab.box_ns,
                "addr",
                "add",
                &format!("{}/24", u.box_ip),
                "dev",
                u.box_if,
            ]);
            #[rustfmt::skip]
            must(&["-n", &lab.server_ns, "addr", "add", &format!("{}/24", u.gateway), "dev", u.server_if]);
            lab.sysctl(
                &lab.server_ns,
                &format!("net.ipv4.conf.{}.rp_filter", u.server_if),
                "1",
            );
            must(&["-n", &lab.server_ns, "link", "set", u.server_if, "up"]);
            must(&["-n", &lab.box_ns, "link", "set", u.box_if, "up"]);
            lab.default_route(u);
        }
        Ok(lab)
    }

    fn sysctl(&self, ns: &str, key: &str, value: &str) {
        let out = Command::new("ip")
            .args([
                "netns",
                "exec",
                ns,
                "sysctl",
                "-qw",
                &format!("{key}={value}"),
            ])
            .output()
            .expect("run sysctl");
        assert!(
            out.status.success(),
            "sysctl {key}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    fn default_route(&self, u: &UplinkSpec) {
        #[rustfmt::skip]
        must(&["-n", &self.box_ns, "route", "replace", "default", "via", u.gateway,
               "dev", u.box_if, "metric", &u.metric.to_string()]);
    }

    /// Makes the kernel stop using routes through an interface without carrier (a box whose
    /// network manager drops a dead link's routes behaves the same).
    pub fn ignore_routes_with_linkdown(&self) {
        for key in ["all", "default", self.primary.box_if, self.secondary.box_if] {
            self.sysctl(
                &self.box_ns,
                &format!("net.ipv4.conf.{key}.ignore_routes_with_linkdown"),
                "1",
            );
        }
    }

    /// The uplink's cable is pulled (or plugged back): its ISP side goes down (up), so the
    /// box's interface loses (regains) carrier; its address and routes stay.
    pub fn carrier(&self, u: &UplinkSpec, on: bool) {
        #[rustfmt::skip]
        must(&["-n", &self.server_ns, "link", "set", u.server_if, if on { "up" } else { "down" }]);
    }

    /// The uplink gets a new address in the same subnet (a new DHCP lease): the old one is
    /// deleted (the kernel drops the routes through it), the new one added with the default
    /// route, all in one `ip -batch`.
    pub fn readdress(&self, u: &UplinkSpec, old: &str, new: &str) {
        let script = format!(
            "addr del {old}/24 dev {dev}\naddr add {new}/24 dev {dev}\n\
             route replace default via {gw} dev {dev} metric {metric}\n",
            dev = u.box_if,
            gw = u.gateway,
            metric = u.metric,
        );
        batch(&self.box_ns, &script);
    }

    /// Changes beside the path to the server: a LAN interface with an address of its own
    /// (a subnet that does not hold the server) and a second address on the primary uplink.
    pub fn unrelated_changes(&self) {
        let script = format!(
            "link add lan0 index 7301 type veth peer name lan1 index 7302\n\
             addr add 203.0.113.130/25 dev lan0\nlink set lan0 up\nlink set lan1 up\n\
             addr add 192.0.2.50/24 dev {}\n",
            self.primary.box_if
        );
        batch(&self.box_ns, &script);
    }

    /// Random loss of `percent` % of the packets between box and server, both ways
    /// (dropped on arrival, so no sender sees an error).
    pub fn random_loss(&self, percent: u32) {
        for (ns, matcher) in [
            (&self.box_ns, format!("ip saddr {FAR_SERVER_IP}")),
            (&self.server_ns, format!("ip daddr {FAR_SERVER_IP}")),
        ] {
            let rules = format!(
                "table inet onairloss {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  {matcher} numgen random mod 100 < {percent} drop\n }}\n}}\n"
            );
            nft(ns, &rules);
        }
    }

    /// Every packet from the server is dropped on arrival at the box, silently: TCP, UDP,
    /// ICMP alike, on both uplinks.
    pub fn drop_everything_from_server(&self) {
        let rules = format!(
            "table inet onairdrop {{\n chain input {{\n  type filter hook input priority 0; policy accept;\n  ip saddr {FAR_SERVER_IP} drop\n }}\n}}\n"
        );
        nft(&self.box_ns, &rules);
    }

    /// What `ip` prints in the box namespace.
    pub fn box_ip_output(&self, args: &[&str]) -> String {
        let out = Command::new("ip")
            .args(["-n", &self.box_ns])
            .args(args)
            .output()
            .expect("run ip");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }
}

fn batch(ns: &str, script: &str) {
    use std::io::Write;
    let mut child = Command::new("ip")
        .args(["-n", ns, "-batch", "-"])
        .stdin(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run ip -batch");
    child
        .stdin
        .take()
        .expect("piped stdin")
        .write_all(script.as_bytes())
        .expect("write ip batch");
    let out = child.wait_with_output().expect("wait for ip -batch");
    assert!(
        out.status.success(),
        "ip -batch {script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Drop for TwoUplinks {
    fn drop(&mut self) {
        let _ = ip(&["netns", "del", &self.box_ns]);
        let _ = ip(&["netns", "del", &self.server_ns]);
    }
}

/// Builds a two-uplink lab or prints why the test is skipped.
#[macro_export]
macro_rules! two_uplinks_or_skip {
    ($kernel_prefers_primary:expr) => {
        match lab::TwoUplinks::new($kernel_prefers_primary) {
            Ok(lab) => lab,
            Err(reason) => {
                eprintln!("SKIPPED: {reason}");
                return;
            }
        }
    };
}
