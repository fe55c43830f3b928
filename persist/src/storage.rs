//! The log's file I/O, behind two small traits ([`Storage`] for the directory,
//! [`SegmentFile`] for one segment) so tests can inject failures ([`crate::fault`]), and
//! their glommio implementation ([`DmaStorage`]).
//!
//! [`DmaStorage`] opens segments as glommio `DmaFile`s (O_DIRECT through io_uring). It does
//! not use `DmaStreamWriter`: its `sync()` rewrites the last partial 4 KiB block on every
//! commit, and `close()` on a writer whose sync failed panics (ARCHITECTURE.md, known
//! pitfalls). The log writes whole blocks at block-aligned offsets itself
//! ([`crate::format::layout_commit`]). When a filesystem refuses O_DIRECT (EINVAL), it falls
//! back to glommio's buffered files for that and every later segment; the fallback is
//! visible in `WalStats::direct_io` and in the recovery report. Durability is the same
//! (fdatasync), only the page cache is in the way.
//!
//! Not here: deciding what to write. Errors are plain `io::Error`s; the log decides which
//! poison it.

use crate::format::BLOCK_BYTES;
use glommio::io::{BufferedFile, DmaBuffer, DmaFile, OpenOptions};
use std::{cell::Cell, io, path::Path};

/// A writable buffer handed to [`SegmentFile::write_at`] (a `DmaBuffer` for direct I/O).
pub trait IoBuf {
    fn bytes(&self) -> &[u8];
    fn bytes_mut(&mut self) -> &mut [u8];
}

/// A directory of segment files.
// The log is `!Send` by design (one per shard, on that shard's executor), so the futures
// these return need no `Send` bound.
#[allow(async_fn_in_trait)]
pub trait Storage: 'static {
    type File: SegmentFile;
    /// Creates `dir` and missing parents.
    async fn create_dir_all(&self, dir: &Path) -> io::Result<()>;
    /// Names of the entries of `dir`.
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>>;
    /// Creates a new, empty file for reading and writing; fails if it exists.
    async fn create(&self, path: &Path) -> io::Result<Self::File>;
    /// Opens an existing file for reading and writing.
    async fn open(&self, path: &Path) -> io::Result<Self::File>;
    /// Removes a file (by name; it need not be open).
    async fn remove(&self, path: &Path) -> io::Result<()>;
    /// Makes the directory's entries durable (fsync of the directory): after it, files
    /// created or removed before it stay so across a machine crash.
    async fn sync_dir(&self, dir: &Path) -> io::Result<()>;
    /// Whether files are opened with O_DIRECT.
    fn direct_io(&self) -> bool;
    /// The whole content of a small file (the start file), `None` if it does not exist.
    async fn read_small(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        match std::fs::read(path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }
    /// Replaces `dir/name` with `bytes`, atomically and durably: a temporary file,
    /// fdatasync, rename over `name`, directory fsync. A crash leaves the old or the new
    /// content, never a mix.
    async fn replace_small(&self, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()>;
}

/// One segment file.
#[allow(async_fn_in_trait)]
pub trait SegmentFile: 'static {
    type Buf: IoBuf;
    /// A buffer of `len` bytes (a multiple of [`BLOCK_BYTES`]) suitable for `write_at`.
    /// Its contents are unspecified: the caller fills every byte.
    fn alloc(&self, len: usize) -> Self::Buf;
    /// Writes all of `buf` at `pos` (both multiples of [`BLOCK_BYTES`]); returns the bytes
    /// written, which may be fewer (e.g. at ENOSPC).
    async fn write_at(&self, buf: Self::Buf, pos: u64) -> io::Result<usize>;
    /// Reads up to `len` bytes at `pos` (any alignment); fewer at the end of the file.
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>>;
    /// fdatasync: written data, and the size it implies, reach stable storage.
    async fn sync(&self) -> io::Result<()>;
    /// The file's size in bytes.
    async fn size(&self) -> io::Result<u64>;
    /// Sets the file's size.
    async fn truncate(&self, len: u64) -> io::Result<()>;
    /// Closes the file. IMPORTANT: the log never calls this on a file whose write or sync
    /// failed; it drops it instead.
    async fn close(self) -> io::Result<()>;
}

/// A DMA buffer, or a heap buffer for the buffered fallback.
pub enum SegmentBuf {
    Dma(DmaBuffer),
    Heap(Vec<u8>),
}

