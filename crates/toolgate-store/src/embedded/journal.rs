//! The audit journal: where a call's record is made durable before the call is forwarded,
//! without waiting for a database commit.
//!
//! A SQLite commit on the request line costs tens of microseconds (its pages go to the WAL
//! one by one); a `write(2)` of one line to an append-only file costs a few. Once `write`
//! returns, the bytes are in the kernel's page cache, which outlives the process: a gateway
//! killed with SIGKILL the next instant loses nothing. So an appender writes its entries
//! here and queues them; the periodic flush (or the next commit on the request line) moves
//! the queue into `audit_log` in one transaction, which also records how far into the
//! journal it got (`audit_journal.upto`). Entries therefore reach the database exactly once:
//! - committed with their mark: never read from the journal again;
//! - not committed when the process died: replayed from the mark by the next store opened
//!   on the data directory ([`super::EmbeddedStore::recover_audit_journals`]).
//!
//! Ownership is a lock on the file (`flock`): a live gateway holds its segment locked, so a
//! second process (another gateway, the CLI) replays only segments whose owner is gone.
//! Segments rotate at [`SEGMENT_BYTES`]; a retired segment is deleted once fully committed.
//!
//! Format: one entry per line, `chain TAB body LF`. A body is compact JSON, which has no raw
//! tab or newline in it. A last line without its LF was cut short (power loss, a full disk)
//! and was never acknowledged: it is ignored.
//!
//! Power loss is not covered (nothing here is fsynced): `audit.fsync = true` bypasses the
//! journal and commits every record to SQLite with `synchronous = FULL` instead.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A segment holding at least this many bytes is retired at the next append.
pub(super) const SEGMENT_BYTES: u64 = 4 << 20;

/// Where a queued batch of entries ends in its segment: once it is committed, the journal
/// up to here is in the database.
#[derive(Debug, Clone)]
pub(super) struct Mark {
    /// The segment's name (its file name without `.log`), the key of `audit_journal`.
    pub(super) segment: Arc<str>,
    /// The offset just past the batch's last line.
    pub(super) end: u64,
}

/// One journal file of this process.
#[derive(Debug)]
struct Segment {
    name: Arc<str>,
    path: PathBuf,
    /// Open for appending, and locked.
    file: File,
    /// Bytes written (all whole lines).
    written: u64,
    /// Bytes known to be committed to the database.
    committed: u64,
    /// A write failed part-way and the tail could not be cut off: write no more here.
    broken: bool,
}

/// This process's journal.
#[derive(Debug)]
pub(super) struct Journal {
    dir: PathBuf,
    /// The segment appends go to.
    current: Segment,
    /// Earlier segments, kept until the database has all of them.
    retired: Vec<Segment>,
}

impl Journal {
    /// Starts a journal with a fresh segment in `dir` (created if needed).
    pub(super) fn create(dir: &Path) -> std::io::Result<Journal> {
        std::fs::create_dir_all(dir)?;
        Ok(Journal {
            dir: dir.to_owned(),
            current: Segment::create(dir)?,
            retired: Vec::new(),
        })
    }

    /// Appends `lines` (whole lines, see [`encode`]) and returns where they end. On an
    /// error nothing of `lines` is left behind, unless cutting the tail off failed too;
    /// then the segment takes no more writes, and its cut-short last line is ignored on
    /// replay.
    pub(super) fn append(&mut self, lines: &[u8]) -> std::io::Result<Mark> {
        if self.current.broken || self.current.written >= SEGMENT_BYTES {
            let next = Segment::create(&self.dir)?;
            let old = std::mem::replace(&mut self.current, next);
            self.retire(old);
        }
        let segment = &mut self.current;
        if let Err(e) = segment.file.write_all(lines) {
            if segment.file.set_len(segment.written).is_err() {
                segment.broken = true;
            }
            return Err(e);
        }
        segment.written += lines.len() as u64;
        Ok(Mark {
            segment: Arc::clone(&segment.name),
            end: segment.written,
        })
    }

