//! Consistency checks of the firmware image tree: the Buildroot br2-external tree
//! (`buildroot/`), the board files (`board/`) and the image scripts (`scripts/`).
//!
//! Building an image needs Buildroot and the internet (`scripts/build-image.sh`), so these
//! tests catch, without either, the mistakes that would otherwise surface hours into a build or
//! on the box: a misspelt Kconfig symbol, a path a defconfig names that does not exist, a
//! script that lost its executable bit, a unit that starts a program the image lacks, a disk
//! layout the first-boot logic cannot find, a password. The last tests run the overlay's
//! first-boot scripts with `/bin/sh` against a temporary directory (no root, no mounts).
//!
//! Every assertion says what is wrong and in which file.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;

/// A board: its defconfig in `buildroot/configs/` and its directory in `board/`.
struct Board {
    name: &'static str,
    defconfig: &'static str,
    raspberry_pi: bool,
}

const BOARDS: [Board; 3] = [
    Board {
        name: "rpi4",
        defconfig: "onair_rpi4_64_defconfig",
        raspberry_pi: true,
    },
    Board {
        name: "rpi5",
        defconfig: "onair_rpi5_defconfig",
        raspberry_pi: true,
    },
    Board {
        name: "qemu-aarch64",
        defconfig: "onair_qemu_aarch64_virt_defconfig",
        raspberry_pi: false,
    },
];

/// Upstream Buildroot symbols that our defconfigs and `package/onair/Config.in` use (the
/// tree's own symbols are found in its Config.in files). Checked against Buildroot 2026.05.1,
/// the release `scripts/build-image.sh` pins: each is a `config`/`menuconfig` in its Config.in
/// files, and `make BR2_EXTERNAL=.../buildroot onair_<board>_defconfig` keeps every line of our
/// three defconfigs in the resulting `.config` (Kconfig drops unknown or unmet symbols
/// silently). When a defconfig needs a new upstream symbol, check it the same way, then add it.
const UPSTREAM_SYMBOLS: &[&str] = &[
    "BR2_aarch64",
    "BR2_cortex_a72",
    "BR2_cortex_a76",
    "BR2_ARM_FPU_VFPV4",
    "BR2_DOWNLOAD_FORCE_CHECK_HASHES",
    "BR2_GLOBAL_PATCH_DIR",
    "BR2_INIT_SYSTEMD",
    "BR2_INIT_SYSTEMD_POPULATE_TMPFILES",
    "BR2_INIT_SYSTEMD_VAR_FACTORY",
    "BR2_INSTALL_LIBSTDCPP",
    "BR2_LINUX_KERNEL",
    "BR2_LINUX_KERNEL_CONFIG_FRAGMENT_FILES",
    "BR2_LINUX_KERNEL_CUSTOM_CONFIG_FILE",
    "BR2_LINUX_KERNEL_CUSTOM_TARBALL",
    "BR2_LINUX_KERNEL_CUSTOM_TARBALL_LOCATION",
    "BR2_LINUX_KERNEL_CUSTOM_VERSION",
    "BR2_LINUX_KERNEL_CUSTOM_VERSION_VALUE",
    "BR2_LINUX_KERNEL_DEFCONFIG",
    "BR2_LINUX_KERNEL_DTS_SUPPORT",
    "BR2_LINUX_KERNEL_INTREE_DTS_NAME",
    "BR2_LINUX_KERNEL_NEEDS_HOST_OPENSSL",
    "BR2_LINUX_KERNEL_USE_CUSTOM_CONFIG",
    "BR2_PACKAGE_BUSYBOX_SHOW_OTHERS",
    "BR2_PACKAGE_CA_CERTIFICATES",
    "BR2_PACKAGE_DROPBEAR",
    "BR2_PACKAGE_DROPBEAR_CLIENT",
    "BR2_PACKAGE_E2FSPROGS",
    "BR2_PACKAGE_ORC",
    "BR2_PACKAGE_GLIB_NETWORKING",
    "BR2_PACKAGE_GST1_PLUGINS_BAD",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_RTMP2",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_FLV",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_VIDEOPARSERS",
    "BR2_PACKAGE_GST1_PLUGINS_BASE",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_INSTALL_TOOLS",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_APP",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_PANGO",
    "BR2_PACKAGE_DEJAVU",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_VIDEOCONVERTSCALE",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_VIDEORATE",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_VIDEOTESTSRC",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD_JPEG",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD_PNG",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_V4L2",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_V4L2_PROBE",
    "BR2_PACKAGE_GST1_PLUGINS_UGLY",
    "BR2_PACKAGE_GST1_PLUGINS_UGLY_PLUGIN_X264",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_ALSA",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_AUDIOTESTSRC",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_AUDIOCONVERT",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_AUDIORESAMPLE",
    "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_OPUS",
    "BR2_PACKAGE_OPUS",
    "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_LEVEL",
    "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_VOAACENC",
    "BR2_PACKAGE_ALSA_UTILS",
    "BR2_PACKAGE_ALSA_UTILS_APLAY",
    "BR2_PACKAGE_ALSA_UTILS_AMIXER",
    "BR2_PACKAGE_GSTREAMER1",
    "BR2_PACKAGE_GSTREAMER1_INSTALL_TOOLS",
    "BR2_PACKAGE_HOST_DOSFSTOOLS",
    "BR2_PACKAGE_HOST_GENIMAGE",
    "BR2_PACKAGE_HOST_KMOD_XZ",
    "BR2_PACKAGE_HOST_MTOOLS",
    "BR2_PACKAGE_HOST_RUSTC",
    "BR2_PACKAGE_HOST_RASPBERRYPI_USBBOOT",
    "BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS",
    "BR2_PACKAGE_KMOD",
    "BR2_PACKAGE_KMOD_TOOLS",
    "BR2_PACKAGE_LIBCAMERA",
    "BR2_PACKAGE_LIBCAMERA_PIPELINE_RPI_VC4",
    "BR2_PACKAGE_LIBV4L",
    "BR2_PACKAGE_LIBV4L_UTILS",
    "BR2_PACKAGE_RPI_FIRMWARE",
    "BR2_PACKAGE_RPI_FIRMWARE_CMDLINE_FILE",
    "BR2_PACKAGE_RPI_FIRMWARE_CONFIG_FILE",
    "BR2_PACKAGE_RPI_FIRMWARE_VARIANT_PI4",
    "BR2_PACKAGE_SYSTEMD_TIMESYNCD",
    "BR2_PACKAGE_XZ",
    "BR2_PACKAGE_RAUC",
    "BR2_PACKAGE_RAUC_DBUS",
    "BR2_PACKAGE_RAUC_JSON",
    "BR2_PACKAGE_WPA_SUPPLICANT",
    "BR2_PACKAGE_WPA_SUPPLICANT_NL80211",
    "BR2_PACKAGE_WPA_SUPPLICANT_WPA3",
    "BR2_PACKAGE_WPA_SUPPLICANT_CTRL_IFACE",
    "BR2_PACKAGE_WPA_SUPPLICANT_CLI",
    "BR2_PACKAGE_WIRELESS_REGDB",
    "BR2_PACKAGE_IW",
    "BR2_PACKAGE_MODEM_MANAGER",
    "BR2_PACKAGE_MODEM_MANAGER_LIBQMI",
    "BR2_PACKAGE_MODEM_MANAGER_LIBMBIM",
    "BR2_PACKAGE_USB_MODESWITCH",
    "BR2_PACKAGE_USB_MODESWITCH_DATA",
    "BR2_PACKAGE_BRCMFMAC_SDIO_FIRMWARE_RPI",
    "BR2_PACKAGE_BRCMFMAC_SDIO_FIRMWARE_RPI_WIFI",
    "BR2_ROOTFS_OVERLAY",
    "BR2_ROOTFS_POST_BUILD_SCRIPT",
    "BR2_ROOTFS_POST_FAKEROOT_SCRIPT",
    "BR2_ROOTFS_POST_IMAGE_SCRIPT",
    "BR2_ROOTFS_POST_SCRIPT_ARGS",
    "BR2_STATIC_LIBS",
    "BR2_TARGET_ENABLE_ROOT_LOGIN",
    "BR2_TARGET_GENERIC_HOSTNAME",
    "BR2_TARGET_GENERIC_ISSUE",
    "BR2_TARGET_GENERIC_REMOUNT_ROOTFS_RW",
    "BR2_TARGET_ROOTFS_EXT2",
    "BR2_TARGET_ROOTFS_EXT2_4",
    "BR2_TARGET_ROOTFS_EXT2_SIZE",
    "BR2_TARGET_ROOTFS_TAR",
    "BR2_TOOLCHAIN_EXTERNAL",
    "BR2_TOOLCHAIN_EXTERNAL_BOOTLIN",
    "BR2_TOOLCHAIN_EXTERNAL_BOOTLIN_AARCH64_GLIBC_STABLE",
    "BR2_TOOLCHAIN_HAS_THREADS",
    "BR2_TOOLCHAIN_HAS_SYNC_4",
    "BR2_TOOLCHAIN_GCC_AT_LEAST_4_9",
    "BR2_TOOLCHAIN_HEADERS_AT_LEAST_3_0",
    "BR2_USE_MMU",
    "BR2_USE_WCHAR",
];

/// Upstream Buildroot files that defconfigs name by a path relative to Buildroot's top
/// directory (present in 2026.05.1; the hash files under the patch directories cover the
/// kernel tarballs the defconfigs download).
const UPSTREAM_FILES: &[&str] = &[
    "board/raspberrypi/patches",
    "board/qemu/patches",
    "board/qemu/aarch64-virt/linux.config",
];

/// The scripts that must be executable POSIX sh scripts: Buildroot's hooks, the image scripts.
/// (Every file of the overlay's `usr/libexec/onair/` is checked as well.)
const SCRIPTS: &[&str] = &[
    "board/common/make-bundle.sh",
    "board/common/post-build.sh",
    "board/common/post-fakeroot.sh",
    "board/common/post-image.sh",
    "scripts/build-image.sh",
    "scripts/flash.sh",
];

const OVERLAY: &str = "board/common/rootfs-overlay";

/// Programs the overlay's units run that a package of every image installs (checked against
/// Buildroot 2026.05.1's install commands), with the package's symbol.
const PACKAGE_PROGRAMS: &[(&str, &str)] =
    &[("/usr/sbin/wpa_supplicant", "BR2_PACKAGE_WPA_SUPPLICANT")];

// ---- helpers ----------------------------------------------------------------------------------

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn read(rel: &str) -> String {
    fs::read_to_string(repo().join(rel)).unwrap_or_else(|e| panic!("cannot read {rel}: {e}"))
}

/// Every file under `rel` (recursively), as paths relative to the repository.
fn files_under(rel: &str) -> Vec<String> {
    fn walk(root: &Path, dir: &Path, out: &mut Vec<String>) {
        let entries = fs::read_dir(dir).unwrap_or_else(|e| panic!("cannot list {dir:?}: {e}"));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            if path.is_dir() {
                walk(root, &path, out);
            } else {
                let rel = path.strip_prefix(root).expect("under the repository");
                out.push(rel.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&repo(), &repo().join(rel), &mut out);
    out.sort();
    out
}

/// Joins Makefile/Kconfig-style continuation lines (trailing backslash).
fn logical_lines(text: &str) -> Vec<(usize, String)> {
    let mut out = Vec::new();
    let mut current = String::new();
    let mut start = 0;
    for (i, line) in text.lines().enumerate() {
        if current.is_empty() {
            start = i + 1;
        }
        match line.strip_suffix('\\') {
            Some(head) => {
                current.push_str(head);
                current.push(' ');
            }
            None => {
                current.push_str(line);
                out.push((start, std::mem::take(&mut current)));
            }
        }
    }
    if !current.is_empty() {
        out.push((start, current));
    }
    out
}

/// One line of a defconfig: `BR2_X=value` (value with quotes removed) or `# BR2_X is not set`.
struct Setting {
    line: usize,
    symbol: String,
    value: Option<String>,
}

fn defconfig(board: &Board) -> (String, Vec<Setting>) {
    let rel = format!("buildroot/configs/{}", board.defconfig);
    let mut settings = Vec::new();
    for (i, line) in read(&rel).lines().enumerate() {
        let line = line.trim();
        if let Some(rest) = line.strip_prefix("# ") {
            if let Some(symbol) = rest.strip_suffix(" is not set")
                && symbol.starts_with("BR2_")
            {
                settings.push(Setting {
                    line: i + 1,
                    symbol: symbol.to_string(),
                    value: None,
                });
            }
            continue;
        }
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (symbol, value) = line
            .split_once('=')
            .unwrap_or_else(|| panic!("{rel}:{}: not a `SYMBOL=value` line: {line}", i + 1));
        let value = value
            .strip_prefix('"')
            .and_then(|v| v.strip_suffix('"'))
            .unwrap_or(value);
        settings.push(Setting {
            line: i + 1,
            symbol: symbol.to_string(),
            value: Some(value.to_string()),
        });
    }
    (rel, settings)
}

fn setting<'a>(settings: &'a [Setting], symbol: &str) -> Option<&'a Setting> {
    settings.iter().find(|s| s.symbol == symbol)
}

/// Symbols defined by `config`/`menuconfig` in the br2-external tree's Config.in files.
fn tree_symbols() -> BTreeSet<String> {
    let mut symbols = BTreeSet::new();
    for file in files_under("buildroot") {
        let name = Path::new(&file).file_name().unwrap().to_string_lossy();
        if !name.starts_with("Config.in") {
            continue;
        }
        for line in read(&file).lines() {
            let mut words = line.split_whitespace();
            if let (Some("config" | "menuconfig"), Some(symbol)) = (words.next(), words.next()) {
                symbols.insert(symbol.to_string());
            }
        }
    }
    symbols
}

/// `$(BR2_EXTERNAL_ONAIR_PATH)/x` -> the path in this repository.
fn external_path(value: &str) -> Option<PathBuf> {
    let rest = value.strip_prefix("$(BR2_EXTERNAL_ONAIR_PATH)")?;
    Some(repo().join("buildroot").join(rest.trim_start_matches('/')))
}

/// Words of `text` that start with `$NAME/` or `${NAME}/`, as the path after the slash.
fn paths_after(text: &str, name: &str) -> Vec<String> {
    let mut out = Vec::new();
    for prefix in [format!("${name}/"), format!("${{{name}}}/")] {
        for (i, _) in text.match_indices(&prefix) {
            let rest = &text[i + prefix.len()..];
            let end = rest
                .find(|c: char| !(c.is_ascii_alphanumeric() || "._-/".contains(c)))
                .unwrap_or(rest.len());
            if end > 0 {
                out.push(rest[..end].to_string());
            }
        }
    }
    out
}

