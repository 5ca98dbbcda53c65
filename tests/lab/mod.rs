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
