//! The first-boot import (`onair-import`) against what a careless or hostile person can put on
//! the FAT card: `authorized_keys` lines that only look like keys, a config that must not stay
//! recoverable on the card once imported (the stream key, Wi-Fi passphrases, a SIM PIN), and
//! files far too large to be what they claim; and what it does when the data partition could
//! not be used (a RAM disk on /data): the owner can still log in with the card's keys and the
//! card's config is used, and kept.
//!
//! The script runs as the box runs it: with the system `sh`, and — where Debian's `busybox` is
//! installed (scripts/setup.sh installs it) — with BusyBox's `sh`, `awk`, `dd`, `sed` alone on
//! the PATH, as on the Buildroot image.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

const SCRIPT: &str = "board/common/rootfs-overlay/usr/libexec/onair/onair-import";

/// A stand-in for /usr/bin/onair whose `check-config` accepts anything without "BAD".
const FAKE_ONAIR: &str = "#!/bin/sh\n[ \"$1\" = check-config ] || exit 1\n\
    if grep -q BAD \"$2\"; then echo 'config key `output.url`: is missing' >&2; exit 2; fi\nexit 0\n";

/// Real public keys of every type the image's dropbear takes (made with ssh-keygen; the two
/// security-key ones assembled by hand from PROTOCOL.u2f, there being no token here).
const GOOD_KEYS: &[&str] = &[
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDTUbMxaJzlRJW6cTe/CS95O49zD3lbCD2pj6M/mnc1R test@ed25519",
    "ssh-rsa AAAAB3NzaC1yc2EAAAADAQABAAABAQDKRqeahMgyFbySwSQslm1i4k2hjY8NtlUBIlBGZ21C4jUuXI9GCj3hjlP5vb/ToDNQNo/Eq+zRlG1G/XCQv1L/oJr+8rj7Ji03ywkTGIq4LiMCk1VLFuR0ew/uUZ5U4x6bgHl312H3bDos8JKimAq/Zn+48yZIzjDxxSgsCegNT5qQHH1tWmzA0X7AryyY5B4fYtTaVcBs+pDMRKafdsGsZ7BW1S7y/Np9svunWAD3lXCZcvYJWhsdB6RITOSxjgpHLeVHJ7lFUejzgoyzFCDFVOu0tQZ4/4ejclLQDLS6J6FnTlY0l6FZFROvk24ThzrydOz19FptrwZXt88xojq7 test@rsa2048",
    "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBCdmZgBD9DNKOiQPNQ4795jxJnpaO/CeT1cWo+JuFysVF2+edWxd9UAHeOQF8RYFeNs8qk/Gy/t2DrdGEDkuSkw= test@p256",
    "ecdsa-sha2-nistp384 AAAAE2VjZHNhLXNoYTItbmlzdHAzODQAAAAIbmlzdHAzODQAAABhBHlT6DYPrn06leu63iQWKfMtgiD/FeL12Rp7mRlZQ6g0Re8AxIsNtLDdSPkMy1zRaw3gY3KFh4PyukHG4jQat9+C0fJ7/wGCTJwuO7c4K+gByRaH+Ymsf5dN3DwTrCwDaw== test@p384",
    "ecdsa-sha2-nistp521 AAAAE2VjZHNhLXNoYTItbmlzdHA1MjEAAAAIbmlzdHA1MjEAAACFBAHSzEkFLxrW/DHrO80CzJx0FuUddeVmbx+leTz3betg0QRQB3u6Vo1KhGw5UpKF/TAgzYh1q2xz4zPjIn7fIiT8SQHlVeb2WJZI0QTG3ySPKXPHE5FJajbm3moPOmeIqbu7aNh+RAdGVL8rxveoD6tfU/8543M7ma/NKBFESFq0QIHpXA== test@p521",
    "sk-ssh-ed25519@openssh.com AAAAGnNrLXNzaC1lZDI1NTE5QG9wZW5zc2guY29tAAAAIAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fAAAABHNzaDo= yubikey",
    "sk-ecdsa-sha2-nistp256@openssh.com AAAAInNrLWVjZHNhLXNoYTItbmlzdHAyNTZAb3BlbnNzaC5jb20AAAAIbmlzdHAyNTYAAABBBAABAgMEBQYHCAkKCwwNDg8QERITFBUWFxgZGhscHR4fICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8AAAAEc3NoOg== yubikey",
    // Trailing tab and no comment are fine.
    "  ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIDTUbMxaJzlRJW6cTe/CS95O49zD3lbCD2pj6M/mnc1R\t",
];

