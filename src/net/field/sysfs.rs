//! Reads what the kernel says about an interface from sysfs (`/sys/class/net/NAME`): is it a
//! radio, its uevent's `DEVTYPE`, and the driver bound to its device. A few small reads, each
//! bounded; an interface that vanished in between reads as one without facts.

use super::kind::LinkFacts;
use std::io::Read;
use std::path::Path;

/// Where the kernel lists the interfaces of this process's network namespace.
pub const SYS_CLASS_NET: &str = "/sys/class/net";
/// A uevent file is a few lines; more is not one.
const MAX_UEVENT: u64 = 4096;

/// The facts of interface `name` under `sys_class_net` (a temporary tree in tests).
pub fn read_facts(sys_class_net: &Path, name: &str) -> LinkFacts {
    // The kernel refuses these names; a name from anywhere else must not walk the tree.
    if name.is_empty() || name.contains('/') || name == "." || name == ".." {
        return LinkFacts::default();
    }
    let dir = sys_class_net.join(name);
    let wireless = dir.join("wireless").exists() || dir.join("phy80211").exists();
    let devtype = read_bounded(&dir.join("uevent")).and_then(|text| {
        text.lines()
            .find_map(|l| l.strip_prefix("DEVTYPE="))
            .map(|v| v.trim().to_string())
    });
    let driver = std::fs::read_link(dir.join("device/driver"))
        .ok()
        .and_then(|target| target.file_name().map(|n| n.to_string_lossy().into_owned()));
    LinkFacts {
        wireless,
        devtype,
        driver,
    }
}

fn read_bounded(path: &Path) -> Option<String> {
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_UEVENT)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::net::field::kind::UplinkKind;
    use std::os::unix::fs::symlink;

    #[test]
    fn facts_from_a_sysfs_tree() {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = dir.path();
        let drivers = root.join("bus/usb/drivers");
        for d in ["rndis_host", "qmi_wwan", "brcmfmac", "virtio_net"] {
            std::fs::create_dir_all(drivers.join(d)).expect("mkdir");
        }
        let net = root.join("class/net");
        let iface = |name: &str, uevent: &str, driver: Option<&str>, radio: bool| {
            let d = net.join(name);
            std::fs::create_dir_all(d.join("device")).expect("mkdir");
            std::fs::write(d.join("uevent"), uevent).expect("write");
            if let Some(driver) = driver {
                symlink(drivers.join(driver), d.join("device/driver")).expect("symlink");
            }
            if radio {
                std::fs::create_dir(d.join("phy80211")).expect("mkdir");
            }
        };
        iface(
            "wlan0",
            "DEVTYPE=wlan\nINTERFACE=wlan0\nIFINDEX=3\n",
            Some("brcmfmac"),
            true,
        );
        iface(
            "usb0",
            "INTERFACE=usb0\nIFINDEX=4\n",
            Some("rndis_host"),
            false,
        );
        iface(
            "wwan0",
            "DEVTYPE=wwan\nINTERFACE=wwan0\n",
            Some("qmi_wwan"),
            false,
        );
        iface("eth0", "INTERFACE=eth0\n", Some("virtio_net"), false);
        iface("veth0", "INTERFACE=veth0\n", None, false);
        let kind = |name: &str| UplinkKind::from_facts(&read_facts(&net, name));
        assert_eq!(kind("wlan0"), UplinkKind::Wifi);
        assert_eq!(kind("usb0"), UplinkKind::Tether);
        assert_eq!(kind("wwan0"), UplinkKind::Modem);
        assert_eq!(kind("eth0"), UplinkKind::Wired);
        assert_eq!(kind("veth0"), UplinkKind::Wired);
        assert_eq!(
            read_facts(&net, "usb0").driver.as_deref(),
            Some("rndis_host")
        );
        // Gone, or not a name at all.
        assert_eq!(read_facts(&net, "gone0"), LinkFacts::default());
        assert_eq!(read_facts(&net, "../net"), LinkFacts::default());
        // A uevent that never ends is read only so far.
        std::fs::write(
            net.join("eth0/uevent"),
            "X=".repeat(10_000) + "\nDEVTYPE=wwan\n",
        )
        .expect("write");
        assert_eq!(read_facts(&net, "eth0").devtype, None);
    }
}
