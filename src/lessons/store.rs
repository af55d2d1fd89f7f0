//! The lesson log: one JSON line per lesson in `lessons.jsonl` under the state directory,
//! rotated at a size (`lessons.jsonl.1` … `.3`, oldest dropped).
//!
//! A line is appended with one `write` on a file opened `O_APPEND` and then fsynced, so
//! earlier lines are never rewritten. A crash in the middle of a write can leave a partial
//! last line: the next append starts on a new line first, and readers skip lines that do not
//! parse (and say how many). Rotation is a chain of renames, each atomic.

use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use super::recorder::Lesson;

/// The file name under the state directory.
pub const FILE_NAME: &str = "lessons.jsonl";
/// Rotated files kept (`lessons.jsonl.1` is the newest of them).
pub const KEEP: usize = 3;

/// The lesson log in one directory.
#[derive(Debug, Clone)]
pub struct LessonLog {
    dir: PathBuf,
    max_bytes: u64,
}

/// What [`LessonLog::read`] found.
#[derive(Debug, Default)]
pub struct LogContents {
    /// Oldest first.
    pub lessons: Vec<Lesson>,
    /// Lines that did not parse (a torn last line after a crash, or edited by hand).
    pub skipped: usize,
}

impl LessonLog {
    pub fn new(dir: impl Into<PathBuf>, max_bytes: u64) -> Self {
        Self {
            dir: dir.into(),
            max_bytes,
        }
    }

    /// The current file.
    pub fn path(&self) -> PathBuf {
        self.dir.join(FILE_NAME)
    }

    fn rotated(&self, n: usize) -> PathBuf {
        self.dir.join(format!("{FILE_NAME}.{n}"))
    }

    /// Appends one lesson (rotating first when the line would take the file past the limit).
    pub fn append(&self, lesson: &Lesson) -> io::Result<()> {
        let mut line = serde_json::to_string(lesson).map_err(io::Error::other)?;
        line.push('\n');
        // The directory is the service's to be given (systemd's StateDirectory=, the
        // package), not created here: a test or a one-off run leaves no /var/lib behind.
        if !self.dir.is_dir() {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                format!(
                    "the state directory {} does not exist: create it (StateDirectory=polypush \
                     does under systemd) or set [service] state_dir",
                    self.dir.display()
                ),
            ));
        }
        let path = self.path();
        let len = fs::metadata(&path).map_or(0, |m| m.len());
        if len > 0 && len + line.len() as u64 > self.max_bytes {
            self.rotate()?;
        }
        let mut f = OpenOptions::new()
            .create(true)
            .append(true)
            .read(true)
            .open(&path)?;
        if !ends_with_newline(&mut f)? {
            line.insert(0, '\n');
        }
        f.write_all(line.as_bytes())?;
        f.sync_data()
    }

    /// `lessons.jsonl` → `.1` → `.2` → `.3`; the oldest is dropped.
    fn rotate(&self) -> io::Result<()> {
        let _ = fs::remove_file(self.rotated(KEEP));
        for n in (1..KEEP).rev() {
            match fs::rename(self.rotated(n), self.rotated(n + 1)) {
                Err(e) if e.kind() != io::ErrorKind::NotFound => return Err(e),
                _ => {}
            }
        }
        fs::rename(self.path(), self.rotated(1))?;
        if let Ok(d) = File::open(&self.dir) {
            let _ = d.sync_all();
        }
        Ok(())
    }

    /// Every lesson in the log, oldest first. A missing directory or file is an empty log.
    pub fn read(&self) -> io::Result<LogContents> {
        let mut out = LogContents::default();
        let mut files: Vec<PathBuf> = (1..=KEEP).rev().map(|n| self.rotated(n)).collect();
        files.push(self.path());
        for p in files {
            let text = match fs::read_to_string(&p) {
                Ok(t) => t,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(io::Error::new(e.kind(), format!("{}: {e}", p.display()))),
            };
            for line in text.lines().filter(|l| !l.trim().is_empty()) {
                match serde_json::from_str::<Lesson>(line) {
                    Ok(l) => out.lessons.push(l),
                    Err(_) => out.skipped += 1,
                }
            }
        }
        Ok(out)
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

fn ends_with_newline(f: &mut File) -> io::Result<bool> {
    let len = f.metadata()?.len();
    if len == 0 {
        return Ok(true);
    }
    f.seek(SeekFrom::Start(len - 1))?;
    let mut b = [0u8; 1];
    f.read_exact(&mut b)?;
    Ok(b[0] == b'\n')
}
