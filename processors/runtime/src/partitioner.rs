//! Where a keyed record belongs: Kafka's default partitioner, as Java clients and librdkafka's
//! `murmur2_random` (the executor's producers) place keys.
//! A stage whose state is per key asks it whether a record arrived on the right partition.

/// The partition of `partitions` that Kafka's default partitioner gives `key`: the positive
/// part of Java's `Utils.murmur2(key)`, modulo the partition count.
pub fn partition_for(key: &[u8], partitions: i32) -> i32 {
    let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32;
    (hash & 0x7fff_ffff) % partitions.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Java's `Utils.murmur2` on the cases of Kafka's own `UtilsTest`.
    #[test]
    fn matches_kafkas_murmur2() {
        let cases: [(&[u8], i32); 6] = [
            (b"21", -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ];
        for (key, java) in cases {
            let hash = murmur2::murmur2(key, murmur2::KAFKA_SEED) as i32;
            assert_eq!(hash, java, "{}", String::from_utf8_lossy(key));
            assert_eq!(partition_for(key, 6), (java & 0x7fff_ffff) % 6);
        }
    }
}
