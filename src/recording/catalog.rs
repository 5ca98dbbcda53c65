//! What recordings exist, kept in memory by the lane, so that `onair recordings`, the status
//! and the space rule never touch a disk (which may hang): each place is read once when it is
//! taken into use ([`scan`]), and from then on the lane tells the catalog what it writes and
//! deletes. Each entry carries the windows when the stream was not live (from its sidecar), the
//! outages the recording covers.

use super::names;
use super::rules::Dest;
use super::sidecar::{self, Window};
use serde::{Deserialize, Serialize};
use std::path::{Path, PathBuf};

/// At most this many recordings are listed (the newest); `Listing::more` counts the rest.
pub const MAX_LISTED: usize = 2000;
/// At most this many files are read from one directory.
const MAX_SCANNED: usize = 20_000;

/// One recording as `onair recordings --json` shows it. Times are Unix seconds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RecordingEntry {
    pub file: String,
    /// Where it is on the box.
    pub path: String,
    /// `usb` or `data`.
    pub location: String,
    pub start: f64,
    /// The last write while it is being recorded; its end line (or, after a crash or a power
    /// cut, the file's modification time) once closed.
    pub end: f64,
    /// Being written now.
    pub recording: bool,
    pub bytes: u64,
    /// When the stream was not live while this file was recorded.
    pub not_live: Vec<Window>,
}

/// The answer to `onair recordings`: oldest first.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
pub struct Listing {
    /// Whether the daemon records (`record.enabled`).
    #[serde(default)]
    pub enabled: bool,
    pub recordings: Vec<RecordingEntry>,
    /// Older recordings not listed.
    pub more: usize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Item {
    pub dest: Dest,
    pub dir: PathBuf,
    pub name: String,
    pub start: f64,
    pub start_live: bool,
    pub changes: Vec<(f64, bool)>,
    pub end: Option<f64>,
    pub bytes: u64,
    pub writing: bool,
}

impl Item {
    fn entry(&self, now: f64) -> RecordingEntry {
        let end = if self.writing {
            now
        } else {
            self.end.unwrap_or(self.start)
        };
        RecordingEntry {
            file: self.name.clone(),
            path: self.dir.join(&self.name).display().to_string(),
            location: self.dest.as_str().to_string(),
            start: self.start,
            end,
            recording: self.writing,
            bytes: self.bytes,
            not_live: sidecar::not_live_windows(self.start, self.start_live, &self.changes, end),
        }
    }
}

#[derive(Debug, Default)]
pub struct Catalog {
    /// In the order the names sort (their start times).
    items: Vec<Item>,
}

impl Catalog {
    /// What a place holds, as read from its directory, replacing what was known of it.
    pub fn replace(&mut self, dest: Dest, items: Vec<Item>) {
        self.items.retain(|i| i.dest != dest || i.writing);
        self.items
            .extend(items.into_iter().filter(|i| i.dest == dest));
        self.sort();
    }

    /// A place that is gone (the USB disk unmounted): its recordings cannot be reached.
    pub fn forget(&mut self, dest: Dest) {
        self.items.retain(|i| i.dest != dest);
    }

    pub fn add(&mut self, item: Item) {
        self.items.push(item);
        self.sort();
    }

    fn sort(&mut self) {
        self.items
            .sort_by(|a, b| a.name.cmp(&b.name).then(a.start.total_cmp(&b.start)));
    }

    fn find(&mut self, name: &str) -> Option<&mut Item> {
        self.items.iter_mut().find(|i| i.name == name)
    }

    pub fn set_bytes(&mut self, name: &str, bytes: u64) {
        if let Some(i) = self.find(name) {
            i.bytes = bytes;
        }
    }

    /// The stream went off or on the air: noted on every file being written.
    pub fn change(&mut self, t: f64, live: bool) {
        for i in self.items.iter_mut().filter(|i| i.writing) {
            i.changes.push((t, live));
        }
    }

    pub fn close(&mut self, name: &str, end: f64) {
        if let Some(i) = self.find(name) {
            i.writing = false;
            i.end = Some(end);
        }
    }

    pub fn remove(&mut self, name: &str) {
        self.items.retain(|i| i.name != name);
    }

    /// Recordings on `dest` that may be deleted, oldest first: name and size.
    pub fn deletable(&self, dest: Dest) -> Vec<(String, u64)> {
        self.items
            .iter()
            .filter(|i| i.dest == dest && !i.writing)
            .map(|i| (i.name.clone(), i.bytes))
            .collect()
    }

    pub fn get(&self, name: &str) -> Option<&Item> {
        self.items.iter().find(|i| i.name == name)
    }

    /// The start of the newest recording anywhere (new names come after it).
    pub fn newest(&self) -> Option<jiff::Timestamp> {
        self.items
            .iter()
            .filter_map(|i| names::parse(&i.name))
            .max()
    }

