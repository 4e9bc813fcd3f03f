//! Request ids: 32 lowercase hex characters (128 random bits, like nginx's `$request_id`),
//! from a per-thread xorshift generator seeded from the OS-randomized std hasher.

use std::cell::Cell;
use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};

thread_local! {
    static STATE: Cell<(u64, u64)> = Cell::new(seed());
}

fn seed() -> (u64, u64) {
    let mut a = RandomState::new().build_hasher();
    a.write_u64(0x9e37_79b9_7f4a_7c15);
    let mut b = RandomState::new().build_hasher();
    b.write_u64(0xbf58_476d_1ce4_e5b9);
    (a.finish() | 1, b.finish() | 1)
}

fn next() -> u64 {
    STATE.with(|s| {
        // xorshift128+
        let (mut x, y) = s.get();
        x ^= x << 23;
        let x2 = x ^ y ^ (x >> 17) ^ (y >> 26);
        s.set((y, x2));
        x2.wrapping_add(y)
    })
}

/// A new random request id.
pub fn new_request_id() -> String {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(32);
    for word in [next(), next()] {
        for i in (0..16).rev() {
            out.push(HEX[((word >> (i * 4)) & 0xf) as usize] as char);
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_32_hex_and_distinct() {
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_request_id()).collect();
        assert_eq!(ids.len(), 1000);
        assert!(ids
            .iter()
            .all(|i| i.len() == 32 && i.bytes().all(|b| b.is_ascii_hexdigit())));
    }
}
