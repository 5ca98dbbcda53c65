//! Writes the rendered files into their directory (`/run/onair/network` on the box): each
//! one whole or not at all (a new file, mode 0600 from its creation, renamed over the old),
//! so a wpa_supplicant that reads it at any moment reads a complete file, and nobody but root
//! ever reads a passphrase. Says whether the Wi-Fi file changed, so that the radios are told
//! to read it again only then.

use super::render::{MODEM_CONNECT_FILE, NetworkFiles, WPA_SUPPLICANT_FILE};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// An old file larger than this is not one of ours: it is replaced, not compared.
const MAX_COMPARED: u64 = 1024 * 1024;

#[derive(Debug, thiserror::Error)]
#[error("cannot write {path}: {source}")]
pub struct FilesError {
    pub path: PathBuf,
    #[source]
    pub source: std::io::Error,
}

/// What [`write`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Written {
    /// `wpa_supplicant.conf` has new content (the radios must read it again).
    pub wifi_changed: bool,
    pub wpa_supplicant: PathBuf,
    /// `modem-connect`, when there is one.
    pub modem_connect: Option<PathBuf>,
}

/// Writes `files` into `dir` (created 0700 if missing).
pub fn write(dir: &Path, files: &NetworkFiles) -> Result<Written, FilesError> {
    let err = |path: &Path| {
        let path = path.to_path_buf();
        move |source| FilesError { path, source }
    };
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(err(dir))?;
    let wpa_supplicant = dir.join(WPA_SUPPLICANT_FILE);
    let wifi_changed = replace(&wpa_supplicant, &files.wpa_supplicant)?;
    let modem_path = dir.join(MODEM_CONNECT_FILE);
    let modem_connect = match &files.modem_connect {
        Some(text) => {
            replace(&modem_path, text)?;
            Some(modem_path)
        }
        None => {
            match std::fs::remove_file(&modem_path) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(err(&modem_path)(e)),
            }
            None
        }
    };
    Ok(Written {
        wifi_changed,
        wpa_supplicant,
        modem_connect,
    })
}

/// Puts `text` at `path` unless it is there already; says whether it changed.
fn replace(path: &Path, text: &str) -> Result<bool, FilesError> {
    if current(path).as_deref() == Some(text) {
        // Still tighten a file someone loosened.
        let _ = std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600));
        return Ok(false);
    }
    let err = |p: &Path| {
        let path = p.to_path_buf();
        move |source| FilesError { path, source }
    };
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    let tmp = path.with_file_name(format!(".{name}.{}.new", std::process::id()));
    // A leftover of a killed run would make the exclusive create fail.
    let _ = std::fs::remove_file(&tmp);
    let result = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(err(path)(e));
    }
    Ok(true)
}

/// The file's text, if it is a regular file of a sensible size (never follows a link).
fn current(path: &Path) -> Option<String> {
    let meta = std::fs::symlink_metadata(path).ok()?;
    if !meta.is_file() || meta.len() > MAX_COMPARED {
        return None;
    }
    let mut text = String::new();
    std::fs::File::open(path)
        .ok()?
        .take(MAX_COMPARED)
        .read_to_string(&mut text)
        .ok()?;
    Some(text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn files(wifi: &str, modem: Option<&str>) -> NetworkFiles {
        NetworkFiles {
            wpa_supplicant: wifi.into(),
            modem_connect: modem.map(str::to_string),
        }
    }

    #[test]
    fn files_are_private_whole_and_rewritten_only_when_changed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let dir = tmp.path().join("network");
        let w = write(&dir, &files("one", Some("apn=internet"))).expect("write");
        assert!(w.wifi_changed);
        assert_eq!(
            std::fs::read_to_string(&w.wpa_supplicant).expect("read"),
            "one"
        );
        let modem = w.modem_connect.clone().expect("modem file");
        assert_eq!(
            std::fs::read_to_string(&modem).expect("read"),
            "apn=internet"
        );
        for p in [&w.wpa_supplicant, &modem] {
            assert_eq!(std::fs::metadata(p).expect("stat").mode() & 0o777, 0o600);
        }
        assert_eq!(std::fs::metadata(&dir).expect("stat").mode() & 0o777, 0o700);
        // The same again: nothing changed, the file is the same inode.
        let inode = std::fs::metadata(&w.wpa_supplicant).expect("stat").ino();
        std::fs::set_permissions(&w.wpa_supplicant, std::fs::Permissions::from_mode(0o644))
            .expect("chmod");
        let again = write(&dir, &files("one", Some("apn=internet"))).expect("write");
        assert!(!again.wifi_changed);
        let meta = std::fs::metadata(&w.wpa_supplicant).expect("stat");
        assert_eq!((meta.ino(), meta.mode() & 0o777), (inode, 0o600));
        // New text: a new file renamed into place; the modem settings removed.
        let changed = write(&dir, &files("two", None)).expect("write");
        assert!(changed.wifi_changed && changed.modem_connect.is_none());
        assert!(!modem.exists());
        assert_eq!(
            std::fs::read_to_string(&w.wpa_supplicant).expect("read"),
            "two"
        );
        let names: Vec<_> = std::fs::read_dir(&dir)
            .expect("ls")
            .map(|e| e.expect("entry").file_name())
            .collect();
        assert_eq!(names, [WPA_SUPPLICANT_FILE]);
    }

    #[test]
    fn a_link_in_the_way_is_replaced_not_followed() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let elsewhere = tmp.path().join("elsewhere");
        std::fs::write(&elsewhere, "keep").expect("write");
        std::os::unix::fs::symlink(&elsewhere, tmp.path().join(WPA_SUPPLICANT_FILE))
            .expect("symlink");
        let w = write(tmp.path(), &files("mine", None)).expect("write");
        assert!(w.wifi_changed);
        assert_eq!(std::fs::read_to_string(&elsewhere).expect("read"), "keep");
        assert!(
            std::fs::symlink_metadata(&w.wpa_supplicant)
                .expect("stat")
                .is_file()
        );
    }
}
