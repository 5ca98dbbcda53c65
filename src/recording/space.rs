//! How much room the recording may take (pure): the free space on the disk it records to, less
//! `record.min_free_mb`, less what will be written before the next look. When that is not
//! enough, the oldest recordings go first — never the one being written — and if all of them
//! are not enough, recording stops rather than eat into the space it must leave.

/// What to do about space, decided from one look at the disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Plan {
    /// Recordings to delete, oldest first (names as given).
    pub delete: Vec<String>,
    /// Whether there is room once they are gone.
    pub room: bool,
    /// Bytes the writer may write until the next look (after the deletions).
    pub budget: u64,
}

/// `free`: bytes free for us on the disk now; `min_free`: what must stay free; `reserve`: what
/// will be written before the next look; `oldest_first`: the recordings that may go (name and
/// size, oldest first; the one being written is not among them).
pub fn plan(free: u64, min_free: u64, reserve: u64, oldest_first: &[(String, u64)]) -> Plan {
    let need = min_free.saturating_add(reserve);
    let mut expected = free;
    let mut delete = Vec::new();
    for (name, size) in oldest_first {
        if expected >= need {
            break;
        }
        delete.push(name.clone());
        expected = expected.saturating_add(*size);
    }
    Plan {
        room: expected >= need,
        budget: expected.saturating_sub(min_free),
        delete,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn files(sizes: &[u64]) -> Vec<(String, u64)> {
        sizes
            .iter()
            .enumerate()
            .map(|(i, &s)| (format!("f{i}"), s))
            .collect()
    }

    #[test]
    fn enough_room_deletes_nothing() {
        let p = plan(500, 100, 50, &files(&[10, 10]));
        assert_eq!(p.delete, Vec::<String>::new());
        assert!(p.room);
        assert_eq!(p.budget, 400);
    }

    #[test]
    fn the_oldest_go_first_until_there_is_room() {
        let p = plan(120, 100, 50, &files(&[20, 20, 20]));
        assert_eq!(p.delete, vec!["f0", "f1"]);
        assert!(p.room);
        assert_eq!(p.budget, 60);
    }

    #[test]
    fn when_everything_is_not_enough_recording_must_stop() {
        let p = plan(90, 100, 50, &files(&[5, 5]));
        assert_eq!(p.delete, vec!["f0", "f1"], "still worth deleting");
        assert!(!p.room);
        assert_eq!(p.budget, 0, "nothing more may be written below min_free");
        assert!(!plan(0, 100, 0, &[]).room);
    }
}
