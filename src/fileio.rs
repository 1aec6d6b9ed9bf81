//! File I/O policy shared by every command: memory-mapped inputs, atomic
//! outputs, and cleanup on signals.
//!
//! * Inputs are mapped read-only and read front to back; pages already
//!   consumed are handed back to the kernel so resident memory does not grow
//!   with model size.
//! * Outputs are written to a temporary file in the destination directory and
//!   renamed into place only when complete. A failed run (error, full disk,
//!   Ctrl-C, SIGTERM, an input truncated under us) leaves nothing at the
//!   destination.
//! * An output path that names one of the inputs is refused.

use std::ffi::CString;
use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::error::{Error, IoContext, Result};

/// Maps a whole file read-only.
pub fn map_file(file: &File, path: &Path) -> Result<memmap2::Mmap> {
    let len = file.metadata().at(path, "stat")?.len();
    if len > isize::MAX as u64 {
        return Err(Error::input(path, format!("file of {len} bytes is too large to map")));
    }
    // SAFETY: the map is read-only and private to this process. Another
    // process may still modify or truncate the file while it is mapped; a
    // truncation raises SIGBUS on access, which `install_signal_handlers`
    // turns into a clean error exit (temporary outputs removed) instead of a
    // crash. Content changes can only make the output wrong, never unsound,
    // because all parsing re-validates what it reads.
    let map = unsafe { memmap2::Mmap::map(file) }.at(path, "map")?;
    let _ = map.advise(memmap2::Advice::Sequential);
    Ok(map)
}

/// Tells the kernel we are done with `len` bytes of `map` from `start` (whole
/// pages inside the range only), so they stop counting toward our resident set.
pub fn release_pages(map: &memmap2::Mmap, start: usize, len: usize) {
    const PAGE: usize = 4096;
    let begin = start.div_ceil(PAGE) * PAGE;
    let end = (start + len) / PAGE * PAGE;
    if end > begin && end <= map.len() {
        // SAFETY: DONTNEED on a read-only private file mapping only drops
        // clean pages; later reads fault them in again from the file.
        let _ = unsafe { map.unchecked_advise_range(memmap2::UncheckedAdvice::DontNeed, begin, end - begin) };
    }
}