    /// Takes note that the database holds the journal up to `marks`: retired segments it
    /// holds whole are deleted.
    pub(super) fn committed(&mut self, marks: &[Mark]) {
        for mark in marks {
            for segment in std::iter::once(&mut self.current).chain(self.retired.iter_mut()) {
                if *segment.name == *mark.segment {
                    segment.committed = segment.committed.max(mark.end);
                }
            }
        }
        let retired = std::mem::take(&mut self.retired);
        for segment in retired {
            self.retire(segment);
        }
    }

    /// Deletes `segment` if the database holds all of it, else keeps it among the retired.
    fn retire(&mut self, segment: Segment) {
        if segment.committed >= segment.written {
            // Should the removal fail, a later replay finds nothing past the mark.
            let _ = std::fs::remove_file(&segment.path);
        } else {
            self.retired.push(segment);
        }
    }

    /// Deletes whatever the database holds whole (at shutdown); the rest stays for replay.
    pub(super) fn close(self) {
        for segment in std::iter::once(self.current).chain(self.retired) {
            if segment.committed >= segment.written {
                let _ = std::fs::remove_file(&segment.path);
            }
        }
    }
}

impl Segment {
    /// A new, empty, locked segment. It is created under a temporary name and renamed once
    /// locked, so that nobody replaying orphans can take it in between.
    fn create(dir: &Path) -> std::io::Result<Segment> {
        let name = segment_name();
        let temporary = dir.join(format!("{name}.tmp"));
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(&temporary)?;
        file.lock()?;
        let path = dir.join(format!("{name}.log"));
        std::fs::rename(&temporary, &path)?;
        Ok(Segment {
            name: Arc::from(name),
            path,
            file,
            written: 0,
            committed: 0,
            broken: false,
        })
    }
}

/// A fresh segment name: the time, the process and random bits, so that names never repeat.
fn segment_name() -> String {
    use rand::RngCore;
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!(
        "{millis}-{}-{:08x}",
        std::process::id(),
        rand::rng().next_u32()
    )
}

/// An audit entry as queued and journaled: its chain and its body (JSON text).
pub(super) type Entry = (&'static str, String);

/// `entries` as journal lines.
pub(super) fn encode(entries: &[Entry]) -> Vec<u8> {
    let size = entries.iter().map(|(c, b)| c.len() + b.len() + 2).sum();
    let mut lines = Vec::with_capacity(size);
    for (chain, body) in entries {
        lines.extend_from_slice(chain.as_bytes());
        lines.push(b'\t');
        lines.extend_from_slice(body.as_bytes());
        lines.push(b'\n');
    }
    lines
}

/// A segment whose owner is gone, locked by us while it is replayed.
#[derive(Debug)]
pub(super) struct Orphan {
    pub(super) name: String,
    pub(super) path: PathBuf,
    /// Its whole contents.
    pub(super) contents: Vec<u8>,
    /// Held for the lock.
    _file: File,
}

/// The segments in `dir` that no live process holds (none if `dir` does not exist).
pub(super) fn orphans(dir: &Path) -> std::io::Result<Vec<Orphan>> {
    let listing = match std::fs::read_dir(dir) {
        Ok(listing) => listing,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut found = Vec::new();
    for item in listing {
        let path = item?.path();
        let Some(name) = segment_of(&path) else {
            continue;
        };
        let mut file = match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => file,
            // Deleted by its owner meanwhile.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
            Err(e) => return Err(e),
        };
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => continue,
            Err(std::fs::TryLockError::Error(e)) => return Err(e),
        }
        let mut contents = Vec::new();
        file.read_to_end(&mut contents)?;
        found.push(Orphan {
            name,
            path,
            contents,
            _file: file,
        });
    }
    found.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(found)
}

