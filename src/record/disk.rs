//! The recorder's file-system side that is not the open segment: preparing the directory,
//! free space (`statvfs`), listing our segments, planning quota deletions (pure), and turning
//! a `.part` file into a complete segment ([`finish_part`], used after a crash and after a
//! write error).
//!
//! Only files whose names parse as ours ([`super::name::parse_name`]) are ever listed, renamed
//! or deleted: the directory may hold anything else.

use std::ffi::CString;
use std::fs::{self, DirBuilder, File, OpenOptions};
use std::io::{self, BufReader, Read, Seek, SeekFrom};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use super::name::{parse_name, FileKind};
use super::RecordError;
use crate::flv::{TAG_AUDIO, TAG_SCRIPT, TAG_VIDEO};

/// FLV file header (9) + PreviousTagSize0 (4): where the first tag starts in our files.
const FIRST_TAG: u64 = 13;

/// Creates `dir` (mode 0750, parents too) if missing and proves it writable by creating and
/// removing a probe file, so a misconfigured directory fails at start with a message, not
/// minutes later on the writer thread.
pub(crate) fn prepare_dir(dir: &Path) -> Result<(), RecordError> {
    match fs::metadata(dir) {
        Ok(m) if m.is_dir() => {}
        Ok(_) => {
            return Err(RecordError::NotADirectory {
                dir: dir.to_path_buf(),
            })
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => DirBuilder::new()
            .recursive(true)
            .mode(0o750)
            .create(dir)
            .map_err(|source| RecordError::CreateDir {
                dir: dir.to_path_buf(),
                source,
            })?,
        Err(source) => {
            return Err(RecordError::NotWritable {
                dir: dir.to_path_buf(),
                source,
            })
        }
    }
    let probe = dir.join(format!(".polypush-probe-{}", std::process::id()));
    OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o640)
        .open(&probe)
        .and_then(|_| fs::remove_file(&probe))
        .map_err(|source| RecordError::NotWritable {
            dir: dir.to_path_buf(),
            source,
        })
}

/// Bytes available to unprivileged users on the file system holding `dir`
/// (`f_bavail * f_frsize`): what the recorder may use without eating root's reserve.
pub(crate) fn free_bytes(dir: &Path) -> io::Result<u64> {
    let path = CString::new(dir.as_os_str().as_bytes())
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e))?;
    // SAFETY: `statvfs` is plain old data, valid when zeroed; `path` is NUL-terminated and
    // outlives the call, which writes only into `st`.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // The field types differ between 32- and 64-bit targets; `From` covers both.
    #[allow(clippy::useless_conversion)]
    Ok(u64::from(st.f_bavail).saturating_mul(u64::from(st.f_frsize)))
}

/// One of our files in the directory.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub seq: u32,
    pub path: PathBuf,
    pub size: u64,
}

/// Our files of `kind` in `dir`, oldest first: by sequence number, which follows creation
/// order even when the clock in the name does not (see [`super::name`]).
pub(crate) fn list(dir: &Path, kind: FileKind) -> io::Result<Vec<SegmentFile>> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some((seq, k)) = name.to_str().and_then(parse_name) else {
            continue;
        };
        if k != kind {
            continue;
        }
        let Ok(meta) = entry.metadata() else {
            continue; // deleted meanwhile
        };
        if meta.is_file() {
            out.push(SegmentFile {
                seq,
                path: entry.path(),
                size: meta.len(),
            });
        }
    }
    out.sort_by(|a, b| (a.seq, &a.path).cmp(&(b.seq, &b.path)));
    Ok(out)
}

/// The sequence number for the next segment: one above every segment or part in `dir`.
pub(crate) fn next_seq(dir: &Path) -> io::Result<u32> {
    let max = [FileKind::Segment, FileKind::Part]
        .into_iter()
        .map(|k| list(dir, k))
        .collect::<io::Result<Vec<_>>>()?
        .into_iter()
        .flatten()
        .map(|f| f.seq)
        .max();
    Ok(max.map_or(0, |m| m.saturating_add(1)))
}