/// True when `a` and `b` name the same existing file.
pub fn same_file(a: &Path, b: &Path) -> bool {
    match (fs::metadata(a), fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

/// Refuses an output path that is one of the inputs (or inside an input directory
/// when the input is a directory and the output a file in it is harmless, so only
/// exact matches are refused).
pub fn check_not_input(output: &Path, inputs: &[&Path]) -> Result<()> {
    for input in inputs {
        if same_file(output, input) {
            return Err(Error::usage(format!("refusing to write the output onto the input file {}", input.display())));
        }
    }
    Ok(())
}

// ---------------------------------------------------------------------------
// Temporary-file registry, for cleanup from signal handlers.

static TEMP_PATHS: Mutex<Vec<(u64, CString)>> = Mutex::new(Vec::new());
static NEXT_ID: AtomicU64 = AtomicU64::new(1);

fn register_temp(path: &Path) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    if let Ok(c) = CString::new(path.as_os_str().as_bytes()) {
        TEMP_PATHS.lock().unwrap_or_else(|e| e.into_inner()).push((id, c));
    }
    id
}

fn unregister_temp(id: u64) {
    TEMP_PATHS.lock().unwrap_or_else(|e| e.into_inner()).retain(|(i, _)| *i != id);
}

/// Removes every registered temporary file. Called on fatal signals.
fn remove_all_temps() {
    // try_lock: never block inside a signal handler.
    if let Ok(paths) = TEMP_PATHS.try_lock() {
        for (_, p) in paths.iter() {
            // SAFETY: unlink is async-signal-safe and `p` is a valid C string.
            unsafe { libc::unlink(p.as_ptr()) };
        }
    }
}

extern "C" fn on_sigbus(_sig: libc::c_int) {
    const MSG: &[u8] =
        b"ggufkit: error: an input file changed (was truncated?) while being read; no output was written\n";
    remove_all_temps();
    // SAFETY: write and _exit are async-signal-safe.
    unsafe {
        libc::write(2, MSG.as_ptr().cast(), MSG.len());
        libc::_exit(2);
    }
}

/// Installs the process-wide handlers: Ctrl-C / SIGTERM / SIGHUP remove
/// temporary outputs and exit with 130; SIGBUS (an input file truncated while
/// mapped) does the same with exit code 2; SIGXFSZ is ignored so that
/// exceeding a file-size limit is a write error rather than a crash.
pub fn install_signal_handlers() {
    let _ = ctrlc::set_handler(|| {
        remove_all_temps();
        remove_temp_dirs();
        eprintln!("ggufkit: interrupted; no output was written");
        std::process::exit(130);
    });
    // SAFETY: installing async-signal-safe handlers and ignoring SIGXFSZ.
    unsafe {
        libc::signal(libc::SIGXFSZ, libc::SIG_IGN);
        let mut sa: libc::sigaction = std::mem::zeroed();
        sa.sa_sigaction = on_sigbus as extern "C" fn(libc::c_int) as usize;
        libc::sigemptyset(&mut sa.sa_mask);
        libc::sigaction(libc::SIGBUS, &sa, std::ptr::null_mut());
    }
}

// ---------------------------------------------------------------------------

/// A file written under a temporary name beside its destination and renamed
/// into place by [`AtomicFile::commit`]. Dropped without commit, the
/// temporary file is removed.
pub struct AtomicFile {
    dest: PathBuf,
    tmp: PathBuf,
    out: Option<BufWriter<File>>,
    id: u64,
    written: u64,
    /// Bytes handed to the kernel's writeback so far (see [`WRITEBACK_WINDOW`]).
    writeback: u64,
}

/// The output is handed to the kernel's writeback in windows of this size
/// while it is being written, so that the disk works while the CPU
/// quantizes, dirty pages stay bounded, and the final `fsync` before the
/// rename has little left to wait for.
const WRITEBACK_WINDOW: u64 = 32 << 20;

impl AtomicFile {
    /// Creates the temporary file for `dest`. `inputs` are the files this run
    /// reads; writing onto any of them is refused.
    pub fn create(dest: impl AsRef<Path>, inputs: &[&Path]) -> Result<AtomicFile> {
        let dest = dest.as_ref().to_path_buf();
        check_not_input(&dest, inputs)?;
        if dest.is_dir() {
            return Err(Error::usage(format!("output {} is a directory", dest.display())));
        }
        let dir = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        if !dir.is_dir() {
            return Err(Error::io(&dir, "open output directory", io::Error::from(io::ErrorKind::NotFound)));
        }
        let fname = dest.file_name().ok_or_else(|| Error::usage(format!("bad output path {}", dest.display())))?;
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let tmp = dir.join(format!(
            ".{}.{}-{}.tmp",
            fname.to_string_lossy(),
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        let id = register_temp(&tmp);
        let file = match OpenOptions::new().read(true).write(true).create_new(true).open(&tmp) {
            Ok(f) => f,
            Err(e) => {
                unregister_temp(id);
                return Err(Error::io(&tmp, "create temporary output", e));
            }
        };
        Ok(AtomicFile { dest, tmp, out: Some(BufWriter::with_capacity(1 << 20, file)), id, written: 0, writeback: 0 })
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    /// Bytes written so far.
    pub fn written(&self) -> u64 {
        self.written
    }

    /// Writes `buf` at byte `offset` of the file, for writers that fill a file
    /// out of order (the layout known up front). Anything written through
    /// [`Write`] is flushed first; a region never written reads as zeros.
    pub fn write_all_at(&mut self, buf: &[u8], offset: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let out = self.out.as_mut().ok_or_else(|| Error::Other("write after commit".into()))?;
        out.flush().at(&self.dest, "write")?;
        out.get_ref().write_all_at(buf, offset).at(&self.dest, "write")?;
        self.written += buf.len() as u64;
        if self.written - self.writeback >= WRITEBACK_WINDOW {
            self.start_writeback_all().at(&self.dest, "write")?;
        }
        Ok(())
    }

    /// Reads back bytes already written (from the page cache, as a rule).
    pub fn read_exact_at(&mut self, buf: &mut [u8], offset: u64) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let out = self.out.as_mut().ok_or_else(|| Error::Other("read after commit".into()))?;
        out.flush().at(&self.dest, "write")?;
        out.get_ref().read_exact_at(buf, offset).at(&self.dest, "read back")
    }

    /// The writeback window of positioned writes: the dirty pages are not in
    /// one range, so the whole file's are handed to the kernel, after waiting
    /// for the previous window's (dirty memory stays bounded by a window or
    /// two, and the final sync has little left to do).
    fn start_writeback_all(&mut self) -> io::Result<()> {
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::io::AsRawFd;
            let out = self.out.as_mut().expect("not committed");
            let fd = out.get_ref().as_raw_fd();
            // Advisory, as in start_writeback; offset 0 and length 0 mean the whole file.
            // SAFETY: plain syscalls on an open file descriptor we own.
            unsafe {
                libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WAIT_BEFORE);
                libc::sync_file_range(fd, 0, 0, libc::SYNC_FILE_RANGE_WRITE);
            }
        }
        self.writeback = self.written;
        Ok(())
    }

    /// Starts writing back the bytes written since the last call, and waits
    /// for the window before them (Linux; elsewhere the final sync does it all).
    fn start_writeback(&mut self) -> io::Result<()> {
        let out = self.out.as_mut().expect("not committed");
        out.flush()?;
        #[cfg(target_os = "linux")]
        {
            use std::os::unix::io::AsRawFd;
            let fd = out.get_ref().as_raw_fd();
            let (start, end) = (self.writeback, self.written);
            // Advisory: errors (e.g. a filesystem without support) are ignored;
            // the sync at commit reports real write errors.
            // SAFETY: plain syscalls on an open file descriptor we own.
            unsafe {
                if start > 0 {
                    let prev = start.saturating_sub(WRITEBACK_WINDOW);
                    libc::sync_file_range(
                        fd,
                        prev as libc::off64_t,
                        (start - prev) as libc::off64_t,
                        libc::SYNC_FILE_RANGE_WAIT_BEFORE,
                    );
                }
                libc::sync_file_range(
                    fd,
                    start as libc::off64_t,
                    (end - start) as libc::off64_t,
                    libc::SYNC_FILE_RANGE_WRITE,
                );
            }
        }
        self.writeback = self.written;
        Ok(())
    }

    /// Flushes, syncs and renames the file into place.
    pub fn commit(mut self) -> Result<()> {
        let out = self.out.take().expect("not yet committed");
        let file = out.into_inner().map_err(|e| Error::io(&self.dest, "write", e.into_error()))?;
        file.sync_all().at(&self.dest, "sync")?;
        drop(file);
        fs::rename(&self.tmp, &self.dest).at(&self.dest, "rename into place")?;
        unregister_temp(self.id);
        if let Some(dir) = self.dest.parent().filter(|p| !p.as_os_str().is_empty()) {
            if let Ok(d) = File::open(dir) {
                let _ = d.sync_all();
            }
        }
        Ok(())
    }
}

impl Write for AtomicFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.out.as_mut().expect("not committed").write(buf)?;
        self.written += n as u64;
        if self.written - self.writeback >= WRITEBACK_WINDOW {
            self.start_writeback()?;
        }
        Ok(n)
    }
    fn flush(&mut self) -> io::Result<()> {
        self.out.as_mut().expect("not committed").flush()
    }
}

