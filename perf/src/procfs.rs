//! What the generator reads from `/proc` about a process and the kernel: CPU time
//! (`/proc/PID/stat` utime + stime, all threads), resident memory (`/proc/PID/status`
//! VmRSS) and the TCP listen-queue counters (`/proc/net/netstat` ListenOverflows and
//! ListenDrops, host-wide: other work on the machine shows up there too).
//!
//! It does not sample over time by itself; callers take snapshots before and after a phase.

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// Clock ticks per second of `/proc/PID/stat` times.
fn ticks_per_s() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let t = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if t > 0 {
        t as u64
    } else {
        100
    }
}

/// User + system CPU time of process `pid` (every thread), in nanoseconds.
pub fn cpu_ns(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .with_context(|| format!("reading /proc/{pid}/stat"))?;
    // The command name (field 2) is in parentheses and may hold spaces: split after it.
    let rest = s
        .rsplit_once(')')
        .map(|(_, r)| r)
        .context("malformed /proc/PID/stat")?;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    // `rest` starts at field 3 (state); utime is field 14, stime field 15.
    if fields.len() < 13 {
        bail!("short /proc/{pid}/stat");
    }
    let utime: u64 = fields[11].parse()?;
    let stime: u64 = fields[12].parse()?;
    Ok((utime + stime) * 1_000_000_000 / ticks_per_s())
}

/// Resident set size of process `pid`, in bytes.
pub fn rss_bytes(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status"))
        .with_context(|| format!("reading /proc/{pid}/status"))?;
    for line in s.lines() {
        if let Some(v) = line.strip_prefix("VmRSS:") {
            let kib: u64 = v
                .trim()
                .trim_end_matches("kB")
                .trim()
                .parse()
                .context("VmRSS")?;
            return Ok(kib * 1024);
        }
    }
    bail!("no VmRSS in /proc/{pid}/status")
}

/// Open file descriptors of process `pid`.
pub fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count() as u64)
        .unwrap_or(0)
}

#[derive(Clone, Copy, Debug, Default, Serialize)]
pub struct ListenCounters {
    pub overflows: u64,
    pub drops: u64,
}

/// `TcpExt: ListenOverflows` and `ListenDrops` (host-wide counters).
pub fn listen_counters() -> Result<ListenCounters> {
    let s = std::fs::read_to_string("/proc/net/netstat").context("reading /proc/net/netstat")?;
    let mut lines = s.lines();
    while let Some(head) = lines.next() {
        let Some(values) = lines.next() else { break };
        if !head.starts_with("TcpExt:") {
            continue;
        }
        let mut out = ListenCounters::default();
        for (k, v) in head.split_whitespace().zip(values.split_whitespace()) {
            match k {
                "ListenOverflows" => out.overflows = v.parse().unwrap_or(0),
                "ListenDrops" => out.drops = v.parse().unwrap_or(0),
                _ => {}
            }
        }
        return Ok(out);
    }
    bail!("no TcpExt in /proc/net/netstat")
}

/// `DEVICE TYPE` of the mount holding `path` (longest matching mount point in
/// /proc/mounts).
pub fn fs_of(path: &std::path::Path) -> String {
    let path = std::fs::canonicalize(path).unwrap_or_else(|_| path.to_owned());
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    let mut best: Option<(usize, String)> = None;
    for line in mounts.lines() {
        let f: Vec<&str> = line.split_whitespace().collect();
        if f.len() < 3 || !path.starts_with(f[1]) {
            continue;
        }
        if best.as_ref().is_none_or(|(n, _)| f[1].len() > *n) {
            best = Some((f[1].len(), format!("{} {} on {}", f[0], f[2], f[1])));
        }
    }
    best.map(|(_, s)| s).unwrap_or_else(|| "unknown".into())
}

/// The 1-minute load average, for the record of how noisy the host was.
pub fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_default()
}

/// CLOCK_MONOTONIC in nanoseconds: one clock for every process on this machine, so a
/// send time written by one worker process can be compared with a receive time in another.
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_own_process() {
        let me = std::process::id();
        assert!(rss_bytes(me).unwrap() > 0);
        cpu_ns(me).unwrap();
        assert!(open_fds(me) > 0);
        listen_counters().unwrap();
        let a = mono_ns();
        assert!(mono_ns() >= a);
    }
}
