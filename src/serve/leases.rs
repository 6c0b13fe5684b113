//! The address pool of serve's authoritative DHCP, as dnsmasq and Kea keep theirs: a lease is
//! offered (held briefly), bound (for the lease time plus a grace), released or declined by its
//! own holder only, and expires; expired addresses are handed out again last, so a client that
//! does not renew (the kernel's IP-PnP never does) keeps its address as long as the pool allows.
//! The fleet's MACs have addresses kept for them: the pool never gives a stranger the last free
//! address a fleet MAC without a lease would need.
//!
//! Pure: every method takes the time (`now`, seconds since the Unix epoch); what must outlive
//! serve is returned as [`Change`]s for [`super::lease_log`] to write.

use std::collections::{HashMap, HashSet};
use std::fmt;
use std::net::Ipv4Addr;

/// A client's hardware address as DHCP carries it (chaddr, `hlen` bytes, at most 16).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct HwAddr {
    len: u8,
    bytes: [u8; 16],
}

impl HwAddr {
    /// None when longer than 16 bytes (chaddr's size) or empty.
    pub fn new(bytes: &[u8]) -> Option<HwAddr> {
        if bytes.is_empty() || bytes.len() > 16 {
            return None;
        }
        let mut b = [0; 16];
        b[..bytes.len()].copy_from_slice(bytes);
        Some(HwAddr { len: bytes.len() as u8, bytes: b })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes[..usize::from(self.len)]
    }

    /// `aa:bb:..` (lower case), as the lease file and the log write it.
    pub fn parse(text: &str) -> Option<HwAddr> {
        let bytes: Option<Vec<u8>> = text.split(':').map(|h| u8::from_str_radix(h, 16).ok().filter(|_| h.len() == 2)).collect();
        HwAddr::new(&bytes?)
    }
}

impl fmt::Display for HwAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, b) in self.as_bytes().iter().enumerate() {
            if i > 0 {
                f.write_str(":")?;
            }
            write!(f, "{b:02x}")?;
        }
        Ok(())
    }
}

impl fmt::Debug for HwAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl From<crate::config::fleet::Mac> for HwAddr {
    fn from(mac: crate::config::fleet::Mac) -> HwAddr {
        HwAddr::new(&mac.bytes()).unwrap_or(HwAddr { len: 6, bytes: [0; 16] })
    }
}

/// Where a lease is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum State {
    /// In an OFFER, held for [`Timing::offer_hold`] for the client's REQUEST.
    Offered,
    /// ACKed: the client holds it until `until`.
    Bound,
    /// The client said another machine uses the address (DHCPDECLINE): nobody gets it until `until`.
    Declined,
}

impl State {
    pub fn as_str(self) -> &'static str {
        match self {
            State::Offered => "offered",
            State::Bound => "bound",
            State::Declined => "declined",
        }
    }

    pub fn parse(text: &str) -> Option<State> {
        [State::Offered, State::Bound, State::Declined].into_iter().find(|s| s.as_str() == text)
    }
}

/// One address's record. A record whose `until` has passed is expired: its address is free,
/// handed out again only when no address without a record is left, and its holder is
/// still who the address was last given to (for [`LeaseTable::holder`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lease {
    pub hw: HwAddr,
    pub address: Ipv4Addr,
    pub state: State,
    /// Seconds since the Unix epoch.
    pub until: u64,
}

impl Lease {
    pub fn active(&self, now: u64) -> bool {
        now < self.until
    }
}

/// What the log must record; a lease file replayed from its changes gives the same table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// This lease is now as given (bound, or declined).
    Set(Lease),
    /// The address is free and belongs to nobody (released by its holder).
    Free(Ipv4Addr),
}

/// How long things last.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Timing {
    /// The lease time handed out (option 51).
    pub lease_seconds: u32,
    /// Kept beyond the lease time before the address counts as free (clock skew, a late renewal).
    pub grace_seconds: u32,
    /// An offer holds its address this long for the REQUEST.
    pub offer_hold_seconds: u32,
    /// A declined address is not handed out for this long.
    pub decline_seconds: u32,
}

