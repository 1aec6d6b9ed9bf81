//! Norm and embedding conventions of the Gemma family.
//!
//! Gemma's RMSNorm scales by `1 + w`, llama.cpp's by `w`: the converter
//! stores `w + 1`. convert_hf_to_gguf.py adds the 1 to the tensor as loaded:
//! F16 weights stay F16 (the sum is rounded to F16), BF16 weights are widened
//! to F32 first, F32 weights add in F32.

use half::f16;

/// Adds 1 to every value, rounding each sum to F16 when the checkpoint
/// tensor is F16 (`values` holds its exact F32 widening).
pub fn add_one(values: &mut [f32], stored_f16: bool) {
    if stored_f16 {
        for v in values {
            *v = f16::from_f32(*v + 1.0).to_f32();
        }
    } else {
        for v in values {
            *v += 1.0;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f16_sums_are_rounded_to_f16() {
        // 2^-12 is exact in F16 but 1 + 2^-12 is not (F16 has 10 mantissa bits).
        let mut v = [2f32.powi(-12), 0.5, -1.0];
        add_one(&mut v, true);
        assert_eq!(v, [1.0, 1.5, 0.0]);
        let mut v = [2f32.powi(-12)];
        add_one(&mut v, false);
        assert_eq!(v, [1.0 + 2f32.powi(-12)]);
    }
}
