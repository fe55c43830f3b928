//! Server-wide tier accounting (SPEC §1): per user, messages per minute, open connections
//! and subscriptions; per organization, channels. A user's connections land on whichever
//! shard accepted them, so these counts cannot live on one shard: they sit in a table split
//! over a few locks, touched by publishes, subscribes and upgrades only — never by the
//! delivery path. (Per-channel rates and `max_subscribers` are the owner shard's.)
//!
//! Also here: open connections per client address ([`IpTable`]), the same kind of table,
//! touched once at accept and once at close.

use parking_lot::Mutex;
use ringbearer_core::error::{ErrorCode, Refusal};
use ringbearer_core::rate::{retry_after_secs, TokenBucket};
use ringbearer_core::{Claims, Limits};
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Arc;

/// Lock stripes of the user table.
const STRIPES: usize = 16;

#[derive(Debug)]
struct UserState {
    messages: TokenBucket,
    /// `critical` publishes on wedding-day channels (the abuse ceiling).
    critical: TokenBucket,
    /// `emergency` publishes (their abuse ceiling).
    emergency: TokenBucket,
    connections: u32,
    subscriptions: u32,
}

#[derive(Default)]
pub struct Policy {
    users: [Mutex<HashMap<(String, String), UserState>>; STRIPES],
    channels_per_org: Mutex<HashMap<String, u32>>,
}

fn key(c: &Claims) -> (String, String) {
    (c.org.clone(), c.sub.clone())
}

fn stripe(c: &Claims) -> usize {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (&c.org, &c.sub).hash(&mut h);
    (h.finish() as usize) % STRIPES
}

fn tier_limit(what: &str, n: u32) -> Refusal {
    Refusal::new(
        ErrorCode::TierLimit,
        format!("tier limit reached: at most {n} {what}"),
    )
}

impl Policy {
    fn with_user<T>(
        &self,
        c: &Claims,
        l: &Limits,
        now_ms: u64,
        f: impl FnOnce(&mut UserState) -> T,
    ) -> T {
        let mut map = self.users[stripe(c)].lock();
        let t = l.tiers.get(c.tier);
        let st = map.entry(key(c)).or_insert_with(|| UserState {
            messages: TokenBucket::full(t.messages_per_min, l.rate_window_ms, now_ms),
            critical: TokenBucket::full(l.critical_messages_per_min, l.rate_window_ms, now_ms),
            emergency: TokenBucket::full(l.emergency_messages_per_min, l.rate_window_ms, now_ms),
            connections: 0,
            subscriptions: 0,
        });
        f(st)
    }

    /// Forgets a user with nothing open, once its rate bucket has refilled (so closing and
    /// reopening a connection does not reset a rate limit).
    fn maybe_forget(&self, c: &Claims, l: &Limits, now_ms: u64) {
        let mut map = self.users[stripe(c)].lock();
        let cap = l.tiers.get(c.tier).messages_per_min;
        if let Some(st) = map.get_mut(&key(c)) {
            if st.connections == 0 && st.subscriptions == 0 {
                // IMPORTANT: O(1). (Probing by taking `cap` tokens spun for seconds under
                // this shared lock at high tier rates.)
                if st.messages.is_full(cap, l.rate_window_ms, now_ms)
                    && st
                        .critical
                        .is_full(l.critical_messages_per_min, l.rate_window_ms, now_ms)
                    && st
                        .emergency
                        .is_full(l.emergency_messages_per_min, l.rate_window_ms, now_ms)
                {
                    map.remove(&key(c));
                }
            }
        }
    }

    /// Counts a new connection, or refuses it (`connections_per_user`).
    pub fn open_connection(&self, c: &Claims, l: &Limits, now_ms: u64) -> Result<(), Refusal> {
        let max = l.tiers.get(c.tier).connections_per_user;
        self.with_user(c, l, now_ms, |st| {
            if st.connections >= max {
                return Err(tier_limit("connections per user", max));
            }
            st.connections += 1;
            Ok(())
        })
    }

    pub fn close_connection(&self, c: &Claims, l: &Limits, now_ms: u64) {
        self.with_user(c, l, now_ms, |st| {
            st.connections = st.connections.saturating_sub(1)
        });
        self.maybe_forget(c, l, now_ms);
    }

    /// Takes one publish from the user's rate (`messages_per_min`).
    pub fn take_message(&self, c: &Claims, l: &Limits, now_ms: u64) -> Result<(), Refusal> {
        self.take_message_scaled(c, l, 1, now_ms)
    }