impl Timing {
    pub fn new(lease_seconds: u32) -> Timing {
        // dnsmasq keeps a declined address out for 10 minutes; an offer is answered in seconds.
        Timing { lease_seconds, grace_seconds: 60, offer_hold_seconds: 60, decline_seconds: 600 }
    }
}

/// Why a client got no address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NoAddress {
    /// Every address of the range is offered, bound or declined.
    PoolFull,
    /// The free addresses left are kept for fleet MACs that have none yet.
    KeptForFleet { free: u32, fleet_waiting: u32 },
}

/// Why a RELEASE or DECLINE changed nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ignored {
    /// The address has no lease, or it is another client's.
    NotTheHolder,
}

/// Counts of the pool by state, for the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub size: u32,
    pub offered: u32,
    pub bound: u32,
    pub declined: u32,
    pub expired: u32,
    pub never_used: u32,
    pub fleet_macs: u32,
    pub fleet_waiting: u32,
}

/// The pool: every address of the range that has a record, by address and by holder.
#[derive(Debug)]
pub struct LeaseTable {
    first: u32,
    last: u32,
    timing: Timing,
    by_address: HashMap<Ipv4Addr, Lease>,
    by_hw: HashMap<HwAddr, Ipv4Addr>,
    /// The fleet's MACs: addresses are kept for those without an active lease.
    fleet: HashSet<HwAddr>,
    /// Where the search for an address without a record goes on (they are handed out in order).
    cursor: u32,
}

impl LeaseTable {
    /// A pool of `range` (inclusive; an empty one when start > end) keeping addresses for `fleet`.
    pub fn new(range: (Ipv4Addr, Ipv4Addr), timing: Timing, fleet: impl IntoIterator<Item = HwAddr>) -> LeaseTable {
        let (first, last) = (u32::from(range.0), u32::from(range.1));
        LeaseTable { first, last, timing, by_address: HashMap::new(), by_hw: HashMap::new(), fleet: fleet.into_iter().collect(), cursor: first }
    }

    pub fn timing(&self) -> Timing {
        self.timing
    }

    fn in_range(&self, a: Ipv4Addr) -> bool {
        (self.first..=self.last).contains(&u32::from(a))
    }

    fn size(&self) -> u32 {
        self.last.checked_sub(self.first).map_or(0, |d| d.saturating_add(1))
    }

    /// Puts a record in (replacing the address's and the holder's previous ones).
    fn put(&mut self, lease: Lease) {
        if let Some(old) = self.by_address.get(&lease.address).copied()
            && old.hw != lease.hw
            && self.by_hw.get(&old.hw) == Some(&lease.address)
        {
            self.by_hw.remove(&old.hw);
        }
        if let Some(previous) = self.by_hw.insert(lease.hw, lease.address)
            && previous != lease.address
            && self.by_address.get(&previous).is_some_and(|l| l.hw == lease.hw)
        {
            self.by_address.remove(&previous);
        }
        self.by_address.insert(lease.address, lease);
    }

    fn remove(&mut self, address: Ipv4Addr) {
        if let Some(old) = self.by_address.remove(&address)
            && self.by_hw.get(&old.hw) == Some(&address)
        {
            self.by_hw.remove(&old.hw);
        }
    }

    /// Replays a change from the lease file (records out of the range are dropped: the range
    /// changed since).
    pub fn apply(&mut self, change: Change) {
        match change {
            Change::Set(lease) if self.in_range(lease.address) => self.put(lease),
            Change::Set(_) => {}
            Change::Free(address) => self.remove(address),
        }
    }

    /// The record `hw` holds (active or expired).
    pub fn lease_of(&self, hw: &HwAddr) -> Option<Lease> {
        self.by_hw.get(hw).and_then(|a| self.by_address.get(a)).copied()
    }

