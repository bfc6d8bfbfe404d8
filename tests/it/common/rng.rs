//! One small deterministic PRNG for the tests (xorshift64*), so a failing run can be
//! replayed from its seed.

/// xorshift64* (Vigna); the seed must not be 0.
pub(crate) struct Rng(pub(crate) u64);

#[allow(dead_code)] // each test module uses a few of these
impl Rng {
    pub(crate) fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// A number in `0..n`.
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `n` random bytes.
    pub(crate) fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }

    /// 16 hex digits, for SIP tags, branches and Call-IDs.
    pub(crate) fn token(&mut self) -> String {
        format!("{:016x}", self.next())
    }
}