impl IoBuf for SegmentBuf {
    fn bytes(&self) -> &[u8] {
        match self {
            SegmentBuf::Dma(b) => b.as_bytes(),
            SegmentBuf::Heap(v) => v,
        }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            SegmentBuf::Dma(b) => b.as_bytes_mut(),
            SegmentBuf::Heap(v) => v,
        }
    }
}

/// Segments as glommio files: direct I/O when the filesystem allows it, buffered otherwise.
#[derive(Debug)]
pub struct DmaStorage {
    direct: Cell<bool>,
}

impl Default for DmaStorage {
    fn default() -> Self {
        DmaStorage {
            direct: Cell::new(true),
        }
    }
}

impl DmaStorage {
    /// O_DIRECT files, falling back to buffered ones where the filesystem refuses O_DIRECT.
    pub fn new() -> DmaStorage {
        DmaStorage::default()
    }

    /// Buffered files only (the fallback path, forced; used by tests to cover it).
    pub fn buffered() -> DmaStorage {
        DmaStorage {
            direct: Cell::new(false),
        }
    }

    async fn open_opts(&self, path: &Path, create: bool) -> io::Result<GlommioSegment> {
        if self.direct.get() {
            if let Some(dir) = path.parent() {
                prime_iopoll_probe(dir, path).await?;
            }
        }
        let mut opts = OpenOptions::new();
        opts.read(true).write(true);
        if create {
            opts.create_new(true);
        }
        if self.direct.get() {
            match opts.dma_open(path).await {
                Ok(f) => {
                    if !BLOCK_BYTES.is_multiple_of(f.alignment()) {
                        return Err(io::Error::new(
                            io::ErrorKind::Unsupported,
                            format!(
                                "device block of {} bytes does not divide the log's {BLOCK_BYTES}-byte block",
                                f.alignment()
                            ),
                        ));
                    }
                    return Ok(GlommioSegment::Direct(f));
                }
                Err(e) => {
                    let e = io::Error::from(e);
                    if e.raw_os_error() != Some(EINVAL) {
                        return Err(e);
                    }
                    // O_DIRECT refused by this filesystem: fall back for good. A file
                    // created by the failed attempt is reopened below.
                    self.direct.set(false);
                    if create && path.exists() {
                        opts.create_new(false);
                    }
                }
            }
        }
        Ok(GlommioSegment::Buffered(opts.buffered_open(path).await?))
    }
}

const EINVAL: i32 = 22;

/// Name of the scratch file [`prime_iopoll_probe`] creates and removes.
const PROBE_FILE_NAME: &str = ".iopoll-probe";

thread_local! {
    /// Devices (st_dev) this thread has primed the probe for.
    static PRIMED: std::cell::RefCell<Vec<u64>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// IMPORTANT: glommio 0.9 decides once per thread and device whether DMA files go to its
/// IOPOLL ring, by reading the first block of the first `DmaFile` opened there. If that
/// file is empty the read "succeeds" without touching the device, polling is wrongly
/// enabled, and every later read of a non-empty file fails with EOPNOTSUPP (os error 95;
/// glommio issue #605; measured on these machines' virtio disk). So before the first DMA
/// open on a device, this opens a one-block scratch file there, letting the probe see real
/// data. Blocking calls, once per thread and device.
///
/// A full (or read-only) disk cannot take the scratch file. Then an existing `target` of at
/// least one block serves as the probe itself — it is the DMA file about to be opened — so a
/// server can restart on a full disk and serve what it stored.
async fn prime_iopoll_probe(dir: &Path, target: &Path) -> io::Result<()> {
    use std::os::unix::fs::MetadataExt;
    let dev = std::fs::metadata(dir)?.dev();
    if PRIMED.with(|p| p.borrow().contains(&dev)) {
        return Ok(());
    }
    let probe = dir.join(PROBE_FILE_NAME);
    if let Err(e) = std::fs::write(&probe, vec![0u8; BLOCK_BYTES as usize]) {
        let _ = std::fs::remove_file(&probe);
        let target_has_data = std::fs::metadata(target).is_ok_and(|m| m.len() >= BLOCK_BYTES);
        if !target_has_data {
            return Err(e);
        }
        PRIMED.with(|p| p.borrow_mut().push(dev));
        return Ok(());
    }
    let opened = OpenOptions::new().read(true).dma_open(&probe).await;
    let _ = std::fs::remove_file(&probe);
    match opened {
        Ok(f) => {
            let _ = f.close().await;
        }
        // O_DIRECT refused: the caller falls back to buffered files.
        Err(e) => {
            let e = io::Error::from(e);
            if e.raw_os_error() != Some(EINVAL) {
                return Err(e);
            }
        }
    }
    PRIMED.with(|p| p.borrow_mut().push(dev));
    Ok(())
}

impl Storage for DmaStorage {
    type File = GlommioSegment;

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        // Once, at open: a blocking call is acceptable there.
        std::fs::create_dir_all(dir)
    }

    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        // Once, at open.
        let mut names = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            if let Ok(name) = entry?.file_name().into_string() {
                names.push(name);
            }
        }
        Ok(names)
    }

    async fn create(&self, path: &Path) -> io::Result<GlommioSegment> {
        self.open_opts(path, true).await
    }

    async fn open(&self, path: &Path) -> io::Result<GlommioSegment> {
        self.open_opts(path, false).await
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        glommio::io::remove(path).await.map_err(io::Error::from)
    }

    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        // IMPORTANT: glommio 0.9's `Directory::open` opens a relative path against dirfd -1
        // (EBADF, glommio #637). `Wal::open` already passes absolute paths; this keeps any
        // other caller safe too.
        let dir = std::path::absolute(dir)?;
        let d = glommio::io::Directory::open(&dir).await?;
        let r = d.sync().await;
        let c = d.close().await;
        r?;
        c.map_err(io::Error::from)
    }

    fn direct_io(&self) -> bool {
        self.direct.get()
    }

    async fn replace_small(&self, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
        let dir = std::path::absolute(dir)?;
        let tmp = dir.join(format!("{name}.tmp"));
        let _ = std::fs::remove_file(&tmp);
        let f = BufferedFile::create(&tmp).await?;
        let written = f.write_at(bytes.to_vec(), 0).await;
        let synced = match written {
            Ok(n) if n == bytes.len() => f.fdatasync().await.map_err(io::Error::from),
            Ok(n) => Err(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("short write: {n} of {} bytes", bytes.len()),
            )),
            Err(e) => Err(e.into()),
        };
        // IMPORTANT: a file whose write or sync failed is dropped, not closed (see above).
        synced?;
        f.close().await?;
        glommio::io::rename(&tmp, dir.join(name)).await?;
        self.sync_dir(&dir).await
    }
}

