//! A [`Storage`] wrapper that injects failures, for tests: fail the Nth write, sync or
//! remove, tear the failing write (half of it reaches the file), or report the disk full
//! once a byte budget is spent.
//!
//! It wraps a real storage (normally [`DmaStorage`]) so the files left behind are real and a
//! test can reopen them with the plain storage and check what recovery finds. Counting
//! starts at 1 and covers every call made through the wrapper, segment headers included.
//! Not for production: nothing here is tuned or bounded beyond what tests need.

use crate::error::ENOSPC;
use crate::format::BLOCK_BYTES;
use crate::storage::{DmaStorage, IoBuf, SegmentFile, Storage};
use std::{cell::Cell, io, path::Path, rc::Rc};

/// What to break, shared between the test and the storage it handed to the log.
#[derive(Debug, Default)]
pub struct FaultPlan {
    /// Fail the Nth `write_at` (1-based) with EIO.
    pub fail_write: Cell<Option<u64>>,
    /// Fail the Nth `sync` (1-based) with EIO.
    pub fail_sync: Cell<Option<u64>>,
    /// Fail the Nth `remove` (1-based) with EIO, leaving the file in place.
    pub fail_remove: Cell<Option<u64>>,
    /// Make a failing write tear: the first half of its blocks reach the file first.
    pub torn: Cell<bool>,
    /// Bytes the "disk" still takes; a write past it stores what fits (whole blocks) and
    /// fails with ENOSPC. `None`: unlimited.
    pub capacity_bytes: Cell<Option<u64>>,
    /// Calls seen so far.
    pub writes: Cell<u64>,
    pub syncs: Cell<u64>,
    pub removes: Cell<u64>,
}

impl FaultPlan {
    pub fn new() -> Rc<FaultPlan> {
        Rc::new(FaultPlan::default())
    }
}

fn bump(c: &Cell<u64>) -> u64 {
    c.set(c.get() + 1);
    c.get()
}

fn eio(what: &str) -> io::Error {
    io::Error::other(format!("injected failure: {what}"))
}

/// The failing storage.
pub struct FaultStorage<S: Storage = DmaStorage> {
    inner: S,
    plan: Rc<FaultPlan>,
}

impl<S: Storage> FaultStorage<S> {
    pub fn new(inner: S, plan: Rc<FaultPlan>) -> Self {
        FaultStorage { inner, plan }
    }
}

/// A segment file of [`FaultStorage`].
pub struct FaultFile<F: SegmentFile> {
    inner: F,
    plan: Rc<FaultPlan>,
}

impl<S: Storage> Storage for FaultStorage<S> {
    type File = FaultFile<S::File>;

    async fn create_dir_all(&self, dir: &Path) -> io::Result<()> {
        self.inner.create_dir_all(dir).await
    }
    async fn list(&self, dir: &Path) -> io::Result<Vec<String>> {
        self.inner.list(dir).await
    }
    async fn create(&self, path: &Path) -> io::Result<Self::File> {
        Ok(FaultFile {
            inner: self.inner.create(path).await?,
            plan: self.plan.clone(),
        })
    }
    async fn open(&self, path: &Path) -> io::Result<Self::File> {
        Ok(FaultFile {
            inner: self.inner.open(path).await?,
            plan: self.plan.clone(),
        })
    }
    async fn remove(&self, path: &Path) -> io::Result<()> {
        let n = bump(&self.plan.removes);
        if self.plan.fail_remove.get() == Some(n) {
            return Err(eio("remove"));
        }
        self.inner.remove(path).await
    }
    async fn sync_dir(&self, dir: &Path) -> io::Result<()> {
        self.inner.sync_dir(dir).await
    }
    fn direct_io(&self) -> bool {
        self.inner.direct_io()
    }

    async fn read_small(&self, path: &Path) -> io::Result<Option<Vec<u8>>> {
        self.inner.read_small(path).await
    }

    async fn replace_small(&self, dir: &Path, name: &str, bytes: &[u8]) -> io::Result<()> {
        self.inner.replace_small(dir, name, bytes).await
    }
}

impl<F: SegmentFile> FaultFile<F> {
    /// Writes the first `keep` bytes of `buf` (a multiple of the block) for real.
    async fn write_prefix(&self, buf: &F::Buf, keep: usize, pos: u64) -> io::Result<()> {
        if keep == 0 {
            return Ok(());
        }
        let mut part = self.inner.alloc(keep);
        part.bytes_mut().copy_from_slice(&buf.bytes()[..keep]);
        self.inner.write_at(part, pos).await.map(|_| ())
    }
}

impl<F: SegmentFile> SegmentFile for FaultFile<F> {
    type Buf = F::Buf;

    fn alloc(&self, len: usize) -> Self::Buf {
        self.inner.alloc(len)
    }

    async fn write_at(&self, buf: Self::Buf, pos: u64) -> io::Result<usize> {
        let n = bump(&self.plan.writes);
        let len = buf.bytes().len();
        let block = BLOCK_BYTES as usize;
        if self.plan.fail_write.get() == Some(n) {
            if self.plan.torn.get() {
                let half = (len / 2) / block * block;
                self.write_prefix(&buf, half, pos).await?;
            }
            return Err(eio("write"));
        }
        if let Some(cap) = self.plan.capacity_bytes.get() {
            if len as u64 > cap {
                let fits = (cap as usize) / block * block;
                self.write_prefix(&buf, fits, pos).await?;
                self.plan.capacity_bytes.set(Some(cap - fits as u64));
                return Err(io::Error::from_raw_os_error(ENOSPC));
            }
            self.plan.capacity_bytes.set(Some(cap - len as u64));
        }
        self.inner.write_at(buf, pos).await
    }

    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        self.inner.read_at(pos, len).await
    }

    async fn sync(&self) -> io::Result<()> {
        let n = bump(&self.plan.syncs);
        if self.plan.fail_sync.get() == Some(n) {
            return Err(eio("fdatasync"));
        }
        self.inner.sync().await
    }

    async fn size(&self) -> io::Result<u64> {
        self.inner.size().await
    }

    async fn truncate(&self, len: u64) -> io::Result<()> {
        self.inner.truncate(len).await
    }

    async fn close(self) -> io::Result<()> {
        self.inner.close().await
    }
}