    /// Takes one publish at `multiplier` × the user's `messages_per_min` (a wedding-day
    /// channel: `wedding_day_rate_multiplier`, SPEC §1). One bucket per user: the larger
    /// capacity applies to publishes to wedding-day channels only.
    pub fn take_message_scaled(
        &self,
        c: &Claims,
        l: &Limits,
        multiplier: u32,
        now_ms: u64,
    ) -> Result<(), Refusal> {
        let cap = l
            .tiers
            .get(c.tier)
            .messages_per_min
            .saturating_mul(multiplier.max(1));
        self.with_user(c, l, now_ms, |st| {
            st.messages.try_take(cap, l.rate_window_ms, now_ms)
        })
        .map_err(|wait_ms| Refusal {
            code: ErrorCode::RateLimited,
            message: format!(
                "message rate reached: {cap} per {} s for this tier{}",
                l.rate_window_ms / 1000,
                if multiplier > 1 {
                    " on a wedding day"
                } else {
                    ""
                }
            ),
            retry_after: Some(retry_after_secs(wait_ms)),
        })
    }

    /// Takes one `critical` publish on a wedding-day channel: it skips the user and channel
    /// rates (SPEC §1) but not this abuse ceiling (`critical_messages_per_min`).
    pub fn take_critical(&self, c: &Claims, l: &Limits, now_ms: u64) -> Result<(), Refusal> {
        let cap = l.critical_messages_per_min;
        self.take_ceiling(c, l, now_ms, "critical", cap, |st| &mut st.critical)
    }

    /// Takes one `emergency` publish: it skips every other rate (SPEC §2) but not this
    /// abuse ceiling (`emergency_messages_per_min`).
    pub fn take_emergency(&self, c: &Claims, l: &Limits, now_ms: u64) -> Result<(), Refusal> {
        let cap = l.emergency_messages_per_min;
        self.take_ceiling(c, l, now_ms, "emergency", cap, |st| &mut st.emergency)
    }

    /// Takes one from a per-user abuse ceiling of `cap` per `rate_window_ms`.
    fn take_ceiling(
        &self,
        c: &Claims,
        l: &Limits,
        now_ms: u64,
        what: &str,
        cap: u32,
        bucket: impl FnOnce(&mut UserState) -> &mut TokenBucket,
    ) -> Result<(), Refusal> {
        self.with_user(c, l, now_ms, |st| {
            bucket(st).try_take(cap, l.rate_window_ms, now_ms)
        })
        .map_err(|wait_ms| Refusal {
            code: ErrorCode::RateLimited,
            message: format!(
                "{what} message ceiling reached: {cap} per {} s",
                l.rate_window_ms / 1000
            ),
            retry_after: Some(retry_after_secs(wait_ms)),
        })
    }

    /// Reserves one subscription (`subscriptions_per_user`); release it when the
    /// subscription ends or is refused.
    pub fn reserve_subscription(&self, c: &Claims, l: &Limits, now_ms: u64) -> Result<(), Refusal> {
        let max = l.tiers.get(c.tier).subscriptions_per_user;
        self.with_user(c, l, now_ms, |st| {
            if st.subscriptions >= max {
                return Err(tier_limit("subscriptions per user", max));
            }
            st.subscriptions += 1;
            Ok(())
        })
    }

    pub fn release_subscription(&self, c: &Claims, l: &Limits, now_ms: u64) {
        self.with_user(c, l, now_ms, |st| {
            st.subscriptions = st.subscriptions.saturating_sub(1)
        });
    }

    /// Counts a channel created by `c`'s organization (`channels_per_org` of its tier).
    pub fn reserve_channel(&self, c: &Claims, l: &Limits) -> Result<(), Refusal> {
        let max = l.tiers.get(c.tier).channels_per_org;
        let mut m = self.channels_per_org.lock();
        let n = m.entry(c.org.clone()).or_insert(0);
        if *n >= max {
            return Err(tier_limit("channels per organization", max));
        }
        *n += 1;
        Ok(())
    }
}

impl Policy {
    /// Gives back a channel reservation whose create was refused or never stored.
    pub fn release_channel(&self, c: &Claims) {
        self.release_channel_of(&c.org);
    }

    pub fn release_channel_of(&self, org: &str) {
        if let Some(n) = self.channels_per_org.lock().get_mut(org) {
            *n = n.saturating_sub(1);
        }
    }

    /// Counts a channel recovered at start (no limit applies to what already exists).
    pub fn count_restored_channel(&self, org: &str) {
        *self
            .channels_per_org
            .lock()
            .entry(org.to_owned())
            .or_insert(0) += 1;
    }
}

/// How long a client refused by `max_connections_per_ip` is told to wait (seconds): long
/// enough for one of its connections to end, short enough for a person.
pub const PER_IP_RETRY_AFTER_SECS: u64 = 5;

/// Open connections per client address, server-wide (`io.max_connections_per_ip`).
#[derive(Default)]
pub struct IpTable {
    stripes: [Mutex<HashMap<IpAddr, u32>>; STRIPES],
}

/// One counted connection; dropping it gives the slot back.
pub struct IpSlot {
    table: Arc<IpTable>,
    key: IpAddr,
}