    /// Who was last given `address` by a bound lease that is active or expired but not yet
    /// handed to another client, and until when: what ties a fleet host's MAC to the address
    /// its requests come from (the kernel's IP-PnP holds its address past the lease, never
    /// renewing it).
    pub fn holder(&self, address: Ipv4Addr) -> Option<Lease> {
        self.by_address.get(&address).filter(|l| l.state == State::Bound).copied()
    }

    /// Every record, for the lease file's compaction.
    pub fn records(&self) -> impl Iterator<Item = &Lease> {
        self.by_address.values()
    }

    /// How many records there are (active or expired), without counting them one by one.
    pub fn record_count(&self) -> usize {
        self.by_address.len()
    }

    fn is_free(&self, address: Ipv4Addr, now: u64) -> bool {
        self.by_address.get(&address).is_none_or(|l| !l.active(now))
    }

    /// Free addresses: the range less the active records.
    fn free_count(&self, now: u64) -> u32 {
        let active = self.by_address.values().filter(|l| l.active(now)).count() as u32;
        self.size().saturating_sub(active)
    }

    fn fleet_waiting(&self, now: u64) -> u32 {
        self.fleet.iter().filter(|hw| self.lease_of(hw).is_none_or(|l| !l.active(now) || l.state == State::Declined)).count() as u32
    }

    /// The address for `hw`'s DISCOVER (held as offered) or its REQUEST without one in mind:
    /// the one it has (active, or expired and not given to another), else a never-used one in
    /// order, else the one expired longest ago. A stranger gets none when what is left is kept
    /// for the fleet.
    fn choose(&self, hw: &HwAddr, now: u64) -> Result<Ipv4Addr, NoAddress> {
        if let Some(l) = self.lease_of(hw).filter(|l| l.state != State::Declined && self.in_range(l.address)) {
            return Ok(l.address);
        }
        let free = self.free_count(now);
        if free == 0 {
            return Err(NoAddress::PoolFull);
        }
        if !self.fleet.contains(hw) {
            let fleet_waiting = self.fleet_waiting(now);
            if free <= fleet_waiting {
                return Err(NoAddress::KeptForFleet { free, fleet_waiting });
            }
        }
        // An address nobody had: from the cursor on, wrapping once.
        let size = self.size();
        if (self.by_address.len() as u32) < size {
            for step in 0..size {
                let a = Ipv4Addr::from(self.first + (self.cursor - self.first + step) % size);
                if !self.by_address.contains_key(&a) {
                    return Ok(a);
                }
            }
        }
        // Else the longest expired.
        self.by_address.values().filter(|l| !l.active(now)).min_by_key(|l| (l.until, u32::from(l.address))).map(|l| l.address).ok_or(NoAddress::PoolFull)
    }

    fn advance_cursor(&mut self, given: Ipv4Addr) {
        let a = u32::from(given);
        if a >= self.first && a < self.last {
            self.cursor = a + 1;
        } else {
            self.cursor = self.first;
        }
    }

    /// DHCPDISCOVER: the address offered, held for the REQUEST. An active bound lease stays
    /// bound (an offer does not shorten it).
    pub fn offer(&mut self, hw: HwAddr, now: u64) -> Result<Ipv4Addr, NoAddress> {
        let address = self.choose(&hw, now)?;
        let hold = now + u64::from(self.timing.offer_hold_seconds);
        let lease = match self.by_address.get(&address) {
            Some(l) if l.hw == hw && l.state == State::Bound && l.active(now) => *l,
            _ => Lease { hw, address, state: State::Offered, until: hold },
        };
        self.put(lease);
        self.advance_cursor(address);
        Ok(address)
    }

