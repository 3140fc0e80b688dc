//! The mount's chunk cache: decrypted chunks by id, least recently used
//! first out, bounded in bytes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use trireme_common::Id;

/// Chunks kept, at most `cap` bytes of them.
pub struct Lru {
    map: HashMap<Id, (Arc<Vec<u8>>, u64)>,
    order: BTreeMap<u64, Id>,
    tick: u64,
    bytes: usize,
    cap: usize,
}

impl Lru {
    /// An empty cache of at most `cap` bytes.
    pub fn new(cap: usize) -> Self {
        Lru {
            map: HashMap::new(),
            order: BTreeMap::new(),
            tick: 0,
            bytes: 0,
            cap,
        }
    }

    /// The chunk, if kept (it becomes the most recently used).
    pub fn get(&mut self, id: &Id) -> Option<Arc<Vec<u8>>> {
        let (data, used) = self.map.get_mut(id)?;
        self.order.remove(used);
        self.tick += 1;
        *used = self.tick;
        self.order.insert(self.tick, *id);
        Some(data.clone())
    }

    /// Keep `data` as chunk `id`, dropping the least recently used chunks
    /// past the cap (a chunk larger than the cap is not kept).
    pub fn put(&mut self, id: Id, data: Arc<Vec<u8>>) {
        if data.len() > self.cap || self.map.contains_key(&id) {
            return;
        }
        self.tick += 1;
        self.bytes += data.len();
        self.order.insert(self.tick, id);
        self.map.insert(id, (data, self.tick));
        while self.bytes > self.cap {
            let Some((_, old)) = self.order.pop_first() else {
                break;
            };
            if let Some((d, _)) = self.map.remove(&old) {
                self.bytes -= d.len();
            }
        }
    }

    /// Bytes kept.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> Id {
        Id([n; 32])
    }

    #[test]
    fn keeps_at_most_cap_bytes_dropping_the_least_recently_used() {
        let mut c = Lru::new(10);
        c.put(id(1), Arc::new(vec![1; 4]));
        c.put(id(2), Arc::new(vec![2; 4]));
        assert!(c.get(&id(1)).is_some()); // 2 is now the oldest
        c.put(id(3), Arc::new(vec![3; 4]));
        assert_eq!(c.bytes(), 8);
        assert!(c.get(&id(2)).is_none());
        assert_eq!(c.get(&id(1)).unwrap().as_slice(), &[1; 4]);
        assert_eq!(c.get(&id(3)).unwrap().as_slice(), &[3; 4]);
        // Too big to keep at all.
        c.put(id(4), Arc::new(vec![4; 11]));
        assert!(c.get(&id(4)).is_none());
        assert_eq!(c.bytes(), 8);
    }
}
