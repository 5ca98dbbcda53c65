//! The disks recordings go to: a USB disk found by its label, mounted and unmounted by the
//! daemon itself, and the free space on whichever disk is in use.
//!
//! Why the daemon mounts the USB disk rather than the operating system (udev rules, a systemd
//! automount): only the daemon knows when its files on the disk are closed, so only it can take
//! a pulled or failing disk off at the right moment (a lazy unmount right after its files are
//! let go, so a replug mounts afresh), and it can keep a disk that failed from being used again
//! until it is unplugged. udev still names the disk (`/dev/disk/by-label/LABEL`); the daemon
//! only looks for that link. It needs CAP_SYS_ADMIN (root on the box).
//!
//! Blocking calls (mount, statvfs on a hung disk): the lane runs them off its task, under a
//! deadline.

use nix::mount::{MntFlags, MsFlags};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

/// Where udev puts a link per file system label.
pub const BY_LABEL: &str = "/dev/disk/by-label";

/// The file systems a recording disk may have, tried in this order (a wrong type is refused at
/// once by the kernel).
pub const FS_TYPES: [&str; 3] = ["vfat", "exfat", "ext4"];

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot create the mount point {}: {source}", at.display())]
    MountPoint {
        at: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot mount {} ({})", device.display(), tried.join("; "))]
    Mount { device: PathBuf, tried: Vec<String> },
}

/// The device node of the disk labelled `label`, if one is plugged in.
pub fn by_label(label: &str) -> Option<PathBuf> {
    let link = Path::new(BY_LABEL).join(label);
    std::fs::canonicalize(link).ok()
}

/// Mounts `device` on `at` (created if missing) as the first of [`FS_TYPES`] the kernel takes;
/// returns that type. Options: no devices, no set-uid, no executables, no access times; vfat
/// and exFAT files belong to root with mode 0644.
pub fn mount(device: &Path, at: &Path) -> Result<&'static str, DiskError> {
    std::fs::create_dir_all(at).map_err(|source| DiskError::MountPoint {
        at: at.to_path_buf(),
        source,
    })?;
    if is_mount_point(at) {
        // Left by a daemon that was killed while recording: take it off first.
        unmount(at);
    }
    let flags = MsFlags::MS_NOSUID | MsFlags::MS_NODEV | MsFlags::MS_NOEXEC | MsFlags::MS_NOATIME;
    let mut tried = Vec::new();
    for fs in FS_TYPES {
        let data = match fs {
            "ext4" => None,
            _ => Some("uid=0,gid=0,fmask=0022,dmask=0022"),
        };
        match nix::mount::mount(Some(device), at, Some(fs), flags, data) {
            Ok(()) => return Ok(fs),
            Err(e) => tried.push(format!("{fs}: {}", e.desc())),
        }
    }
    Err(DiskError::Mount {
        device: device.to_path_buf(),
        tried,
    })
}

/// Takes the disk off `at` at once, even while a stuck write still holds a file on it (the
/// kernel lets go of the file system when the last file closes).
pub fn unmount(at: &Path) {
    if let Err(e) = nix::mount::umount2(at, MntFlags::MNT_DETACH) {
        log::debug!("recording: unmount {}: {e}", at.display());
    }
}

/// Whether something is mounted on `dir` (its device differs from its parent's).
pub fn is_mount_point(dir: &Path) -> bool {
    let Ok(d) = std::fs::metadata(dir) else {
        return false;
    };
    match dir.parent().map(std::fs::metadata) {
        None => true,
        Some(Ok(p)) => d.dev() != p.dev() || d.ino() == p.ino(),
        Some(Err(_)) => false,
    }
}

/// Bytes free for an unprivileged writer on the file system holding `dir` (what `df` shows as
/// available).
pub fn free_bytes(dir: &Path) -> std::io::Result<u64> {
    let st = nix::sys::statvfs::statvfs(dir).map_err(std::io::Error::from)?;
    Ok((st.blocks_available() as u64).saturating_mul(st.fragment_size() as u64))
}

/// Makes deletions count in the free space at once: ext4 frees blocks only when its journal
/// commits (up to 5 s later), and until then the next look would delete more than needed.
pub fn commit(dir: &Path) {
    if let Ok(d) = std::fs::File::open(dir) {
        let _ = nix::unistd::syncfs(&d);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mount_points_and_free_space_of_what_is_there() {
        assert!(is_mount_point(Path::new("/")));
        assert!(is_mount_point(Path::new("/proc")));
        let dir = tempfile::tempdir().unwrap();
        assert!(!is_mount_point(dir.path()));
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
        assert_eq!(by_label("ONAIR-NO-SUCH-LABEL-X"), None);
    }
}
