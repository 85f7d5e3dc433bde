//! The server and node names one pool shard's records refer to, interned.
//!
//! Owned by a `PoolShard` of [`super::Table`] and touched only under its
//! shard's lock. A record holds a 4-byte [`NameId`] for its server and its
//! origin instead of a 16-byte `Arc<str>` (and, for peers' origins, instead
//! of an allocation per record): a pool has a handful of servers and a
//! cluster a handful of nodes, while the table holds up to millions of
//! records. Each name counts the records that use it and is dropped with the
//! last one, so names that come and go (servers removed, peers replaced) do
//! not pile up. Each name also counts the live records that name it as their
//! server, which is what [`super::Table::counts_per_server`] sums.

use std::collections::HashMap;
use std::sync::Arc;

/// A name's place in its [`Names`]; valid while a record holds it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct NameId(u32);

impl NameId {
    /// Ids stay below this, leaving a record the top bit of its origin's id
    /// for its tombstone flag. Reaching it would take a billion distinct
    /// names in one pool shard, each held by a record: far more memory than
    /// the table can have.
    pub(super) const LIMIT: u32 = 1 << 31;

    pub(super) fn from_bits(bits: u32) -> Self {
        NameId(bits)
    }

    pub(super) fn bits(self) -> u32 {
        self.0
    }
}

#[derive(Debug, Default)]
pub(super) struct Names {
    /// Indexed by [`NameId`]; `None` for a freed id, reused first.
    slots: Vec<Option<Name>>,
    ids: HashMap<Arc<str>, NameId>,
    free: Vec<NameId>,
}

#[derive(Debug)]
struct Name {
    text: Arc<str>,
    /// Records holding this name as server or origin (a record naming it as
    /// both holds it twice).
    refs: usize,
    /// Non-tombstone records whose server this is.
    live: usize,
}

impl Names {
    /// The id of `name`, counting one more holder; the caller
    /// [`release`](Self::release)s it when its record goes.
    pub(super) fn acquire(&mut self, name: &str) -> NameId {
        if let Some(&id) = self.ids.get(name) {
            self.slot(id).refs += 1;
            return id;
        }
        let text: Arc<str> = Arc::from(name);
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let id = u32::try_from(self.slots.len()).ok().filter(|&n| n < NameId::LIMIT);
                let id = NameId(id.expect("fewer than 2^31 names in one pool shard"));
                self.slots.push(None);
                id
            }
        };
        self.slots[id.0 as usize] = Some(Name { text: text.clone(), refs: 1, live: 0 });
        self.ids.insert(text, id);
        id
    }

    /// Counts one holder less; the name goes with its last holder.
    pub(super) fn release(&mut self, id: NameId) {
        let name = self.slot(id);
        name.refs -= 1;
        if name.refs == 0 {
            debug_assert_eq!(name.live, 0, "a live record still names it");
            if let Some(name) = self.slots[id.0 as usize].take() {
                self.ids.remove(&name.text);
            }
            self.free.push(id);
        }
    }

    pub(super) fn text(&self, id: NameId) -> &Arc<str> {
        &self.slots[id.0 as usize].as_ref().expect("a held name id").text
    }

    /// One more live record on server `id`.
    pub(super) fn count_live(&mut self, id: NameId) {
        self.slot(id).live += 1;
    }

    /// One live record less on server `id`.
    pub(super) fn uncount_live(&mut self, id: NameId) {
        self.slot(id).live -= 1;
    }

    /// Servers with live records, and how many.
    pub(super) fn live_counts(&self) -> impl Iterator<Item = (&str, usize)> {
        self.slots.iter().flatten().filter(|n| n.live > 0).map(|n| (&*n.text, n.live))
    }

    /// Every name held and by how many holders, sorted (for tests).
    #[cfg(test)]
    pub(super) fn refs(&self) -> Vec<(String, usize)> {
        let mut v: Vec<_> = self.slots.iter().flatten().map(|n| (n.text.to_string(), n.refs)).collect();
        v.sort();
        v
    }

    fn slot(&mut self, id: NameId) -> &mut Name {
        self.slots[id.0 as usize].as_mut().expect("a held name id")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_name_is_shared_while_held_and_dropped_with_its_last_holder() {
        let mut n = Names::default();
        let s1 = n.acquire("s1");
        assert_eq!(n.acquire("s1"), s1);
        let s2 = n.acquire("s2");
        assert_ne!(s1, s2);
        assert!(Arc::ptr_eq(n.text(s1), n.text(s1)));
        assert_eq!(&**n.text(s2), "s2");
        n.release(s1);
        assert_eq!(&**n.text(s1), "s1", "still held once");
        n.release(s1);
        assert!(!n.ids.contains_key("s1") && n.slots[s1.0 as usize].is_none());
        // The freed id is reused rather than the list growing.
        let s3 = n.acquire("s3");
        assert_eq!((s3, n.slots.len()), (s1, 2));
        assert_eq!(&**n.text(s3), "s3");
    }

    #[test]
    fn live_counts_list_servers_with_live_records() {
        let mut n = Names::default();
        let s1 = n.acquire("s1");
        let lb1 = n.acquire("lb1");
        n.count_live(s1);
        n.count_live(s1);
        assert_eq!(n.live_counts().collect::<Vec<_>>(), [("s1", 2)]);
        n.uncount_live(s1);
        n.uncount_live(s1);
        assert_eq!(n.live_counts().count(), 0);
        n.release(s1);
        n.release(lb1);
        assert!(n.ids.is_empty());
    }
}
