//! The memory a decode of peer bytes may allocate for the elements of its lists.
//!
//! bincode's limit counts the bytes a decode reads, and so bounds the memory of its
//! strings and byte arrays, but through serde it does not count a list's elements: an
//! empty string is one byte on the wire and 24 in memory, a revealed field four and 56.
//! Every list of a wire message is therefore read through [`seq`], which charges the
//! memory of its elements to the budget of the decode in progress ([`within`]) before it
//! allocates them, and refuses the message once the budget is spent. A decode outside
//! [`within`] (a stored value) is not charged.

use std::cell::Cell;
use std::marker::PhantomData;

use serde::de::{Deserialize, Deserializer, Error, SeqAccess, Visitor};

/// Most bytes of elements reserved before they are read.
const PREALLOCATED: usize = 1024 * 1024;

thread_local! {
    /// Bytes the decode in progress on this thread may still charge; `None` outside one.
    static LEFT: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Run `decode` with `budget` bytes for the elements of the lists it reads.
pub(crate) fn within<T>(budget: usize, decode: impl FnOnce() -> T) -> T {
    /// Puts back the budget of the enclosing decode (none) however `decode` ends.
    struct Restore(Option<usize>);
    impl Drop for Restore {
        fn drop(&mut self) {
            LEFT.with(|l| l.set(self.0));
        }
    }
    let _restore = Restore(LEFT.with(|l| l.replace(Some(budget))));
    decode()
}

/// Take `bytes` of the budget; false if they are not left.
fn charge(bytes: usize) -> bool {
    LEFT.with(|l| match l.get() {
        None => true,
        Some(left) => match left.checked_sub(bytes) {
            Some(rest) => {
                l.set(Some(rest));
                true
            }
            None => false,
        },
    })
}

/// Deserialize a list, its elements charged to the decode's budget: all it announces
/// before any is read (bincode announces the exact count), any beyond as they come.
pub(crate) fn seq<'de, D: Deserializer<'de>, T: Deserialize<'de>>(d: D) -> Result<Vec<T>, D::Error> {
    struct Charged<T>(PhantomData<T>);
    impl<'de, T: Deserialize<'de>> Visitor<'de> for Charged<T> {
        type Value = Vec<T>;
        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            f.write_str("a list")
        }
        fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
            let size = std::mem::size_of::<T>();
            let announced = seq.size_hint().unwrap_or(0);
            if !charge(announced.saturating_mul(size)) {
                return Err(over::<A::Error>(announced));
            }
            // Reserved up to a megabyte ahead, the rest as elements arrive: a decode
            // outside a budget (a stored value) is not charged, and its announced count
            // is not to be trusted either.
            let mut out = Vec::with_capacity(announced.min(PREALLOCATED / size.max(1)));
            while let Some(item) = seq.next_element()? {
                if out.len() >= announced && !charge(size) {
                    return Err(over::<A::Error>(out.len() + 1));
                }
                out.push(item);
            }
            Ok(out)
        }
    }
    d.deserialize_seq(Charged(PhantomData))
}

fn over<E: Error>(items: usize) -> E {
    E::custom(format_args!("a list of {items} items exceeds the memory this message may take"))
}
