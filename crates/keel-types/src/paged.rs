//! A growable array that never moves its elements: storage in fixed-size pages.
//!
//! A `Vec` that doubles copies everything it holds. For a table that grows while the engine
//! runs — a book's per-account order lists reach 100,000 entries, 2.4 MB — that copy is one
//! command taking hundreds of microseconds, which every command queued behind it waits out.
//! [`Paged`] allocates one page at a time instead; only the small table of page pointers ever
//! grows by copying. Indexing costs one more (well-cached) load than a `Vec`.

use serde::de::{Deserialize, Deserializer};
use serde::ser::{Serialize, SerializeSeq, Serializer};
use std::ops::{Index, IndexMut};

/// Elements per page (a power of two: an index splits with a shift and a mask).
const PAGE: usize = 1 << 12;

/// A growable array in pages of 4,096 elements; elements never move once pushed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Paged<T> {
    pages: Vec<Box<[T]>>,
    len: usize,
}

impl<T> Default for Paged<T> {
    fn default() -> Paged<T> {
        Paged { pages: Vec::new(), len: 0 }
    }
}

impl<T: Clone + Default> Paged<T> {
    /// An empty array with pages allocated for `capacity` elements.
    pub fn with_capacity(capacity: usize) -> Paged<T> {
        let mut paged = Paged { pages: Vec::with_capacity(capacity.div_ceil(PAGE).max(16)), len: 0 };
        while paged.pages.len() * PAGE < capacity {
            paged.pages.push(vec![T::default(); PAGE].into_boxed_slice());
        }
        paged
    }

    /// Appends `value`, allocating a page (never copying elements) when the last one is full.
    pub fn push(&mut self, value: T) {
        if self.len == self.pages.len() * PAGE {
            self.pages.push(vec![T::default(); PAGE].into_boxed_slice());
        }
        let len = self.len;
        self.pages[len / PAGE][len % PAGE] = value;
        self.len += 1;
    }
}

impl<T> Paged<T> {
    /// Number of elements.
    pub fn len(&self) -> usize {
        self.len
    }

    /// True when there are no elements.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The element at `index`, if there is one.
    #[inline]
    pub fn get(&self, index: usize) -> Option<&T> {
        (index < self.len).then(|| &self.pages[index / PAGE][index % PAGE])
    }

    /// The element at `index` to change, if there is one.
    #[inline]
    pub fn get_mut(&mut self, index: usize) -> Option<&mut T> {
        (index < self.len).then(|| &mut self.pages[index / PAGE][index % PAGE])
    }

    /// The elements in order.
    pub fn iter(&self) -> impl Iterator<Item = &T> + '_ {
        self.pages.iter().flat_map(|page| page.iter()).take(self.len)
    }
}

impl<T> Index<usize> for Paged<T> {
    type Output = T;

    #[inline]
    fn index(&self, index: usize) -> &T {
        self.get(index).expect("index out of bounds")
    }
}

impl<T> IndexMut<usize> for Paged<T> {
    #[inline]
    fn index_mut(&mut self, index: usize) -> &mut T {
        self.get_mut(index).expect("index out of bounds")
    }
}

/// Serialized as a plain sequence, exactly as a `Vec` of the same elements.
impl<T: Serialize> Serialize for Paged<T> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        for value in self.iter() {
            seq.serialize_element(value)?;
        }
        seq.end()
    }
}

impl<'de, T: Deserialize<'de> + Clone + Default> Deserialize<'de> for Paged<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Paged<T>, D::Error> {
        let values = Vec::<T>::deserialize(deserializer)?;
        let mut paged = Paged::with_capacity(values.len());
        for value in values {
            paged.push(value);
        }
        Ok(paged)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn elements_stay_put_across_pages_and_read_back_like_a_vec() {
        let mut paged = Paged::with_capacity(10);
        let mut reference = Vec::new();
        let first = {
            paged.push(0u64);
            reference.push(0u64);
            &paged[0] as *const u64
        };
        for i in 1..(3 * PAGE as u64 + 5) {
            paged.push(i * 7);
            reference.push(i * 7);
        }
        assert_eq!(&paged[0] as *const u64, first, "the first element never moved");
        assert_eq!(paged.len(), reference.len());
        assert!(paged.iter().eq(reference.iter()));
        assert_eq!(paged.get(reference.len()), None);
        paged[PAGE + 3] = 1;
        assert_eq!(paged.get(PAGE + 3), Some(&1));
        assert_eq!(paged.get_mut(PAGE * 3 + 4).copied(), Some((PAGE as u64 * 3 + 4) * 7));
    }

    #[test]
    fn it_encodes_exactly_as_a_vec_and_decodes_back() {
        let mut paged = Paged::default();
        let values: Vec<u32> = (0..(PAGE as u32 + 9)).map(|i| i.wrapping_mul(2_654_435_761)).collect();
        for &v in &values {
            paged.push(v);
        }
        let as_vec = serde_json::to_string(&values).unwrap();
        assert_eq!(serde_json::to_string(&paged).unwrap(), as_vec);
        let back: Paged<u32> = serde_json::from_str(&as_vec).unwrap();
        assert_eq!(back, paged);
    }
}
