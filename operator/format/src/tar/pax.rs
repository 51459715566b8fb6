//! PAX records (parsePAX, parsePAXRecord, mergePAX)

use super::header::Header;
use super::{
    PAX_GNU_SPARSE_MAP, PAX_GNU_SPARSE_NUM_BYTES, PAX_GNU_SPARSE_OFFSET, PaxRecords, TarError,
    header_error,
};
use crate::gotime::{parse_go_int, parse_pax_time};

/// One PAX record and the input after it.
struct PaxRecord<'a> {
    key: &'a [u8],
    value: &'a [u8],
    rest: &'a [u8],
}

/// `parsePAXRecord`: one `"<len> <key>=<value>\n"` record.
fn parse_pax_record(input: &[u8]) -> Result<PaxRecord<'_>, TarError> {
    let bad = || header_error("invalid PAX record");
    let space = input.iter().position(|&c| c == b' ').ok_or_else(bad)?;
    let (length_text, rest) = (&input[..space], &input[space + 1..]);
    let length = parse_go_int(length_text).ok_or_else(bad)?;
    let length = usize::try_from(length).map_err(|_| bad())?;
    if length < 5 || length > input.len() {
        return Err(bad());
    }
    // From here on, `length` indexes `rest`.
    let length = length
        .checked_sub(length_text.len() + 1)
        .filter(|&n| n > 0)
        .ok_or_else(bad)?;
    let (record, newline, remainder) = (&rest[..length - 1], rest[length - 1], &rest[length..]);
    if newline != b'\n' {
        return Err(bad());
    }
    let equals = record.iter().position(|&c| c == b'=').ok_or_else(bad)?;
    let (key, value) = (&record[..equals], &record[equals + 1..]);
    let valid = !key.is_empty()
        && match key {
            b"path" | b"linkpath" | b"uname" | b"gname" => !value.contains(&0),
            _ => !key.contains(&0),
        };
    if !valid {
        return Err(bad());
    }
    Ok(PaxRecord {
        key,
        value,
        rest: remainder,
    })
}

/// `parsePAX`: the records of an `'x'` or `'g'` entry; GNU sparse 0.0 offset/numbytes pairs are
/// folded into a synthesised `GNU.sparse.map`.
pub(super) fn parse_pax(data: &[u8]) -> Result<PaxRecords, TarError> {
    let mut records = PaxRecords::new();
    let mut sparse_map: Vec<&[u8]> = Vec::new();
    let mut rest = data;
    while !rest.is_empty() {
        let PaxRecord {
            key,
            value,
            rest: remainder,
        } = parse_pax_record(rest)?;
        rest = remainder;
        if key == PAX_GNU_SPARSE_OFFSET || key == PAX_GNU_SPARSE_NUM_BYTES {
            let expected = if sparse_map.len().is_multiple_of(2) {
                PAX_GNU_SPARSE_OFFSET
            } else {
                PAX_GNU_SPARSE_NUM_BYTES
            };
            if key != expected || value.contains(&b',') {
                return Err(header_error("invalid GNU sparse 0.0 record"));
            }
            sparse_map.push(value);
        } else {
            records.insert(key.to_vec(), value.to_vec());
        }
    }
    if !sparse_map.is_empty() {
        records.insert(PAX_GNU_SPARSE_MAP.to_vec(), sparse_map.join(&b','));
    }
    Ok(records)
}

/// `mergePAX`: applies non-empty records onto the header. Go iterates its map in random order
/// and stops at the first bad value; we use key order, which is one of Go's possible orders (it
/// only matters for a `'g'` whose records fail to merge, §5.2).
pub(super) fn merge_pax(header: &mut Header, records: &PaxRecords) -> Result<(), TarError> {
    for (key, value) in records {
        if value.is_empty() {
            continue; // keep the header's value
        }
        let bad = || header_error(format!("invalid PAX {}", String::from_utf8_lossy(key)));
        match key.as_slice() {
            b"path" => header.name.clone_from(value),
            b"linkpath" => header.linkname.clone_from(value),
            b"uname" => header.uname.clone_from(value),
            b"gname" => header.gname.clone_from(value),
            b"uid" => header.uid = parse_go_int(value).ok_or_else(bad)?,
            b"gid" => header.gid = parse_go_int(value).ok_or_else(bad)?,
            b"size" => header.size = parse_go_int(value).ok_or_else(bad)?,
            b"mtime" => header.mod_time = parse_pax_time(value).map_err(|()| bad())?,
            // Access and change times are not reported, but must parse.
            b"atime" | b"ctime" => {
                parse_pax_time(value).map_err(|()| bad())?;
            }
            _ => {}
        }
    }
    Ok(())
}

#[cfg(test)]
#[path = "pax_tests.rs"]
mod tests;