    pub fn len(&self) -> usize {
        self.items.len()
    }

    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Oldest first, the newest [`MAX_LISTED`].
    pub fn listing(&self, now: f64) -> Listing {
        let more = self.items.len().saturating_sub(MAX_LISTED);
        Listing {
            enabled: true,
            recordings: self.items[more..].iter().map(|i| i.entry(now)).collect(),
            more,
        }
    }
}

/// Reads a place's recordings: every `onair-*.mkv` with its size, and its sidecar (start,
/// changes, end). Blocking: the lane runs it off its task under a deadline.
pub fn scan(dir: &Path, dest: Dest) -> std::io::Result<Vec<Item>> {
    use std::io::Read;
    let mut items = Vec::new();
    for entry in std::fs::read_dir(dir)?.take(MAX_SCANNED) {
        let Ok(entry) = entry else { continue };
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(named) = names::parse(&name) else {
            continue;
        };
        let Ok(meta) = entry.metadata() else { continue };
        if !meta.is_file() {
            continue;
        }
        let mut text = String::new();
        if let Ok(f) = std::fs::File::open(dir.join(names::sidecar_name(&name))) {
            let _ = f.take(sidecar::MAX_SIDECAR_BYTES).read_to_string(&mut text);
        }
        let side = sidecar::parse(&text);
        let modified = meta
            .modified()
            .ok()
            .and_then(|m| m.duration_since(std::time::UNIX_EPOCH).ok())
            .map(|d| d.as_secs_f64());
        let start = side.start.unwrap_or_else(|| names::unix(named));
        items.push(Item {
            dest,
            dir: dir.to_path_buf(),
            name,
            start,
            start_live: side.start_live,
            changes: side.changes,
            end: side.end.or(modified).map(|e| e.max(start)),
            bytes: meta.len(),
            writing: false,
        });
    }
    Ok(items)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scan_reads_sizes_sidecars_and_ignores_other_files() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        std::fs::write(d.join("onair-20261206T140000Z.mkv"), vec![0u8; 1000]).unwrap();
        std::fs::write(
            d.join("onair-20261206T140000Z.txt"),
            [
                sidecar::header("x"),
                sidecar::start_line(1000.0, true),
                sidecar::change_line(1010.0, false),
                sidecar::change_line(1040.0, true),
                sidecar::end_line(1100.0),
            ]
            .concat(),
        )
        .unwrap();
        // A file cut by a power cut: no sidecar end.
        std::fs::write(d.join("onair-20261206T150000Z.mkv"), vec![0u8; 10]).unwrap();
        std::fs::write(d.join("onair.json"), b"{}").unwrap();
        std::fs::write(d.join("holiday.mkv"), b"x").unwrap();
        let mut items = scan(d, Dest::Data).unwrap();
        items.sort_by(|a, b| a.name.cmp(&b.name));
        assert_eq!(items.len(), 2);
        assert_eq!(items[0].bytes, 1000);
        assert_eq!(items[0].end, Some(1100.0));
        assert_eq!(items[0].changes, vec![(1010.0, false), (1040.0, true)]);
        let named = names::unix(names::parse("onair-20261206T150000Z.mkv").unwrap());
        assert_eq!(items[1].start, named, "no sidecar: the name's time");
        assert!(items[1].end.is_some(), "the modification time");

        let mut c = Catalog::default();
        c.replace(Dest::Data, items);
        let l = c.listing(2000.0);
        assert_eq!(l.more, 0);
        assert_eq!(
            l.recordings[0].not_live,
            vec![Window {
                from: 1010.0,
                to: 1040.0
            }]
        );
        assert_eq!(l.recordings[0].location, "data");
        assert!(l.recordings[0].path.ends_with("onair-20261206T140000Z.mkv"));
    }

    #[test]
    fn the_file_being_written_is_listed_to_now_and_never_deletable() {
        let mut c = Catalog::default();
        let item = |name: &str, writing| Item {
            dest: Dest::Usb,
            dir: PathBuf::from("/r"),
            name: name.into(),
            start: 100.0,
            start_live: false,
            changes: vec![],
            end: None,
            bytes: 5,
            writing,
        };
        c.add(item("onair-20261206T140000Z.mkv", false));
        c.add(item("onair-20261206T150000Z.mkv", true));
        assert_eq!(
            c.deletable(Dest::Usb),
            vec![("onair-20261206T140000Z.mkv".into(), 5)]
        );
        c.change(150.0, true);
        let l = c.listing(200.0);
        let now = &l.recordings[1];
        assert!(now.recording);
        assert_eq!(now.end, 200.0);
        assert_eq!(
            now.not_live,
            vec![Window {
                from: 100.0,
                to: 150.0
            }]
        );
        c.close("onair-20261206T150000Z.mkv", 210.0);
        assert_eq!(c.deletable(Dest::Usb).len(), 2);
        c.forget(Dest::Usb);
        assert!(c.is_empty());
    }
}