const ED25519_BLOB: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIDTUbMxaJzlRJW6cTe/CS95O49zD3lbCD2pj6M/mnc1R";
const RSA_BLOB_START: &str = "AAAAB3NzaC1yc2EAAAADAQABAAABAQDKRqeahMgyFbySwSQslm1i4k2hjY8NtlUB";

/// Lines that the old check took for keys, or that only look like one.
fn bad_lines() -> Vec<(String, &'static str)> {
    vec![
        (
            format!("rm -rf / ssh-ed25519 {ED25519_BLOB}"),
            "junk before a key",
        ),
        ("ssh-rsa AAAAnotreallyakey".into(), "not base64 of a key"),
        (
            format!("ssh-ed25519 {}", &ED25519_BLOB[..ED25519_BLOB.len() - 4]),
            "a truncated key",
        ),
        (format!("ssh-rsa {ED25519_BLOB}"), "a key of another type"),
        (
            format!("ssh-ed25519 {RSA_BLOB_START}AAAA"),
            "the start of an RSA key named ed25519",
        ),
        (format!("ssh-ed25519 {ED25519_BLOB}=="), "bad padding"),
        (
            format!("command=\"/bin/sh\" ssh-ed25519 {ED25519_BLOB} x"),
            "options before the key",
        ),
        (format!("ssh-dss {ED25519_BLOB}"), "an unknown type"),
        ("ssh-ed25519 AAAA$(reboot)".into(), "shell in the blob"),
        ("ssh-ed25519".into(), "a type alone"),
    ]
}

struct Card {
    dir: tempfile::TempDir,
}