/// The address a limit counts under: IPv4 as is (IPv4-mapped IPv6 too), IPv6 by its /64,
/// the smallest block one subscriber is usually given.
pub fn ip_key(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(_) => ip,
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let s = v6.segments();
                IpAddr::V6(Ipv6Addr::new(s[0], s[1], s[2], s[3], 0, 0, 0, 0))
            }
        },
    }
}

impl IpTable {
    fn stripe(&self, key: &IpAddr) -> &Mutex<HashMap<IpAddr, u32>> {
        let mut h = std::collections::hash_map::DefaultHasher::new();
        key.hash(&mut h);
        &self.stripes[(h.finish() as usize) % STRIPES]
    }

    /// Counts a connection from `ip`, or refuses it when `max` are open already.
    pub fn acquire(self: &Arc<Self>, ip: IpAddr, max: usize) -> Result<IpSlot, Refusal> {
        let key = ip_key(ip);
        let mut m = self.stripe(&key).lock();
        let n = m.entry(key).or_insert(0);
        if *n as usize >= max {
            return Err(Refusal {
                code: ErrorCode::RateLimited,
                message: format!("at most {max} open connections per client address"),
                retry_after: Some(PER_IP_RETRY_AFTER_SECS),
            });
        }
        *n += 1;
        Ok(IpSlot {
            table: self.clone(),
            key,
        })
    }

    /// Open connections counted for `ip` (for tests and metrics).
    pub fn open(&self, ip: IpAddr) -> u32 {
        let key = ip_key(ip);
        self.stripe(&key).lock().get(&key).copied().unwrap_or(0)
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut m = self.table.stripe(&self.key).lock();
        if let Some(n) = m.get_mut(&self.key) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                m.remove(&self.key);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ringbearer_core::{Role, Tier};

    #[test]
    fn per_ip_slots_count_and_release() {
        let t = Arc::new(IpTable::default());
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let mapped: IpAddr = "::ffff:10.0.0.1".parse().unwrap();
        let s1 = t.acquire(a, 2).unwrap();
        let s2 = t.acquire(mapped, 2).unwrap();
        let e = t.acquire(a, 2).err().unwrap();
        assert_eq!((e.code, e.retry_after), (ErrorCode::RateLimited, Some(5)));
        // Another address is counted apart; one IPv6 /64 is one client.
        let _b = t.acquire("10.0.0.2".parse().unwrap(), 2).unwrap();
        let _v6 = t.acquire("2001:db8::1".parse().unwrap(), 1).unwrap();
        assert!(t.acquire("2001:db8::2:3".parse().unwrap(), 1).is_err());
        assert!(t.acquire("2001:db8:0:1::1".parse().unwrap(), 1).is_ok());
        drop(s1);
        let _s3 = t.acquire(a, 2).unwrap();
        drop(s2);
        assert_eq!(t.open(a), 1);
    }

    fn claims(tier: Tier) -> Claims {
        Claims {
            sub: "u".into(),
            org: "o".into(),
            role: Role::Couple,
            tier,
            weddings: vec![],
            exp: 0,
            nbf: None,
        }
    }

    #[test]
    fn each_limit_refuses_the_next_one() {
        let p = Policy::default();
        let l = Limits::default();
        let c = claims(Tier::Free);
        for _ in 0..2 {
            p.open_connection(&c, &l, 0).unwrap();
        }
        assert_eq!(
            p.open_connection(&c, &l, 0).unwrap_err().code,
            ErrorCode::TierLimit
        );
        for _ in 0..10 {
            p.take_message(&c, &l, 0).unwrap();
        }
        let e = p.take_message(&c, &l, 0).unwrap_err();
        assert_eq!((e.code, e.retry_after), (ErrorCode::RateLimited, Some(6)));
        for _ in 0..3 {
            p.reserve_subscription(&c, &l, 0).unwrap();
        }
        assert_eq!(
            p.reserve_subscription(&c, &l, 0).unwrap_err().code,
            ErrorCode::TierLimit
        );
        p.release_subscription(&c, &l, 0);
        p.reserve_subscription(&c, &l, 0).unwrap();
        for _ in 0..3 {
            p.reserve_channel(&c, &l).unwrap();
        }
        assert_eq!(
            p.reserve_channel(&c, &l).unwrap_err().code,
            ErrorCode::TierLimit
        );
        // A wedding day triples the rate; `critical` has its own ceiling.
        for _ in 0..20 {
            p.take_message_scaled(&c, &l, 3, 0).unwrap();
        }
        assert!(p.take_message_scaled(&c, &l, 3, 0).is_err());
        for _ in 0..60 {
            p.take_critical(&c, &l, 0).unwrap();
        }
        let e = p.take_critical(&c, &l, 0).unwrap_err();
        assert_eq!((e.code, e.retry_after), (ErrorCode::RateLimited, Some(1)));
        // Reconnecting does not reset the rate.
        p.close_connection(&c, &l, 1);
        p.close_connection(&c, &l, 1);
        p.open_connection(&c, &l, 1).unwrap();
        assert!(p.take_message(&c, &l, 1).is_err());
    }
}