    /// DHCPREQUEST for `wanted` (option 50 or ciaddr; None: whatever `hw` has or can get, as a
    /// BOOTP request): the bound lease, or None (a NAK) when that address is not in the range
    /// or is another client's.
    pub fn request(&mut self, hw: HwAddr, wanted: Option<Ipv4Addr>, now: u64) -> Result<(Lease, Change), NoAddress> {
        let address = match wanted {
            Some(a) if !self.in_range(a) => return Err(NoAddress::PoolFull),
            Some(a) => {
                let ours = self.by_address.get(&a).is_some_and(|l| l.hw == hw && l.state != State::Declined);
                if !ours && !self.is_free(a, now) {
                    return Err(NoAddress::PoolFull);
                }
                if !ours && !self.fleet.contains(&hw) {
                    // A free address asked for by a stranger: the fleet's reserve still holds.
                    let (free, fleet_waiting) = (self.free_count(now), self.fleet_waiting(now));
                    if free <= fleet_waiting {
                        return Err(NoAddress::KeptForFleet { free, fleet_waiting });
                    }
                }
                a
            }
            None => self.choose(&hw, now)?,
        };
        let lease = Lease {
            hw,
            address,
            state: State::Bound,
            until: now + u64::from(self.timing.lease_seconds) + u64::from(self.timing.grace_seconds),
        };
        self.put(lease);
        self.advance_cursor(address);
        Ok((lease, Change::Set(lease)))
    }

    /// DHCPRELEASE: honoured only when `hw` holds `address` (ciaddr) and the packet came from it.
    pub fn release(&mut self, hw: HwAddr, address: Ipv4Addr, from: Ipv4Addr) -> Result<Change, Ignored> {
        match self.by_address.get(&address) {
            Some(l) if l.hw == hw && l.state == State::Bound && from == address => {
                self.remove(address);
                Ok(Change::Free(address))
            }
            _ => Err(Ignored::NotTheHolder),
        }
    }

    /// DHCPDECLINE of `address` (option 50) by `hw`: honoured only when `hw` was offered or
    /// given it; then nobody gets it for [`Timing::decline_seconds`].
    pub fn decline(&mut self, hw: HwAddr, address: Ipv4Addr, now: u64) -> Result<Change, Ignored> {
        match self.by_address.get(&address) {
            Some(l) if l.hw == hw && l.state != State::Declined => {
                let lease = Lease { hw, address, state: State::Declined, until: now + u64::from(self.timing.decline_seconds) };
                self.put(lease);
                // The declined record is the address's, not the client's: it asks for another.
                self.by_hw.remove(&hw);
                Ok(Change::Set(lease))
            }
            _ => Err(Ignored::NotTheHolder),
        }
    }

    /// The pool by state.
    pub fn counts(&self, now: u64) -> Counts {
        let mut c = Counts { size: self.size(), fleet_macs: self.fleet.len() as u32, fleet_waiting: self.fleet_waiting(now), ..Counts::default() };
        for l in self.by_address.values() {
            match (l.active(now), l.state) {
                (false, _) => c.expired += 1,
                (true, State::Offered) => c.offered += 1,
                (true, State::Bound) => c.bound += 1,
                (true, State::Declined) => c.declined += 1,
            }
        }
        c.never_used = c.size.saturating_sub(self.by_address.len() as u32);
        c
    }
}