impl Drop for AtomicFile {
    fn drop(&mut self) {
        if self.out.is_some() {
            self.out = None;
            let _ = fs::remove_file(&self.tmp);
            unregister_temp(self.id);
        }
    }
}

/// A directory built under a temporary name and renamed into place on commit
/// (used for merged Hugging Face directories and release directories).
pub struct AtomicDir {
    dest: PathBuf,
    tmp: PathBuf,
    id: u64,
    committed: bool,
}

impl AtomicDir {
    /// Starts building `dest`. An existing non-empty `dest` is refused unless
    /// `force`, in which case it is replaced on commit.
    pub fn create(dest: impl AsRef<Path>, force: bool) -> Result<AtomicDir> {
        let dest = dest.as_ref().to_path_buf();
        if dest.exists() {
            if !dest.is_dir() {
                return Err(Error::usage(format!("output {} exists and is not a directory", dest.display())));
            }
            let non_empty = fs::read_dir(&dest).at(&dest, "read directory")?.next().is_some();
            if non_empty && !force {
                return Err(Error::usage(format!(
                    "output directory {} exists and is not empty (use --force to replace it)",
                    dest.display()
                )));
            }
        }
        let parent = match dest.parent() {
            Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
            _ => PathBuf::from("."),
        };
        fs::create_dir_all(&parent).at(&parent, "create directory")?;
        let name = dest.file_name().ok_or_else(|| Error::usage(format!("bad output path {}", dest.display())))?;
        let tmp = parent.join(format!(".{}.{}.tmpdir", name.to_string_lossy(), std::process::id()));
        if tmp.exists() {
            fs::remove_dir_all(&tmp).at(&tmp, "remove stale temporary directory")?;
        }
        fs::create_dir(&tmp).at(&tmp, "create temporary directory")?;
        let id = register_temp_dir(&tmp);
        Ok(AtomicDir { dest, tmp, id, committed: false })
    }