/// The quota limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Quota {
    pub max_total_bytes: u64,
    pub min_free_bytes: u64,
}

impl Quota {
    /// How many of `oldest_first` to delete so that they plus `current` (the open segment,
    /// never deleted) fit `max_total_bytes` and `free` is at least `min_free_bytes`, assuming
    /// a deleted file frees its size. Deletes everything when that is still not enough.
    pub(super) fn plan(&self, oldest_first: &[SegmentFile], current: u64, free: u64) -> usize {
        let mut total = oldest_first.iter().map(|f| f.size).sum::<u64>() + current;
        let mut free = free;
        let mut n = 0;
        for f in oldest_first {
            if total <= self.max_total_bytes && free >= self.min_free_bytes {
                break;
            }
            total -= f.size;
            free = free.saturating_add(f.size);
            n += 1;
        }
        n
    }

    /// Whether the limits are exceeded now (`total` including the open segment).
    pub(super) fn exceeded(&self, total: u64, free: u64) -> bool {
        total > self.max_total_bytes || free < self.min_free_bytes
    }
}

/// What [`finish_part`] did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Finished {
    /// Renamed to `.flv`, `truncated` bytes of an incomplete last tag cut off first.
    Kept { len: u64, truncated: u64 },
    /// Removed: no complete tag in it.
    Removed,
    /// Left as it is: it does not start with an FLV header we wrote.
    NotFlv,
}

/// Completes a `.part` file: cuts off an incomplete last tag (a crash or a full disk in the
/// middle of a write), fdatasyncs, and renames it to `final_path`. FLV is append-only, so
/// everything before the cut plays.
pub(crate) fn finish_part(part: &Path, final_path: &Path) -> io::Result<Finished> {
    let mut file = OpenOptions::new().read(true).write(true).open(part)?;
    let len = file.metadata()?.len();
    let good = if len < FIRST_TAG {
        Some(len)
    } else {
        complete_len(&mut file, len)?
    };
    let Some(good) = good else {
        return Ok(Finished::NotFlv);
    };
    if good <= FIRST_TAG {
        drop(file);
        fs::remove_file(part)?;
        return Ok(Finished::Removed);
    }
    if good < len {
        file.set_len(good)?;
    }
    file.sync_data()?;
    drop(file);
    fs::rename(part, final_path)?;
    sync_dir(final_path.parent().unwrap_or(Path::new(".")))?;
    Ok(Finished::Kept {
        len: good,
        truncated: len - good,
    })
}

/// Makes renames and deletions in `dir` durable.
pub(crate) fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// The length of the longest prefix of `file` (of length `len`) that ends on a complete tag,
/// or `None` when it does not start with an FLV header.
///
/// Cheap in the common case: when the last PreviousTagSize points at a plausible tag header
/// whose size matches, the file is complete. Otherwise the tags are walked from the start
/// (11-byte header reads and seeks through a buffer, a few ms for an hour of video),
/// stopping at the first tag that is cut short or does not look like a tag (a power cut on
/// ext4 can leave a zero-filled tail).
fn complete_len(file: &mut File, len: u64) -> io::Result<Option<u64>> {
    let mut head = [0u8; 13];
    file.seek(SeekFrom::Start(0))?;
    file.read_exact(&mut head)?;
    let offset = u64::from(u32::from_be_bytes([head[5], head[6], head[7], head[8]]));
    if &head[..3] != b"FLV" || offset < 9 || offset + 4 > len {
        return Ok(None);
    }
    let first = offset + 4;
    if let Some(last_start) = last_tag_start(file, len, first)? {
        if tag_at(file, last_start, len)? == Some(len) {
            return Ok(Some(len));
        }
    }
    let mut r = BufReader::with_capacity(64 << 10, &mut *file);
    r.seek(SeekFrom::Start(first))?;
    let mut pos = first;
    let mut hdr = [0u8; 11];
    let mut prev = [0u8; 4];
    loop {
        if pos + 15 > len {
            return Ok(Some(pos));
        }
        r.read_exact(&mut hdr)?;
        let size = u64::from(u32::from_be_bytes([0, hdr[1], hdr[2], hdr[3]]));
        let end = pos + 11 + size + 4;
        if !matches!(hdr[0], TAG_AUDIO | TAG_VIDEO | TAG_SCRIPT) || end > len {
            return Ok(Some(pos));
        }
        r.seek_relative(size as i64)?;
        r.read_exact(&mut prev)?;
        if u64::from(u32::from_be_bytes(prev)) != 11 + size {
            return Ok(Some(pos));
        }
        pos = end;
    }
}