/// A segment file opened by [`DmaStorage`].
#[derive(Debug)]
pub enum GlommioSegment {
    Direct(DmaFile),
    Buffered(BufferedFile),
}

impl SegmentFile for GlommioSegment {
    type Buf = SegmentBuf;

    fn alloc(&self, len: usize) -> SegmentBuf {
        debug_assert_eq!(len as u64 % BLOCK_BYTES, 0);
        match self {
            GlommioSegment::Direct(f) => SegmentBuf::Dma(f.alloc_dma_buffer(len)),
            GlommioSegment::Buffered(_) => SegmentBuf::Heap(vec![0; len]),
        }
    }

    async fn write_at(&self, buf: SegmentBuf, pos: u64) -> io::Result<usize> {
        debug_assert_eq!(pos % BLOCK_BYTES, 0);
        match (self, buf) {
            (GlommioSegment::Direct(f), SegmentBuf::Dma(b)) => Ok(f.write_at(b, pos).await?),
            (GlommioSegment::Direct(f), SegmentBuf::Heap(v)) => {
                let mut b = f.alloc_dma_buffer(v.len());
                b.as_bytes_mut().copy_from_slice(&v);
                Ok(f.write_at(b, pos).await?)
            }
            (GlommioSegment::Buffered(f), buf) => Ok(f.write_at(buf.bytes().to_vec(), pos).await?),
        }
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        Ok(match self {
            GlommioSegment::Direct(f) => f.read_at(pos, len).await?.to_vec(),
            GlommioSegment::Buffered(f) => f.read_at(pos, len).await?.to_vec(),
        })
    }

    async fn sync(&self) -> io::Result<()> {
        match self {
            GlommioSegment::Direct(f) => f.fdatasync().await?,
            GlommioSegment::Buffered(f) => f.fdatasync().await?,
        }
        Ok(())
    }

    async fn size(&self) -> io::Result<u64> {
        Ok(match self {
            GlommioSegment::Direct(f) => f.file_size().await?,
            GlommioSegment::Buffered(f) => f.file_size().await?,
        })
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        match self {
            GlommioSegment::Direct(f) => f.truncate(len).await?,
            GlommioSegment::Buffered(f) => f.truncate(len).await?,
        }
        Ok(())
    }

    async fn close(self) -> io::Result<()> {
        match self {
            GlommioSegment::Direct(f) => f.close().await?,
            GlommioSegment::Buffered(f) => f.close().await?,
        }
        Ok(())
    }
}