    /// The temporary directory to write into.
    pub fn path(&self) -> &Path {
        &self.tmp
    }

    pub fn dest(&self) -> &Path {
        &self.dest
    }

    pub fn commit(mut self) -> Result<()> {
        if self.dest.exists() {
            fs::remove_dir_all(&self.dest).at(&self.dest, "replace existing directory")?;
        }
        fs::rename(&self.tmp, &self.dest).at(&self.dest, "rename into place")?;
        unregister_temp_dir(self.id);
        self.committed = true;
        Ok(())
    }
}

impl Drop for AtomicDir {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.tmp);
            unregister_temp_dir(self.id);
        }
    }
}

static TEMP_DIRS: Mutex<Vec<(u64, PathBuf)>> = Mutex::new(Vec::new());

fn register_temp_dir(p: &Path) -> u64 {
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    TEMP_DIRS.lock().unwrap_or_else(|e| e.into_inner()).push((id, p.to_path_buf()));
    id
}

fn unregister_temp_dir(id: u64) {
    TEMP_DIRS.lock().unwrap_or_else(|e| e.into_inner()).retain(|(i, _)| *i != id);
}

/// Removes temporary directories (not signal-safe: used from the Ctrl-C thread).
pub fn remove_temp_dirs() {
    if let Ok(dirs) = TEMP_DIRS.try_lock() {
        for (_, d) in dirs.iter() {
            let _ = fs::remove_dir_all(d);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn atomic_file_commit_and_abort() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        {
            let mut f = AtomicFile::create(&dest, &[]).unwrap();
            f.write_all(b"partial").unwrap();
            // dropped without commit
        }
        assert!(!dest.exists());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0, "temporary file left behind");
        let mut f = AtomicFile::create(&dest, &[]).unwrap();
        f.write_all(b"done").unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"done");
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn positioned_writes() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("out.bin");
        let mut f = AtomicFile::create(&dest, &[]).unwrap();
        f.write_all(b"head").unwrap();
        f.write_all_at(b"tail", 8).unwrap();
        f.write_all_at(b"HE", 0).unwrap();
        f.commit().unwrap();
        assert_eq!(fs::read(&dest).unwrap(), b"HEad\0\0\0\0tail");
    }

    #[test]
    fn refuses_to_overwrite_input() {
        let dir = tempfile::tempdir().unwrap();
        let input = dir.path().join("in.gguf");
        fs::write(&input, b"x").unwrap();
        let alias = dir.path().join(".").join("in.gguf");
        let e = AtomicFile::create(&alias, &[&input]).err().unwrap();
        assert!(e.to_string().contains("onto the input"), "{e}");
        assert_eq!(fs::read(&input).unwrap(), b"x");
    }

    #[test]
    fn atomic_dir() {
        let dir = tempfile::tempdir().unwrap();
        let dest = dir.path().join("rel");
        {
            let d = AtomicDir::create(&dest, false).unwrap();
            fs::write(d.path().join("a"), b"1").unwrap();
        }
        assert!(!dest.exists());
        let d = AtomicDir::create(&dest, false).unwrap();
        fs::write(d.path().join("a"), b"1").unwrap();
        d.commit().unwrap();
        assert!(dest.join("a").exists());
        assert!(AtomicDir::create(&dest, false).is_err());
        let d = AtomicDir::create(&dest, true).unwrap();
        d.commit().unwrap();
        assert!(!dest.join("a").exists());
    }
}