fn is_executable(rel: &str) -> bool {
    let meta = fs::metadata(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    meta.permissions().mode() & 0o111 == 0o111
}

/// The mode git records for each tracked path under `paths`, or None if git is unavailable
/// (a source tarball): then only the file system's mode bits are checked.
fn git_modes(paths: &[&str]) -> Option<Vec<(String, String)>> {
    let out = Command::new("git")
        .arg("-C")
        .arg(repo())
        .args(["ls-files", "-s", "--"])
        .args(paths)
        .output()
        .ok()?;
    if !out.status.success() {
        return None;
    }
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    Some(
        text.lines()
            .filter_map(|line| {
                let (meta, path) = line.split_once('\t')?;
                Some((path.to_string(), meta.split(' ').next()?.to_string()))
            })
            .collect(),
    )
}

// ---- genimage configuration ------------------------------------------------------------------

/// A section of a genimage (libconfuse) file: `kind [title] { key = value ... sections }`.
#[derive(Debug, Default)]
struct Section {
    kind: String,
    title: String,
    values: Vec<(String, String)>,
    children: Vec<Section>,
}

impl Section {
    fn value(&self, key: &str) -> Option<&str> {
        self.values
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    fn child(&self, kind: &str) -> Option<&Section> {
        self.children.iter().find(|c| c.kind == kind)
    }
}

fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let mut chars = text.chars().peekable();
    while let Some(&c) = chars.peek() {
        if c.is_whitespace() || c == ',' {
            chars.next();
        } else if c == '#' {
            while chars.next().is_some_and(|c| c != '\n') {}
        } else if "{}=".contains(c) {
            tokens.push(c.to_string());
            chars.next();
        } else if c == '"' {
            chars.next();
            let s: String = chars.by_ref().take_while(|&c| c != '"').collect();
            tokens.push(s);
        } else {
            let mut word = String::new();
            while let Some(&c) = chars.peek() {
                if c.is_whitespace() || "{}=#,\"".contains(c) {
                    break;
                }
                word.push(c);
                chars.next();
            }
            tokens.push(word);
        }
    }
    tokens
}

fn parse_block(tokens: &[String], i: &mut usize, into: &mut Section, file: &str) {
    while *i < tokens.len() {
        let word = tokens[*i].clone();
        *i += 1;
        if word == "}" {
            return;
        }
        let next = tokens.get(*i).map(String::as_str);
        match next {
            Some("=") => {
                *i += 1;
                let value = if tokens.get(*i).map(String::as_str) == Some("{") {
                    // A list: `files = { "a", "b" }`.
                    *i += 1;
                    let mut items = Vec::new();
                    while *i < tokens.len() && tokens[*i] != "}" {
                        items.push(tokens[*i].clone());
                        *i += 1;
                    }
                    *i += 1;
                    items.join(",")
                } else {
                    let v = tokens
                        .get(*i)
                        .unwrap_or_else(|| panic!("{file}: `{word} =` without a value"));
                    *i += 1;
                    v.clone()
                };
                into.values.push((word, value));
            }
            Some("{") => {
                *i += 1;
                let mut section = Section {
                    kind: word,
                    ..Section::default()
                };
                parse_block(tokens, i, &mut section, file);
                into.children.push(section);
            }
            Some(title) if tokens.get(*i + 1).map(String::as_str) == Some("{") => {
                let title = title.to_string();
                *i += 2;
                let mut section = Section {
                    kind: word,
                    title,
                    ..Section::default()
                };
                parse_block(tokens, i, &mut section, file);
                into.children.push(section);
            }
            _ => panic!("{file}: cannot parse near `{word}`"),
        }
    }
}

fn genimage(board: &Board) -> (String, Section) {
    let rel = format!("board/{}/genimage.cfg", board.name);
    let tokens = tokenize(&read(&rel));
    let mut root = Section::default();
    let mut i = 0;
    parse_block(&tokens, &mut i, &mut root, &rel);
    (rel, root)
}

// ---- the br2-external tree ------------------------------------------------------------------

#[test]
fn external_tree_is_a_br2_external_tree() {
    let desc = read("buildroot/external.desc");
    assert!(
        desc.lines().any(|l| l.trim() == "name: ONAIR"),
        "buildroot/external.desc must say `name: ONAIR` (the defconfigs and package use \
         $(BR2_EXTERNAL_ONAIR_PATH))"
    );
    let mk = read("buildroot/external.mk");
    assert!(
        mk.contains("$(BR2_EXTERNAL_ONAIR_PATH)/package/*/*.mk"),
        "buildroot/external.mk must include $(BR2_EXTERNAL_ONAIR_PATH)/package/*/*.mk"
    );
    let config_in = read("buildroot/Config.in");
    let packages = fs::read_dir(repo().join("buildroot/package")).expect("buildroot/package/");
    for entry in packages {
        let name = entry.unwrap().file_name().to_string_lossy().into_owned();
        for file in ["Config.in".to_string(), format!("{name}.mk")] {
            assert!(
                repo()
                    .join("buildroot/package")
                    .join(&name)
                    .join(&file)
                    .is_file(),
                "buildroot/package/{name}/{file} is missing"
            );
        }
        let source = format!("source \"$BR2_EXTERNAL_ONAIR_PATH/package/{name}/Config.in\"");
        assert!(
            config_in.contains(&source),
            "buildroot/Config.in does not source package {name}: add `{source}`"
        );
    }
    // Every reference to an external tree's path names this one.
    for file in files_under("buildroot") {
        let text = read(&file);
        for (i, _) in text.match_indices("BR2_EXTERNAL_") {
            let name: String = text[i + 13..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                name == "ONAIR_PATH",
                "{file}: refers to BR2_EXTERNAL_{name}; this tree is BR2_EXTERNAL_ONAIR_PATH"
            );
        }
    }
}

#[test]
fn defconfig_symbols_exist() {
    let tree = tree_symbols();
    let upstream: BTreeSet<&str> = UPSTREAM_SYMBOLS.iter().copied().collect();
    let mut errors = Vec::new();
    for board in &BOARDS {
        let (rel, settings) = defconfig(board);
        let mut seen = BTreeSet::new();
        for s in &settings {
            if !tree.contains(&s.symbol) && !upstream.contains(s.symbol.as_str()) {
                errors.push(format!(
                    "{rel}:{}: {} is neither defined in buildroot/**/Config.in nor listed in \
                     UPSTREAM_SYMBOLS (tests/image_tree.rs)",
                    s.line, s.symbol
                ));
            }
            if !seen.insert(s.symbol.clone()) {
                errors.push(format!("{rel}:{}: {} is set twice", s.line, s.symbol));
            }
        }
    }
    // The package's own dependencies.
    let rel = "buildroot/package/onair/Config.in";
    for (i, line) in read(rel).lines().enumerate() {
        let line = line.split('#').next().unwrap().trim();
        if !(line.starts_with("select ") || line.starts_with("depends on ")) {
            continue;
        }
        for word in line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_')) {
            if word.starts_with("BR2_") && !tree.contains(word) && !upstream.contains(word) {
                errors.push(format!(
                    "{rel}:{}: {word} is neither defined in this tree nor listed in \
                     UPSTREAM_SYMBOLS (tests/image_tree.rs)",
                    i + 1
                ));
            }
        }
    }
    assert!(errors.is_empty(), "unknown symbols:\n{}", errors.join("\n"));
}

/// The `ONAIR_*` variables of `onair.mk` as written (continuation lines joined, `+=` appended).
fn onair_mk_vars() -> Vec<(String, String)> {
    let text = read("buildroot/package/onair/onair.mk");
    let mut vars: Vec<(String, String)> = Vec::new();
    for (_, line) in logical_lines(&text) {
        let line = line.trim();
        if line.starts_with('#') || line.starts_with('\t') {
            continue;
        }
        let (name, value) = match (line.split_once("+="), line.split_once('=')) {
            (Some((n, v)), _) if !n.contains('=') => (n, v),
            (_, Some((n, v))) => (n, v),
            _ => continue,
        };
        let name = name.trim();
        if name.starts_with("ONAIR_") && !name.contains(' ') {
            vars.push((name.to_string(), value.trim().to_string()));
        }
    }
    vars
}

fn mk_var(vars: &[(String, String)], name: &str) -> String {
    vars.iter()
        .filter(|(n, _)| n == name)
        .map(|(_, v)| v.clone())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The body of `define NAME` ... `endef` in a make file.
fn make_define<'a>(text: &'a str, name: &str) -> Option<&'a str> {
    text.split(&format!("define {name}\n"))
        .nth(1)
        .and_then(|rest| rest.split("\nendef").next())
}

fn sha256(path: &Path) -> String {
    let out = Command::new("sha256sum")
        .arg(path)
        .output()
        .unwrap_or_else(|e| panic!("cannot run sha256sum: {e}"));
    assert!(out.status.success(), "sha256sum {}", path.display());
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn onair_mk_is_a_local_cargo_package() {
    let rel = "buildroot/package/onair/onair.mk";
    let text = read(rel);
    let vars = onair_mk_vars();
    let var = |name: &str| mk_var(&vars, name);
    for field in [
        "ONAIR_VERSION",
        "ONAIR_SITE",
        "ONAIR_SITE_METHOD",
        "ONAIR_LICENSE",
        "ONAIR_LICENSE_FILES",
    ] {
        assert!(!var(field).is_empty(), "{rel}: {field} is not set");
    }

    let cargo_toml = read("Cargo.toml");
    let package_field = |key: &str| {
        cargo_toml
            .split("[package]")
            .nth(1)
            .and_then(|pkg| {
                pkg.lines()
                    .find_map(|l| l.trim().strip_prefix(&format!("{key} = \"")))
                    .and_then(|v| v.strip_suffix('"'))
            })
            .unwrap_or_else(|| panic!("Cargo.toml: [package] {key}"))
            .to_string()
    };
    assert_eq!(
        var("ONAIR_VERSION"),
        package_field("version"),
        "{rel}: ONAIR_VERSION must equal the version in Cargo.toml"
    );
    // Buildroot spells SPDX's `OR` in lower case.
    assert_eq!(
        var("ONAIR_LICENSE"),
        package_field("license").replace(" OR ", " or "),
        "{rel}: ONAIR_LICENSE must say what Cargo.toml's license says"
    );
    assert_eq!(
        var("ONAIR_SITE_METHOD"),
        "local",
        "{rel}: ONAIR_SITE_METHOD"
    );
    assert!(
        var("ONAIR_REPO").contains("$(BR2_EXTERNAL_ONAIR_PATH)/.."),
        "{rel}: ONAIR_REPO must be the repository root, $(BR2_EXTERNAL_ONAIR_PATH)/.."
    );
    assert!(
        !var("ONAIR_SITE").contains("$(BR2_EXTERNAL_ONAIR_PATH)"),
        "{rel}: ONAIR_SITE must not be the repository itself: legal-info would archive its \
         target/ and .venv (it excludes VCS folders only)"
    );

    // The licence texts: real files, the ones Cargo.toml's licence names, hashed.
    let hash_rel = "buildroot/package/onair/onair.hash";
    let hashes = read(hash_rel);
    let files: Vec<String> = var("ONAIR_LICENSE_FILES")
        .split_whitespace()
        .map(str::to_string)
        .collect();
    for (license, marker) in [
        ("MIT", "Permission is hereby granted, free of charge"),
        (
            "Apache-2.0",
            "Apache License\n                           Version 2.0",
        ),
    ] {
        let found = files
            .iter()
            .any(|f| fs::read_to_string(repo().join(f)).is_ok_and(|text| text.contains(marker)));
        assert!(
            found,
            "{rel}: ONAIR_LICENSE_FILES ({files:?}) holds no {license} licence text"
        );
    }
    for file in &files {
        let path = repo().join(file);
        assert!(
            path.is_file(),
            "{rel}: licence file {file} does not exist in the repository"
        );
        assert!(
            !file.ends_with("Cargo.toml"),
            "{rel}: {file} is not a licence text"
        );
        let want = format!("sha256  {}  {file}", sha256(&path));
        assert!(
            hashes.lines().any(|l| l.trim() == want),
            "{hash_rel}: needs the line `{want}` (Buildroot checks licence files against it)"
        );
    }

    assert!(
        text.contains("$(eval $(cargo-package))"),
        "{rel}: must use the cargo infrastructure, $(eval $(cargo-package))"
    );
    assert!(
        repo().join("Cargo.lock").is_file(),
        "Cargo.lock must be committed: Buildroot builds with --locked"
    );
    // A local source is not downloaded, so the cargo download post-process does not vendor
    // it: a hook before the sync stages the clean copy and vendors into it, with the lock file.
    let hooks = var("ONAIR_PRE_RSYNC_HOOKS");
    let bodies: Vec<&str> = hooks
        .split_whitespace()
        .map(|hook| {
            make_define(&text, hook)
                .unwrap_or_else(|| panic!("{rel}: hook {hook} has no `define {hook}`"))
        })
        .collect();
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("rsync") && b.contains("$(ONAIR_SITE)")),
        "{rel}: no ONAIR_PRE_RSYNC_HOOKS hook copies the repository into $(ONAIR_SITE)"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.contains("cargo vendor") && b.contains("--locked")),
        "{rel}: no ONAIR_PRE_RSYNC_HOOKS hook runs `cargo vendor --locked`: nothing vendors \
         the crates for the --offline build"
    );
}

/// `onair.mk` loaded by GNU make the way Buildroot loads it, with the few variables of
/// Buildroot it reads set as Buildroot 2026.05.1 sets them (RSYNC_VCS_EXCLUSIONS from its
/// Makefile; the infrastructure macro left empty), so its variables can be printed and its
/// hooks run against a directory.
struct OnairMk {
    makefile: PathBuf,
}

impl OnairMk {
    fn new(dir: &Path, checkout: &Path) -> OnairMk {
        let makefile = dir.join("harness.mk");
        let text = format!(
            "BR2_EXTERNAL_ONAIR_PATH := {checkout}/buildroot\n\
             BUILD_DIR := {out}/build\n\
             DL_DIR := {out}/dl\n\
             BR_CARGO_HOME := {out}/br-cargo-home\n\
             RSYNC_VCS_EXCLUSIONS = --exclude .svn --exclude .git --exclude .hg --exclude .bzr --exclude CVS\n\
             ONAIR_TARGET_RSYNC = $(BUILD_DIR)/onair-$(ONAIR_VERSION)/.stamp_rsynced\n\
             include {checkout}/buildroot/package/onair/onair.mk\n\
             print-%: ; $(info $($*))@:\n\
             call-%: ; $(call $*)\n",
            checkout = checkout.display(),
            out = dir.display(),
        );
        fs::write(&makefile, text).expect("write the make harness");
        OnairMk { makefile }
    }

    fn make(&self, goal: &str) -> String {
        self.try_make(goal, None)
            .unwrap_or_else(|e| panic!("make {goal} failed:\n{e}"))
    }