impl Card {
    fn new() -> Card {
        let dir = tempfile::tempdir().expect("temporary directory");
        for sub in ["boot", "data"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let fake = dir.path().join("onair");
        fs::write(&fake, FAKE_ONAIR).unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        Card { dir }
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    fn put(&self, rel: &str, content: &[u8]) {
        fs::write(self.path(rel), content).unwrap();
    }

    /// Runs the import with `shell` (a program and the PATH it gets); returns its output.
    fn import(&self, shell: &Shell) -> String {
        self.import_with(shell, &self.path("onair"))
    }

    /// The same with another `onair` (the real binary).
    fn import_with(&self, shell: &Shell, onair: &Path) -> String {
        let repo = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
        let mut cmd = Command::new(&shell.program);
        cmd.args(&shell.args)
            .arg(repo.join(SCRIPT))
            .env("ONAIR_DATA_DIR", self.path("data"))
            .env("ONAIR_DATA_REPORT", self.path("data-partition"))
            .env("ONAIR_BOOT_DIR", self.path("boot"))
            .env("ONAIR_BIN", onair)
            .env("ONAIR_DEFAULT_CONFIG", self.path("default.json"));
        if let Some(path) = &shell.path {
            cmd.env("PATH", path);
        }
        let out = cmd.output().expect("run the import");
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(
            out.status.success(),
            "{}: the import failed:\n{text}",
            shell.name
        );
        text
    }
}

struct Shell {
    name: &'static str,
    program: PathBuf,
    args: Vec<String>,
    /// None: the caller's PATH.
    path: Option<String>,
    _applets: Option<tempfile::TempDir>,
}

/// The system `sh`, and BusyBox alone when it is installed.
fn shells() -> Vec<Shell> {
    let mut shells = vec![Shell {
        name: "sh",
        program: "sh".into(),
        args: vec![],
        path: None,
        _applets: None,
    }];
    let busybox = ["/usr/bin/busybox", "/bin/busybox"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists());
    match busybox {
        Some(bb) => {
            let applets = tempfile::tempdir().unwrap();
            let list = Command::new(bb)
                .arg("--list")
                .output()
                .expect("busybox --list");
            for name in String::from_utf8_lossy(&list.stdout).lines() {
                let _ = std::os::unix::fs::symlink(bb, applets.path().join(name));
            }
            shells.push(Shell {
                name: "busybox",
                program: bb.to_path_buf(),
                args: vec!["sh".into()],
                path: Some(applets.path().display().to_string()),
                _applets: Some(applets),
            });
        }
        None => println!("busybox is not installed: the import runs with the system sh only"),
    }
    shells
}

#[test]
fn keys_are_checked_as_keys() {
    for shell in shells() {
        let card = Card::new();
        let good = format!("# laptop\n\n{}\n", GOOD_KEYS.join("\r\n"));
        card.put("boot/authorized_keys", good.as_bytes());
        let log = card.import(&shell);
        assert!(
            log.contains(&format!("{} key(s)", GOOD_KEYS.len())),
            "{}: every real key must count:\n{log}",
            shell.name
        );
        assert!(card.path("data/ssh/root-keys/authorized_keys").exists());

        for (line, what) in bad_lines() {
            let card = Card::new();
            card.put(
                "boot/authorized_keys",
                format!("{}\n{line}\n", GOOD_KEYS[0]).as_bytes(),
            );
            let log = card.import(&shell);
            assert!(
                log.contains("REJECTED authorized_keys") && log.contains("line(s) 2"),
                "{}: {what} ({line:?}) must be refused:\n{log}",
                shell.name
            );
            assert!(
                !card.path("data/ssh/root-keys/authorized_keys").exists(),
                "{}: {what}: nothing may be installed",
                shell.name
            );
        }
    }
}

#[test]
fn the_imported_config_is_overwritten_before_it_is_deleted() {
    for shell in shells() {
        let card = Card::new();
        let config = b"{\"output\": {\"token\": \"card-Tk-1234\"}}\n";
        card.put("boot/onair.json", config);
        // A second name for the same file: what stays of it on the card after the import.
        fs::hard_link(
            card.path("boot/onair.json"),
            card.path("what-the-card-keeps"),
        )
        .unwrap();
        let log = card.import(&shell);
        assert!(
            log.contains("overwritten and deleted"),
            "{}:\n{log}",
            shell.name
        );
        assert!(!card.path("boot/onair.json").exists());
        assert_eq!(
            fs::read(card.path("data/onair/onair.json")).unwrap(),
            config,
            "{}: the config is installed as it was",
            shell.name
        );
        let kept = fs::read(card.path("what-the-card-keeps")).unwrap();
        assert_eq!(
            kept.len(),
            config.len(),
            "{}: overwritten in place",
            shell.name
        );
        assert!(
            kept.iter().all(|&b| b == 0),
            "{}: the card still holds the config: {:?}",
            shell.name,
            String::from_utf8_lossy(&kept)
        );
    }
}

#[test]
fn oversized_files_are_refused_without_being_copied() {
    for shell in shells() {
        let card = Card::new();
        fs::File::create(card.path("boot/onair.json"))
            .unwrap()
            .set_len(5 * 1024 * 1024)
            .unwrap();
        fs::File::create(card.path("boot/authorized_keys"))
            .unwrap()
            .set_len(1024 * 1024)
            .unwrap();
        let log = card.import(&shell);
        assert!(
            card.path("boot/onair.json.rejected").exists()
                && card.path("boot/authorized_keys.rejected").exists(),
            "{}:\n{log}",
            shell.name
        );
        assert!(
            !card.path("data/onair/onair.json").exists()
                && !card.path("data/onair/onair.json.new").exists(),
            "{}: nothing of it may reach the data partition",
            shell.name
        );
        assert!(log.contains("is not a config"), "{}:\n{log}", shell.name);
    }
}

/// onair-data could not use the data partition: /data is a RAM disk (`.volatile`) and its report
/// says why. The keys imported at an earlier boot (`authorized_keys.imported` on the card) and
/// the config on the card are taken into the RAM disk, nothing is deleted or renamed on the
/// card, and `onair-import.txt` names the partition and what is wrong with it first.
#[test]
fn on_a_ram_disk_the_cards_keys_and_config_are_used_and_kept() {
    for shell in shells() {
        let card = Card::new();
        card.put("data/.volatile", b"");
        card.put(
            "data-partition",
            b"state=ram_disk\ndevice=/dev/mmcblk0p3\nlabel=onair-data\n\
              detail=e2fsck -p cannot repair it unattended (exit 4)\n",
        );
        let keys = format!("{}\n", GOOD_KEYS[0]);
        card.put("boot/authorized_keys.imported", keys.as_bytes());
        let config = b"{\"output\": {\"token\": \"card-Tk-1234\"}}\n";
        card.put("boot/onair.json", config);
        let log = card.import(&shell);
        assert_eq!(
            fs::read_to_string(card.path("data/ssh/root-keys/authorized_keys")).unwrap(),
            keys,
            "{}: the card's keys log in:\n{log}",
            shell.name
        );
        assert_eq!(
            fs::read(card.path("data/onair/onair.json")).unwrap(),
            config,
            "{}: the card's config is used",
            shell.name
        );
        assert_eq!(
            fs::read(card.path("boot/onair.json")).unwrap(),
            config,
            "{}: the config stays on the card for the next boot",
            shell.name
        );
        assert!(
            card.path("boot/authorized_keys.imported").exists(),
            "{}",
            shell.name
        );
        let report = fs::read_to_string(card.path("boot/onair-import.txt")).unwrap();
        let first = report.lines().nth(1).unwrap_or_default();
        assert!(
            first.contains("the data partition /dev/mmcblk0p3 cannot be used")
                && first.contains("exit 4"),
            "{}: onair-import.txt must start with the partition's problem:\n{report}",
            shell.name
        );
        assert!(
            report.contains("e2fsck -y /dev/mmcblk0p3")
                && report.contains("stays on the boot partition"),
            "{}:\n{report}",
            shell.name
        );

        // Nothing to import at all: the report is still written.
        let card = Card::new();
        card.put("data/.volatile", b"");
        card.put(
            "data-partition",
            b"state=ram_disk\ndevice=\ndetail=no partition labelled onair-data found\n",
        );
        card.import(&shell);
        let report = fs::read_to_string(card.path("boot/onair-import.txt")).unwrap();
        assert!(
            report.contains("(not found) cannot be used: no partition labelled onair-data found"),
            "{}:\n{report}",
            shell.name
        );

        // On the partition itself (repaired at boot), keys imported earlier are not imported
        // again, and the repair is said.
        let card = Card::new();
        card.put(
            "data-partition",
            b"state=repaired\ndevice=/dev/vdc\ndetail=repaired by e2fsck -p at boot\n",
        );
        card.put("boot/authorized_keys.imported", keys.as_bytes());
        card.import(&shell);
        assert!(
            !card.path("data/ssh/root-keys/authorized_keys").exists(),
            "{}",
            shell.name
        );
        let report = fs::read_to_string(card.path("boot/onair-import.txt")).unwrap();
        assert!(
            report.contains("/dev/vdc was damaged and repaired at boot"),
            "{}:\n{report}",
            shell.name
        );
    }
}

/// Secrets of a config with Wi-Fi and a modem, as a person writes it on the card.
const WIFI_SECRETS: [&str; 4] = [
    "Card-Stream-Key-77",
    "venue wifi passphrase",
    "wpa3 only pass",
    "pw-of-modem",
];

fn wifi_config(pin: &str) -> String {
    format!(
        r#"{{"source": {{"kind": "test"}},
  "output": {{"kind": "whip", "url": "https://192.0.2.10/api/whip", "token": "{}"}},
  "network": {{"wifi_country": "DE", "wifi": [
      {{"ssid": "Venue", "psk": "{}"}},
      {{"ssid": "Backstage", "sae_password": "{}", "hidden": true, "priority": 2}}],
    "modem": {{"apn": "internet", "pin": {pin}, "password": "{}"}}}}}}"#,
        WIFI_SECRETS[0], WIFI_SECRETS[1], WIFI_SECRETS[2], WIFI_SECRETS[3]
    )
}

