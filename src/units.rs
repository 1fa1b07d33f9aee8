//! Byte sizes as people write them: "40G", "512MiB", "1.5T", "2048".
//! Binary units throughout (K = 1024), like qemu-img and parted's IEC mode.

/// Parse a size. A bare number is bytes; K/M/G/T/P (optionally followed by
/// "iB" or "B") are powers of 1024. Fractions are allowed with a unit.
pub fn parse_size(text: &str) -> Result<u64, String> {
    let t = text.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (number, unit) = t.split_at(split);
    let unit = unit.trim();
    let shift = match unit
        .to_ascii_uppercase()
        .trim_end_matches("IB")
        .trim_end_matches('B')
    {
        "" => 0,
        "K" => 10,
        "M" => 20,
        "G" => 30,
        "T" => 40,
        "P" => 50,
        _ => {
            return Err(format!(
                "{text:?}: unknown unit {unit:?} (use K, M, G, T, e.g. 40G)"
            ))
        }
    };
    let value: f64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a size (e.g. 40G, 512M, 1.5T)"))?;
    if shift == 0 && number.contains('.') {
        return Err(format!("{text:?}: a byte count has no fraction"));
    }
    let bytes = value * (1u64 << shift) as f64;
    if !(bytes.is_finite() && bytes >= 0.0 && bytes < u64::MAX as f64) {
        return Err(format!("{text:?} is out of range"));
    }
    Ok(bytes.round() as u64)
}

/// 1536 -> "1.5 KiB", 0 -> "0 B".
pub fn format_bytes(n: u64) -> String {
    const UNITS: [&str; 6] = ["B", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut value = n as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;

/// Round up to a multiple of `align` (a power of two or not).
pub fn round_up(n: u64, align: u64) -> u64 {
    n.div_ceil(align).saturating_mul(align)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_in_binary_units() {
        assert_eq!(parse_size("40G"), Ok(40 * GIB));
        assert_eq!(parse_size("40GiB"), Ok(40 * GIB));
        assert_eq!(parse_size("512m"), Ok(512 * MIB));
        assert_eq!(parse_size("1.5T"), Ok(1536 * GIB));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("40X").unwrap_err().contains("unknown unit"));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("1.5").is_err());
    }

    #[test]
    fn formatting_and_rounding() {
        assert_eq!(format_bytes(0), "0 B");
        assert_eq!(format_bytes(1536), "1.5 KiB");
        assert_eq!(format_bytes(41 * GIB + 200 * MIB), "41.2 GiB");
        assert_eq!(round_up(1, MIB), MIB);
        assert_eq!(round_up(MIB, MIB), MIB);
    }
}
