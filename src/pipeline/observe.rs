//! Observers: the side work of an engine run, beside the encoding.
//!
//! The engine ([`super::run`]) hands every observer what it computes, at two
//! places: worker tasks report the rows they encoded (with the f32 rows they
//! came from, when decoded), in parallel; the writer thread reports each chunk
//! as its sink receives it, in order. Error statistics ([`ErrorObserver`]) and
//! progress ([`ProgressObserver`]) are observers; new side work (a histogram
//! of levels, a checksum of tensor data) is another one, without touching the
//! engine's loop. Hashing a whole output stays with its sink, the only one
//! that sees every byte of the file (header and padding included).

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::write::ErrorStats;
use crate::error::Result;
use crate::gguf::GgmlType;
use crate::progress::Progress;
use crate::quant;

/// Rows a worker task encoded for one output tensor.
#[derive(Clone, Copy)]
pub struct EncodedRows<'a> {
    /// Which output (job) and which tensor of its plan.
    pub output: usize,
    pub index: usize,
    pub ty: GgmlType,
    pub row_len: usize,
    /// The first row of `encoded` in the tensor.
    pub first_row: u64,
    /// The f32 rows the encoding came from (always present when an observer
    /// [`needs_reference`](Observer::needs_reference)).
    pub reference: Option<&'a [f32]>,
    /// The encoded rows (stored bytes, for a tensor copied as it is).
    pub encoded: &'a [u8],
}

/// Side work on an engine run. Every method has a default that does nothing.
pub trait Observer: Sync {
    /// Whether [`rows`](Observer::rows) needs the f32 rows: the engine then
    /// decodes F16/BF16 sources instead of encoding their stored halves
    /// directly.
    fn needs_reference(&self) -> bool {
        false
    }
    /// Worker side, called in parallel: rows of one output tensor, encoded.
    fn rows(&self, _rows: EncodedRows<'_>) -> Result<()> {
        Ok(())
    }
    /// Every row of tensor `index` of output `output` went through
    /// [`rows`](Observer::rows).
    fn tensor_done(&self, _output: usize, _index: usize) {}
    /// Writer side, in order: `bytes` more bytes reached output `output`'s sink.
    fn written(&self, _output: usize, _bytes: u64) {}
}

/// Progress in bytes written.
pub struct ProgressObserver<'a>(pub &'a dyn Progress);

impl Observer for ProgressObserver<'_> {
    fn written(&self, _output: usize, bytes: u64) {
        self.0.advance(bytes);
    }
}

/// The error of every output tensor against the f32 rows it was encoded
/// from. Each row's sums are taken alone and added in row order (rows that
/// arrive ahead wait for the ones before them), so the figures depend neither
/// on the thread count nor on how rows are split into tasks.
pub struct ErrorObserver {
    tensors: Vec<Vec<Mutex<InOrder>>>,
}

#[derive(Default)]
struct InOrder {
    next_row: u64,
    ahead: BTreeMap<u64, Vec<ErrorStats>>,
    total: ErrorStats,
}

impl ErrorObserver {
    /// For outputs of `counts[u]` tensors each.
    pub fn new(counts: &[usize]) -> ErrorObserver {
        ErrorObserver { tensors: counts.iter().map(|&n| (0..n).map(|_| Mutex::default()).collect()).collect() }
    }

    /// Per output, per tensor: the figures.
    pub fn into_stats(self) -> Vec<Vec<ErrorStats>> {
        self.tensors
            .into_iter()
            .map(|t| t.into_iter().map(|m| m.into_inner().unwrap_or_else(|e| e.into_inner()).total).collect())
            .collect()
    }
}

impl Observer for ErrorObserver {
    fn needs_reference(&self) -> bool {
        true
    }

    fn rows(&self, r: EncodedRows<'_>) -> Result<()> {
        let Some(reference) = r.reference else { return Ok(()) };
        let stats = row_errors(r.ty, r.row_len, reference, r.encoded)?;
        let Some(slot) = self.tensors.get(r.output).and_then(|t| t.get(r.index)) else { return Ok(()) };
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let s = &mut *guard;
        s.ahead.insert(r.first_row, stats);
        while let Some(run) = s.ahead.remove(&s.next_row) {
            s.next_row += run.len() as u64;
            for e in &run {
                s.total.add(e);
            }
        }
        Ok(())
    }
}

/// Per row: the error of encoded rows against their f32 source.
fn row_errors(ty: GgmlType, row_len: usize, reference: &[f32], encoded: &[u8]) -> Result<Vec<ErrorStats>> {
    let out_row = ty.row_size(row_len as u64).unwrap_or(0) as usize;
    let n = reference.len() / row_len.max(1);
    let mut back = vec![0f32; row_len];
    let mut out = Vec::with_capacity(n);
    for r in 0..n {
        let x = &reference[r * row_len..(r + 1) * row_len];
        let enc = encoded.get(r * out_row..(r + 1) * out_row).unwrap_or_default();
        quant::dequantize_rows(ty, enc, &mut back)?;
        let [sum_sq_err, sum_sq_ref, max_abs_err] = quant::error_sums(x, &back);
        out.push(ErrorStats { n: row_len as u64, sum_sq_err, sum_sq_ref, max_abs_err });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Rows reported out of order and in any split give the figures of one
    /// pass in row order.
    #[test]
    fn error_figures_do_not_depend_on_the_order_of_tasks() {
        let row_len = 64;
        let rows = 12;
        let x: Vec<f32> = (0..rows * row_len).map(|i| ((i * 37 % 101) as f32 - 50.0) / 7.0).collect();
        let ty = GgmlType::Q8_0;
        let row_bytes = ty.row_size(row_len as u64).unwrap() as usize;
        let mut enc = vec![0u8; rows * row_bytes];
        quant::quantize_rows(ty, &x, row_len, None, &mut enc).unwrap();
        let report = |obs: &ErrorObserver, first: usize, n: usize| {
            obs.rows(EncodedRows {
                output: 0,
                index: 1,
                ty,
                row_len,
                first_row: first as u64,
                reference: Some(&x[first * row_len..(first + n) * row_len]),
                encoded: &enc[first * row_bytes..(first + n) * row_bytes],
            })
            .unwrap();
        };
        let whole = ErrorObserver::new(&[2]);
        report(&whole, 0, rows);
        let split = ErrorObserver::new(&[2]);
        for (first, n) in [(9, 3), (2, 5), (7, 2), (0, 2)] {
            report(&split, first, n);
        }
        let (a, b) = (whole.into_stats(), split.into_stats());
        assert_eq!(a, b);
        assert_eq!(a[0][0], ErrorStats::default());
        let e = a[0][1];
        assert_eq!(e.n, (rows * row_len) as u64);
        // Against a plain f64 loop over the dequantized values.
        let mut back = vec![0f32; x.len()];
        quant::dequantize_rows(ty, &enc, &mut back).unwrap();
        let se: f64 = x.iter().zip(&back).map(|(&a, &b)| (a as f64 - b as f64).powi(2)).sum();
        assert!(e.sum_sq_err > 0.0 && (e.sum_sq_err - se).abs() <= 1e-12 * se);
    }
}
