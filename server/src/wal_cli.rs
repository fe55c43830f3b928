//! `ringbearer wal verify` and `ringbearer wal repair`: offline checks of the write-ahead
//! log of every shard under a data directory (`<data>/wal/shard-N/`), on a stopped
//! server. The work is `ringbearer_persist::check`; this prints it and sets the exit code.
//!
//! `verify` changes nothing and exits non-zero when a shard's log would refuse to open.
//! `repair` is the operator's explicit, documented choice (docs/operations.md, "The log is
//! damaged"): it cuts each damaged log at its first damage, keeping every record before it,
//! moves what it drops aside and reports it. The server never runs it by itself.

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use ringbearer_persist::check;
use std::path::{Path, PathBuf};

#[derive(Subcommand)]
pub enum WalCmd {
    /// Check every shard's log: each segment, its records, any damage or missing segment.
    /// Changes nothing; exits non-zero if a log would refuse to open.
    Verify {
        /// Data directory [default: the config's, else ./data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// TOML config file naming the data directory.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Cut each damaged log at its first damage so the server starts again, keeping every
    /// record before it. Dropped bytes and segments are moved to `repair-<time>/` in the
    /// shard's directory and reported (segments, byte ranges, record counts). Stop the
    /// server first.
    Repair {
        /// Data directory [default: the config's, else ./data].
        #[arg(long)]
        data: Option<PathBuf>,
        /// TOML config file naming the data directory.
        #[arg(long)]
        config: Option<PathBuf>,
    },
}

pub fn run(cmd: WalCmd) -> Result<()> {
    match cmd {
        WalCmd::Verify { data, config } => {
            let data = data_dir(data, config)?;
            let mut damaged = Vec::new();
            for dir in missing_shard_dirs(&data)? {
                println!("{}\n  DAMAGE: missing: the data directory was written with more shards (wal/SHARDS)", dir.display());
                damaged.push(dir.display().to_string());
            }
            let dirs = shard_dirs(&data)?;
            for dir in &dirs {
                let c = check::verify(dir)
                    .with_context(|| format!("reading the log in {}", dir.display()))?;
                print!("{c}");
                if c.is_damaged() {
                    damaged.push(dir.display().to_string());
                }
            }
            if !damaged.is_empty() {
                bail!(
                    "write-ahead log damaged in {}; see docs/operations.md, \"The log is damaged\"",
                    damaged.join(", ")
                );
            }
            Ok(())
        }
        WalCmd::Repair { data, config } => {
            let data = data_dir(data, config)?;
            for dir in missing_shard_dirs(&data)? {
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                println!(
                    "repaired {}: the shard's whole log was missing; created it empty (every record of that shard is lost)",
                    dir.display()
                );
            }
            for dir in shard_dirs(&data)? {
                let before = check::verify(&dir)
                    .with_context(|| format!("reading the log in {}", dir.display()))?;
                if !before.is_damaged() {
                    println!("{}: no damage, nothing changed", dir.display());
                    continue;
                }
                print!("{before}");
                let report = check::repair(&dir)
                    .with_context(|| format!("repairing the log in {}", dir.display()))?;
                println!("repaired {}:", dir.display());
                print!("{report}");
                let after = check::verify(&dir)?;
                if after.is_damaged() {
                    print!("{after}");
                    bail!("{} is still damaged after repair", dir.display());
                }
            }
            Ok(())
        }
    }
}

fn data_dir(data: Option<PathBuf>, config: Option<PathBuf>) -> Result<PathBuf> {
    Ok(match (data, config) {
        (Some(d), _) => d,
        (None, Some(c)) => crate::config::Config::load(&c)?.data_dir,
        (None, None) => crate::config::Config::default().data_dir,
    })
}

/// `<data>/wal/shard-N` directories that `<data>/wal/SHARDS` says exist but do not.
fn missing_shard_dirs(data: &Path) -> Result<Vec<PathBuf>> {
    let wal = data.join("wal");
    let Ok(s) = std::fs::read_to_string(wal.join("SHARDS")) else {
        return Ok(Vec::new());
    };
    let n: usize = s
        .trim()
        .parse()
        .with_context(|| format!("reading {}", wal.join("SHARDS").display()))?;
    Ok((0..n)
        .map(|i| wal.join(format!("shard-{i}")))
        .filter(|d| !d.is_dir())
        .collect())
}

/// `<data>/wal/shard-N` directories, in shard order.
fn shard_dirs(data: &Path) -> Result<Vec<PathBuf>> {
    let wal = data.join("wal");
    let entries = std::fs::read_dir(&wal).with_context(|| {
        format!(
            "no write-ahead log in {} (reading {})",
            data.display(),
            wal.display()
        )
    })?;
    let mut dirs = Vec::new();
    for e in entries {
        let e = e?;
        let name = e.file_name().to_string_lossy().into_owned();
        if let Some(n) = name
            .strip_prefix("shard-")
            .and_then(|n| n.parse::<u32>().ok())
        {
            if e.file_type()?.is_dir() {
                dirs.push((n, e.path()));
            }
        }
    }
    dirs.sort();
    if dirs.is_empty() {
        bail!("no shard logs (shard-N directories) in {}", wal.display());
    }
    Ok(dirs.into_iter().map(|(_, p)| p).collect())
}