/// Where the last tag starts according to the final PreviousTagSize, if that is plausible.
fn last_tag_start(file: &mut File, len: u64, first: u64) -> io::Result<Option<u64>> {
    if len < first + 15 {
        return Ok(None);
    }
    let mut prev = [0u8; 4];
    file.seek(SeekFrom::Start(len - 4))?;
    file.read_exact(&mut prev)?;
    let prev = u64::from(u32::from_be_bytes(prev));
    Ok((prev >= 11 && len - 4 - first >= prev).then(|| len - 4 - prev))
}

/// The end (after its PreviousTagSize) of a well-formed tag header at `pos`, if it is one.
fn tag_at(file: &mut File, pos: u64, len: u64) -> io::Result<Option<u64>> {
    let mut hdr = [0u8; 11];
    file.seek(SeekFrom::Start(pos))?;
    file.read_exact(&mut hdr)?;
    let size = u64::from(u32::from_be_bytes([0, hdr[1], hdr[2], hdr[3]]));
    let end = pos + 11 + size + 4;
    Ok((matches!(hdr[0], TAG_AUDIO | TAG_VIDEO | TAG_SCRIPT) && end <= len).then_some(end))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::flv::FlvFileWriter;

    fn seg(seq: u32, size: u64) -> SegmentFile {
        SegmentFile {
            seq,
            path: PathBuf::from(format!("{seq}")),
            size,
        }
    }

    #[test]
    fn quota_plan_deletes_oldest_until_total_fits() {
        let q = Quota {
            max_total_bytes: 100,
            min_free_bytes: 0,
        };
        let files = [seg(1, 40), seg(2, 40), seg(3, 40)];
        assert_eq!(q.plan(&files, 0, u64::MAX), 1);
        assert_eq!(q.plan(&files, 30, u64::MAX), 2);
        assert_eq!(q.plan(&files[..2], 0, u64::MAX), 0);
        // The open segment alone is over: everything else goes, it stays.
        assert_eq!(q.plan(&files, 500, u64::MAX), 3);
    }

    #[test]
    fn quota_plan_deletes_oldest_until_enough_is_free() {
        let q = Quota {
            max_total_bytes: u64::MAX,
            min_free_bytes: 100,
        };
        let files = [seg(1, 30), seg(2, 30), seg(3, 30)];
        assert_eq!(q.plan(&files, 0, 100), 0);
        assert_eq!(q.plan(&files, 0, 50), 2);
        assert_eq!(q.plan(&files, 0, 0), 3);
        assert!(q.exceeded(0, 99));
        assert!(!q.exceeded(u64::MAX, 100));
    }

    fn flv_with_tags(n: usize) -> Vec<u8> {
        let mut w = FlvFileWriter::new(Vec::new());
        w.header(true, true).unwrap();
        for i in 0..n {
            w.tag(TAG_VIDEO, i as u32 * 40, &[0x17, 1, 0, 0, 0, i as u8])
                .unwrap();
        }
        w.into_inner()
    }

    fn finish(bytes: &[u8]) -> (Finished, Option<Vec<u8>>) {
        let dir = tempfile::tempdir().unwrap();
        let (part, done) = (dir.path().join("a.flv.part"), dir.path().join("a.flv"));
        fs::write(&part, bytes).unwrap();
        let r = finish_part(&part, &done).unwrap();
        if r == Finished::NotFlv {
            assert!(part.exists());
        } else {
            assert!(!part.exists());
        }
        (r, fs::read(&done).ok())
    }

    #[test]
    fn a_complete_part_is_renamed_unchanged() {
        let full = flv_with_tags(5);
        let (r, out) = finish(&full);
        assert_eq!(
            r,
            Finished::Kept {
                len: full.len() as u64,
                truncated: 0
            }
        );
        assert_eq!(out.unwrap(), full);
    }

    #[test]
    fn a_cut_last_tag_is_truncated_at_every_cut_point() {
        let full = flv_with_tags(5);
        let four = flv_with_tags(4).len();
        for cut in four + 1..full.len() {
            let (r, out) = finish(&full[..cut]);
            assert_eq!(
                r,
                Finished::Kept {
                    len: four as u64,
                    truncated: (cut - four) as u64
                },
                "cut at {cut}"
            );
            assert_eq!(out.unwrap(), full[..four]);
        }
    }

    #[test]
    fn a_zero_filled_tail_is_truncated() {
        let mut bytes = flv_with_tags(3);
        let good = bytes.len();
        bytes.extend_from_slice(&[0u8; 4096]);
        let (r, out) = finish(&bytes);
        assert!(matches!(r, Finished::Kept { len, .. } if len == good as u64));
        assert_eq!(out.unwrap().len(), good);
    }

    #[test]
    fn a_part_without_a_complete_tag_is_removed_and_a_foreign_one_left_alone() {
        let full = flv_with_tags(1);
        for cut in [0, 5, 13, 20, full.len() - 1] {
            assert_eq!(finish(&full[..cut]).0, Finished::Removed, "cut at {cut}");
        }
        assert_eq!(finish(b"not an flv file at all").0, Finished::NotFlv);
    }

    #[test]
    fn listing_orders_by_sequence_and_ignores_foreign_files() {
        let dir = tempfile::tempdir().unwrap();
        for name in [
            "polypush-20240101T000000Z-0010.flv",
            // The clock was wrong when this one was written, later than seq 10.
            "polypush-19700101T000100Z-0011.flv",
            "polypush-20240101T000000Z-0009.flv",
            "polypush-20240101T000000Z-0012.flv.part",
            "lesson.flv",
        ] {
            fs::write(dir.path().join(name), b"x").unwrap();
        }
        let segs: Vec<u32> = list(dir.path(), FileKind::Segment)
            .unwrap()
            .iter()
            .map(|f| f.seq)
            .collect();
        assert_eq!(segs, [9, 10, 11]);
        assert_eq!(next_seq(dir.path()).unwrap(), 13);
        assert_eq!(
            next_seq(&dir.path().join("..").join("nonexistent")).ok(),
            None
        );
    }

    #[test]
    fn prepare_dir_creates_with_mode_0750_and_reports_what_to_do() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let rec = dir.path().join("a/recordings");
        prepare_dir(&rec).unwrap();
        let mode = fs::metadata(&rec).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode & !0o750, 0, "{mode:o}");
        assert_eq!(fs::read_dir(&rec).unwrap().count(), 0, "probe removed");

        let file = dir.path().join("file");
        fs::write(&file, b"").unwrap();
        let err = prepare_dir(&file).unwrap_err();
        assert!(matches!(err, RecordError::NotADirectory { .. }), "{err}");
        let err = prepare_dir(&file.join("sub")).unwrap_err().to_string();
        assert!(
            err.contains("file/sub") && err.contains("StateDirectory="),
            "{err}"
        );
    }

    #[test]
    fn free_bytes_of_a_real_directory() {
        let dir = tempfile::tempdir().unwrap();
        assert!(free_bytes(dir.path()).unwrap() > 0);
        assert!(free_bytes(&dir.path().join("missing")).is_err());
    }
}
