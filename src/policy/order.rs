//! The order in which llama-quantize writes tensors.
//!
//! llama.cpp keeps the model's tensors in a `std::map` ordered by
//! `weight_name_comparer`: the layer number that `sscanf(name, "blk.%d.")`
//! reads (-1 when it reads none), then the name byte-wise. So every tensor
//! outside `blk.N.` comes first, then layer 0, 1, 2 … (numerically, not
//! as text), each layer's tensors by name. The mix rules' layer counters
//! advance in this order too.

use std::cmp::Ordering;

use crate::gguf::TensorInfo;

/// The layer number `sscanf(name, "blk.%d.", &layer)` stores, if it stores one.
///
/// Like glibc's `%d`: whitespace, then an optional sign and decimal digits,
/// converted with `strtol` (saturating on overflow) and truncated to `int`.
/// The `.` after the number is not needed for the number to be stored.
pub fn scanf_blk_layer(name: &str) -> Option<i32> {
    let rest = name.as_bytes().strip_prefix(b"blk.")?;
    let mut i = rest.iter().take_while(|b| matches!(b, b' ' | b'\t' | b'\n' | b'\x0b' | b'\x0c' | b'\r')).count();
    let neg = match rest.get(i) {
        Some(b'-') => {
            i += 1;
            true
        }
        Some(b'+') => {
            i += 1;
            false
        }
        _ => false,
    };
    let digits = rest.get(i..).unwrap_or_default();
    let n = digits.iter().take_while(|b| b.is_ascii_digit()).count();
    if n == 0 {
        return None;
    }
    // strtol: accumulate with saturation at LONG_MAX / LONG_MIN
    let mut v: i128 = 0;
    for &d in &digits[..n] {
        v = (v * 10 + i128::from(d - b'0')).min(i128::from(i64::MAX) + 1);
    }
    let v = if neg { -v } else { v };
    let long = v.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64;
    // scanf stores the long into an int: keep the low 32 bits
    Some(long as i32)
}

/// `weight_name_comparer`.
pub fn compare_names(a: &str, b: &str) -> Ordering {
    let la = scanf_blk_layer(a).unwrap_or(-1);
    let lb = scanf_blk_layer(b).unwrap_or(-1);
    la.cmp(&lb).then_with(|| a.as_bytes().cmp(b.as_bytes()))
}

/// Indices of `tensors` in llama-quantize's output order.
pub fn output_order(tensors: &[TensorInfo]) -> Vec<usize> {
    let mut idx: Vec<usize> = (0..tensors.len()).collect();
    idx.sort_by(|&a, &b| compare_names(&tensors[a].name, &tensors[b].name));
    idx
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scanf() {
        assert_eq!(scanf_blk_layer("blk.12.attn_q.weight"), Some(12));
        assert_eq!(scanf_blk_layer("blk.7"), Some(7));
        assert_eq!(scanf_blk_layer("blk. +3x"), Some(3));
        assert_eq!(scanf_blk_layer("blk.-1.x"), Some(-1));
        assert_eq!(scanf_blk_layer("blk.x"), None);
        assert_eq!(scanf_blk_layer("token_embd.weight"), None);
        assert_eq!(scanf_blk_layer("blk.4294967297.x"), Some(1));
        assert_eq!(scanf_blk_layer("blk.99999999999999999999999.x"), Some(-1));
    }

    #[test]
    fn order() {
        let names = ["blk.10.a", "output.weight", "blk.2.b", "blk.2.a", "token_embd.weight", "blk.-5.z", "a"];
        let mut v: Vec<&str> = names.to_vec();
        v.sort_by(|a, b| compare_names(a, b));
        assert_eq!(v, ["blk.-5.z", "a", "output.weight", "token_embd.weight", "blk.2.a", "blk.2.b", "blk.10.a"]);
    }
}