    /// Runs a goal, with `path` as PATH if given; Err carries make's output.
    fn try_make(&self, goal: &str, path: Option<&str>) -> Result<String, String> {
        let mut cmd = Command::new("make");
        cmd.args(["--no-print-directory", "-f"])
            .arg(&self.makefile)
            .arg(goal);
        if let Some(path) = path {
            cmd.env("PATH", path);
        }
        let out = cmd
            .output()
            .unwrap_or_else(|e| panic!("cannot run make: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(text)
        }
    }

    fn var(&self, name: &str) -> String {
        self.make(&format!("print-{name}")).trim().to_string()
    }
}

fn sh(script: &str) -> String {
    let out = Command::new("sh")
        .args(["-c", script])
        .output()
        .unwrap_or_else(|e| panic!("cannot run sh: {e}"));
    assert!(
        out.status.success(),
        "sh -c {script:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// Tools a test needs: in CI (scripts/setup.sh installs them) their absence fails the test;
/// elsewhere the test says what is missing and passes without checking.
fn tools_or_skip(test: &str, tools: &[&str]) -> bool {
    let missing: Vec<&str> = tools.iter().copied().filter(|t| !have(t)).collect();
    if missing.is_empty() {
        return true;
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "{test}: {missing:?} missing in CI (scripts/setup.sh installs them)"
    );
    eprintln!("SKIPPED {test}: {missing:?} not installed (scripts/setup.sh installs them)");
    false
}

#[test]
fn legal_info_archives_the_source_without_build_output() {
    if !tools_or_skip(
        "legal_info_archives_the_source_without_build_output",
        &["make", "rsync"],
    ) {
        return;
    }
    // A developer's checkout: the repository's files plus what building and testing leave in
    // it (cargo's target/, the receiver's .venv, build-image.sh output kept in the tree,
    // Python caches) and their own cross settings in .cargo/.
    let tmp = tempfile::tempdir().expect("temporary directory");
    let checkout = tmp.path().join("checkout");
    sh(&format!(
        "rsync -a --exclude .git --filter=':- .gitignore' '{}/' '{}/'",
        repo().display(),
        checkout.display()
    ));
    for (junk, content) in [
        ("target/release/onair", "build output"),
        (".venv/bin/python", "virtualenv"),
        ("target-br/rpi4/build/busybox/Makefile", "Buildroot output"),
        (
            "tests/peers/__pycache__/whip_receiver.cpython-311.pyc",
            "cache",
        ),
        (
            ".cargo/config.toml",
            "[build]\ntarget-dir = \"/home/me/cache\"\n",
        ),
    ] {
        let path = checkout.join(junk);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, content).unwrap();
    }
    let mk = OnairMk::new(tmp.path(), &checkout);
    let site = PathBuf::from(mk.var("ONAIR_SITE"));
    let license_files = mk.var("ONAIR_LICENSE_FILES");
    mk.make("call-ONAIR_STAGE_SOURCE");

    // What `make legal-info` does for a local package (Buildroot 2026.05.1,
    // package/pkg-generic.mk): copy the site with only VCS folders excluded, then archive it.
    let vcs = mk.var("RSYNC_VCS_EXCLUSIONS");
    let legal = tmp.path().join("legal-info-rsync");
    let copy = |from: &Path, to: &Path| {
        sh(&format!(
            "rsync -au --chmod=u=rwX,go=rX {vcs} '{}/' '{}/'",
            from.display(),
            to.display()
        ))
    };
    copy(&site, &legal);
    for kept in [
        "Cargo.toml",
        "Cargo.lock",
        "src/main.rs",
        "buildroot/external.desc",
    ] {
        assert!(
            legal.join(kept).is_file(),
            "legal-info's copy of the source lacks {kept}"
        );
    }
    for file in license_files.split_whitespace() {
        // Buildroot copies the licence files from the package's build directory, which is
        // synced from the same site.
        assert!(
            legal.join(file).is_file(),
            "legal-info would find no licence file {file} in the package's source"
        );
    }
    for left_out in ["target", ".venv", "target-br", "tests/peers/__pycache__"] {
        assert!(
            !legal.join(left_out).exists(),
            "legal-info's copy of the source carries {left_out}: the package must build from \
             a clean copy (ONAIR_STAGE_SOURCE)"
        );
    }
    assert!(
        !legal.join(".cargo/config.toml").exists(),
        "a developer's .cargo/config.toml must not reach the package's source (the vendoring \
         hook writes the build's own)"
    );
    // The same copy of the checkout itself (a site that is the repository) carries it all:
    // what this test guards against.
    let unguarded = tmp.path().join("unguarded");
    copy(&checkout, &unguarded);
    assert!(unguarded.join("target/release/onair").is_file());
}

/// What Buildroot 2026.05.1's package/pkg-cargo.mk puts into every target cargo package's
/// environment for the release profile (with its default BR2_OPTIMIZE_2, no BR2_ENABLE_LTO, no
/// debug): each of them overrides Cargo.toml's [profile.release].
const BUILDROOT_RELEASE_PROFILE_ENV: &[(&str, &str)] = &[
    ("CARGO_PROFILE_RELEASE_INCREMENTAL", "false"),
    ("CARGO_PROFILE_RELEASE_CODEGEN_UNITS", "16"),
    ("CARGO_PROFILE_RELEASE_SPLIT_DEBUGINFO", "off"),
    ("CARGO_PROFILE_RELEASE_OPT_LEVEL", "2"),
    ("CARGO_PROFILE_RELEASE_LTO", "false"),
    ("CARGO_PROFILE_RELEASE_DEBUG", "0"),
    ("CARGO_PROFILE_RELEASE_DEBUG_ASSERTIONS", "false"),
    ("CARGO_PROFILE_RELEASE_OVERFLOW_CHECKS", "false"),
];

#[test]
fn the_image_builds_the_release_profile_ci_tests() {
    // The profile both builds use: Cargo.toml's, with nothing on top.
    let cargo_toml = read("Cargo.toml");
    let release = cargo_toml
        .split("[profile.release]")
        .nth(1)
        .map(|rest| rest.split("\n[").next().unwrap_or(rest))
        .expect("Cargo.toml has a [profile.release]");
    for line in ["lto = \"thin\"", "codegen-units = 4"] {
        assert!(
            release.lines().any(|l| l.trim() == line),
            "Cargo.toml [profile.release]: README and onair.mk describe `{line}`"
        );
    }
    // CI's cross build (and the emulated box's binary): `cargo build --release` for aarch64,
    // no profile options, no profile settings in the cargo config.
    for script in ["scripts/test-cross.sh", "scripts/qemu-boot-test.sh"] {
        let text = read(script);
        assert!(
            text.contains("cargo build --release --target"),
            "{script}: expected `cargo build --release --target ...`"
        );
        for option in ["CARGO_PROFILE_", "--profile", "--config"] {
            assert!(
                !text.contains(option),
                "{script}: {option} would make CI's binary differ from the image's"
            );
        }
    }
    let config = read(".cargo/config.toml");
    assert!(
        !config.contains("[profile") && !config.contains("CARGO_PROFILE_"),
        ".cargo/config.toml: a profile setting here would apply to CI's build only"
    );

    if !tools_or_skip("the_image_builds_the_release_profile_ci_tests", &["make"]) {
        return;
    }
    // Buildroot runs `... $(PKG_CARGO_ENV) $(ONAIR_CARGO_ENV) cargo build|install`: run that
    // line with `env` in place of cargo and see what reaches it.
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mk = OnairMk::new(tmp.path(), &repo());
    let package_env = mk.var("ONAIR_CARGO_ENV");
    let buildroot_env: String = BUILDROOT_RELEASE_PROFILE_ENV
        .iter()
        .map(|(k, v)| format!("{k}=\"{v}\" "))
        .collect();
    let overrides = |line: &str| -> Vec<String> {
        sh(line)
            .lines()
            .filter(|l| l.starts_with("CARGO_PROFILE_RELEASE_"))
            .map(str::to_string)
            .collect()
    };
    assert_eq!(
        overrides(&format!("{buildroot_env} env")).len(),
        BUILDROOT_RELEASE_PROFILE_ENV.len(),
        "the shell should pass Buildroot's settings on (or this test proves nothing)"
    );
    let left = overrides(&format!("{buildroot_env} {package_env} env"));
    assert!(
        left.is_empty(),
        "buildroot/package/onair/onair.mk: ONAIR_CARGO_ENV lets Buildroot's profile \
         overrides reach cargo, so the image's binary is not the one CI tests: {left:?}"
    );
}

#[test]
fn rtmps_works_on_every_image() {
    // The daemon accepts rtmps:// ...
    onair::config::Config::parse(
        r#"{"source": {"kind": "test"},
            "output": {"kind": "rtmp", "url": "rtmps://live.example.net:443/app/key"}}"#,
    )
    .expect("the daemon accepts rtmps URLs");
    // ... which rtmp2sink can only open with GIO's TLS module (glib-networking) and CA
    // certificates to check the server with. The package selects both, so every image that
    // has the daemon has them.
    let rel = "buildroot/package/onair/Config.in";
    let selects: Vec<String> = read(rel)
        .lines()
        .filter_map(|l| l.trim().strip_prefix("select "))
        .filter_map(|l| l.split_whitespace().next())
        .map(str::to_string)
        .collect();
    for needed in ["BR2_PACKAGE_GLIB_NETWORKING", "BR2_PACKAGE_CA_CERTIFICATES"] {
        assert!(
            selects.iter().any(|s| s == needed),
            "{rel}: must `select {needed}` (rtmps)"
        );
    }
    for board in &BOARDS {
        let (rel, settings) = defconfig(board);
        assert!(
            setting(&settings, "BR2_PACKAGE_ONAIR")
                .is_some_and(|s| s.value.as_deref() == Some("y")),
            "{rel}: BR2_PACKAGE_ONAIR=y"
        );
        for symbol in ["BR2_PACKAGE_GLIB_NETWORKING", "BR2_PACKAGE_CA_CERTIFICATES"] {
            assert!(
                setting(&settings, symbol).is_none_or(|s| s.value.is_some()),
                "{rel}: must not unset {symbol} (rtmps)"
            );
        }
    }
}

#[test]
fn onair_package_selects_what_the_daemon_needs() {
    let rel = "buildroot/package/onair/Config.in";
    let text = read(rel);
    assert!(
        text.lines().any(|l| l.trim() == "config BR2_PACKAGE_ONAIR"),
        "{rel}: no `config BR2_PACKAGE_ONAIR`"
    );
    let selects: BTreeSet<&str> = text
        .lines()
        .filter_map(|l| l.trim().strip_prefix("select "))
        .filter_map(|l| l.split_whitespace().next())
        .collect();
    for needed in [
        "BR2_PACKAGE_HOST_RUSTC",
        "BR2_PACKAGE_GSTREAMER1",
        "BR2_PACKAGE_GST1_PLUGINS_BASE",
        "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_APP",
        "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_PANGO",
        "BR2_PACKAGE_DEJAVU",
        "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_VIDEOTESTSRC",
        "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_VIDEOCONVERTSCALE",
        "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_V4L2",
        "BR2_PACKAGE_GST1_PLUGINS_GOOD_JPEG",
        "BR2_PACKAGE_GST1_PLUGINS_GOOD_PNG",
        "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_VIDEOPARSERS",
        "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_RTMP2",
        "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_FLV",
        "BR2_PACKAGE_GST1_PLUGINS_UGLY_PLUGIN_X264",
        "BR2_PACKAGE_CA_CERTIFICATES",
        // Sound: capture, conversion, level, Opus (WHIP), AAC (RTMP), ALSA diagnostics.
        "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_ALSA",
        "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_AUDIOTESTSRC",
        "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_AUDIOCONVERT",
        "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_AUDIORESAMPLE",
        "BR2_PACKAGE_GST1_PLUGINS_BASE_PLUGIN_OPUS",
        "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_LEVEL",
        "BR2_PACKAGE_GST1_PLUGINS_BAD_PLUGIN_VOAACENC",
        "BR2_PACKAGE_ALSA_UTILS",
        "BR2_PACKAGE_ALSA_UTILS_APLAY",
    ] {
        assert!(selects.contains(needed), "{rel}: must `select {needed}`");
    }
    assert!(
        text.contains("depends on BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS"),
        "{rel}: must depend on BR2_PACKAGE_HOST_RUSTC_TARGET_ARCH_SUPPORTS (cargo packages do)"
    );
}

#[test]
fn defconfigs_build_the_box() {
    let common = [
        "BR2_PACKAGE_ONAIR=y",
        "BR2_INIT_SYSTEMD=y",
        "BR2_PACKAGE_DROPBEAR=y",
        "BR2_PACKAGE_CA_CERTIFICATES=y",
        "BR2_PACKAGE_SYSTEMD_TIMESYNCD=y",
        "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_V4L2=y",
        "BR2_PACKAGE_GST1_PLUGINS_UGLY_PLUGIN_X264=y",
        "BR2_LINUX_KERNEL=y",
        "BR2_TARGET_ROOTFS_EXT2_4=y",
        "BR2_PACKAGE_HOST_GENIMAGE=y",
        "BR2_PACKAGE_HOST_MTOOLS=y",
        "BR2_PACKAGE_HOST_DOSFSTOOLS=y",
        // A/B updates: RAUC's service runs installs, its JSON is what onair reads.
        "BR2_PACKAGE_RAUC=y",
        "BR2_PACKAGE_RAUC_DBUS=y",
        "BR2_PACKAGE_RAUC_JSON=y",
        "# BR2_TARGET_ENABLE_ROOT_LOGIN is not set",
        "# BR2_TARGET_GENERIC_REMOUNT_ROOTFS_RW is not set",
    ];
    let pi = [
        "BR2_PACKAGE_RPI_FIRMWARE=y",
        "BR2_LINUX_KERNEL_DTS_SUPPORT=y",
    ];
    for board in &BOARDS {
        let (rel, settings) = defconfig(board);
        let text = read(&rel);
        let lines: BTreeSet<&str> = text.lines().map(str::trim).collect();
        let mut wanted: Vec<&str> = common.to_vec();
        if board.raspberry_pi {
            wanted.extend(pi);
        }
        if board.name == "rpi4" {
            // The Pi 4's hardware encoder only exists as v4l2h264enc with the probe, and its
            // CSI cameras need libcamera's rpi/vc4 pipeline.
            wanted.extend([
                "BR2_PACKAGE_GST1_PLUGINS_GOOD_PLUGIN_V4L2_PROBE=y",
                "BR2_PACKAGE_LIBCAMERA=y",
                "BR2_PACKAGE_LIBCAMERA_PIPELINE_RPI_VC4=y",
                "BR2_PACKAGE_RPI_FIRMWARE_VARIANT_PI4=y",
            ]);
        }
        for line in wanted {
            assert!(lines.contains(line), "{rel}: missing `{line}`");
        }
        for s in &settings {
            assert!(
                s.symbol != "BR2_TARGET_GENERIC_ROOT_PASSWD",
                "{rel}:{}: sets a root password; the box is SSH-key only",
                s.line
            );
        }
        // The config.txt overlays (gpio-led, cma, tc358743) must be installed.
        assert!(
            !lines.contains("# BR2_PACKAGE_RPI_FIRMWARE_INSTALL_DTB_OVERLAYS is not set"),
            "{rel}: DT overlays must be installed, config.txt loads gpio-led and cma"
        );
        for script in [
            "BR2_ROOTFS_POST_BUILD_SCRIPT",
            "BR2_ROOTFS_POST_FAKEROOT_SCRIPT",
            "BR2_ROOTFS_POST_IMAGE_SCRIPT",
            "BR2_ROOTFS_OVERLAY",
        ] {
            assert!(
                setting(&settings, script).is_some(),
                "{rel}: {script} is not set"
            );
        }
        let args = setting(&settings, "BR2_ROOTFS_POST_SCRIPT_ARGS")
            .and_then(|s| s.value.clone())
            .unwrap_or_default();
        assert_eq!(
            args,
            format!("$(BR2_EXTERNAL_ONAIR_PATH)/../board/{}", board.name),
            "{rel}: BR2_ROOTFS_POST_SCRIPT_ARGS must be the board directory (the post scripts \
             take it as their second argument)"
        );
        let overlays = setting(&settings, "BR2_ROOTFS_OVERLAY")
            .and_then(|s| s.value.clone())
            .unwrap_or_default();
        assert!(
            overlays
                .split_whitespace()
                .next()
                .is_some_and(|o| o.ends_with("board/common/rootfs-overlay")),
            "{rel}: BR2_ROOTFS_OVERLAY must start with board/common/rootfs-overlay"
        );
    }
}

#[test]
fn referenced_files_exist() {
    let mut errors = Vec::new();
    for board in &BOARDS {
        let (rel, settings) = defconfig(board);
        for s in &settings {
            let Some(value) = &s.value else { continue };
            for word in value.split_whitespace() {
                if let Some(path) = external_path(word) {
                    if !path.exists() {
                        errors.push(format!(
                            "{rel}:{}: {} names {word}, which does not exist ({})",
                            s.line,
                            s.symbol,
                            path.display()
                        ));
                    }
                } else if (word.starts_with("board/") || word.starts_with("package/"))
                    && !UPSTREAM_FILES.contains(&word)
                {
                    errors.push(format!(
                        "{rel}:{}: {} names {word}, which is neither in this tree \
                         ($(BR2_EXTERNAL_ONAIR_PATH)/...) nor listed in UPSTREAM_FILES",
                        s.line, s.symbol
                    ));
                }
            }
        }
        if !repo()
            .join("board")
            .join(board.name)
            .join("genimage.cfg")
            .is_file()
        {
            errors.push(format!(
                "board/{}/genimage.cfg is missing (post-image.sh uses $BOARD_DIR/genimage.cfg)",
                board.name
            ));
        }
    }
    // Files the post scripts name through $COMMON_DIR or $BOARD_DIR.
    for script in files_under("board/common") {
        if !script.ends_with(".sh") {
            continue;
        }
        let text = read(&script);
        for path in paths_after(&text, "COMMON_DIR") {
            if !repo().join("board/common").join(&path).exists() {
                errors.push(format!(
                    "{script}: names $COMMON_DIR/{path}, which does not exist"
                ));
            }
        }
        for path in paths_after(&text, "BOARD_DIR") {
            for board in &BOARDS {
                if !repo().join("board").join(board.name).join(&path).exists() {
                    errors.push(format!(
                        "{script}: names $BOARD_DIR/{path}, missing for board {}",
                        board.name
                    ));
                }
            }
        }
    }
    // post-image.sh must know every board, and stage the boot partition where genimage reads it.
    let post_image = read("board/common/post-image.sh");
    for board in &BOARDS {
        if !post_image.contains(board.name) {
            errors.push(format!(
                "board/common/post-image.sh does not handle board {}",
                board.name
            ));
        }
        let (rel, cfg) = genimage(board);
        for image in &cfg.children {
            if let Some(src) = image.value("srcpath")
                && !post_image.contains(&format!("/{src}"))
            {
                errors.push(format!(
                    "{rel}: image {} is filled from srcpath \"{src}\", which \
                     board/common/post-image.sh does not stage",
                    image.title
                ));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

// ---- scripts and units ------------------------------------------------------------------------

#[test]
fn scripts_are_executable_posix_sh() {
    let mut scripts: Vec<String> = SCRIPTS.iter().map(|s| s.to_string()).collect();
    scripts.extend(files_under(&format!("{OVERLAY}/usr/libexec/onair")));
    // Anything else in the board tree that starts with a shebang is a script too.
    for file in files_under("board") {
        if !scripts.contains(&file) && read_bytes_start(&file).starts_with(b"#!") {
            scripts.push(file);
        }
    }
    let mut errors = Vec::new();
    for script in &scripts {
        let text = read(script);
        if text.lines().next() != Some("#!/bin/sh") {
            errors.push(format!(
                "{script}: must start with #!/bin/sh (POSIX sh: BusyBox ash, dash)"
            ));
        }
        if !is_executable(script) {
            errors.push(format!("{script}: is not executable (chmod 755 {script})"));
        }
        match Command::new("sh")
            .arg("-n")
            .arg(repo().join(script))
            .output()
        {
            Ok(out) if !out.status.success() => errors.push(format!(
                "{script}: sh -n finds a syntax error: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            )),
            Ok(_) => {}
            Err(e) => errors.push(format!("cannot run sh -n {script}: {e}")),
        }
    }
    let paths: Vec<&str> = scripts.iter().map(String::as_str).collect();
    if let Some(modes) = git_modes(&paths) {
        for (path, mode) in modes {
            if mode != "100755" {
                errors.push(format!(
                    "{path}: git records mode {mode}, must be 100755 \
                     (git update-index --chmod=+x {path})"
                ));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

fn read_bytes_start(rel: &str) -> Vec<u8> {
    let bytes = fs::read(repo().join(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"));
    bytes.into_iter().take(2).collect()
}

/// `Key=value` lines of a systemd unit or drop-in.
fn unit_entries(text: &str) -> Vec<(String, String)> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#') && !l.starts_with(';') && !l.starts_with('['))
        .filter_map(|l| l.split_once('='))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

#[test]
fn units_start_programs_the_image_has() {
    let units: Vec<String> = files_under(&format!("{OVERLAY}/usr/lib/systemd/system"));
    assert!(!units.is_empty(), "{OVERLAY}: no systemd units");
    let unit_names: BTreeSet<String> = units
        .iter()
        .filter(|u| u.ends_with(".service"))
        .map(|u| {
            Path::new(u)
                .file_name()
                .unwrap()
                .to_string_lossy()
                .into_owned()
        })
        .collect();
    let preset = read(&format!(
        "{OVERLAY}/usr/lib/systemd/system-preset/50-onair.preset"
    ));
    let mut errors = Vec::new();
    for unit in &units {
        let text = read(unit);
        let entries = unit_entries(&text);
        for (key, value) in &entries {
            if key.starts_with("Exec") {
                let program = value
                    .trim_start_matches(['-', '@', '+', '!', ':'])
                    .split_whitespace()
                    .next()
                    .unwrap_or("");
                let in_overlay = repo().join(OVERLAY).join(program.trim_start_matches('/'));
                let from_package = PACKAGE_PROGRAMS.iter().find(|(p, _)| *p == program);
                if program != "/usr/bin/onair" && !in_overlay.is_file() && from_package.is_none() {
                    errors.push(format!(
                        "{unit}: {key} runs {program}, which is neither /usr/bin/onair nor a file \
                         of the overlay nor in PACKAGE_PROGRAMS"
                    ));
                }
                if let Some((_, symbol)) = from_package {
                    for board in &BOARDS {
                        let (rel, settings) = defconfig(board);
                        if setting(&settings, symbol)
                            .is_none_or(|s| s.value.as_deref() != Some("y"))
                        {
                            errors.push(format!(
                                "{unit}: runs {program}, but {rel} does not set {symbol}=y"
                            ));
                        }
                    }
                }
                if in_overlay.is_file() && !is_executable(&format!("{OVERLAY}{program}")) {
                    errors.push(format!("{unit}: {program} is not executable"));
                }
            }
            if key == "EnvironmentFile" && !value.starts_with('-') {
                let path = repo().join(OVERLAY).join(value.trim_start_matches('/'));
                if !path.is_file() {
                    errors.push(format!(
                        "{unit}: EnvironmentFile={value} is required but not in the overlay \
                         (prefix it with - to make it optional)"
                    ));
                }
            }
            if ["Wants", "Requires", "After", "Before", "BindsTo"].contains(&key.as_str()) {
                for dep in value.split_whitespace() {
                    if dep.starts_with("onair") && !unit_names.contains(dep) {
                        errors.push(format!("{unit}: {key}={dep}, but there is no such unit"));
                    }
                }
            }
        }
        let name = Path::new(unit).file_name().unwrap().to_string_lossy();
        if name.ends_with(".service")
            && text.contains("[Install]")
            && !preset.lines().any(|l| l.trim() == format!("enable {name}"))
        {
            errors.push(format!(
                "{unit}: has an [Install] section but the preset \
                 (system-preset/50-onair.preset) does not `enable {name}`"
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));

    // The daemon: restarted whatever happens, after the data partition and the import.
    let rel = format!("{OVERLAY}/usr/lib/systemd/system/onair.service");
    let entries = unit_entries(&read(&rel));
    let has = |k: &str, v: &str| entries.iter().any(|(ek, ev)| ek == k && ev == v);
    assert!(has("Restart", "always"), "{rel}: needs Restart=always");
    // A hung daemon is restarted too: systemd's service watchdog, fed by the daemon's
    // supervisor loop (tests/service_watchdog.rs shows the pings, scripts/qemu/watchdog-check.sh
    // the restart). Type=notify needs the daemon to be the main process: onair-start execs it.
    assert!(
        has("Type", "notify") && has("NotifyAccess", "main"),
        "{rel}: needs Type=notify and NotifyAccess=main (the daemon sends READY=1 and WATCHDOG=1)"
    );
    let watchdog_s: Option<u64> = entries
        .iter()
        .find(|(k, _)| k == "WatchdogSec")
        .and_then(|(_, v)| v.strip_suffix('s').unwrap_or(v).parse().ok());
    assert!(
        watchdog_s.is_some_and(|s| (10..=60).contains(&s)),
        "{rel}: needs WatchdogSec= in seconds, 10 to 60 (well above the supervisor loop's \
         longest legitimate wait, well below a person's patience); found {watchdog_s:?}"
    );
    assert!(
        has("StartLimitIntervalSec", "0"),
        "{rel}: needs StartLimitIntervalSec=0, or systemd stops restarting after a burst"
    );
    for dep in ["onair-data.service", "onair-import.service"] {
        assert!(
            entries
                .iter()
                .any(|(k, v)| k == "After" && v.split_whitespace().any(|d| d == dep)),
            "{rel}: must start After={dep}"
        );
    }
    let start = read(&format!("{OVERLAY}/usr/libexec/onair/onair-start"));
    assert!(
        start.contains("exec \"$BIN\" run --config") && start.contains("/usr/bin/onair"),
        "{OVERLAY}/usr/libexec/onair/onair-start must exec /usr/bin/onair run --config FILE"
    );
    let watchdog = read(&format!(
        "{OVERLAY}/usr/lib/systemd/system.conf.d/onair-watchdog.conf"
    ));
    assert!(
        watchdog
            .lines()
            .any(|l| l.starts_with("RuntimeWatchdogSec=")),
        "onair-watchdog.conf: systemd must feed the hardware watchdog (RuntimeWatchdogSec=)"
    );
    let tmpfiles = read(&format!("{OVERLAY}/usr/lib/tmpfiles.d/onair.conf"));
    assert!(
        tmpfiles.lines().any(|l| l.starts_with("d /run/onair ")),
        "tmpfiles.d/onair.conf must create /run/onair, the daemon's state directory"
    );
    // A daemon killed with SIGKILL (or by the watchdog) cannot remove its policy routing:
    // the service does, whenever the daemon has stopped (tests/routing_cleanup.rs runs it).
    assert!(
        has("ExecStopPost", "/usr/bin/onair cleanup-routes"),
        "{rel}: needs ExecStopPost=/usr/bin/onair cleanup-routes"
    );
}

/// The status socket's group is a dedicated one on the image: declared for systemd-sysusers
/// and for Buildroot (which makes it at build time: the root is read-only), and given to
/// /run/onair with the set-group-ID bit, so the socket made there is in it and nobody else
/// but root can even look in.
#[test]
fn the_status_socket_has_a_group_of_its_own() {
    let sysusers = read(&format!("{OVERLAY}/usr/lib/sysusers.d/onair.conf"));
    assert!(
        sysusers.lines().any(|l| l.trim() == "g onair-status -"),
        "sysusers.d/onair.conf must declare the group onair-status: {sysusers}"
    );
    let mk = read("buildroot/package/onair/onair.mk");
    let users: Vec<&str> = mk
        .split("define ONAIR_USERS")
        .nth(1)
        .and_then(|rest| rest.split("endef").next())
        .map(|body| {
            body.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty())
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(
        users
            .first()
            .map(|l| l.split_whitespace().take(4).collect::<Vec<_>>()),
        Some(vec!["-", "-", "onair-status", "-1"]),
        "onair.mk must make the group onair-status (ONAIR_USERS, makeusers syntax)"
    );
    let tmpfiles = read(&format!("{OVERLAY}/usr/lib/tmpfiles.d/onair.conf"));
    let line: Vec<&str> = tmpfiles
        .lines()
        .find(|l| l.starts_with("d /run/onair "))
        .map(|l| l.split_whitespace().collect())
        .unwrap_or_default();
    assert_eq!(
        line.get(2..5),
        Some(&["2750", "root", "onair-status"][..]),
        "tmpfiles.d/onair.conf: /run/onair must be 2750 root:onair-status: {line:?}"
    );
    let rootfs = read("scripts/qemu/build-rootfs.sh");
    assert!(
        rootfs.contains("systemd-sysusers --root"),
        "the emulated box's root file system must get the overlay's groups too"
    );
}

/// Runs onair-clock in dry-run mode (it decides and records, but sets, mounts and restarts
/// nothing) against files in `dir`; returns (the record, the log).
fn onair_clock_dry_run(dir: &Path) -> (String, String) {
    let out = Command::new("sh")
        .arg(repo().join(OVERLAY).join("usr/libexec/onair/onair-clock"))
        .env("ONAIR_DATA_DIR", dir.join("data"))
        .env("ONAIR_CLOCK_EPOCH", dir.join("clock-epoch"))
        .env("ONAIR_TIMESYNC_DIR", dir.join("timesync"))
        .env("ONAIR_STATE_DIR", dir.join("run"))
        .env("ONAIR_CLOCK_DRY_RUN", "1")
        .output()
        .expect("run onair-clock");
    let log = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "onair-clock failed:\n{log}");
    let record = fs::read_to_string(dir.join("run/clock-set")).unwrap_or_default();
    (record, log)
}

#[test]
fn the_box_keeps_its_time_across_reboots_and_never_starts_before_the_build_date() {
    // The floor: both image builds set /usr/lib/clock-epoch's mtime (systemd's floor).
    for script in ["board/common/post-build.sh", "scripts/qemu/build-rootfs.sh"] {
        assert!(
            read(script).contains("usr/lib/clock-epoch\""),
            "{script}: must touch usr/lib/clock-epoch (the clock's floor: the build date)"
        );
    }
    // NTP: the network's servers, then a pool; timesyncd enabled; the daemon after the clock.
    let network = read(&format!(
        "{OVERLAY}/usr/lib/systemd/network/80-onair-wired.network"
    ));
    assert!(
        unit_entries(&network).contains(&("UseNTP".into(), "yes".into())),
        "80-onair-wired.network: the network's NTP servers go to timesyncd (UseNTP=yes)"
    );
    let timesyncd = read(&format!(
        "{OVERLAY}/usr/lib/systemd/timesyncd.conf.d/onair.conf"
    ));
    assert!(
        unit_entries(&timesyncd)
            .iter()
            .any(|(k, v)| k == "FallbackNTP" && v.contains("pool.ntp.org")),
        "timesyncd.conf.d/onair.conf: a pool when no network names an NTP server"
    );
    let preset = read(&format!(
        "{OVERLAY}/usr/lib/systemd/system-preset/50-onair.preset"
    ));
    for unit in ["systemd-timesyncd.service", "onair-clock.service"] {
        assert!(
            preset.lines().any(|l| l.trim() == format!("enable {unit}")),
            "50-onair.preset must enable {unit}"
        );
    }
    let daemon = unit_entries(&read(&format!(
        "{OVERLAY}/usr/lib/systemd/system/onair.service"
    )));
    assert!(
        daemon
            .iter()
            .any(|(k, v)| k == "After" && v.split_whitespace().any(|u| u == "onair-clock.service")),
        "onair.service must start after onair-clock.service (the saved time first)"
    );
    let clock_unit = unit_entries(&read(&format!(
        "{OVERLAY}/usr/lib/systemd/system/onair-clock.service"
    )));
    assert!(
        clock_unit
            .iter()
            .any(|(k, v)| k == "After" && v.split_whitespace().any(|u| u == "onair-data.service")),
        "onair-clock.service must run after onair-data.service (/data mounted)"
    );

    // onair-clock's decisions. A saved time later than the clock: restored, and said so.
    let now = std::time::SystemTime::now();
    let day = std::time::Duration::from_secs(86_400);
    let dir = tempfile::tempdir().unwrap();
    fs::create_dir_all(dir.path().join("data/timesync")).unwrap();
    let saved = fs::File::create(dir.path().join("data/timesync/clock")).unwrap();
    saved.set_modified(now + day).unwrap();
    let (record, log) = onair_clock_dry_run(dir.path());
    assert_eq!(record, "{\"set_by\": \"saved-clock-file\"}\n", "{log}");
    assert!(log.contains("clock set forward"), "{log}");
    // An older saved time is ignored: the clock never goes back.
    saved.set_modified(now - day).unwrap();
    let floor = fs::File::create(dir.path().join("clock-epoch")).unwrap();
    // A floor later than the moment the clock would have started: systemd advanced it.
    floor.set_modified(now + day).unwrap();
    let (record, log) = onair_clock_dry_run(dir.path());
    assert_eq!(record, "{\"set_by\": \"build-floor\"}\n", "{log}");
    assert!(!log.contains("clock set forward"), "{log}");
    // A floor long before the boot: the time came from elsewhere (an RTC, or nobody knows).
    floor.set_modified(now - day * 3650).unwrap();
    let (record, log) = onair_clock_dry_run(dir.path());
    assert!(
        record == "{\"set_by\": \"rtc\"}\n" || record == "{\"set_by\": \"unknown\"}\n",
        "{record}: {log}"
    );
}

// ---- field uplinks: Wi-Fi, phones, modems ------------------------------------------------------

/// `[Section]` → `Key=value` pairs of a systemd-style file, in order.
fn sections(text: &str) -> Vec<(String, String, String)> {
    let mut out = Vec::new();
    let mut section = String::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = name.to_string();
        } else if let Some((k, v)) = line.split_once('=') {
            out.push((section.clone(), k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

fn entry<'a>(entries: &'a [(String, String, String)], section: &str, key: &str) -> Vec<&'a str> {
    entries
        .iter()
        .filter(|(s, k, _)| s == section && k == key)
        .map(|(_, _, v)| v.as_str())
        .collect()
}

#[test]
fn every_image_has_what_the_field_uplinks_need() {
    let common = [
        "BR2_PACKAGE_WPA_SUPPLICANT=y",
        "BR2_PACKAGE_WPA_SUPPLICANT_NL80211=y",
        "BR2_PACKAGE_WPA_SUPPLICANT_WPA3=y",
        "BR2_PACKAGE_WPA_SUPPLICANT_CTRL_IFACE=y",
        "BR2_PACKAGE_WIRELESS_REGDB=y",
        "BR2_PACKAGE_MODEM_MANAGER=y",
        "BR2_PACKAGE_MODEM_MANAGER_LIBQMI=y",
        "BR2_PACKAGE_MODEM_MANAGER_LIBMBIM=y",
        "BR2_PACKAGE_USB_MODESWITCH_DATA=y",
    ];
    let kernel_common = [
        "CONFIG_CFG80211=m",
        "CONFIG_USB_NET_RNDIS_HOST=m",
        "CONFIG_USB_NET_CDCETHER=m",
        "CONFIG_USB_NET_CDC_NCM=m",
        "CONFIG_USB_NET_HUAWEI_CDC_NCM=m",
        "CONFIG_USB_NET_QMI_WWAN=m",
        "CONFIG_USB_NET_CDC_MBIM=m",
        "CONFIG_USB_SERIAL_OPTION=m",
        "CONFIG_USB_IPHETH=m",
    ];
    let mut errors = Vec::new();
    for board in &BOARDS {
        let (rel, _) = defconfig(board);
        let text = read(&rel);
        let lines: BTreeSet<&str> = text.lines().map(str::trim).collect();
        let mut wanted = common.to_vec();
        if board.raspberry_pi {
            // The built-in radio of the Pi 4/400/CM4 and Pi 5/500/CM5 (CYW43455) needs its
            // firmware and NVRAM, which the kernel does not carry.
            wanted.extend([
                "BR2_PACKAGE_BRCMFMAC_SDIO_FIRMWARE_RPI=y",
                "BR2_PACKAGE_BRCMFMAC_SDIO_FIRMWARE_RPI_WIFI=y",
            ]);
        }
        for line in wanted {
            if !lines.contains(line) {
                errors.push(format!("{rel}: missing `{line}`"));
            }
        }
        let frag_rel = format!("board/{}/linux.fragment", board.name);
        let frag = read(&frag_rel);
        let frag_lines: BTreeSet<&str> = frag.lines().map(str::trim).collect();
        let mut kernel = kernel_common.to_vec();
        kernel.push(if board.raspberry_pi {
            "CONFIG_BRCMFMAC=m"
        } else {
            "CONFIG_MAC80211_HWSIM=m"
        });
        for line in kernel {
            if !frag_lines.contains(line) {
                errors.push(format!("{frag_rel}: missing `{line}`"));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn networkd_gives_each_kind_of_uplink_dhcp_and_its_metric() {
    use onair::net::field::{MODEM_DRIVERS, TETHER_DRIVERS, UplinkKind};
    let dir = format!("{OVERLAY}/usr/lib/systemd/network");
    let mut files: Vec<String> = files_under(&dir)
        .into_iter()
        .filter(|f| f.ends_with(".network"))
        .collect();
    files.sort();
    let mut errors = Vec::new();
    // networkd takes the first file (in lexical order) that matches: a phone's or a modem's
    // USB function, which udev may name en*, is matched by its driver before the wired file.
    let order: Vec<(&str, UplinkKind)> = vec![
        ("60-onair-modem.network", UplinkKind::Modem),
        ("70-onair-tether.network", UplinkKind::Tether),
        ("75-onair-wifi.network", UplinkKind::Wifi),
        ("80-onair-wired.network", UplinkKind::Wired),
    ];
    let names: Vec<String> = files
        .iter()
        .map(|f| f.rsplit('/').next().unwrap_or_default().to_string())
        .collect();
    assert_eq!(
        names,
        order.iter().map(|(n, _)| n.to_string()).collect::<Vec<_>>(),
        "{dir}: the .network files, in the order networkd reads them"
    );
    for (name, kind) in order {
        let rel = format!("{dir}/{name}");
        let e = sections(&read(&rel));
        let has = |section: &str, key: &str, value: &str| entry(&e, section, key).contains(&value);
        if !has("Link", "RequiredForOnline", "no") {
            errors.push(format!(
                "{rel}: needs RequiredForOnline=no: nothing at boot waits for it"
            ));
        }
        let drivers: Vec<&str> = entry(&e, "Match", "Driver")
            .iter()
            .flat_map(|v| v.split_whitespace())
            .collect();
        match kind {
            UplinkKind::Tether => {
                if drivers != TETHER_DRIVERS {
                    errors.push(format!("{rel}: Driver= must list {TETHER_DRIVERS:?} (net/field/kind.rs), found {drivers:?}"));
                }
            }
            UplinkKind::Modem => {
                if drivers != MODEM_DRIVERS {
                    errors.push(format!("{rel}: Driver= must list {MODEM_DRIVERS:?} (net/field/kind.rs), found {drivers:?}"));
                }
                // The bearer's address comes from onair-modem's runtime file, not from DHCP.
                if !has("Network", "DHCP", "no") {
                    errors.push(format!(
                        "{rel}: DHCP=no (onair-modem writes the bearer's settings)"
                    ));
                }
                let script = read(&format!("{OVERLAY}/usr/libexec/onair/onair-modem"));
                if !script.contains(&format!("METRIC={}", kind.metric())) {
                    errors.push(format!(
                        "onair-modem: METRIC={} (UplinkKind::Modem)",
                        kind.metric()
                    ));
                }
            }
            UplinkKind::Wifi => {
                if !has("Match", "Type", "wlan") {
                    errors.push(format!("{rel}: [Match] Type=wlan"));
                }
            }
            UplinkKind::Wired => {
                if !has("Match", "Name", "eth* en*") {
                    errors.push(format!("{rel}: [Match] Name=eth* en*"));
                }
            }
        }
        if kind != UplinkKind::Modem {
            let metric = kind.metric().to_string();
            if !has("Network", "DHCP", "yes")
                || !has("DHCPv4", "RouteMetric", &metric)
                || !has("IPv6AcceptRA", "RouteMetric", &metric)
            {
                errors.push(format!(
                    "{rel}: DHCP=yes with RouteMetric={metric} for IPv4 and IPv6 (UplinkKind::{kind:?})"
                ));
            }
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn nothing_at_boot_waits_for_a_network() {
    let mut errors = Vec::new();
    for unit in files_under(&format!("{OVERLAY}/usr/lib/systemd/system")) {
        for (key, value) in unit_entries(&read(&unit)) {
            if !["After", "Wants", "Requires", "BindsTo", "Requisite"].contains(&key.as_str()) {
                continue;
            }
            for dep in value.split_whitespace() {
                if dep == "network-online.target" || dep.starts_with("systemd-networkd-wait-online")
                {
                    errors.push(format!(
                        "{unit}: {key}={dep}: the box must go live on whatever uplink comes up, \
                         without waiting for one (a cable may never come)"
                    ));
                }
            }
        }
    }
    let preset = read(&format!(
        "{OVERLAY}/usr/lib/systemd/system-preset/50-onair.preset"
    ));
    if !preset
        .lines()
        .any(|l| l.trim() == "disable systemd-networkd-wait-online.service")
    {
        errors.push(
            "50-onair.preset: `disable systemd-networkd-wait-online.service` (enabling \
                     systemd-networkd enables it too, through Also=)"
                .into(),
        );
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn wifi_units_read_the_files_the_daemon_writes() {
    use onair::net::field::{WPA_CTRL_DIR, WPA_SUPPLICANT_FILE};
    let rel = format!("{OVERLAY}/usr/lib/systemd/system/onair-wifi@.service");
    let e = sections(&read(&rel));
    let exec = entry(&e, "Service", "ExecStart").join(" ");
    let network_dir = "/run/onair/network";
    for want in [
        "/usr/sbin/wpa_supplicant ".to_string(),
        "-i %I".to_string(),
        "-D nl80211".to_string(),
        format!("-c {network_dir}/{WPA_SUPPLICANT_FILE}"),
    ] {
        assert!(
            exec.contains(&want),
            "{rel}: ExecStart needs `{want}`: {exec}"
        );
    }
    assert_eq!(entry(&e, "Install", "DefaultInstance"), ["wlan0"], "{rel}");
    assert!(
        entry(&e, "Unit", "After").iter().any(|v| v
            .split_whitespace()
            .any(|d| d == "onair-network-files.service")),
        "{rel}: After=onair-network-files.service (its config file is written there)"
    );
    // The daemon and the boot's writer use the same directory.
    for script in ["onair-start", "onair-network-files"] {
        let text = read(&format!("{OVERLAY}/usr/libexec/onair/{script}"));
        assert!(
            text.contains(&format!("ONAIR_NETWORK_DIR:-{network_dir}")),
            "{script}: the network files live in {network_dir}"
        );
    }
    // The control sockets are where the rendered file puts them and the daemon reads them.
    let config = onair::config::Config::parse(
        r#"{"source": {"kind": "test"}, "output": {"kind": "whip", "url": "http://192.0.2.1/w"}}"#,
    )
    .expect("valid");
    let conf = onair::net::field::render(&config.network).wpa_supplicant;
    assert!(
        conf.contains(&format!("ctrl_interface={WPA_CTRL_DIR}\n")),
        "{conf}"
    );
    let rel = format!("{OVERLAY}/usr/lib/systemd/system/onair-network-files.service");
    let e = sections(&read(&rel));
    assert!(
        entry(&e, "Unit", "After")
            .iter()
            .any(|v| v.split_whitespace().any(|d| d == "onair-import.service")),
        "{rel}: After=onair-import.service (it reads the imported config)"
    );
}

/// A stand-in for mmcli: one QMI modem in `MODEM_STATE`, one bearer with a static address;
/// `--simple-connect` is recorded (without its value: that is the test's to check) and
/// connects the modem.
const FAKE_MMCLI: &str = r#"#!/bin/sh
dir=$(dirname "$0")
case "$1 $2" in
"-L ")
	echo "    /org/freedesktop/ModemManager1/Modem/3 [Quectel] EG25"
	;;
"-m /org/freedesktop/ModemManager1/Modem/3")
	case "$3" in
	--simple-connect=*)
		printf '%s\n' "${3#--simple-connect=}" >"$dir/connect-args"
		echo connected >"$dir/state"
		echo "successfully connected the modem"
		;;
	-K)
		echo "modem.generic.state                             : $(cat "$dir/state")"
		echo "modem.generic.bearers.length                    : 1"
		echo "modem.generic.bearers.value[1]                  : /org/freedesktop/ModemManager1/Bearer/0"
		;;
	esac
	;;
"-b /org/freedesktop/ModemManager1/Bearer/0")
	cat <<'B'
bearer.status.interface                         : wwan0
bearer.status.connected                         : yes
bearer.ipv4-config.method                       : static
bearer.ipv4-config.address                      : 203.0.113.77
bearer.ipv4-config.prefix                       : 30
bearer.ipv4-config.gateway                      : 203.0.113.78
bearer.ipv4-config.dns.length                   : 2
bearer.ipv4-config.dns.value[1]                 : 203.0.113.53
bearer.ipv4-config.dns.value[2]                 : --
B
	;;
esac
"#;

#[test]
fn the_modem_script_connects_with_the_settings_and_configures_the_bearer() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let bin = tmp.path().join("bin");
    fs::create_dir(&bin).unwrap();
    fs::write(bin.join("mmcli"), FAKE_MMCLI).unwrap();
    fs::write(
        bin.join("networkctl"),
        "#!/bin/sh\necho \"$@\" >>\"$(dirname \"$0\")/networkctl-calls\"\n",
    )
    .unwrap();
    for tool in ["mmcli", "networkctl"] {
        fs::set_permissions(bin.join(tool), fs::Permissions::from_mode(0o755)).unwrap();
    }
    fs::write(bin.join("state"), "registered\n").unwrap();
    let network = tmp.path().join("network");
    let networkd = tmp.path().join("networkd");
    let run = || {
        let out = Command::new("sh")
            .arg(repo().join(OVERLAY).join("usr/libexec/onair/onair-modem"))
            .env(
                "PATH",
                format!(
                    "{}:{}",
                    bin.display(),
                    std::env::var("PATH").unwrap_or_default()
                ),
            )
            .env("ONAIR_NETWORK_DIR", &network)
            .env("ONAIR_NETWORKD_DIR", &networkd)
            .env("ONAIR_MODEM_ONCE", "1")
            .output()
            .expect("run onair-modem");
        assert!(out.status.success(), "{out:?}");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Without the settings the modem is left alone.
    run();
    assert!(
        !bin.join("connect-args").exists(),
        "connected without network.modem"
    );
    // With them (as `onair network-files` writes them): connected, and the bearer's address
    // handed to networkd with the modem's metric.
    let config = onair::config::Config::parse(
        r#"{"source": {"kind": "test"}, "output": {"kind": "whip", "url": "http://192.0.2.1/w"},
            "network": {"modem": {"apn": "internet.provider", "pin": "2468", "password": "pw,\"x"}}}"#,
    );
    assert!(config.is_err(), "a quote in the password is refused");
    let config = onair::config::Config::parse(
        r#"{"source": {"kind": "test"}, "output": {"kind": "whip", "url": "http://192.0.2.1/w"},
            "network": {"modem": {"apn": "internet.provider", "pin": "2468", "password": "pw, x'y"}}}"#,
    )
    .expect("valid");
    onair::net::field::write_files(&config.network, &network).expect("written");
    let log = run();
    assert_eq!(
        fs::read_to_string(bin.join("connect-args")).unwrap(),
        "apn=internet.provider,pin=2468,password=\"pw, x'y\"\n"
    );
    assert!(
        !log.contains("2468") && !log.contains("pw, x"),
        "secrets in the log: {log}"
    );
    let file = networkd.join("50-onair-modem-wwan0.network");
    let text = fs::read_to_string(&file).unwrap_or_else(|e| panic!("{e}; log: {log}"));
    let e = sections(&text);
    assert_eq!(entry(&e, "Match", "Name"), ["wwan0"]);
    assert_eq!(entry(&e, "Network", "Address"), ["203.0.113.77/30"]);
    assert_eq!(entry(&e, "Network", "DNS"), ["203.0.113.53"]);
    assert_eq!(entry(&e, "Route", "Gateway"), ["203.0.113.78"]);
    assert_eq!(
        entry(&e, "Route", "Metric"),
        [onair::net::field::UplinkKind::Modem
            .metric()
            .to_string()
            .as_str()]
    );
    assert_eq!(
        fs::read_to_string(bin.join("networkctl-calls")).unwrap(),
        "reload\n"
    );
    // The next round finds it connected and the file unchanged: nothing to do.
    fs::remove_file(bin.join("connect-args")).unwrap();
    run();
    assert!(!bin.join("connect-args").exists());
    assert_eq!(
        fs::read_to_string(bin.join("networkctl-calls")).unwrap(),
        "reload\n"
    );
}

// ---- disk layout ---------------------------------------------------------------------------------

/// The card's partitions, in order, as genimage.cfg must lay them out for a board: what each
/// holds and the one name every script, command line and RAUC slot agrees on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Part {
    /// ONAIR-BOOT: autoboot.txt and the user's files (first partition: the Pi firmware reads
    /// autoboot.txt there).
    OnairBoot,
    /// A system slot's boot partition (Pis): firmware, kernel, config.txt.
    SlotBoot(char),
    /// The extended partition holding the logical ones (MBR has four primary entries).
    Extended,
    /// A system slot's root file system.
    Root(char),
    Data,
}

fn layout(board: &Board) -> Vec<Part> {
    use Part::*;
    if board.raspberry_pi {
        vec![
            OnairBoot,
            SlotBoot('A'),
            SlotBoot('B'),
            Extended,
            Root('A'),
            Root('B'),
            Data,
        ]
    } else {
        vec![OnairBoot, Root('A'), Root('B'), Data]
    }
}

/// The partition number of `part` (1-based, as `PARTUUID=<signature>-NN` counts them).
fn number_of(board: &Board, part: Part) -> usize {
    layout(board).iter().position(|p| *p == part).unwrap() + 1
}

/// The partition autoboot.txt's `boot_partition=` names for a slot: the slot's boot partition
/// on the Pis, its root on qemu (which loads the kernel itself). rauc-tryboot and the emulated
/// firmware say 2 = A and 3 = B.
fn boot_partition_of(board: &Board, slot: char) -> usize {
    if board.raspberry_pi {
        number_of(board, Part::SlotBoot(slot))
    } else {
        number_of(board, Part::Root(slot))
    }
}

/// `key=value` lines of an INI-like file (RAUC's system.conf) by `[section]`.
fn ini_sections(text: &str) -> Vec<(String, Vec<(String, String)>)> {
    let mut out: Vec<(String, Vec<(String, String)>)> = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            out.push((name.to_string(), Vec::new()));
        } else if let (Some((k, v)), Some(last)) = (line.split_once('='), out.last_mut()) {
            last.1.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    out
}

#[test]
fn disk_images_have_two_system_slots_boot_and_data_partitions() {
    let data_script = read(&format!("{OVERLAY}/usr/libexec/onair/onair-data"));
    let import_script = read(&format!("{OVERLAY}/usr/libexec/onair/onair-import"));
    let backend = read(&format!("{OVERLAY}/usr/libexec/onair/rauc-tryboot"));
    for board in &BOARDS {
        let (rel, cfg) = genimage(board);
        let image = |title: &str| cfg.children.iter().find(|c| c.title == title);
        let disk = cfg
            .children
            .iter()
            .find(|c| c.child("hdimage").is_some())
            .unwrap_or_else(|| panic!("{rel}: no hdimage (disk image) section"));
        assert_eq!(
            disk.title, "sdcard.img",
            "{rel}: the disk image must be sdcard.img"
        );
        let hd = disk.child("hdimage").unwrap();
        assert_eq!(
            hd.value("partition-table-type"),
            Some("mbr"),
            "{rel}: the Raspberry Pi firmware needs an MBR partition table"
        );
        let signature = hd
            .value("disk-signature")
            .and_then(|s| s.strip_prefix("0x"))
            .unwrap_or_else(|| panic!("{rel}: no fixed disk-signature (cmdline uses PARTUUID)"))
            .to_lowercase();
        let partitions: Vec<&Section> = disk
            .children
            .iter()
            .filter(|c| c.kind == "partition")
            .collect();
        let want = layout(board);
        let primary: Vec<Part> = want
            .iter()
            .copied()
            .filter(|p| *p != Part::Extended)
            .collect();
        assert_eq!(
            partitions.len(),
            primary.len(),
            "{rel}: expected the partitions {primary:?}"
        );
        if want.contains(&Part::Extended) {
            assert_eq!(
                hd.value("extended-partition"),
                Some("4"),
                "{rel}: more than four partitions need extended-partition = 4"
            );
        }
        let uuid = |part: Part| format!("{signature}-{:02}", number_of(board, part));
        for (section, part) in partitions.iter().zip(&primary) {
            let img = section.value("image").unwrap_or("");
            match part {
                Part::OnairBoot | Part::SlotBoot(_) => {
                    assert_eq!(
                        section.value("partition-type"),
                        Some("0xC"),
                        "{rel}: partition {} ({part:?}) must be FAT",
                        section.title
                    );
                    let vfat = image(img)
                        .and_then(|i| i.child("vfat"))
                        .unwrap_or_else(|| panic!("{rel}: {img} is not a vfat image"));
                    let label = vfat.value("label").unwrap_or("");
                    if *part == Part::OnairBoot {
                        assert!(
                            import_script.contains(&format!("LABEL={label}"))
                                && backend.contains(&format!("LABEL={label}"))
                                && !label.is_empty(),
                            "{rel}: the first partition is labelled `{label}`, but onair-import \
                             or rauc-tryboot mounts another label"
                        );
                    } else {
                        assert_ne!(
                            label, "ONAIR-BOOT",
                            "{rel}: a slot's boot partition must not carry ONAIR-BOOT's label"
                        );
                    }
                }
                Part::Root(_) => assert_eq!(
                    img, "rootfs.ext4",
                    "{rel}: partition {} must be the root file system, rootfs.ext4",
                    section.title
                ),
                Part::Data => {
                    let ext4 = image(img)
                        .and_then(|i| i.child("ext4"))
                        .unwrap_or_else(|| panic!("{rel}: the data image {img} is not ext4"));
                    let label = ext4.value("label").unwrap_or("");
                    assert!(
                        data_script.contains(&format!("ONAIR_DATA_LABEL:-{label}}}"))
                            && !label.is_empty(),
                        "{rel}: the data partition is labelled `{label}`, but onair-data mounts \
                         another label"
                    );
                }
                Part::Extended => unreachable!(),
            }
        }
        if board.raspberry_pi {
            assert_eq!(
                partitions[1].value("image"),
                partitions[2].value("image"),
                "{rel}: both slots' boot partitions start as the same image"
            );
        }

        // Each slot's kernel command line names its own root, read-only, and the slot for
        // RAUC; on the Pis config.txt picks slot B's command line by [boot_partition=N].
        let cmdlines: Vec<(String, String)> = if board.raspberry_pi {
            files_under(&format!("board/{}", board.name))
                .into_iter()
                .filter(|f| {
                    let name = Path::new(f).file_name().unwrap().to_string_lossy();
                    name.starts_with("cmdline") && name.ends_with(".txt")
                })
                .map(|f| (read(&f), f))
                .collect()
        } else {
            vec![]
        };
        for (cmdline, file) in &cmdlines {
            let slot = if file.ends_with("-b.txt") { 'B' } else { 'A' };
            let root = format!("root=PARTUUID={}", uuid(Part::Root(slot)));
            let words: Vec<&str> = cmdline.split_whitespace().collect();
            assert!(
                words.contains(&root.as_str())
                    && words.contains(&"ro")
                    && words.contains(&format!("rauc.slot={slot}").as_str()),
                "{file}: slot {slot}'s command line must say {root}, ro and rauc.slot={slot}: \
                 {cmdline}"
            );
        }
        if board.raspberry_pi {
            let config = read(&format!("board/{}/config.txt", board.name));
            let b = config_txt_section(
                &config,
                &format!("[boot_partition={}]", boot_partition_of(board, 'B')),
            );
            assert!(
                b.contains(&"cmdline=cmdline-b.txt"),
                "board/{}/config.txt: [boot_partition=3] must pick cmdline-b.txt: {b:?}",
                board.name
            );
        } else {
            let post_image = read("board/common/post-image.sh");
            assert!(
                post_image.contains(&format!("root=PARTUUID={signature}-0$part"))
                    && post_image.contains("rauc.slot=$slot"),
                "board/common/post-image.sh: start-qemu.sh must boot the root autoboot.txt names"
            );
        }

        // autoboot.txt boots slot A and tries slot B; rauc-tryboot maps 2 = A and 3 = B.
        let autoboot = read("board/common/boot-files/autoboot.txt");
        assert_eq!(
            autoboot,
            format!(
                "[all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n",
                boot_partition_of(board, 'A'),
                boot_partition_of(board, 'B')
            ),
            "board/common/boot-files/autoboot.txt for {}",
            board.name
        );
        assert!(
            backend.contains("A) echo 2 ;;") && backend.contains("B) echo 3 ;;"),
            "rauc-tryboot: slot A is partition 2, slot B partition 3"
        );

        // RAUC's slots are these partitions, by PARTUUID, and the system is this board's.
        let conf_rel = format!("board/{}/rauc-system.conf", board.name);
        let conf = ini_sections(&read(&conf_rel));
        let section = |name: &str| {
            conf.iter()
                .find(|(n, _)| n == name)
                .map(|(_, kv)| kv.clone())
                .unwrap_or_else(|| panic!("{conf_rel}: no [{name}]"))
        };
        let get = |kv: &[(String, String)], k: &str| {
            kv.iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        let system = section("system");
        assert_eq!(get(&system, "compatible"), format!("onair-{}", board.name));
        assert_eq!(get(&system, "bootloader"), "custom", "{conf_rel}");
        assert_eq!(
            get(&system, "bundle-formats"),
            "-plain",
            "{conf_rel}: verity only"
        );
        assert!(
            get(&system, "statusfile").starts_with("/data/"),
            "{conf_rel}: the slot status must live on /data (the root is read-only)"
        );
        assert_eq!(
            get(&section("handlers"), "bootloader-custom-backend"),
            "/usr/libexec/onair/rauc-tryboot",
            "{conf_rel}"
        );
        assert_eq!(
            get(&section("keyring"), "path"),
            "/etc/rauc/keyring.pem",
            "{conf_rel}: post-build.sh installs the keyring there"
        );
        for (i, slot) in ['A', 'B'].into_iter().enumerate() {
            let root = section(&format!("slot.rootfs.{i}"));
            assert_eq!(
                get(&root, "device"),
                format!("/dev/disk/by-partuuid/{}", uuid(Part::Root(slot))),
                "{conf_rel}: slot.rootfs.{i}"
            );
            assert_eq!(get(&root, "bootname"), slot.to_string(), "{conf_rel}");
            if board.raspberry_pi {
                let boot = section(&format!("slot.boot.{i}"));
                assert_eq!(
                    get(&boot, "device"),
                    format!("/dev/disk/by-partuuid/{}", uuid(Part::SlotBoot(slot))),
                    "{conf_rel}: slot.boot.{i}"
                );
                assert_eq!(get(&boot, "parent"), format!("rootfs.{i}"), "{conf_rel}");
            }
        }
        let slots = conf.iter().filter(|(n, _)| n.starts_with("slot.")).count();
        assert_eq!(
            slots,
            if board.raspberry_pi { 4 } else { 2 },
            "{conf_rel}: ONAIR-BOOT and the data partition are never slots"
        );
    }
}

// ---- passwords ----------------------------------------------------------------------------------

#[test]
fn no_default_password_anywhere() {
    let forbidden = [
        "BR2_TARGET_GENERIC_ROOT_PASSWD",
        "BR2_TARGET_ENABLE_ROOT_LOGIN=y",
        "chpasswd",
        "passwd -d",
        "PermitEmptyPasswords yes",
        "PasswordAuthentication yes",
        "PermitRootLogin yes",
        // password hashes as they appear in /etc/shadow
        ":$1$",
        ":$5$",
        ":$6$",
        ":$y$",
    ];
    let mut errors = Vec::new();
    for dir in ["buildroot", "board", "scripts"] {
        for file in files_under(dir) {
            let Ok(text) = fs::read_to_string(repo().join(&file)) else {
                continue;
            };
            for (i, line) in text.lines().enumerate() {
                for pattern in forbidden {
                    if line.contains(pattern) {
                        errors.push(format!("{file}:{}: contains `{pattern}`", i + 1));
                    }
                }
            }
        }
    }
    assert!(
        errors.is_empty(),
        "the box must have no password (SSH keys only):\n{}",
        errors.join("\n")
    );
    let dropbear = read(&format!("{OVERLAY}/etc/default/dropbear"));
    assert!(
        dropbear
            .lines()
            .any(|l| l.starts_with("DROPBEAR_ARGS=") && l.contains("-s")),
        "{OVERLAY}/etc/default/dropbear: DROPBEAR_ARGS must contain -s (no password logins)"
    );
    let sshd = read(&format!("{OVERLAY}/etc/ssh/sshd_config.d/onair.conf"));
    assert!(
        sshd.lines()
            .any(|l| l.trim() == "PasswordAuthentication no"),
        "{OVERLAY}/etc/ssh/sshd_config.d/onair.conf: PasswordAuthentication no"
    );
    assert!(
        read("board/common/post-fakeroot.sh").contains("/etc/shadow"),
        "board/common/post-fakeroot.sh must check /etc/shadow for passwords"
    );
}

// ---- configs and LEDs ---------------------------------------------------------------------------

#[test]
fn shipped_configs_are_accepted_by_the_daemon() {
    for rel in [
        "board/common/rootfs-overlay/etc/onair/onair.json",
        "board/common/boot-files/onair.json.example",
        "board/qemu-aarch64/rootfs-overlay/etc/onair/onair.json",
    ] {
        if let Err(e) = onair::config::Config::load(&repo().join(rel)) {
            panic!("{rel}: the daemon refuses it: {e}");
        }
    }
    let default =
        onair::config::Config::load(&repo().join(format!("{OVERLAY}/etc/onair/onair.json")))
            .unwrap();
    assert_eq!(
        default.status.socket,
        PathBuf::from("/run/onair/status.sock"),
        "{OVERLAY}/etc/onair/onair.json: the status socket must be /run/onair/status.sock \
         (tmpfiles.d creates /run/onair, `onair status` looks there)"
    );

    // The LED overlays in config.txt give the LEDs the names the default config uses, on the
    // pins the gpio backend defaults to.
    let leds = &default.leds;
    let defaults = onair::config::LedConfig::default();
    for board in BOARDS.iter().filter(|b| b.raspberry_pi) {
        let rel = format!("board/{}/config.txt", board.name);
        let text = read(&rel);
        for (pin, label, what) in [
            (defaults.live_pin, &leds.live_name, "live"),
            (defaults.status_pin, &leds.status_name, "status"),
        ] {
            let found = text.lines().any(|l| {
                let l = l.trim();
                l.starts_with("dtoverlay=gpio-led,")
                    && l.split(',').any(|p| p == format!("gpio={pin}"))
                    && l.split(',').any(|p| p == format!("label={label}"))
            });
            assert!(
                found,
                "{rel}: needs `dtoverlay=gpio-led,gpio={pin},label={label}` for the {what} LED \
                 (leds in {OVERLAY}/etc/onair/onair.json)"
            );
        }
        assert!(
            text.lines().any(|l| l.trim() == "#dtoverlay=tc358743"),
            "{rel}: should carry the commented `#dtoverlay=tc358743` with its instructions"
        );
    }
}

// ---- the first-boot scripts, run ---------------------------------------------------------------

/// A stand-in for /usr/bin/onair: `check-config` refuses files containing "BAD" with exit 2
/// and one line naming the key, as the daemon does; `run` prints its arguments.
const FAKE_ONAIR: &str = r#"#!/bin/sh
case "$1" in
check-config)
	if grep -q BAD "$2"; then
		echo "config key \`output.url\`: is missing" >&2
		exit 2
	fi
	exit 0
	;;
run)
	echo "$@"
	exit 0
	;;
esac
exit 1
"#;

struct FakeBox {
    dir: tempfile::TempDir,
}

impl FakeBox {
    fn new() -> FakeBox {
        let dir = tempfile::tempdir().expect("temporary directory");
        for sub in ["boot", "data", "etc"] {
            fs::create_dir(dir.path().join(sub)).unwrap();
        }
        let fake = dir.path().join("onair");
        fs::write(&fake, FAKE_ONAIR).unwrap();
        fs::set_permissions(&fake, fs::Permissions::from_mode(0o755)).unwrap();
        fs::write(dir.path().join("etc/onair.json"), "{\"default\": true}\n").unwrap();
        let b = FakeBox { dir };
        b.run("onair-data");
        b
    }

    fn path(&self, rel: &str) -> PathBuf {
        self.dir.path().join(rel)
    }

    /// Runs an overlay script with `sh`; returns (success, stdout + stderr).
    fn run_with(&self, script: &str, bin: &Path) -> (bool, String) {
        let out = Command::new("sh")
            .arg(repo().join(OVERLAY).join("usr/libexec/onair").join(script))
            .env("ONAIR_DATA_DIR", self.path("data"))
            .env("ONAIR_DATA_NO_MOUNT", "1")
            .env("ONAIR_DATA_REPORT", self.path("data-partition"))
            .env("ONAIR_BOOT_DIR", self.path("boot"))
            .env("ONAIR_BIN", bin)
            .env("ONAIR_DEFAULT_CONFIG", self.path("etc/onair.json"))
            .output()
            .unwrap_or_else(|e| panic!("cannot run sh {script}: {e}"));
        let text = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        (out.status.success(), text)
    }

    fn run(&self, script: &str) -> String {
        let (ok, text) = self.run_with(script, &self.path("onair"));
        assert!(ok, "{script} failed:\n{text}");
        text
    }

    fn put(&self, rel: &str, content: &[u8]) {
        fs::write(self.path(rel), content).unwrap();
    }

    fn get(&self, rel: &str) -> String {
        fs::read_to_string(self.path(rel)).unwrap_or_else(|e| panic!("{rel}: {e}"))
    }
}

const KEY: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOMqqnkVzrm0SdG6UOoqKLsabgH5C9okWi0dh2l9GKJl me@laptop";

#[test]
fn first_boot_imports_a_valid_config_and_keys() {
    let b = FakeBox::new();
    // As a Windows editor may save it: byte order mark, CRLF.
    b.put("boot/onair.json", b"\xef\xbb\xbf{\"output\": \"ok\"}\r\n");
    b.put(
        "boot/authorized_keys",
        format!("# my laptop\r\n{KEY}\r\n\r\n").as_bytes(),
    );
    b.run("onair-import");

    assert_eq!(
        b.get("data/onair/onair.json"),
        "{\"output\": \"ok\"}\r\n",
        "onair-import: the imported config (without the byte order mark) must be installed"
    );
    let mode = fs::metadata(b.path("data/onair/onair.json"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(
        mode & 0o077,
        0,
        "onair-import: the config holds a token: mode 0600"
    );
    assert!(
        !b.path("boot/onair.json").exists(),
        "onair-import: the imported onair.json must be deleted from the boot partition"
    );
    assert_eq!(
        b.get("data/ssh/root-keys/authorized_keys"),
        format!("# my laptop\n{KEY}\n\n"),
        "onair-import: authorized_keys must be installed, without carriage returns"
    );
    assert!(b.path("boot/authorized_keys.imported").exists());
    let report = b.get("boot/onair-import.txt");
    assert!(
        report.contains("imported onair.json") && report.contains("imported authorized_keys"),
        "onair-import.txt on the boot partition must report both imports:\n{report}"
    );

    // onair-start now runs the daemon with the imported config.
    let out = b.run("onair-start");
    let want = format!("run --config {}", b.path("data/onair/onair.json").display());
    assert!(
        out.contains(&want),
        "onair-start: expected `{want}` in:\n{out}"
    );
}

#[test]
fn first_boot_keeps_the_previous_config_when_the_new_one_is_invalid() {
    let b = FakeBox::new();
    b.put("boot/onair.json", b"{\"good\": 1}");
    b.run("onair-import");
    b.put("boot/onair.json.txt", b"{\"BAD\": 1}");
    b.put("boot/authorized_keys", b"this is not a key\n");
    let log = b.run("onair-import");

    assert_eq!(
        b.get("data/onair/onair.json"),
        "{\"good\": 1}",
        "onair-import: an invalid config must not replace the previous one"
    );
    assert!(
        b.path("boot/onair.json.txt.rejected").exists(),
        "onair-import: an invalid onair.json(.txt) must be renamed .rejected"
    );
    assert!(
        log.contains("REJECTED onair.json.txt") && log.contains("output.url"),
        "onair-import: the log must say the config was rejected and name the key:\n{log}"
    );
    assert!(
        log.contains("previous") && log.contains("stays in use"),
        "onair-import: the log must say which config stays in use:\n{log}"
    );
    assert!(b.path("boot/authorized_keys.rejected").exists());
    assert!(
        !b.path("data/ssh/root-keys/authorized_keys").exists(),
        "onair-import: a file without keys must not be installed"
    );
    assert!(
        b.get("boot/onair-import.txt").contains("REJECTED"),
        "onair-import.txt must report the rejection"
    );
}

#[test]
fn first_boot_leaves_the_config_alone_when_it_cannot_check_it() {
    let b = FakeBox::new();
    b.put("boot/onair.json", b"{\"good\": 1}");
    let (ok, log) = b.run_with("onair-import", &b.path("no-such-onair"));
    assert!(ok, "onair-import must not fail the boot:\n{log}");
    assert!(
        b.path("boot/onair.json").exists() && !b.path("data/onair/onair.json").exists(),
        "onair-import: without a working `onair check-config` nothing may be imported or renamed"
    );
}

// ---- the data partition's check ------------------------------------------------------------------

/// Runs `onair-data` against a device file with stand-ins for `e2fsck` (exiting with the codes
/// given, one per call, and logging its arguments) and `mount` (ext4 exits with `mount_rc`;
/// tmpfs succeeds; both log). Returns the report, the calls and the output.
fn onair_data_with(
    e2fsck_rcs: &[i32],
    mount_rc: i32,
    device: Option<&str>,
) -> (String, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let bin = dir.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    fs::create_dir_all(dir.path().join("data")).unwrap();
    fs::write(dir.path().join("disk"), b"").unwrap();
    let calls = dir.path().join("calls");
    let rcs = dir.path().join("e2fsck-rcs");
    fs::write(
        &rcs,
        e2fsck_rcs
            .iter()
            .map(|rc| format!("{rc}\n"))
            .collect::<String>(),
    )
    .unwrap();
    let fakes = [
        (
            "e2fsck",
            format!(
                "#!/bin/sh\necho \"e2fsck $*\" >>'{calls}'\nrc=$(head -n 1 '{rcs}')\nsed -i 1d '{rcs}'\n\
                 echo \"onair-data: fake e2fsck said something\"\nexit ${{rc:-0}}\n",
                calls = calls.display(),
                rcs = rcs.display()
            ),
        ),
        (
            "mount",
            format!(
                "#!/bin/sh\necho \"mount $*\" >>'{calls}'\ncase \"$*\" in *tmpfs*) exit 0 ;; esac\n\
                 echo 'mount: wrong fs type, bad superblock' >&2\nexit {mount_rc}\n",
                calls = calls.display()
            ),
        ),
        ("mountpoint", "#!/bin/sh\nexit 1\n".to_string()),
    ];
    for (name, text) in fakes {
        fs::write(bin.join(name), text).unwrap();
        fs::set_permissions(bin.join(name), fs::Permissions::from_mode(0o755)).unwrap();
    }
    let device = device
        .map(str::to_string)
        .unwrap_or_else(|| dir.path().join("disk").display().to_string());
    let out = Command::new("sh")
        .arg(repo().join(OVERLAY).join("usr/libexec/onair/onair-data"))
        .env(
            "PATH",
            format!(
                "{}:{}",
                bin.display(),
                std::env::var("PATH").unwrap_or_default()
            ),
        )
        .env("ONAIR_DATA_DIR", dir.path().join("data"))
        .env("ONAIR_DATA_DEVICE", &device)
        .env("ONAIR_DATA_WAIT", "0")
        .env("ONAIR_DATA_REPORT", dir.path().join("report"))
        .output()
        .expect("run onair-data");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "onair-data failed:\n{text}");
    let volatile = dir.path().join("data/.volatile").exists();
    let report = fs::read_to_string(dir.path().join("report")).unwrap_or_default();
    assert_eq!(
        volatile,
        report.contains("state=ram_disk"),
        "a RAM disk is marked .volatile, a partition is not:\n{report}"
    );
    let calls = fs::read_to_string(&calls).unwrap_or_default();
    let calls = calls
        .replace(&dir.path().join("data").display().to_string(), "DATA")
        .replace(&device, "DEV");
    (report, calls, text)
}

#[test]
fn the_data_partition_is_checked_before_it_is_mounted() {
    // Clean: checked, mounted.
    let (report, calls, _) = onair_data_with(&[0], 0, None);
    assert!(report.starts_with("state=mounted\n"), "{report}");
    assert_eq!(
        calls, "e2fsck -p DEV\nmount -t ext4 -o rw,noatime,nodev,nosuid DEV DATA\n",
        "{calls}"
    );

    // Repaired by the check: mounted, and said.
    let (report, calls, _) = onair_data_with(&[1], 0, None);
    assert!(
        report.starts_with("state=repaired\n") && report.contains("detail=repaired by e2fsck -p"),
        "{report}"
    );
    assert!(calls.contains("mount -t ext4"), "{calls}");

    // The first superblock unreadable (exit 8): repaired from the first backup that opens.
    let (report, calls, _) = onair_data_with(&[8, 8, 1], 0, None);
    assert!(
        calls.starts_with("e2fsck -p DEV\ne2fsck -p -b 8193 -B 1024 DEV\ne2fsck -p -b 16384 -B 2048 DEV\nmount -t ext4"),
        "{calls}"
    );
    assert!(
        report.contains("the backup at block 16384 used"),
        "{report}"
    );

    // Errors the check cannot repair unattended (exit 4): never mounted; a RAM disk instead,
    // the device and why in the report.
    let (report, calls, text) = onair_data_with(&[4], 0, None);
    assert!(
        !calls.contains("-t ext4"),
        "a damaged partition must not be mounted: {calls}"
    );
    assert!(calls.contains("-t tmpfs"), "{calls}");
    assert!(report.starts_with("state=ram_disk\n"), "{report}");
    assert!(
        report.contains("detail=e2fsck -p cannot repair it unattended (exit 4)"),
        "{report}"
    );
    assert!(text.contains("RAM disk"), "{text}");

    // Checked but the mount fails: a RAM disk, and the mount's words.
    let (report, _, _) = onair_data_with(&[0], 32, None);
    assert!(
        report.contains("state=ram_disk") && report.contains("bad superblock"),
        "{report}"
    );

    // No such device: nothing checked, a RAM disk, said.
    let (report, calls, _) = onair_data_with(&[], 0, Some("/nonexistent/onair-data"));
    assert!(!calls.contains("e2fsck"), "{calls}");
    assert!(
        report.contains("detail=/nonexistent/onair-data does not exist"),
        "{report}"
    );
}

#[test]
fn start_falls_back_to_the_default_config() {
    let b = FakeBox::new();
    let default = format!("run --config {}", b.path("etc/onair.json").display());
    let out = b.run("onair-start");
    assert!(
        out.contains(&default),
        "onair-start: without an imported config it must use the default:\n{out}"
    );
    b.put("data/onair/onair.json", b"{\"BAD\": 1}");
    let out = b.run("onair-start");
    assert!(
        out.contains(&default) && out.contains("not usable"),
        "onair-start: with a config the daemon refuses it must say so and use the default:\n{out}"
    );
}

// ---- the A/B backend --------------------------------------------------------------------------

/// RAUC's custom bootloader backend (`rauc-tryboot`) against a temporary ONAIR-BOOT holding the
/// image's autoboot.txt, through an update's life: the install names slot B (nothing to change:
/// [tryboot] already names it), the trial boot is judged good (B becomes the default, in place,
/// same length), and the refusals that keep an untried slot from becoming the default.
#[test]
fn rauc_backend_keeps_a_tried_slot_and_nothing_else() {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let boot = tmp.path().join("boot");
    fs::create_dir(&boot).unwrap();
    fs::copy(
        repo().join("board/common/boot-files/autoboot.txt"),
        boot.join("autoboot.txt"),
    )
    .unwrap();
    let cmdline = tmp.path().join("cmdline");
    let backend = |booted: &str, args: &[&str]| -> (bool, String) {
        fs::write(&cmdline, format!("root=/dev/x ro rauc.slot={booted}\n")).unwrap();
        let out = Command::new("sh")
            .arg(repo().join(OVERLAY).join("usr/libexec/onair/rauc-tryboot"))
            .args(args)
            .env("ONAIR_AUTOBOOT_DIR", &boot)
            .env("ONAIR_CMDLINE", &cmdline)
            .output()
            .expect("run rauc-tryboot");
        (
            out.status.success(),
            format!(
                "{}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
        )
    };
    let autoboot = || fs::read_to_string(boot.join("autoboot.txt")).unwrap();
    let shipped = autoboot();
    assert_eq!(backend("A", &["get-primary"]), (true, "A\n".into()));
    assert_eq!(backend("A", &["get-state", "A"]), (true, "good\n".into()));
    assert_eq!(backend("A", &["get-state", "B"]), (true, "bad\n".into()));
    // The install: slot B marked bad, written, then made the one to try.
    assert!(backend("A", &["set-state", "B", "bad"]).0);
    assert!(backend("A", &["set-primary", "B"]).0);
    assert_eq!(
        autoboot(),
        shipped,
        "[tryboot] already names B: nothing written"
    );
    // Never tried: it may not become the default.
    let (ok, text) = backend("A", &["set-state", "B", "good"]);
    assert!(!ok && text.contains("slot B was never tried"), "{text}");
    // The default cannot be marked bad: the other slot was never tried.
    let (ok, text) = backend("A", &["set-state", "A", "bad"]);
    assert!(!ok && text.contains("refusing"), "{text}");
    // The trial boot of B: good while it is booted, then kept.
    assert_eq!(backend("B", &["get-current"]), (true, "B\n".into()));
    assert_eq!(backend("B", &["get-state", "B"]), (true, "good\n".into()));
    assert!(backend("B", &["set-state", "B", "good"]).0);
    assert_eq!(
        autoboot(),
        "[all]\ntryboot_a_b=1\nboot_partition=3\n[tryboot]\nboot_partition=2\n"
    );
    assert_eq!(
        autoboot().len(),
        shipped.len(),
        "rewritten in place, same length"
    );
    assert_eq!(backend("A", &["get-primary"]), (true, "B\n".into()));
    // Junk in autoboot.txt is named, not guessed at.
    fs::write(boot.join("autoboot.txt"), "[all]\nboot_partition=7\n").unwrap();
    let (ok, text) = backend("A", &["get-primary"]);
    assert!(!ok && text.contains("partition '7'"), "{text}");
    let (ok, text) = backend("A", &["set-primary", "C"]);
    assert!(!ok && text.contains("unknown slot 'C'"), "{text}");
}

// ---- Compute Module 5 ---------------------------------------------------------------------------

/// The lines of config.txt under a conditional filter (`[cm5]`), up to the next filter.
fn config_txt_section<'a>(text: &'a str, filter: &str) -> Vec<&'a str> {
    let mut inside = false;
    let mut out = Vec::new();
    for line in text.lines().map(str::trim) {
        if line.starts_with('[') {
            inside = line == filter;
        } else if inside && !line.is_empty() && !line.starts_with('#') {
            out.push(line);
        }
    }
    out
}

#[test]
fn rpi5_image_boots_the_compute_module_5() {
    let board = BOARDS.iter().find(|b| b.name == "rpi5").unwrap();
    let (rel, settings) = defconfig(board);
    let dts = setting(&settings, "BR2_LINUX_KERNEL_INTREE_DTS_NAME")
        .and_then(|s| s.value.clone())
        .unwrap_or_default();
    for name in [
        "broadcom/bcm2712-rpi-5-b",
        "broadcom/bcm2712d0-rpi-5-b",
        "broadcom/bcm2712-rpi-500",
        // CM5 and CM5 Lite on the CM5 IO Board (the trees Buildroot's
        // raspberrypicm5io_defconfig builds from the same kernel commit).
        "broadcom/bcm2712-rpi-cm5-cm5io",
        "broadcom/bcm2712-rpi-cm5l-cm5io",
    ] {
        assert!(
            dts.split_whitespace().any(|d| d == name),
            "{rel}: BR2_LINUX_KERNEL_INTREE_DTS_NAME must build {name}"
        );
    }

    // The Pi 5's console is the debug-UART connector (ttyAMA10); the CM5 has none, so it gets
    // UART0 on GPIO14/15 (ttyAMA0) and a command line that names it.
    let config = read("board/rpi5/config.txt");
    let cm5 = config_txt_section(&config, "[cm5]");
    assert!(
        cm5.contains(&"dtparam=uart0_console=on"),
        "board/rpi5/config.txt: the [cm5] section must enable UART0 as the console: {cm5:?}"
    );
    let cmdline_file = cm5
        .iter()
        .find_map(|l| l.strip_prefix("cmdline="))
        .unwrap_or_else(|| panic!("board/rpi5/config.txt: [cm5] needs cmdline=FILE: {cm5:?}"));
    let cm5_cmdline = read(&format!("board/rpi5/{cmdline_file}"));
    assert!(
        cm5_cmdline
            .split_whitespace()
            .any(|w| w == "console=ttyAMA0,115200"),
        "board/rpi5/{cmdline_file}: the CM5's console is ttyAMA0: {cm5_cmdline}"
    );
    assert!(
        read("board/rpi5/cmdline.txt")
            .split_whitespace()
            .any(|w| w == "console=ttyAMA10,115200"),
        "board/rpi5/cmdline.txt: the Pi 5's console is the debug UART, ttyAMA10"
    );
    // The filter must not leak into lines meant for every model.
    let last_filter = config.lines().map(str::trim).rfind(|l| l.starts_with('['));
    assert_eq!(
        last_filter,
        Some("[all]"),
        "board/rpi5/config.txt: close the [cm5] section with [all]"
    );
    assert!(
        config_txt_section(&config, "[all]").is_empty(),
        "board/rpi5/config.txt: keep the filtered sections last"
    );
    let readme = read("README.md");
    assert!(
        readme.contains("CM5 IO Board"),
        "README.md: say which CM5 carrier the image is built for (the CM5 IO Board)"
    );
}

// ---- kernel, overlays, ORC, e2fsprogs, EDID ------------------------------------------------------

/// What each device-tree overlay a board's config.txt loads (or tells the owner to uncomment)
/// needs the kernel to have built, per board: (overlay, rpi4 symbols, rpi5 symbols). An overlay
/// missing here fails the test, so a new one cannot come without its drivers.
const OVERLAY_SYMBOLS: &[(&str, &[&str], &[&str])] = &[
    // The HDMI bridge and the CSI-2 receiver its endpoint is wired to: on the Pi 4 the
    // downstream unicam (the mainline CONFIG_VIDEO_BCM2835_UNICAM binds only
    // "brcm,bcm2835-unicam-upstream"), on the Pi 5 the RP1 CFE with the media controller and
    // the subdev API the daemon uses.
    (
        "tc358743",
        &[
            "CONFIG_VIDEO_TC358743",
            "CONFIG_VIDEO_BCM2835_UNICAM_LEGACY",
        ],
        &[
            "CONFIG_VIDEO_TC358743",
            "CONFIG_VIDEO_RP1_CFE",
            "CONFIG_MEDIA_CONTROLLER",
            "CONFIG_VIDEO_V4L2_SUBDEV_API",
        ],
    ),
    // simple-audio-card, the "linux,spdif-dir" stub codec, and the SoC's I2S.
    (
        "tc358743-audio",
        &[
            "CONFIG_SND_SIMPLE_CARD",
            "CONFIG_SND_SOC_SPDIF",
            "CONFIG_SND_BCM2835_SOC_I2S",
        ],
        &[
            "CONFIG_SND_SIMPLE_CARD",
            "CONFIG_SND_SOC_SPDIF",
            "CONFIG_SND_DESIGNWARE_I2S",
        ],
    ),
    ("dwc2", &["CONFIG_USB_DWC2"], &["CONFIG_USB_DWC2"]),
    (
        "gpio-led",
        &["CONFIG_LEDS_CLASS", "CONFIG_LEDS_GPIO"],
        &["CONFIG_LEDS_CLASS", "CONFIG_LEDS_GPIO"],
    ),
    ("cma", &[], &[]),
    ("miniuart-bt", &[], &[]),
];

/// What every Pi image needs whatever config.txt says: USB capture (uvcvideo), USB sound, the
/// watchdog, the two partitions' file systems; and the Pi 4's H.264 codec.
const ALWAYS: &[&str] = &[
    "CONFIG_USB_VIDEO_CLASS",
    "CONFIG_SND_USB_AUDIO",
    "CONFIG_BCM2835_WDT",
    "CONFIG_EXT4_FS",
    "CONFIG_VFAT_FS",
];

/// The symbols a fragment sets to `y` or `m`.
fn fragment_symbols(rel: &str) -> BTreeSet<String> {
    read(rel)
        .lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split_once('='))
        .filter(|(_, v)| *v == "y" || *v == "m")
        .map(|(k, _)| k.to_string())
        .collect()
}

#[test]
fn kernel_fragments_guard_what_the_device_trees_bind() {
    let mut errors = Vec::new();
    for (board, column) in [("rpi4", 0), ("rpi5", 1)] {
        let rel = format!("board/{board}/linux.fragment");
        let built = fragment_symbols(&rel);
        let config = read(&format!("board/{board}/config.txt"));
        let mut wanted: Vec<(String, &str)> = ALWAYS
            .iter()
            .map(|s| (s.to_string(), "every image"))
            .collect();
        if board == "rpi4" {
            wanted.push(("CONFIG_VIDEO_CODEC_BCM2835".into(), "the H.264 encoder"));
        }
        for line in config.lines().map(str::trim) {
            let Some(spec) = line
                .trim_start_matches('#')
                .trim()
                .strip_prefix("dtoverlay=")
            else {
                continue;
            };
            let overlay = spec.split(',').next().unwrap_or(spec);
            match OVERLAY_SYMBOLS.iter().find(|(o, _, _)| *o == overlay) {
                Some((_, rpi4, rpi5)) => {
                    let symbols = if column == 0 { *rpi4 } else { *rpi5 };
                    wanted.extend(symbols.iter().map(|s| (s.to_string(), overlay)));
                }
                None => errors.push(format!(
                    "board/{board}/config.txt loads overlay `{overlay}`: add the drivers it binds \
                     to OVERLAY_SYMBOLS (tests/image_tree.rs) and to {rel}"
                )),
            }
        }
        for (symbol, why) in wanted {
            if !built.contains(&symbol) {
                errors.push(format!("{rel}: {symbol}=y or =m is missing (for {why})"));
            }
        }
        if built.contains("CONFIG_VIDEO_BCM2835_UNICAM") {
            errors.push(format!(
                "{rel}: CONFIG_VIDEO_BCM2835_UNICAM is the mainline unicam, which binds only \
                 \"brcm,bcm2835-unicam-upstream\": the Pi's device tree needs \
                 CONFIG_VIDEO_BCM2835_UNICAM_LEGACY"
            ));
        }
    }
    assert!(errors.is_empty(), "{}", errors.join("\n"));
}

#[test]
fn the_compute_module_4_has_usb_host() {
    let config = read("board/rpi4/config.txt");
    let cm4 = config_txt_section(&config, "[cm4]");
    assert!(
        cm4.contains(&"dtoverlay=dwc2,dr_mode=host"),
        "board/rpi4/config.txt: the [cm4] section must put the DWC2 controller in host mode \
         (its USB ports): {cm4:?}"
    );
    let last_filter = config.lines().map(str::trim).rfind(|l| l.starts_with('['));
    assert_eq!(
        last_filter,
        Some("[all]"),
        "board/rpi4/config.txt: close the [cm4] section with [all]"
    );
    assert!(
        config_txt_section(&config, "[all]").is_empty(),
        "board/rpi4/config.txt: keep the filtered sections last"
    );
}

#[test]
fn images_have_orc_and_the_data_partitions_check() {
    for board in &BOARDS {
        let (rel, settings) = defconfig(board);
        for symbol in ["BR2_PACKAGE_ORC", "BR2_PACKAGE_E2FSPROGS"] {
            assert!(
                setting(&settings, symbol).and_then(|s| s.value.as_deref()) == Some("y"),
                "{rel}: {symbol}=y is missing (ORC: GStreamer's SIMD; e2fsprogs: onair-data's \
                 e2fsck and dumpe2fs)"
            );
        }
    }
    let data = read(&format!("{OVERLAY}/usr/libexec/onair/onair-data"));
    assert!(
        data.contains("e2fsck -p") && data.contains("dumpe2fs"),
        "onair-data must check the partition (e2fsck -p) and find it by a backup superblock"
    );
}

#[test]
fn the_shipped_edid_is_what_make_edid_writes() {
    if !tools_or_skip("the_shipped_edid_is_what_make_edid_writes", &["python3"]) {
        return;
    }
    let out = Command::new("python3")
        .arg(repo().join("scripts/make-edid.py"))
        .arg("--check")
        .output()
        .expect("run scripts/make-edid.py");
    assert!(
        out.status.success(),
        "board/common/rootfs-overlay/usr/share/onair/hdmi-edid.bin differs from what \
         scripts/make-edid.py writes: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

// ---- the example config -----------------------------------------------------------------------

#[test]
fn the_unedited_example_config_is_refused_and_not_imported() {
    let onair = PathBuf::from(env!("CARGO_BIN_EXE_onair"));
    let example = repo().join("board/common/boot-files/onair.json.example");
    let check = |path: &Path| {
        let out = Command::new(&onair)
            .arg("check-config")
            .arg(path)
            .output()
            .expect("onair check-config runs");
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stderr) = check(&example);
    assert_eq!(
        code,
        Some(2),
        "check-config must refuse the example: {stderr}"
    );
    assert_eq!(
        stderr.lines().count(),
        1,
        "one line, naming the key: {stderr}"
    );
    assert!(
        stderr.contains("`output.url`") || stderr.contains("`output.token`"),
        "the line must name the key: {stderr}"
    );

    // Edited as ONAIR-README.txt says (output.url and output.token), it passes.
    let tmp = tempfile::tempdir().expect("temporary directory");
    let edited = tmp.path().join("onair.json");
    let text = read("board/common/boot-files/onair.json.example")
        .replace(
            "https://example.invalid/api/whip",
            "https://192.0.2.10/api/whip",
        )
        .replace("REPLACE-ME", "my-real-key-123");
    assert_ne!(text, read("board/common/boot-files/onair.json.example"));
    fs::write(&edited, &text).unwrap();
    let (code, stderr) = check(&edited);
    assert_eq!(code, Some(0), "the edited example must pass: {stderr}");

    // On the box: an unedited copy on the card is refused by the first-boot import, with the
    // reason on the boot partition, and the config in use stays.
    let b = FakeBox::new();
    b.put(
        "boot/onair.json",
        read("board/common/boot-files/onair.json.example").as_bytes(),
    );
    let (ok, log) = b.run_with("onair-import", &onair);
    assert!(ok, "onair-import must not fail the boot:\n{log}");
    assert!(
        !b.path("data/onair/onair.json").exists() && b.path("boot/onair.json.rejected").exists(),
        "onair-import: the unedited example must be refused (renamed .rejected):\n{log}"
    );
    let report = b.get("boot/onair-import.txt");
    assert!(
        report.contains("REJECTED onair.json") && report.contains("`output.url`"),
        "onair-import.txt must say why:\n{report}"
    );
}

// ---- the disk image, made by genimage --------------------------------------------------------------

/// A tool on PATH, or in the sbin directories a non-root PATH may lack.
fn tool_path() -> String {
    format!(
        "{}:/usr/sbin:/sbin",
        std::env::var("PATH").unwrap_or_default()
    )
}

fn run_tool(program: &str, args: &[&str]) -> String {
    let out = Command::new(program)
        .args(args)
        .env("PATH", tool_path())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    assert!(
        out.status.success(),
        "{program} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// "4M" -> bytes.
fn genimage_size(value: &str) -> u64 {
    let (digits, unit) = value.split_at(value.trim_end_matches(char::is_alphabetic).len());
    let n: u64 = digits.parse().unwrap_or_else(|_| panic!("size {value}"));
    n * match unit {
        "" => 1,
        "k" | "K" => 1 << 10,
        "M" => 1 << 20,
        "G" => 1 << 30,
        other => panic!("size unit {other}"),
    }
}

/// Each board's sdcard.img as the real post-image.sh and Debian's genimage make it from fake
/// inputs (firmware, device trees and kernel are placeholders; the root file system is a small
/// real ext4), then read back with sfdisk, blkid and mtools the way the firmware, the kernel,
/// the first-boot scripts and RAUC will see it: ONAIR-BOOT first with autoboot.txt, each
/// slot's boot partition (Pis) and root, the data partition last, within a 2 GB card.
#[test]
fn genimage_lays_out_the_card_the_kernel_and_scripts_expect() {
    let tools = [
        "genimage", "sfdisk", "blkid", "mdir", "mtype", "mcopy", "mkdosfs", "mke2fs",
    ];
    let missing: Vec<&str> = tools
        .iter()
        .copied()
        .filter(|t| {
            !Command::new("sh")
                .args(["-c", &format!("command -v {t}")])
                .env("PATH", tool_path())
                .output()
                .is_ok_and(|o| o.status.success())
        })
        .collect();
    if !missing.is_empty() {
        assert!(
            std::env::var_os("CI").is_none(),
            "{missing:?} missing in CI (scripts/setup.sh installs them)"
        );
        eprintln!("SKIPPED genimage_lays_out_the_card...: {missing:?} not installed");
        return;
    }
    for board in &BOARDS {
        let tmp = tempfile::tempdir().expect("temporary directory");
        let images = tmp.path().join("images");
        fs::create_dir_all(&images).unwrap();
        let user_files = ["autoboot.txt", "onair.json.example", "ONAIR-README.txt"];
        let mut boot_files: Vec<String> = Vec::new();
        let (_, settings) = defconfig(board);
        if board.raspberry_pi {
            let fw = images.join("rpi-firmware");
            fs::create_dir_all(fw.join("overlays")).unwrap();
            let board_dir = repo().join("board").join(board.name);
            fs::copy(board_dir.join("config.txt"), fw.join("config.txt")).unwrap();
            fs::copy(board_dir.join("cmdline.txt"), fw.join("cmdline.txt")).unwrap();
            fs::write(fw.join("overlays/gpio-led.dtbo"), "fake overlay").unwrap();
            boot_files.extend(["config.txt".into(), "cmdline.txt".into(), "overlays".into()]);
            let config = read(&format!("board/{}/config.txt", board.name));
            for extra in config
                .lines()
                .filter_map(|l| l.trim().strip_prefix("cmdline="))
            {
                boot_files.push(extra.to_string());
            }
            let dts = setting(&settings, "BR2_LINUX_KERNEL_INTREE_DTS_NAME")
                .and_then(|s| s.value.clone())
                .unwrap_or_default();
            for name in dts.split_whitespace() {
                let dtb = format!("{}.dtb", name.rsplit('/').next().unwrap());
                fs::write(images.join(&dtb), "fake device tree").unwrap();
                boot_files.push(dtb);
            }
            let kernel = config
                .lines()
                .find_map(|l| l.trim().strip_prefix("kernel="))
                .expect("config.txt: kernel=");
            fs::write(images.join(kernel), "fake kernel").unwrap();
            boot_files.push(kernel.to_string());
        }
        let rootfs = images.join("rootfs.ext4");
        run_tool(
            "mke2fs",
            &[
                "-q",
                "-F",
                "-t",
                "ext4",
                "-L",
                "rootfs",
                rootfs.to_str().unwrap(),
                "16M",
            ],
        );

        let post_image = repo().join("board/common/post-image.sh");
        let out = Command::new("sh")
            .arg(&post_image)
            .arg(&images)
            .arg(repo().join("board").join(board.name))
            .env("BUILD_DIR", tmp.path().join("build"))
            .env("PATH", tool_path())
            .output()
            .expect("run post-image.sh");
        assert!(
            out.status.success(),
            "board {}: post-image.sh (genimage) failed:\n{}{}",
            board.name,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let img = images.join("sdcard.img");
        let img_s = img.to_str().unwrap();

        // The partition table.
        let (cfg_rel, cfg) = genimage(board);
        let disk = cfg
            .children
            .iter()
            .find(|c| c.child("hdimage").is_some())
            .unwrap();
        let hd = disk.child("hdimage").unwrap();
        let align = genimage_size(hd.value("align").unwrap_or("1M")) / 512;
        // SD cards erase in blocks of up to 4 MiB: a partition across two is slow to write.
        assert!(
            align * 512 >= 4 << 20 && (align * 512).is_multiple_of(4 << 20),
            "{cfg_rel}: align partitions to a multiple of 4M"
        );
        let table: serde_json::Value =
            serde_json::from_str(&run_tool("sfdisk", &["--json", img_s])).expect("sfdisk --json");
        let table = &table["partitiontable"];
        let what = format!("board {} ({cfg_rel}): sdcard.img", board.name);
        assert_eq!(table["label"], "dos", "{what}: an MBR (dos) table");
        assert_eq!(table["sectorsize"], 512, "{what}");
        let id = table["id"].as_str().unwrap_or_default().to_lowercase();
        assert_eq!(
            Some(id.as_str()),
            hd.value("disk-signature").map(str::to_lowercase).as_deref(),
            "{what}: the disk signature"
        );
        let signature = id.trim_start_matches("0x").to_string();
        let parts = table["partitions"].as_array().expect("partitions");
        let want = layout(board);
        assert_eq!(parts.len(), want.len(), "{what}: {want:?}: {parts:?}");
        let node = |i: usize| parts[i]["node"].as_str().unwrap().to_string();
        for (i, part) in want.iter().enumerate() {
            assert!(
                node(i).ends_with(&(i + 1).to_string()),
                "{what}: partition {} is {}",
                i + 1,
                node(i)
            );
            let ty = parts[i]["type"].as_str().unwrap();
            let expected: &[&str] = match part {
                Part::OnairBoot | Part::SlotBoot(_) => &["c"],
                Part::Extended => &["5", "f"],
                Part::Root(_) | Part::Data => &["83"],
            };
            assert!(
                expected.contains(&ty),
                "{what}: partition {} ({part:?}) has type {ty}, not {expected:?}",
                i + 1
            );
        }
        assert_eq!(parts[0]["bootable"], true, "{what}: partition 1 bootable");
        let start = |i: usize| parts[i]["start"].as_u64().unwrap();
        let size = |i: usize| parts[i]["size"].as_u64().unwrap();
        let data_i = want.iter().position(|p| *p == Part::Data).unwrap();
        for i in (0..want.len()).filter(|&i| want[i] != Part::Extended) {
            assert_eq!(
                start(i) % align,
                0,
                "{what}: partition {} starts at sector {}, not on the {align}-sector grid",
                i + 1,
                start(i)
            );
            if i > 0 && want[i - 1] != Part::Extended {
                assert!(start(i) >= start(i - 1) + size(i - 1), "{what}: overlap");
            }
        }
        // A 2 GB card has 1.8 to 1.9 GB: the whole layout ends within 1800 MiB.
        let end_mib = ((start(data_i) + size(data_i)) * 512) >> 20;
        assert!(
            end_mib <= 1800,
            "{what}: the card's layout ends at {end_mib} MiB; a 2 GB card holds about 1800"
        );
        let root_mib = |slot| (size(number_of(board, Part::Root(slot)) - 1) * 512) >> 20;
        assert!(
            root_mib('A') == root_mib('B') && root_mib('A') >= 560,
            "{what}: both root slots alike, with room beyond today's 512 MB image"
        );

        // File systems and labels, where the scripts look for them.
        let at = |i: usize| (start(i) * 512).to_string();
        let probe = |i: usize, tag: &str| {
            run_tool(
                "blkid",
                &["-p", "-O", &at(i), "-s", tag, "-o", "value", img_s],
            )
            .trim()
            .to_string()
        };
        for (i, part) in want.iter().enumerate() {
            match part {
                Part::OnairBoot => {
                    assert_eq!(probe(i, "TYPE"), "vfat", "{what}: ONAIR-BOOT");
                    assert_eq!(probe(i, "LABEL"), "ONAIR-BOOT", "{what}: partition 1");
                }
                Part::SlotBoot(s) => {
                    assert_eq!(
                        probe(i, "TYPE"),
                        "vfat",
                        "{what}: slot {s}'s boot partition"
                    )
                }
                Part::Root(s) => {
                    assert_eq!(probe(i, "LABEL"), "rootfs", "{what}: slot {s}'s root")
                }
                Part::Data => {
                    assert_eq!(probe(i, "TYPE"), "ext4", "{what}: data");
                    assert_eq!(probe(i, "LABEL"), "onair-data", "{what}: data");
                }
                Part::Extended => {}
            }
        }

        // ONAIR-BOOT: autoboot.txt (boot A, try B) and the user's files, no system files.
        let fat = |i: usize| format!("{img_s}@@{}", at(i));
        let listing = |i: usize| -> BTreeSet<String> {
            run_tool("mdir", &["-b", "-i", &fat(i), "::/"])
                .lines()
                .map(|l| {
                    l.trim_start_matches("::/")
                        .trim_end_matches('/')
                        .to_string()
                })
                .collect()
        };
        let onair_boot = listing(0);
        for file in user_files {
            assert!(
                onair_boot.contains(file),
                "{what}: ONAIR-BOOT lacks {file} ({onair_boot:?})"
            );
        }
        let autoboot = run_tool("mtype", &["-i", &fat(0), "::/autoboot.txt"]);
        assert!(
            autoboot.contains(&format!(
                "[all]\ntryboot_a_b=1\nboot_partition={}\n[tryboot]\nboot_partition={}\n",
                boot_partition_of(board, 'A'),
                boot_partition_of(board, 'B')
            )),
            "{what}: autoboot.txt: {autoboot}"
        );
        // Each slot's boot partition: what the firmware loads; the command lines name each
        // slot's own root as a partition of this disk.
        if board.raspberry_pi {
            for slot in ['A', 'B'] {
                let i = number_of(board, Part::SlotBoot(slot)) - 1;
                let names = listing(i);
                for file in &boot_files {
                    assert!(
                        names.contains(file),
                        "{what}: slot {slot}'s boot partition lacks {file} ({names:?})"
                    );
                }
                assert!(
                    !names.contains("onair.json.example") && !names.contains("autoboot.txt"),
                    "{what}: the user's files belong on ONAIR-BOOT, not in slot {slot}"
                );
            }
            let first = number_of(board, Part::SlotBoot('A')) - 1;
            for f in boot_files.iter().filter(|f| f.starts_with("cmdline")) {
                let slot = if f.ends_with("-b.txt") { 'B' } else { 'A' };
                let text = run_tool("mtype", &["-i", &fat(first), &format!("::/{f}")]);
                let root = format!(
                    "root=PARTUUID={signature}-{:02}",
                    number_of(board, Part::Root(slot))
                );
                assert!(
                    text.split_whitespace().any(|w| w == root),
                    "{what}: {f} must name slot {slot}'s root {root}: {text}"
                );
            }
        } else {
            let script = fs::read_to_string(images.join("start-qemu.sh")).expect("start-qemu.sh");
            assert!(
                script.contains(&format!("root=PARTUUID={signature}-0$part")),
                "{what}: start-qemu.sh must boot the root autoboot.txt names: {script}"
            );
        }
    }
}

#[test]
fn prefetched_crates_build_without_cargo_or_network() {
    if !tools_or_skip(
        "prefetched_crates_build_without_cargo_or_network",
        &["make", "rsync", "flock", "cmp"],
    ) {
        return;
    }
    // What `scripts/build-image.sh --download-only` leaves in the download directory.
    let tmp = tempfile::tempdir().expect("temporary directory");
    let mk = OnairMk::new(tmp.path(), &repo());
    let prefetched = PathBuf::from(mk.var("ONAIR_PREFETCHED_CRATES"));
    let site = PathBuf::from(mk.var("ONAIR_SITE"));
    fs::create_dir_all(prefetched.join("vendor/some-crate-1.0.0")).unwrap();
    fs::write(
        prefetched.join("vendor/some-crate-1.0.0/Cargo.toml"),
        "[package]\n",
    )
    .unwrap();
    fs::copy(repo().join("Cargo.lock"), prefetched.join("Cargo.lock")).unwrap();
    mk.make("call-ONAIR_STAGE_SOURCE");

    // A PATH with the shell tools the hook uses and no cargo, as on a machine where
    // host-rustc is not built yet: the hook must not need it (nor crates.io) while the
    // prefetched crates match Cargo.lock.
    let bin = tmp.path().join("bin");
    fs::create_dir_all(&bin).unwrap();
    for tool in ["make", "sh", "mkdir", "cmp", "rsync", "mv", "flock", "cat"] {
        let found = sh(&format!("command -v {tool}"));
        std::os::unix::fs::symlink(found.trim(), bin.join(tool)).unwrap();
    }
    let no_cargo = bin.to_str().unwrap();
    mk.try_make("call-ONAIR_CARGO_VENDOR", Some(no_cargo))
        .unwrap_or_else(|e| panic!("vendoring from the prefetched crates failed:\n{e}"));
    assert!(
        site.join("VENDOR/some-crate-1.0.0/Cargo.toml").is_file(),
        "the prefetched crates must land in VENDOR/"
    );
    let config = fs::read_to_string(site.join(".cargo/config.toml")).expect(".cargo/config.toml");
    assert!(
        config.contains("replace-with = \"vendored-sources\"")
            && config.contains("directory = \"VENDOR\""),
        "the build's cargo config must point crates.io at VENDOR/:\n{config}"
    );

    // Crates prefetched for another Cargo.lock are not used: the hook goes to cargo (absent
    // here, so it fails) rather than build with the wrong crates.
    fs::write(prefetched.join("Cargo.lock"), "# another lock file\n").unwrap();
    assert!(
        mk.try_make("call-ONAIR_CARGO_VENDOR", Some(no_cargo))
            .is_err(),
        "crates prefetched for another Cargo.lock must not be used"
    );
}