/// With the real `onair check-config`: Wi-Fi passphrases and the modem's PIN and password ride
/// in onair.json like the stream key. Imported, the card's copy is zeros; refused (here for a
/// PIN written as a number), the refusal on the card names the key and no secret. Either way
/// the settings the radios read are written 0600 and nothing secret is printed.
#[test]
fn wifi_and_modem_secrets_are_imported_like_the_stream_key() {
    let onair = PathBuf::from(env!("CARGO_BIN_EXE_onair"));
    for shell in shells() {
        let card = Card::new();
        let config = wifi_config(r#""1357""#);
        card.put("boot/onair.json", config.as_bytes());
        fs::hard_link(
            card.path("boot/onair.json"),
            card.path("what-the-card-keeps"),
        )
        .unwrap();
        let log = card.import_with(&shell, &onair);
        let kept = fs::read(card.path("what-the-card-keeps")).unwrap();
        assert!(
            kept.len() == config.len() && kept.iter().all(|&b| b == 0),
            "{}: the card still holds the config:\n{log}",
            shell.name
        );
        let report = fs::read_to_string(card.path("boot/onair-import.txt")).unwrap();
        assert!(
            report.contains("imported onair.json"),
            "{}: {report}",
            shell.name
        );
        let mode = fs::metadata(card.path("data/onair/onair.json"))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(
            mode & 0o077,
            0,
            "{}: the imported config is 0600",
            shell.name
        );

        // At boot the radios' settings are written from it.
        let out_dir = card.path("run-network");
        let out = Command::new("sh")
            .arg(
                PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                    .join("board/common/rootfs-overlay/usr/libexec/onair/onair-network-files"),
            )
            .env("ONAIR_BIN", &onair)
            .env("ONAIR_DATA_DIR", card.path("data"))
            .env("ONAIR_DEFAULT_CONFIG", card.path("default.json"))
            .env("ONAIR_NETWORK_DIR", &out_dir)
            .output()
            .expect("run onair-network-files");
        let printed = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        assert!(out.status.success(), "{printed}");
        assert!(
            printed.contains("2 Wi-Fi network(s), country DE"),
            "{printed}"
        );
        let wpa = fs::read_to_string(out_dir.join("wpa_supplicant.conf")).unwrap();
        assert!(
            wpa.contains(&format!("psk=\"{}\"", WIFI_SECRETS[1])),
            "{wpa}"
        );
        for file in ["wpa_supplicant.conf", "modem-connect"] {
            let mode = fs::metadata(out_dir.join(file))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o077, 0, "{file} is 0600");
        }
        for secret in WIFI_SECRETS.iter().chain(&["1357"]) {
            assert!(
                !log.contains(secret),
                "{}: {secret} in the log:\n{log}",
                shell.name
            );
            assert!(
                !report.contains(secret),
                "{}: {secret} in the report",
                shell.name
            );
            assert!(!printed.contains(secret), "{secret} printed: {printed}");
        }

        // A PIN written as a number is refused, naming the key and nothing else.
        let card = Card::new();
        card.put("boot/onair.json", wifi_config("8642").as_bytes());
        let log = card.import_with(&shell, &onair);
        let report = fs::read_to_string(card.path("boot/onair-import.txt")).unwrap();
        assert!(
            report.contains("REJECTED onair.json") && report.contains("network.modem.pin"),
            "{}: {report}",
            shell.name
        );
        for secret in WIFI_SECRETS.iter().chain(&["8642"]) {
            assert!(
                !log.contains(secret),
                "{}: {secret} in the log:\n{log}",
                shell.name
            );
            assert!(
                !report.contains(secret),
                "{}: {secret} in the report:\n{report}",
                shell.name
            );
        }
    }
}
