//! What kind of uplink an interface is — wired, Wi-Fi, a tethering phone or a modem — from
//! the facts the kernel gives about it, and the route metric each kind gets.
//!
//! The kind decides nothing about the stream (the daemon's choice stays `network.prefer`,
//! then the kernel's metric): it is what `onair status` calls an uplink, which facts are read
//! for it (a Wi-Fi's signal, a modem's operator), and the order systemd-networkd gives the
//! kinds' default routes (the image's `.network` files use [`UplinkKind::metric`]; its test
//! in tests/image_tree.rs holds them to it). Pure: facts in, kind out.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The kinds of uplink, in the kernel's order of preference.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize, Default,
)]
#[serde(rename_all = "snake_case")]
pub enum UplinkKind {
    /// Ethernet, a USB Ethernet adapter, and anything the kernel does not say more about.
    #[default]
    Wired,
    Wifi,
    /// A phone sharing its connection over USB (RNDIS, CDC ECM/NCM/EEM, iPhone's ipheth), and
    /// "HiLink" LTE sticks, which are a router behind USB Ethernet to the box.
    Tether,
    /// A cellular modem whose data connection ModemManager makes (QMI, MBIM, Huawei NCM).
    Modem,
}

/// Drivers of USB network functions that phones (and router-style LTE sticks) present.
pub const TETHER_DRIVERS: &[&str] = &[
    "rndis_host",
    "cdc_ether",
    "cdc_ncm",
    "cdc_eem",
    "cdc_subset",
    "ipheth",
];

/// Drivers of modems whose bearer ModemManager sets up.
pub const MODEM_DRIVERS: &[&str] = &["qmi_wwan", "cdc_mbim", "huawei_cdc_ncm"];

/// What the kernel says about an interface (sysfs, read by net/field/sysfs.rs).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct LinkFacts {
    /// `wireless/` or `phy80211` under the interface: a cfg80211 (or wext) radio.
    pub wireless: bool,
    /// `DEVTYPE=` of its uevent (`wlan`, `wwan`, `bridge`, ...).
    pub devtype: Option<String>,
    /// The name of the driver bound to its device, if it has one.
    pub driver: Option<String>,
}

impl UplinkKind {
    pub fn from_facts(facts: &LinkFacts) -> UplinkKind {
        let driver = facts.driver.as_deref().unwrap_or_default();
        let devtype = facts.devtype.as_deref().unwrap_or_default();
        if facts.wireless || devtype == "wlan" {
            UplinkKind::Wifi
        } else if devtype == "wwan" || MODEM_DRIVERS.contains(&driver) {
            UplinkKind::Modem
        } else if TETHER_DRIVERS.contains(&driver) {
            UplinkKind::Tether
        } else {
            UplinkKind::Wired
        }
    }

    /// The route metric of the kind's DHCP default route: a cable first (it is there on
    /// purpose and rarely metered), then the venue's Wi-Fi, then a phone, then a modem (the
    /// dearest, and the one a phone beats on signal where both exist). With
    /// `network.paths: steer` the daemon's `network.prefer` ranks above these.
    pub fn metric(self) -> u32 {
        match self {
            UplinkKind::Wired => 100,
            UplinkKind::Wifi => 600,
            UplinkKind::Tether => 700,
            UplinkKind::Modem => 800,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            UplinkKind::Wired => "wired",
            UplinkKind::Wifi => "wifi",
            UplinkKind::Tether => "tether",
            UplinkKind::Modem => "modem",
        }
    }

    pub const ALL: [UplinkKind; 4] = [
        UplinkKind::Wired,
        UplinkKind::Wifi,
        UplinkKind::Tether,
        UplinkKind::Modem,
    ];
}

impl fmt::Display for UplinkKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn facts(wireless: bool, devtype: Option<&str>, driver: Option<&str>) -> LinkFacts {
        LinkFacts {
            wireless,
            devtype: devtype.map(str::to_string),
            driver: driver.map(str::to_string),
        }
    }

    #[test]
    fn kinds_from_what_the_kernel_says() {
        let cases = [
            // The Pi's radio, a USB dongle, mac80211_hwsim: wireless/ or phy80211 is there.
            (
                facts(true, Some("wlan"), Some("brcmfmac")),
                UplinkKind::Wifi,
            ),
            (facts(true, None, Some("mac80211_hwsim")), UplinkKind::Wifi),
            (facts(false, Some("wlan"), None), UplinkKind::Wifi),
            // Phones: Android's RNDIS, NCM or ECM function, an iPhone.
            (facts(false, None, Some("rndis_host")), UplinkKind::Tether),
            (facts(false, None, Some("cdc_ncm")), UplinkKind::Tether),
            (facts(false, None, Some("cdc_ether")), UplinkKind::Tether),
            (facts(false, None, Some("ipheth")), UplinkKind::Tether),
            // Modems: QMI and MBIM say DEVTYPE=wwan; a Huawei NCM stick by its driver.
            (
                facts(false, Some("wwan"), Some("qmi_wwan")),
                UplinkKind::Modem,
            ),
            (
                facts(false, Some("wwan"), Some("cdc_mbim")),
                UplinkKind::Modem,
            ),
            (
                facts(false, None, Some("huawei_cdc_ncm")),
                UplinkKind::Modem,
            ),
            (
                facts(false, Some("wwan"), Some("some_new_modem")),
                UplinkKind::Modem,
            ),
            // The Pi's Ethernet, qemu's NIC, a USB Ethernet adapter, a veth of the tests.
            (facts(false, None, Some("bcmgenet")), UplinkKind::Wired),
            (facts(false, None, Some("virtio_net")), UplinkKind::Wired),
            (facts(false, None, Some("r8152")), UplinkKind::Wired),
            (facts(false, None, None), UplinkKind::Wired),
        ];
        for (f, kind) in cases {
            assert_eq!(UplinkKind::from_facts(&f), kind, "{f:?}");
        }
    }

    #[test]
    fn metrics_order_the_kinds() {
        let metrics: Vec<u32> = UplinkKind::ALL.iter().map(|k| k.metric()).collect();
        assert!(metrics.windows(2).all(|w| w[0] < w[1]), "{metrics:?}");
        assert_eq!(
            UplinkKind::ALL.map(UplinkKind::as_str),
            ["wired", "wifi", "tether", "modem"]
        );
        assert_eq!(
            serde_json::to_string(&UplinkKind::Tether).expect("serializes"),
            "\"tether\""
        );
    }
}
