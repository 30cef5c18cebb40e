//! Sign-in throttling per client address: after `limit` failures within `window`, further attempts
//! from that address are refused until the window has passed. Account lockout (in the store)
//! protects each account; this keeps one address from trying many accounts.
//!
//! In memory and per process: it slows an attacker down, it is not an audit record.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant};

pub(crate) struct Throttle {
    limit: u32,
    window: Duration,
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

impl Throttle {
    pub(crate) fn new(limit: u32, window: Duration) -> Throttle {
        Throttle { limit: limit.max(1), window, failures: Mutex::new(HashMap::new()) }
    }

    /// Seconds this address must wait, if it must.
    pub(crate) fn wait(&self, addr: IpAddr) -> Option<u64> {
        let map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        let (count, since) = map.get(&addr)?;
        let elapsed = since.elapsed();
        (*count >= self.limit && elapsed < self.window).then(|| (self.window - elapsed).as_secs().max(1))
    }

    pub(crate) fn failed(&self, addr: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        if map.len() > 100_000 {
            let window = self.window;
            map.retain(|_, (_, since)| since.elapsed() < window);
        }
        let entry = map.entry(addr).or_insert((0, Instant::now()));
        if entry.1.elapsed() >= self.window {
            *entry = (0, Instant::now());
        }
        entry.0 += 1;
    }

    pub(crate) fn succeeded(&self, addr: IpAddr) {
        let mut map = self.failures.lock().unwrap_or_else(|p| p.into_inner());
        map.remove(&addr);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_address_waits_after_too_many_failures() {
        let t = Throttle::new(3, Duration::from_secs(60));
        let a: IpAddr = "10.0.0.1".parse().unwrap();
        let b: IpAddr = "10.0.0.2".parse().unwrap();
        for _ in 0..2 {
            t.failed(a);
        }
        assert_eq!(t.wait(a), None);
        t.failed(a);
        assert!(t.wait(a).is_some_and(|s| s <= 60));
        assert_eq!(t.wait(b), None);
        t.succeeded(a);
        assert_eq!(t.wait(a), None);
        let quick = Throttle::new(1, Duration::from_millis(1));
        quick.failed(b);
        std::thread::sleep(Duration::from_millis(5));
        assert_eq!(quick.wait(b), None, "the window passed");
    }
}