impl fmt::Display for Counts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} addresses: {} bound, {} offered, {} declined, {} expired, {} never used; {} of the fleet's {} MACs have no lease",
            self.size, self.bound, self.offered, self.declined, self.expired, self.never_used, self.fleet_waiting, self.fleet_macs
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hw(n: u8) -> HwAddr {
        HwAddr::new(&[0x52, 0x54, 0, 0, 0, n]).expect("hw")
    }

    fn ip(n: u8) -> Ipv4Addr {
        Ipv4Addr::new(10, 42, 0, n)
    }

    fn table(size: u8, fleet: &[u8]) -> LeaseTable {
        LeaseTable::new((ip(100), ip(100 + size - 1)), Timing::new(600), fleet.iter().map(|n| hw(*n)))
    }

    #[test]
    fn hardware_addresses_print_and_parse_back() {
        assert_eq!(hw(0xa1).to_string(), "52:54:00:00:00:a1");
        assert_eq!(HwAddr::parse("52:54:00:00:00:a1"), Some(hw(0xa1)));
        for bad in ["", "52:54", "zz:54:00:00:00:a1", "5:54:00:00:00:a1", &"00:".repeat(17)] {
            assert!(HwAddr::parse(bad).is_none_or(|h| h.as_bytes().len() == 2), "{bad}");
        }
        assert!(HwAddr::new(&[0; 17]).is_none() && HwAddr::new(&[]).is_none());
    }

    #[test]
    fn a_client_keeps_its_address_from_offer_to_ack_and_after() {
        let mut t = table(4, &[]);
        let a = t.offer(hw(1), 1000).expect("offer");
        assert_eq!(a, ip(100));
        let (lease, change) = t.request(hw(1), Some(a), 1001).expect("ack");
        assert_eq!((lease.state, lease.until), (State::Bound, 1001 + 600 + 60));
        assert_eq!(change, Change::Set(lease));
        assert_eq!(t.offer(hw(1), 1500).expect("again"), a, "the same address, its lease kept bound");
        assert_eq!(t.lease_of(&hw(1)).map(|l| l.state), Some(State::Bound));
        // The next client gets the next address.
        assert_eq!(t.offer(hw(2), 1500).expect("offer"), ip(101));
    }

    #[test]
    fn leases_expire_and_expired_addresses_go_out_last() {
        let mut t = table(3, &[]);
        for n in 1..=3 {
            let a = t.offer(hw(n), 1000).expect("offer");
            t.request(hw(n), Some(a), 1000).expect("ack");
        }
        assert_eq!(t.offer(hw(9), 1000), Err(NoAddress::PoolFull));
        // An offer not followed by a REQUEST frees its address after the hold.
        let mut u = table(1, &[]);
        u.offer(hw(1), 1000).expect("offer");
        assert_eq!(u.offer(hw(2), 1059), Err(NoAddress::PoolFull));
        assert_eq!(u.offer(hw(2), 1060), Ok(ip(100)));
        // After lease + grace the oldest expired address is reused; the holder of an expired
        // lease is still known until then.
        let later = 1000 + 660;
        assert_eq!(t.holder(ip(100)).map(|l| l.hw), Some(hw(1)));
        assert_eq!(t.offer(hw(9), later), Ok(ip(100)));
        assert_eq!(t.holder(ip(100)), None, "offered to another: no longer hw 1's");
        assert_eq!(t.lease_of(&hw(1)), None);
    }

    #[test]
    fn an_address_nobody_had_goes_out_before_an_expired_one() {
        let mut t = table(3, &[]);
        let a = t.offer(hw(1), 1000).expect("offer");
        t.request(hw(1), Some(a), 1000).expect("ack");
        // hw 1's lease has long expired: hw 2 and 3 still get fresh addresses.
        assert_eq!(t.offer(hw(2), 5000), Ok(ip(101)));
        assert_eq!(t.offer(hw(3), 5000), Ok(ip(102)));
        assert_eq!(t.holder(ip(100)).map(|l| l.hw), Some(hw(1)));
        // hw 1 comes back (the kernel's IP-PnP never renewed): its old address.
        assert_eq!(t.offer(hw(1), 5000), Ok(ip(100)));
    }

    #[test]
    fn the_pool_keeps_an_address_for_each_fleet_mac_without_one() {
        let mut t = table(4, &[0xa1, 0xa2]);
        assert_eq!(t.offer(hw(1), 1000), Ok(ip(100)));
        assert_eq!(t.offer(hw(2), 1000), Ok(ip(101)));
        assert_eq!(t.offer(hw(3), 1000), Err(NoAddress::KeptForFleet { free: 2, fleet_waiting: 2 }));
        // A stranger's REQUEST for a free address is refused as well.
        assert_eq!(t.request(hw(3), Some(ip(103)), 1000).map(|(l, _)| l.address), Err(NoAddress::KeptForFleet { free: 2, fleet_waiting: 2 }));
        assert_eq!(t.offer(hw(0xa1), 1000), Ok(ip(102)));
        assert_eq!(t.offer(hw(0xa2), 1000), Ok(ip(103)));
        assert_eq!(t.counts(1000).fleet_waiting, 0);
        // A fleet MAC whose lease expired waits again: the next free address is kept for it.
        let c = t.counts(5000);
        assert_eq!((c.fleet_waiting, c.expired), (2, 4));
    }

    #[test]
    fn release_and_decline_only_from_the_holder() {
        let mut t = table(4, &[]);
        let a = t.offer(hw(1), 1000).expect("offer");
        t.request(hw(1), Some(a), 1000).expect("ack");
        // Another MAC, or the holder's MAC from another address: ignored.
        assert_eq!(t.release(hw(2), a, a), Err(Ignored::NotTheHolder));
        assert_eq!(t.release(hw(1), a, ip(150)), Err(Ignored::NotTheHolder));
        assert_eq!(t.release(hw(1), ip(101), ip(101)), Err(Ignored::NotTheHolder));
        assert_eq!(t.decline(hw(2), a, 1000), Err(Ignored::NotTheHolder));
        assert_eq!(t.lease_of(&hw(1)).map(|l| l.state), Some(State::Bound));
        assert_eq!(t.release(hw(1), a, a), Ok(Change::Free(a)));
        assert_eq!(t.lease_of(&hw(1)), None);
        // Declined: out of the pool for ten minutes, then free again.
        let b = t.offer(hw(3), 1000).expect("offer");
        assert!(matches!(t.decline(hw(3), b, 1000), Ok(Change::Set(Lease { state: State::Declined, .. }))));
        assert_ne!(t.offer(hw(3), 1001).expect("another"), b);
        assert_eq!(t.counts(1001).declined, 1);
        assert_eq!(t.counts(1600).declined, 0);
    }

    #[test]
    fn a_request_for_another_clients_address_or_one_outside_the_range_is_refused() {
        let mut t = table(4, &[]);
        let a = t.offer(hw(1), 1000).expect("offer");
        t.request(hw(1), Some(a), 1000).expect("ack");
        assert!(t.request(hw(2), Some(a), 1000).is_err());
        assert!(t.request(hw(2), Some(ip(50)), 1000).is_err());
        // The same client may ask for any free address (INIT-REBOOT after serve lost its lease).
        assert_eq!(t.request(hw(2), Some(ip(102)), 1000).map(|(l, _)| l.address), Ok(ip(102)));
        assert_eq!(t.lease_of(&hw(2)).map(|l| l.address), Some(ip(102)));
    }

    #[test]
    fn replayed_changes_give_the_same_table() {
        let mut t = table(4, &[]);
        let mut log = Vec::new();
        for n in 1..=3 {
            let a = t.offer(hw(n), 1000).expect("offer");
            log.push(t.request(hw(n), Some(a), 1000).expect("ack").1);
        }
        log.push(t.release(hw(2), ip(101), ip(101)).expect("release"));
        log.push(t.decline(hw(3), ip(102), 1000).expect("decline"));
        let mut replayed = table(4, &[]);
        for c in log {
            replayed.apply(c);
        }
        assert_eq!(replayed.counts(1000), t.counts(1000));
        assert_eq!(replayed.lease_of(&hw(1)), t.lease_of(&hw(1)));
        // A record outside a smaller range is dropped.
        let mut smaller = table(1, &[]);
        smaller.apply(Change::Set(Lease { hw: hw(5), address: ip(103), state: State::Bound, until: 9999 }));
        assert_eq!(smaller.counts(1000).bound, 0);
    }
}
