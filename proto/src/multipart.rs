//! Where the segments of a multipart upload's parts live: part `p`'s segment
//! `i` is stored at position `p << PART_SHIFT | i`, so parts can be uploaded
//! in any order and in parallel, and the object's segments are in position
//! order once it is completed. Single uploads use positions 0, 1, 2, …

/// Bits of a position that number the segments within a part: 2^18 segments
/// of up to 64 MiB each is far beyond S3's 5 GiB part limit.
pub const PART_SHIFT: u32 = 18;
/// The highest part number (S3's limit); `MAX_PART << PART_SHIFT` fits a u32.
pub const MAX_PART: u32 = 10_000;
/// The most segments one part may have.
pub const MAX_PART_SEGMENTS: u32 = 1 << PART_SHIFT;

/// The position of segment `index` of part `part`; `None` when either is out of range.
pub fn position(part: u32, index: u32) -> Option<u32> {
    ((1..=MAX_PART).contains(&part) && index < MAX_PART_SEGMENTS)
        .then_some(part << PART_SHIFT | index)
}

/// The part a segment position belongs to (0 for single uploads' positions
/// below `1 << PART_SHIFT`).
pub fn part_of(position: u32) -> u32 {
    position >> PART_SHIFT
}

/// The index of a segment position within its part.
pub fn index_in_part(position: u32) -> u32 {
    position & (MAX_PART_SEGMENTS - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn positions_split_into_part_and_index() {
        assert_eq!(position(0, 0), None);
        assert_eq!(position(MAX_PART + 1, 0), None);
        assert_eq!(position(1, MAX_PART_SEGMENTS), None);
        let last = position(MAX_PART, MAX_PART_SEGMENTS - 1).unwrap();
        assert_eq!(
            (part_of(last), index_in_part(last)),
            (MAX_PART, MAX_PART_SEGMENTS - 1)
        );
        let p = position(3, 7).unwrap();
        assert_eq!((part_of(p), index_in_part(p)), (3, 7));
        assert!(position(2, MAX_PART_SEGMENTS - 1).unwrap() < position(3, 0).unwrap());
        assert_eq!(part_of(5), 0);
    }
}