/// The names of the segments in `dir`, live or not.
pub(super) fn segment_names(dir: &Path) -> std::io::Result<Vec<String>> {
    match std::fs::read_dir(dir) {
        Ok(listing) => listing
            .map(|item| Ok(segment_of(&item?.path())))
            .filter_map(Result::transpose)
            .collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Vec::new()),
        Err(e) => Err(e),
    }
}

/// The segment name of a journal file's path (`NAME.log`).
fn segment_of(path: &Path) -> Option<String> {
    let file_name = path.file_name()?.to_str()?;
    file_name.strip_suffix(".log").map(str::to_owned)
}

/// The entries in `contents` from offset `from` on, and the offset just past the last whole
/// line. A line that is not `chain TAB body` for a known chain is an error naming its offset.
pub(super) fn parse(
    contents: &[u8],
    from: u64,
    known_chain: impl Fn(&str) -> Option<&'static str>,
) -> Result<(Vec<Entry>, u64), String> {
    let mut at = usize::try_from(from)
        .unwrap_or(usize::MAX)
        .min(contents.len());
    let mut entries = Vec::new();
    while let Some(length) = contents[at..].iter().position(|&b| b == b'\n') {
        let line = &contents[at..at + length];
        let parsed = std::str::from_utf8(line)
            .ok()
            .and_then(|line| line.split_once('\t'))
            .and_then(|(chain, body)| Some((known_chain(chain)?, body.to_owned())));
        match parsed {
            Some(entry) => entries.push(entry),
            None => return Err(format!("unreadable entry at byte {at}")),
        }
        at += length + 1;
    }
    Ok((entries, at as u64))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn known(chain: &str) -> Option<&'static str> {
        ["calls", "admin"].into_iter().find(|c| *c == chain)
    }

    #[test]
    fn lines_round_trip_and_a_cut_short_last_line_is_ignored() {
        let entries = vec![
            ("calls", r#"{"a":"tab\tand\nnewline"}"#.to_owned()),
            ("admin", "{}".to_owned()),
        ];
        let lines = encode(&entries);
        assert_eq!(lines.iter().filter(|&&b| b == b'\n').count(), 2);
        let mut cut = lines.clone();
        cut.extend_from_slice(b"calls\t{\"half");
        let (parsed, end) = parse(&cut, 0, known).expect("parses");
        assert_eq!(parsed, entries);
        assert_eq!(end, lines.len() as u64);
        let second = lines.iter().position(|&b| b == b'\n').unwrap() as u64 + 1;
        let (rest, _) = parse(&cut, second, known).expect("parses");
        assert_eq!(rest, entries[1..]);
        assert!(parse(b"nochain\t{}\n", 0, known)
            .unwrap_err()
            .contains("byte 0"));
    }

    #[test]
    fn live_segments_are_not_orphans_and_rotation_deletes_committed_segments() {
        let dir = crate::embedded::scratch("journal-rotation");
        let mut journal = Journal::create(&dir).expect("journal");
        let line = encode(&[("calls", "x".repeat(1000))]);
        let mut marks = Vec::new();
        while journal.retired.is_empty() {
            marks.push(journal.append(&line).expect("append"));
        }
        assert_eq!(segment_names(&dir).unwrap().len(), 2);
        assert!(orphans(&dir).unwrap().is_empty(), "both segments are held");
        journal.committed(&marks);
        assert_eq!(
            segment_names(&dir).unwrap(),
            vec![journal.current.name.to_string()],
            "the committed retired segment is gone"
        );
        journal.append(&line).expect("append");
        let name = journal.current.name.to_string();
        // An owner that dies (its file closed, unlike `close`) leaves its segment to be
        // replayed: the line that started it and the one after.
        drop(journal);
        let found = orphans(&dir).unwrap();
        assert_eq!(found.len(), 1);
        assert_eq!(found[0].name, name);
        assert_eq!(found[0].contents, [line.clone(), line].concat());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
